"""``aigw audit tail|verify|anomalies`` on logs the real writer rotated: what a user types and reads,
``tail -f`` as a real process following the writer across rotations."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
import redis
from typer.testing import CliRunner

from gateway.audit import AuditFiles, AuditWriter, append_event, encode_line
from gateway.cli import app
from tests.fakes.audit_events import BUSINESS_HOURS, hour_events, make_event, quiet_traffic, write_log

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


def _write(redis_client: redis.Redis, live: Path, *jobs: tuple[str, dict[str, object]]) -> None:
    for job_id, fields in jobs:
        append_event(redis_client, make_event(job_id, **fields))
    with AuditWriter(redis_client, live, consumer="w", batch_size=1, rotate_bytes=2_000) as writer:
        writer.run_once()


def _audit(config_dir: Path, live: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args, "--path", str(live), "--config", str(config_dir)], env=WIDE)
    return result.exit_code, result.output


def test_cli_audit_tail_filters_across_rotated_files(
    redis_client: redis.Redis, live: Path, config_dir: Path
) -> None:
    hour_ago = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)
    _write(
        redis_client,
        live,
        ("old", {"time": hour_ago, "service": "search"}),
        ("a", {"service": "search"}),
        ("b", {"status": "failed", "model": "smart", "error_type": "provider_unavailable"}),
        ("c", {}),
        ("d", {"service": "search", "status": "failed"}),
        ("e", {}),
    )
    assert len(AuditFiles(live).rotated()) >= 2

    def jobs(*args: str) -> list[str]:
        code, output = _audit(config_dir, live, "tail", *args)
        assert code == 0, output
        return [json.loads(line)["job_id"] for line in output.splitlines()]

    assert jobs() == ["old", "a", "b", "c", "d", "e"]
    assert jobs("-n", "2") == ["d", "e"]
    assert jobs("--service", "search") == ["old", "a", "d"]
    assert jobs("--service", "search", "--since", "1h") == ["a", "d"]
    assert jobs("--status", "failed", "-n", "1") == ["d"]
    assert jobs("--model", "smart") == ["b"]
    assert jobs("--since", hour_ago.isoformat()) == ["old", "a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since 'yesterday': give a duration (30m, 1h, 7d, 2w) or an ISO time"),
        (["--status", "done"], "--status 'done': one of succeeded, failed, canceled, retrying, refused"),
    ],
)
def test_cli_audit_tail_bad_values_are_one_readable_line(
    live: Path, config_dir: Path, args: list[str], message: str
) -> None:
    write_log(live, [make_event()])

    code, output = _audit(config_dir, live, "tail", *args)

    assert code == 1 and message in output and len(output.strip().splitlines()) == 1


def test_cli_audit_commands_without_a_log_say_so(tmp_path: Path, config_dir: Path) -> None:
    for command in ("tail", "verify", "report", "anomalies"):
        code, output = _audit(config_dir, tmp_path / "nowhere" / "audit.log", command)
        assert code == 1 and "no audit log at" in output, command


def test_cli_audit_verify_across_files_names_the_file_and_line(
    redis_client: redis.Redis, live: Path, config_dir: Path
) -> None:
    _write(redis_client, live, *((f"job-{i}", {}) for i in range(8)))
    files = AuditFiles(live).chain()

    code, output = _audit(config_dir, live, "verify")
    assert (code, output.strip()) == (0, f"ok {live}: 8 lines, chain intact across {len(files)} files")

    lines = files[1].read_bytes().splitlines(keepends=True)
    record = json.loads(lines[-1])
    record["status"] = "failed"
    files[1].write_bytes(b"".join(lines[:-1]) + encode_line(record))
    code, output = _audit(config_dir, live, "verify")
    assert code == 1
    assert f"{files[1]}: chain broken at line {len(lines)}: hash does not match" in output.replace("\n", "")


def test_cli_audit_tail_follow_prints_new_lines_across_rotations(
    redis_client: redis.Redis, redis_url: str, live: Path, config_dir: Path
) -> None:
    _write(redis_client, live, ("before-1", {}), ("before-2", {"service": "search"}))
    command = [sys.executable, "-m", "gateway.cli", "audit", "tail", "-f", "-n", "1", "--service", "billing"]
    env = {**os.environ, "REDIS_URL": redis_url, "AIGW_CONFIG": str(config_dir), "PYTHONUNBUFFERED": "1"}
    seen: queue.Queue[str] = queue.Queue()

    def read(stdout: IO[bytes]) -> None:
        for raw in stdout:
            seen.put(json.loads(raw)["job_id"])

    with subprocess.Popen(
        [*command, "--path", str(live)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    ) as tail:
        assert tail.stdout is not None and tail.stderr is not None
        reader = threading.Thread(target=read, args=(tail.stdout,), daemon=True)
        reader.start()
        try:
            assert seen.get(timeout=20) == "before-1"
            news: list[tuple[str, dict[str, object]]] = [(f"new-{i}", {}) for i in range(6)]
            _write(redis_client, live, *news, ("other", {"service": "search"}), ("last", {}))
            assert [seen.get(timeout=20) for _ in range(7)] == [*(job for job, _ in news), "last"]
            assert len(AuditFiles(live).rotated()) >= 3
        finally:
            tail.send_signal(signal.SIGTERM)
            code = tail.wait(timeout=20)
            reader.join(timeout=20)
        assert code == 0, tail.stderr.read()
    assert seen.empty()  # "other", read before "last", is another service's


def test_cli_audit_anomalies_quiet_and_spiked(live: Path, config_dir: Path) -> None:
    now = datetime.now(UTC)
    write_log(live, quiet_traffic(now))

    code, output = _audit(config_dir, live, "anomalies")
    assert code == 0 and output.startswith("no anomalies since"), output

    start = (now - timedelta(hours=24)).replace(minute=0, second=0, microsecond=0)
    busy = next(
        start + timedelta(hours=i)
        for i in range(1, 24)
        if (start + timedelta(hours=i)).hour in BUSINESS_HOURS
    )
    spiked = live.with_name("spiked.log")
    write_log(spiked, sorted(quiet_traffic(now) + hour_events("billing", busy, 400), key=lambda e: e.time))

    code, output = _audit(config_dir, spiked, "anomalies", "--format", "json")
    assert code == 0, output
    data = json.loads(output)
    assert {(a["service"], a["kind"], a["hour"]) for a in data["anomalies"]} >= {
        ("billing", "volume", busy.isoformat())
    }
    code, table = _audit(config_dir, spiked, "anomalies")
    assert "volume" in table and "robust z" in table
