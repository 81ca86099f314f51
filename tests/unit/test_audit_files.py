"""The rotated-file set and the readers across it, on real files: chain order, verify naming the
file and line, tail reaching back into rotated files, follow moving on at a rotation, --since."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.audit import (
    AuditFiles,
    LineFilter,
    encode_line,
    follow,
    line_hash,
    parse_since,
    scan,
    tail,
    verify,
)
from gateway.audit.files import lines_backwards
from tests.fakes.audit_events import make_event, write_log


def _rotated_log(live: Path, sizes: list[int]) -> list[Path]:
    """A chained log whose files hold ``sizes`` lines each (the last is the live file)."""
    files = [live.with_name(f"audit.log.{n:06d}") for n in range(1, len(sizes))] + [live]
    prev, job = "0" * 64, 0
    for path, size in zip(files, sizes, strict=True):
        prev = write_log(path, [make_event(f"job-{job + i}") for i in range(size)], prev)
        job += size
    return files


def test_audit_files_chain_orders_rotated_by_number_then_live(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    for name in ("audit.log", "audit.log.000002", "audit.log.000001", "audit.log.000010"):
        (tmp_path / name).touch()
    for stranger in ("audit.log.1", "audit.log.rejected", "audit.log.000003.bak", "other.log.000004"):
        (tmp_path / stranger).touch()

    files = AuditFiles(live)

    assert [p.name for p in files.chain()] == [
        "audit.log.000001",
        "audit.log.000002",
        "audit.log.000010",
        "audit.log",
    ]
    assert files.next_rotated().name == "audit.log.000011"
    assert AuditFiles(tmp_path / "none" / "audit.log").chain() == []


def test_audit_files_last_lines_reach_back_into_rotated_files(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [3, 2, 1])

    last = AuditFiles(live).last_lines(4)

    assert [(p.name, json.loads(raw)["job_id"]) for p, raw in last] == [
        (files[0].name, "job-2"),
        (files[1].name, "job-3"),
        (files[1].name, "job-4"),
        ("audit.log", "job-5"),
    ]


def test_lines_backwards_skips_a_torn_tail_at_any_block_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"".join(b"line %d\n" % i for i in range(50)) + b"partial")

    for block in (1, 3, 7, 65536):
        assert list(lines_backwards(path, block)) == [b"line %d" % i for i in reversed(range(50))]
    assert list(lines_backwards(path, 5, end=14)) == [b"line 1", b"line 0"]


def test_verify_checks_the_chain_across_rotated_files(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [3, 4, 2])

    report = verify(live)

    assert (report.ok, report.lines, report.files, report.note) == (True, 9, tuple(files), "")


def test_verify_names_the_rotated_file_and_line_of_an_edit(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [3, 4, 2])
    lines = files[1].read_bytes().splitlines(keepends=True)
    record = json.loads(lines[2])
    record["cost_usd"] = 9.0
    lines[2] = encode_line(record)
    files[1].write_bytes(b"".join(lines))

    report = verify(live)

    assert (report.ok, report.bad_file, report.first_bad_line, report.lines) == (False, files[1], 3, 9)
    assert "edited" in report.reason


def test_verify_reports_a_live_file_that_does_not_join_the_rotated_one(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [3, 2])
    live.write_bytes(b"")
    write_log(live, [make_event("restarted-from-zero")])  # a fresh chain, as a manual rotation made

    report = verify(live)

    assert (report.ok, report.bad_file, report.first_bad_line) == (False, live, 1)
    assert f"the last line of {files[0].name}" in report.reason


def test_verify_reports_a_missing_rotated_file_by_its_number(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [2, 2, 2, 2])
    files[1].unlink()

    report = verify(live)

    assert (report.ok, report.bad_file, report.first_bad_line) == (False, files[2], 1)
    assert report.reason.startswith("audit.log.000002 is missing")


def test_verify_accepts_a_chain_whose_oldest_files_were_deleted_and_says_so(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [2, 2, 2])
    files[0].unlink()  # what audit.keep does

    report = verify(live)

    assert report.ok and report.lines == 4
    assert "starts in audit.log.000002" in report.note


def test_verify_still_rejects_a_deleted_first_line_of_the_first_file(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [3, 2])
    files[0].write_bytes(b"".join(files[0].read_bytes().splitlines(keepends=True)[1:]))

    report = verify(live)

    assert (report.ok, report.bad_file, report.first_bad_line) == (False, files[0], 1)
    assert "the start of the chain" in report.reason


def test_verify_rehashed_edit_breaks_the_first_line_of_the_next_file(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    files = _rotated_log(live, [2, 2])
    lines = files[0].read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["output_tokens"] = 1
    record["hash"] = line_hash(record)
    files[0].write_bytes(lines[0] + encode_line(record))

    report = verify(live)

    assert (report.bad_file, report.first_bad_line) == (live, 1)


def test_tail_reaches_back_into_rotated_files_and_filters(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    write_log(live.with_name("audit.log.000001"), [make_event("a1", service="search"), make_event("a2")])
    prev = json.loads(live.with_name("audit.log.000001").read_bytes().splitlines()[-1])["hash"]
    write_log(live, [make_event("b1"), make_event("b2", status="failed", model="smart")], prev)

    assert [line["job_id"] for line in tail(live, 3)] == ["a2", "b1", "b2"]
    assert [line["job_id"] for line in tail(live, 5, LineFilter(service="search"))] == ["a1"]
    assert [line["job_id"] for line in tail(live, 5, LineFilter(status="failed", model="smart"))] == ["b2"]
    assert tail(live, 0) == []


def test_tail_since_skips_older_lines_and_old_rotated_files(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    live = tmp_path / "audit.log"
    old = live.with_name("audit.log.000001")
    prev = write_log(old, [make_event("ancient", time=now - timedelta(days=30))])
    os.utime(old, (old.stat().st_atime, (now - timedelta(days=29)).timestamp()))
    write_log(
        live, [make_event("hour-ago", time=now - timedelta(hours=1)), make_event("now", time=now)], prev
    )

    recent = tail(live, 10, LineFilter(since=now - timedelta(minutes=90)))

    assert [line["job_id"] for line in recent] == ["hour-ago", "now"]
    assert AuditFiles(live).since(now - timedelta(days=2)) == [live]
    assert [line["job_id"] for line in scan(live, now - timedelta(minutes=30))] == ["now"]


def test_follow_moves_on_to_the_new_live_file_at_a_rotation(tmp_path: Path) -> None:
    live = tmp_path / "audit.log"
    prev = write_log(live, [make_event("before")])
    stop = threading.Event()
    seen = follow(live, from_start=True, poll_s=0.01, stop=stop)
    assert next(seen)["job_id"] == "before"

    prev = write_log(live, [make_event("last-of-old")], prev)
    live.rename(live.with_name("audit.log.000001"))  # the rotation, then the new live file
    write_log(live, [make_event("first-of-new"), make_event("second-of-new")], prev)

    assert [next(seen)["job_id"] for _ in range(3)] == ["last-of-old", "first-of-new", "second-of-new"]
    stop.set()
    assert list(seen) == []


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("7d", timedelta(days=7)),
        ("2w", timedelta(weeks=2)),
    ],
)
def test_parse_since_reads_durations_before_now(text: str, delta: timedelta) -> None:
    now = datetime.now(UTC)

    assert parse_since(text, now) == now - delta


def test_parse_since_reads_iso_times_naive_as_utc() -> None:
    now = datetime.now(UTC)
    moment = (now - timedelta(days=3)).replace(microsecond=0)

    assert parse_since(moment.isoformat(), now) == moment
    assert parse_since(moment.replace(tzinfo=None).isoformat(), now) == moment
    assert parse_since(moment.isoformat().replace("+00:00", "Z"), now) == moment


@pytest.mark.parametrize("text", ["1y", "yesterday", "-1h", "1.5h", "", "99999999999d"])
def test_parse_since_refuses_other_values_readably(text: str) -> None:
    with pytest.raises(ValueError, match="--since"):
        parse_since(text, datetime.now(UTC))


def test_line_filter_refuses_an_unknown_status() -> None:
    with pytest.raises(ValueError, match="--status 'done': one of succeeded, failed"):
        LineFilter(status="done")
