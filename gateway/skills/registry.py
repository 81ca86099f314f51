"""The versioned skill registry in Redis: deploy, roll back, pin; workers materialise bundles by hash.

Deploying stores every file of a skill folder (a bundle, at most 1 MiB) under its sha256 content
hash and records the version; a ``current`` record says which version unpinned jobs run. A worker
reads that record on every job (one GET), so a new version or a rollback takes effect on every
host at once, without a restart. Bundles are written to a worker's cache directory once per hash
and checked against it. A version is immutable: deploying it again with different files is
refused (bump the version), so "1.2.0" means the same code on every host, in every audit line.

The calls are synchronous (one or two round trips); an async caller may wrap ``load`` in
``asyncio.to_thread``. Nothing is read from Redis at import or construction.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import redis
from loguru import logger
from pydantic import BaseModel, ConfigDict
from redis.client import Pipeline

from gateway import keys
from gateway.errors import ConflictError, SkillError, SkillNotFoundError
from gateway.skills.bundle import MAX_BUNDLE_BYTES, BundleFile, bundle_hash, read_bundle
from gateway.skills.folder import Skill, load_skill_dir
from gateway.skills.manifest import check_name, parse_ref, version_key

_BUNDLE_FORMAT = 1


class SkillVersion(BaseModel):
    """One deployed version: what the registry records and the audit line names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    sha256: str
    size: int
    files: int
    deployed_at: str


@dataclass(frozen=True)
class DeployResult:
    deployed: SkillVersion
    #: the version that was current before, if any
    previous: str | None
    #: False when this exact version and bundle were already deployed
    new: bool


class SkillRegistry:
    """Skill versions in Redis plus this process's cache of materialised bundles."""

    def __init__(
        self, connection: redis.Redis, cache_dir: str | Path, *, max_bundle_bytes: int = MAX_BUNDLE_BYTES
    ) -> None:
        self.connection = connection
        self.cache_dir = Path(cache_dir)
        self.max_bundle_bytes = max_bundle_bytes
        self._parsed: dict[str, Skill] = {}

    # --- writing ---------------------------------------------------------------------------------

    def deploy(self, skill: Skill) -> DeployResult:
        """Store the bundle and make the version current; an existing version is never given other files."""
        files = read_bundle(skill.root, self.max_bundle_bytes)
        digest = bundle_hash(files)
        if digest != skill.content_hash:
            raise ConflictError(f"{skill.root} changed while it was being deployed; deploy again")
        record = SkillVersion(
            name=skill.name,
            version=skill.version,
            sha256=digest,
            size=sum(len(f.data) for f in files),
            files=len(files),
            deployed_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        blob = encode_bundle(files)
        name, version = skill.name, skill.version

        outcome: list[DeployResult] = []

        def attempt(pipe: Pipeline) -> None:
            existing = _record(pipe.hget(keys.skill_versions(name), version))
            current = _record(pipe.get(keys.skill_current(name)))
            if existing is not None and existing.sha256 != digest:
                raise ConflictError(
                    f"{name}@{version} is already deployed with different files "
                    f"(sha256 {existing.sha256[:12]}, this folder {digest[:12]}); bump the version"
                )
            chosen = existing or record
            pipe.multi()
            pipe.set(keys.skill_bundle(digest), blob)
            pipe.hset(keys.skill_versions(name), version, chosen.model_dump_json())
            pipe.sadd(keys.skills_index(), name)
            if current is None or current.version != version:
                pipe.set(keys.skill_current(name), chosen.model_dump_json())
                pipe.rpush(keys.skill_history(name), version)
            outcome[:] = [DeployResult(chosen, current.version if current else None, existing is None)]

        self.connection.transaction(attempt, keys.skill_versions(name), keys.skill_current(name))
        return outcome[0]

    def rollback(self, name: str, to: str | None = None) -> tuple[SkillVersion, SkillVersion]:
        """Make an earlier version current again: the one before the current (undo), or ``to``.

        Returns (the version that was current, the version that is current now).
        """
        check_name(name)
        if to is not None:
            parse_ref(f"{name}@{to}")

        outcome: list[tuple[SkillVersion, SkillVersion]] = []

        def attempt(pipe: Pipeline) -> None:
            current = _record(pipe.get(keys.skill_current(name)))
            if current is None:
                raise SkillNotFoundError(f"skill {name} is not deployed")
            history = [keys.text(v) or "" for v in pipe.lrange(keys.skill_history(name), 0, -1)]
            target = to
            if target is None:
                if len(history) < 2:
                    raise ConflictError(
                        f"nothing to roll back to: {name} has only ever had {current.version} current"
                    )
                target = history[-2]
            elif target == current.version:
                raise ConflictError(f"{name}@{target} is already current")
            record = _record(pipe.hget(keys.skill_versions(name), target))
            if record is None:
                raise SkillNotFoundError(f"skill {name} has no version {target} ({self._known(pipe, name)})")
            pipe.multi()
            pipe.set(keys.skill_current(name), record.model_dump_json())
            if to is None:
                pipe.rpop(keys.skill_history(name))
            else:
                pipe.rpush(keys.skill_history(name), target)
            outcome[:] = [(current, record)]

        self.connection.transaction(attempt, keys.skill_current(name), keys.skill_history(name))
        return outcome[0]

    # --- reading ---------------------------------------------------------------------------------

    def get(self, name: str, version: str | None = None) -> SkillVersion:
        """The current version's record, or a pinned one's; SkillNotFoundError when there is none."""
        check_name(name)
        if version is None:
            current = _record(self.connection.get(keys.skill_current(name)))
            if current is None:
                raise SkillNotFoundError(f"skill {name} is not deployed")
            return current
        record = _record(self.connection.hget(keys.skill_versions(name), version))
        if record is None:
            raise SkillNotFoundError(
                f"skill {name} has no version {version} ({self._known(self.connection, name)})"
            )
        return record

    def current(self, name: str) -> SkillVersion | None:
        check_name(name)
        return _record(self.connection.get(keys.skill_current(name)))

    def versions(self, name: str) -> list[SkillVersion]:
        """Every deployed version of a skill, oldest semver first."""
        check_name(name)
        raw = self.connection.hgetall(keys.skill_versions(name))
        records = [r for r in (_record(v) for v in raw.values()) if r is not None]
        return sorted(records, key=lambda r: version_key(r.version))

    def list(self) -> dict[str, SkillVersion]:
        """Every deployed skill with its current version, by name."""
        names = sorted(keys.text(n) or "" for n in self.connection.smembers(keys.skills_index()))
        with self.connection.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(keys.skill_current(name))
            raw = pipe.execute()
        return {name: record for name, value in zip(names, raw, strict=True) if (record := _record(value))}

    def load(self, name: str, version: str | None = None) -> Skill:
        """The skill a job runs: the current (or pinned) version, materialised and parsed once per hash."""
        record = self.get(name, version)
        cached = self._parsed.get(record.sha256)
        if cached is not None and cached.root.is_dir():
            return cached
        skill = load_skill_dir(self.materialise(record), source="registry")
        if skill.content_hash != record.sha256 or skill.name != name:
            raise SkillError(f"the cached bundle of {name}@{record.version} does not match the registry")
        self._parsed[record.sha256] = skill
        return skill

    def materialise(self, record: SkillVersion) -> Path:
        """The bundle's files in ``cache_dir/<sha256>``, written once (atomically) and read-only."""
        target = self.cache_dir / record.sha256
        if target.is_dir():
            return target
        blob = self.connection.get(keys.skill_bundle(record.sha256))
        if blob is None:
            raise SkillNotFoundError(f"the bundle of {record.name}@{record.version} is missing from Redis")
        if not isinstance(blob, bytes):
            raise SkillError("the skill registry needs a Redis client without decode_responses")
        files = decode_bundle(blob)
        if bundle_hash(files) != record.sha256:
            raise SkillError(f"the bundle of {record.name}@{record.version} does not match its sha256")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.cache_dir))
        _write_files(staging, files)
        try:
            os.rename(staging, target)
        except OSError:  # another process of this host got there first: theirs is the same bytes
            remove_tree(staging)
        return target

    def _known(self, conn: Any, name: str) -> str:
        versions = sorted(
            (keys.text(v) or "" for v in conn.hkeys(keys.skill_versions(name))), key=version_key
        )
        return f"deployed: {', '.join(versions)}" if versions else "none deployed"


