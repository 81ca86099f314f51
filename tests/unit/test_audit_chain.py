"""The audit line format without Redis: hash chain, verify, readers, event validation, scrubbing."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path

import pydantic
import pytest

from gateway.audit import (
    GENESIS_HASH,
    VerifyReport,
    encode_line,
    follow,
    line_hash,
    read_last_lines,
    request_sha256,
    scrub,
    seal,
    tail,
    verify,
)
from gateway.jobs import JobRequest
from tests.fakes.audit_events import make_event


def _write_chain(path: Path, count: int) -> list[bytes]:
    lines, prev = [], GENESIS_HASH
    for i in range(count):
        sealed = seal(make_event(f"job-{i}").record(), prev)
        lines.append(encode_line(sealed))
        prev = sealed["hash"]
    path.write_bytes(b"".join(lines))
    return lines


def test_verify_intact_chain_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_chain(path, 5)

    assert verify(path) == VerifyReport(
        ok=True, lines=5, first_bad_line=None, reason="chain intact", files=(path,)
    )


def test_verify_empty_file_is_ok(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.touch()

    report = verify(path)

    assert report.ok and report.lines == 0


def test_verify_edited_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 5)
    record = json.loads(lines[2])
    record["cost_usd"] = 0.0
    lines[2] = encode_line(record)
    path.write_bytes(b"".join(lines))

    report = verify(path)

    assert (report.ok, report.first_bad_line, report.lines) == (False, 3, 5)
    assert "edited" in report.reason


def test_verify_edited_and_rehashed_line_breaks_the_next_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 5)
    record = json.loads(lines[2])
    record["output_tokens"] = 1
    record["hash"] = line_hash(record)
    lines[2] = encode_line(record)
    path.write_bytes(b"".join(lines))

    assert verify(path).first_bad_line == 4


def test_verify_deleted_line_is_reported_where_the_gap_is(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 5)
    del lines[2]
    path.write_bytes(b"".join(lines))

    report = verify(path)

    assert (report.ok, report.first_bad_line, report.lines) == (False, 3, 4)
    assert "deleted" in report.reason


def test_verify_deleted_first_line_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 3)
    path.write_bytes(b"".join(lines[1:]))

    assert verify(path).first_bad_line == 1


def test_verify_swapped_lines_report_the_first_of_them(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 5)
    lines[1], lines[2] = lines[2], lines[1]
    path.write_bytes(b"".join(lines))

    report = verify(path)

    assert (report.ok, report.first_bad_line) == (False, 2)
    assert "reordered" in report.reason


def test_verify_garbage_and_torn_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 3)
    path.write_bytes(b"".join(lines) + b'{"job_id": "half')

    assert (verify(path).first_bad_line, verify(path).reason) == (4, "incomplete last line (torn write)")

    path.write_bytes(lines[0] + b"not json\n" + lines[1])
    assert (verify(path).first_bad_line, verify(path).lines) == (2, 3)


def test_seal_hash_covers_prev_and_content() -> None:
    record = make_event().record()

    sealed = seal(record, GENESIS_HASH)
    without_hash = {k: v for k, v in sealed.items() if k != "hash"}
    canonical = json.dumps(without_hash, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    assert sealed["prev"] == GENESIS_HASH
    assert sealed["hash"] == hashlib.sha256(canonical.encode()).hexdigest()
    assert seal(record, "1" * 64)["hash"] != sealed["hash"]


def test_request_sha256_hashes_canonical_json() -> None:
    content = {"prompt": "Grüße", "max_tokens": 5, "metadata": {"b": 1, "a": 2}}

    digest = request_sha256(content)

    expected = '{"max_tokens":5,"metadata":{"a":2,"b":1},"prompt":"Grüße"}'
    assert digest == hashlib.sha256(expected.encode("utf-8")).hexdigest()
    assert request_sha256(dict(reversed(content.items()))) == digest


def test_request_sha256_of_a_model_equals_its_json_dump() -> None:
    request = JobRequest(prompt="hello", max_tokens=10)

    assert request_sha256(request) == request_sha256(request.model_dump(mode="json"))


def test_scrub_redacts_secret_keys_and_key_like_strings() -> None:
    body = {
        "api_key": "abc",
        "headers": {"Authorization": "Bearer abcdefghijkl", "X-Api-Key": "k", "accept": "json"},
        "max_tokens": 100,
        "usage": {"input_tokens": 3},
        "messages": [{"content": "my key is sk-ant-api03-abcdefghijkl and sk-proj-0123456789abcdefXYZ"}],
        "note": "task-0123456789abcdefghij is not a key; Bearer abcdefghijkl is",
        "db": {"password": {"nested": "x"}, "client_secret": "s", "refresh_token": "t"},
    }

    clean = scrub(body)

    assert clean["api_key"] == "[redacted]"
    assert clean["headers"] == {"Authorization": "[redacted]", "X-Api-Key": "[redacted]", "accept": "json"}
    assert clean["max_tokens"] == 100 and clean["usage"] == {"input_tokens": 3}
    assert clean["messages"][0]["content"] == "my key is [redacted] and [redacted]"
    assert clean["note"] == "task-0123456789abcdefghij is not a key; Bearer [redacted] is"
    assert clean["db"] == {
        "password": "[redacted]",
        "client_secret": "[redacted]",
        "refresh_token": "[redacted]",
    }
    assert body["api_key"] == "abc"  # the input is left alone


def test_scrub_accepts_policy_extensions() -> None:
    body = {"customer_pin": "1234", "text": "ticket ACME-SECRET-99 opened"}

    clean = scrub(body, extra_keys=re.compile(r"_pin$"), extra_values=[re.compile(r"ACME-SECRET-\d+")])

    assert clean == {"customer_pin": "[redacted]", "text": "ticket [redacted] opened"}


def test_audit_event_scrubs_bodies_and_error_message() -> None:
    event = make_event(
        request={"prompt": "hi", "api_key": "sk-0123456789abcdefgh"},
        response="echo sk-0123456789abcdefgh",
        error_message="401 for key sk-0123456789abcdefgh",
    )

    assert "sk-0123456789abcdefgh" not in json.dumps(event.record())


def test_audit_event_record_omits_absent_bodies() -> None:
    record = make_event().record()

    assert "request" not in record and "response" not in record
    assert record["policy"] == [] and record["skill"] is None and record["offline"] is False


def test_audit_event_rejects_unknown_fields_and_bad_values() -> None:
    with pytest.raises(pydantic.ValidationError):
        make_event(prompt="hi")
    with pytest.raises(pydantic.ValidationError):
        make_event(status="done")
    with pytest.raises(pydantic.ValidationError):
        make_event(request_sha256="abc")
    with pytest.raises(pydantic.ValidationError):
        make_event(latency_ms=float("nan"))


def test_audit_event_time_is_utc_with_milliseconds() -> None:
    assert make_event(time="2025-01-31T13:00:00.123456+01:00").time == "2025-01-31T12:00:00.123Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", make_event().time)
    with pytest.raises(pydantic.ValidationError):
        make_event(time="2025-01-31T13:00:00")


def test_read_last_lines_reads_backwards_and_skips_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)) + b"partial")

    assert read_last_lines(path, 3, block_size=7) == [b"line 97", b"line 98", b"line 99"]
    assert read_last_lines(path, 1000, block_size=7) == [f"line {i}".encode() for i in range(100)]
    assert read_last_lines(path, 0) == []


def test_tail_returns_the_last_lines_parsed_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    _write_chain(path, 10)

    assert [line["job_id"] for line in tail(path, 3)] == ["job-7", "job-8", "job-9"]


def test_follow_yields_lines_as_they_are_appended(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    lines = _write_chain(path, 3)
    path.write_bytes(lines[0])
    stop = threading.Event()
    lines_seen = follow(path, from_start=True, poll_s=0.01, stop=stop)

    assert next(lines_seen)["job_id"] == "job-0"
    with path.open("ab") as file:
        file.write(lines[1][:10])
        file.flush()
        file.write(lines[1][10:] + lines[2])
    assert [next(lines_seen)["job_id"], next(lines_seen)["job_id"]] == ["job-1", "job-2"]
    stop.set()
    assert list(lines_seen) == []
