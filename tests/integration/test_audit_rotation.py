"""Rotation of the audit log by the real writer on a real Redis: the chain runs across files, a
crash at any step of a rotation loses and doubles nothing, ``keep`` deletes the oldest files."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway import keys
from gateway.audit import AuditFiles, AuditWriter, append_event, follow, verify
from gateway.audit import writer as writer_module
from gateway.config import load_config
from gateway.errors import ConfigError
from tests.fakes.audit_events import make_event

#: about four lines of make_event's size
SMALL = 2_000


def _lines(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(raw) for path in paths for raw in path.read_bytes().splitlines()]


def _ids(live: Path) -> list[str]:
    return [line["job_id"] for line in _lines(AuditFiles(live).chain())]


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "home" / "audit.log"


@pytest.fixture
def writer(redis_client: redis.Redis, live: Path) -> Iterator[AuditWriter]:
    with AuditWriter(redis_client, live, consumer="w", batch_size=2, rotate_bytes=SMALL) as audit_writer:
        yield audit_writer


def test_writer_rotates_past_rotate_bytes_and_chains_across_files(
    redis_client: redis.Redis, writer: AuditWriter, live: Path
) -> None:
    for i in range(20):
        append_event(redis_client, make_event(f"job-{i:02d}"))

    assert writer.run_once() == 20

    files = AuditFiles(live).chain()
    assert len(files) >= 4 and files[-1] == live
    assert [p.name for p in files[:-1]] == [f"audit.log.{n:06d}" for n in range(1, len(files))]
    assert _ids(live) == [f"job-{i:02d}" for i in range(20)]
    for older, newer in zip(files, files[1:], strict=False):
        assert older.stat().st_size <= SMALL
        assert _lines([newer])[0]["prev"] == _lines([older])[-1]["hash"]
        assert older.stat().st_mode & 0o777 == 0o600
    assert verify(live).ok and verify(live).lines == 20


def test_writer_keeps_only_the_newest_rotated_files(redis_client: redis.Redis, live: Path) -> None:
    for i in range(20):
        append_event(redis_client, make_event(f"job-{i:02d}"))

    with AuditWriter(redis_client, live, consumer="w", batch_size=2, rotate_bytes=SMALL, keep=2) as w:
        w.run_once()

    rotated = AuditFiles(live).rotated()
    assert len(rotated) == 2 and rotated[0][0] > 1
    report = verify(live)
    assert report.ok and "were deleted (audit.keep)" in report.note
    assert _ids(live) == [f"job-{i:02d}" for i in range(20)][-len(_ids(live)) :]


def test_writer_without_rotate_bytes_never_rotates(redis_client: redis.Redis, live: Path) -> None:
    for i in range(20):
        append_event(redis_client, make_event(f"job-{i:02d}"))

    with AuditWriter(redis_client, live, consumer="w", batch_size=2, rotate_bytes=None) as w:
        w.run_once()

    assert AuditFiles(live).chain() == [live] and len(_ids(live)) == 20


@pytest.mark.parametrize("live_file_after_crash", ["missing", "empty"])
def test_writer_crash_mid_rotation_loses_and_doubles_nothing(
    redis_client: redis.Redis, live: Path, monkeypatch: pytest.MonkeyPatch, live_file_after_crash: str
) -> None:
    """Killed after the rename (before or after the new live file existed), with a batch read
    from Redis and not acked: the restart finds the last line in the rotated file."""
    for i in range(4):
        append_event(redis_client, make_event(f"job-{i}"))
    with AuditWriter(redis_client, live, consumer="first", rotate_bytes=SMALL) as first:
        assert first.run_once() == 4
    for i in range(4, 8):
        append_event(redis_client, make_event(f"job-{i}"))

    def crash(directory: Path) -> None:
        if live_file_after_crash == "empty":
            live.touch(mode=0o600)
        raise OSError("killed during the rotation")

    with AuditWriter(redis_client, live, consumer="crashed", batch_size=10, rotate_bytes=SMALL) as crashed:
        monkeypatch.setattr(writer_module, "_fsync_dir", crash)
        with pytest.raises(OSError, match="killed"):
            crashed.run_once()
        monkeypatch.undo()
    assert live.exists() == (live_file_after_crash == "empty")
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 4

    with AuditWriter(redis_client, live, consumer="restarted", rotate_bytes=SMALL) as restarted:
        assert restarted.run_once() == 4

    assert _ids(live) == [f"job-{i}" for i in range(8)]
    assert [p.name for p in AuditFiles(live).chain()] == ["audit.log.000001", "audit.log"]
    assert verify(live).ok


def test_writer_restart_dedups_against_lines_in_the_rotated_file(
    redis_client: redis.Redis, live: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written, then killed before the ack, then the file rotated: the re-delivered events are
    found in the rotated file's tail and not written again."""
    events = [make_event(f"job-{i}") for i in range(3)]
    for event in events:
        append_event(redis_client, event)
    with AuditWriter(redis_client, live, consumer="crashed", rotate_bytes=SMALL) as crashed:

        def killed(ids: list[Any]) -> None:
            raise redis.ConnectionError("killed before XACK")

        monkeypatch.setattr(crashed, "_ack", killed)
        with pytest.raises(redis.ConnectionError):
            crashed.run_once()
    live.rename(AuditFiles(live).next_rotated())  # a rotation right after, as far as the files tell
    append_event(redis_client, make_event("job-3"))

    with AuditWriter(redis_client, live, consumer="restarted", rotate_bytes=SMALL) as restarted:
        assert restarted.run_once() == 1

    assert _ids(live) == ["job-0", "job-1", "job-2", "job-3"]
    assert verify(live).ok
    assert redis_client.xpending(keys.AUDIT_STREAM, keys.AUDIT_GROUP)["pending"] == 0