# --- bundles on the wire -------------------------------------------------------------------------


def encode_bundle(files: list[BundleFile]) -> bytes:
    payload = {
        "format": _BUNDLE_FORMAT,
        "files": [
            {"path": f.path, "executable": f.executable, "data": base64.b64encode(f.data).decode("ascii")}
            for f in files
        ],
    }
    return zlib.compress(json.dumps(payload, separators=(",", ":")).encode(), level=6)


def decode_bundle(blob: bytes) -> list[BundleFile]:
    try:
        payload = json.loads(zlib.decompress(blob))
        if payload.get("format") != _BUNDLE_FORMAT:
            raise ValueError(f"unknown bundle format {payload.get('format')!r}")
        files = [
            BundleFile(f["path"], bool(f["executable"]), base64.b64decode(f["data"]))
            for f in payload["files"]
        ]
    except (zlib.error, ValueError, KeyError, TypeError) as exc:
        raise SkillError(f"a skill bundle in Redis is unreadable: {exc}") from None
    for file in files:
        path = PurePosixPath(file.path)
        if path.is_absolute() or ".." in path.parts or not path.parts:
            raise SkillError(f"a skill bundle in Redis holds an unsafe path {file.path!r}")
    return files


def _write_files(root: Path, files: list[BundleFile]) -> None:
    """Write the files, then make the tree read-only (a guard for non-root workers, not a sandbox)."""
    for file in files:
        path = root.joinpath(*PurePosixPath(file.path).parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(file.data)
        path.chmod(0o555 if file.executable else 0o444)
    for dirpath, _, _ in os.walk(root, topdown=False):
        os.chmod(dirpath, 0o555)


def remove_tree(root: Path) -> None:
    """Delete a folder (a materialised bundle, a script's workspace), read-only directories included.

    Total: never raises, and any depth is fine (GNU ``chmod -R`` and ``rm -rf`` walk without recursion
    or path-length limits, and do not follow symlinks); a folder that could not be removed is logged.
    """
    try:
        if not os.path.lexists(root):
            return
        for argv in (
            ["chmod", "-R", "u+rwX", "--", str(root)],
            ["rm", "-rf", "--one-file-system", "--", str(root)],
        ):
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        if os.path.lexists(root):
            shutil.rmtree(root, ignore_errors=True)
        if os.path.lexists(root):
            logger.warning("could not remove {} completely", root)
    except Exception:  # cleanup runs in finally blocks: it must not replace the run's own outcome
        logger.exception("could not remove {}", root)


def _record(raw: bytes | str | None) -> SkillVersion | None:
    return None if raw is None else SkillVersion.model_validate(json.loads(raw))
