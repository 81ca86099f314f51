"""A skill's bundle: every file of its folder, and the sha256 over them that names its code.

The registry stores bundles by this hash, and every audit line of a skill job carries it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError

MAX_BUNDLE_BYTES = 1_048_576
_SKIPPED_DIRS = frozenset({"__pycache__", ".git", ".pytest_cache", ".mypy_cache", ".ruff_cache"})
_SKIPPED_FILES = frozenset({".DS_Store"})


@dataclass(frozen=True)
class BundleFile:
    path: str  # POSIX, relative to the skill folder
    executable: bool
    data: bytes


def read_bundle(root: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> list[BundleFile]:
    """Every file of a skill folder, sorted by path; symlinks are refused and the total size capped.

    Caches (``__pycache__``, ``.git``, ``*.pyc``) are left out: they are not the skill.
    """
    base = Path(root)
    files: list[BundleFile] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(base):
        folder = Path(dirpath)
        for name in list(dirnames):
            if (folder / name).is_symlink():
                raise ConfigError("symlinks are not allowed in a skill", file=str(folder / name))
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            path = folder / name
            if name in _SKIPPED_FILES or name.endswith(".pyc"):
                continue
            if path.is_symlink() or not path.is_file():
                raise ConfigError("only regular files are allowed in a skill (no symlinks)", file=str(path))
            data = path.read_bytes()
            total += len(data)
            if total > max_bytes:
                raise ConfigError(f"the skill folder is larger than {max_bytes} bytes", file=str(base))
            executable = bool(path.stat().st_mode & 0o111)
            files.append(BundleFile(path.relative_to(base).as_posix(), executable, data))
    return sorted(files, key=lambda f: f.path)


def bundle_hash(files: Iterable[BundleFile]) -> str:
    """sha256 over the sorted paths, executable bits and bytes: the identity of a skill's code."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.path):
        header = f"{file.path}\0{'x' if file.executable else '-'}\0{len(file.data)}\0"
        digest.update(header.encode("utf-8"))
        digest.update(file.data)
    return digest.hexdigest()