def test_follow_reads_on_across_the_writers_rotations(
    redis_client: redis.Redis, writer: AuditWriter, live: Path
) -> None:
    append_event(redis_client, make_event("job-00"))
    writer.run_once()
    stop = threading.Event()
    seen = follow(live, from_start=True, poll_s=0.01, stop=stop)
    assert next(seen)["job_id"] == "job-00"

    for i in range(1, 15):
        append_event(redis_client, make_event(f"job-{i:02d}"))
    writer.run_once()

    assert len(AuditFiles(live).rotated()) >= 2
    assert [next(seen)["job_id"] for _ in range(14)] == [f"job-{i:02d}" for i in range(1, 15)]
    stop.set()


def test_writer_refuses_a_rotate_bytes_below_one(redis_client: redis.Redis, live: Path) -> None:
    with pytest.raises(ValueError, match="rotate_bytes and keep"):
        AuditWriter(redis_client, live, consumer="w", rotate_bytes=0)


@pytest.mark.parametrize(
    ("audit", "field"),
    [("rotate_bytes: 1000", "rotate_bytes"), ("keep: 0", "keep"), ("rotate_bytes: 100MB", "rotate_bytes")],
)
def test_config_audit_rotation_errors_name_file_and_field(config_dir: Path, audit: str, field: str) -> None:
    gateway_yaml = config_dir / "gateway.yaml"
    gateway_yaml.write_text(gateway_yaml.read_text().split("audit:")[0] + f"audit:\n  {audit}\n")

    with pytest.raises(ConfigError) as raised:
        load_config(config_dir)

    assert "gateway.yaml" in str(raised.value) and f"audit.{field}" in str(raised.value)


def test_config_audit_rotation_defaults_and_null(config_dir: Path) -> None:
    assert load_config(config_dir).gateway.audit.rotate_bytes == 100 * 1024 * 1024
    gateway_yaml = config_dir / "gateway.yaml"
    gateway_yaml.write_text(
        gateway_yaml.read_text().split("audit:")[0] + "audit:\n  rotate_bytes: null\n  keep: 5\n"
    )

    audit = load_config(config_dir).gateway.audit
    assert (audit.rotate_bytes, audit.keep) == (None, 5)
