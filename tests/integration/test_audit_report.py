"""``aigw audit report`` on logs the real writer made from a real Redis: totals equal the sum of the
lines to the micro-dollar across rotated files, an unpriced model is unknown and never $0, and
a stack's own plain, streamed and cached calls add up the same way."""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from gateway.audit import AuditEvent, AuditFiles, AuditWriter, append_event, report
from gateway.cli import app
from tests.fakes.audit_events import make_event
from tests.integration.harness import StartStack, submit

runner = CliRunner()
PRICED = frozenset({"general/0:anthropic", "openai/0:openai"})


def _file_lines(live: Path) -> list[dict[str, Any]]:
    """Every line of every file, with costs read as the decimal digits written."""
    return [
        json.loads(raw, parse_float=Decimal)
        for path in AuditFiles(live).chain()
        for raw in path.read_bytes().splitlines()
    ]


def _synthetic(now: datetime) -> list[AuditEvent]:
    """Two days of calls with costs at the worker's 8-decimal precision: priced, cached (no
    tokens, no cost), retried, failed, and some on an unpriced local deployment."""
    rng = random.Random(14)
    events = []
    for i in range(300):
        kind = rng.choice(["priced", "priced", "priced", "cached", "unpriced", "retrying", "failed"])
        model, deployment = rng.choice([("general", "general/0:anthropic"), ("openai", "openai/0:openai")])
        fields: dict[str, Any] = {
            "time": now - timedelta(minutes=rng.randrange(2 * 24 * 60)),
            "service": rng.choice(["billing", "search"]),
            "model": model,
            "deployment": deployment,
            "input_tokens": rng.randint(1, 5000),
            "output_tokens": rng.randint(0, 2000),
            "cost_usd": rng.randint(1, 10**6) / 10**8,
            "latency_ms": float(rng.randint(50, 5000)),
        }
        if kind == "cached":
            fields |= {
                "cached": True,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": 0.0,
                "latency_ms": 0.0,
            }
        elif kind == "unpriced":
            fields |= {"model": "sensitive", "deployment": "sensitive/0:ollama", "cost_usd": 0.0}
        elif kind in ("retrying", "failed"):
            fields |= {"status": kind, "error_type": "provider_unavailable"}
        events.append(make_event(f"job-{i}", **fields))
    # one call of a priced alias that fell back to an unpriced deployment: a mixed group
    events.append(make_event("mixed", service="billing", model="general", deployment="general/1:ollama",
                             time=now - timedelta(minutes=5), cost_usd=0.0, input_tokens=9))  # fmt: skip
    return events


@pytest.fixture
def live(tmp_path: Path) -> Path:
    return tmp_path / "audit.log"


@pytest.fixture
def written(redis_client: redis.Redis, live: Path) -> Iterator[list[AuditEvent]]:
    events = _synthetic(datetime.now(UTC))
    for event in events:
        append_event(redis_client, event)
    with AuditWriter(redis_client, live, consumer="w", batch_size=50, rotate_bytes=65_536) as writer:
        assert writer.run_once() == len(events)
    assert len(AuditFiles(live).rotated()) >= 2
    yield events


def test_report_totals_equal_the_lines_to_the_micro_dollar(written: list[AuditEvent], live: Path) -> None:
    lines = _file_lines(live)

    result = report(live, ("service", "model", "day"), None, PRICED)

    priced_cost = sum((line["cost_usd"] for line in lines if line["deployment"] in PRICED), Decimal(0))
    assert result.total.cost_usd == priced_cost  # exact: Decimal all the way
    assert sum((row.cost_usd or Decimal(0) for row in result.rows), Decimal(0)) == result.total.cost_usd
    assert result.total.cost_usd.quantize(Decimal("0.000001")) == priced_cost.quantize(Decimal("0.000001"))
    assert result.total.input_tokens == sum(line["input_tokens"] for line in lines)
    assert result.total.output_tokens == sum(line["output_tokens"] for line in lines)
    assert result.total.attempts == len(lines) == len(written)
    assert result.total.requests == sum(line["status"] != "retrying" for line in lines)
    assert result.total.failures == sum(line["status"] == "failed" for line in lines)
    assert result.total.unpriced == sum(
        line["deployment"] not in PRICED and line["input_tokens"] > 0 for line in lines
    )


def test_report_shows_an_unpriced_model_as_unknown_and_a_mixed_group_as_such(
    written: list[AuditEvent], live: Path
) -> None:
    rows = {tuple(row.group.values()): row for row in report(live, ("service", "model"), None, PRICED).rows}

    for service in ("billing", "search"):
        unpriced = rows[(service, "sensitive")]
        assert unpriced.cost_usd is None and unpriced.unpriced == unpriced.attempts > 0
    mixed = rows[("billing", "general")]
    assert mixed.unpriced == 1 and mixed.cost_usd is not None and mixed.cost_usd > 0
    assert rows[("search", "general")].unpriced == 0


def test_report_latency_leaves_out_cached_answers(written: list[AuditEvent], live: Path) -> None:
    lines = _file_lines(live)
    called = sorted(float(line["latency_ms"]) for line in lines if not line["cached"])

    total = report(live, ("service",), None, PRICED).total

    assert total.p50_latency_ms == pytest.approx(statistics.median(called))
    assert total.p95_latency_ms == pytest.approx(statistics.quantiles(called, n=100, method="inclusive")[94])


def test_report_since_reads_only_the_lines_from_then(written: list[AuditEvent], live: Path) -> None:
    since = datetime.now(UTC) - timedelta(hours=12)
    recent = [line for line in _file_lines(live) if datetime.fromisoformat(line["time"]) >= since]

    result = report(live, ("day",), since, PRICED)

    assert result.total.attempts == len(recent)
    assert result.total.cost_usd == sum(
        (line["cost_usd"] for line in recent if line["deployment"] in PRICED), Decimal(0)
    )
    assert [row.group["day"] for row in result.rows] == sorted(
        {datetime.fromisoformat(line["time"]).date().isoformat() for line in recent}
    )


def test_cli_audit_report_formats(written: list[AuditEvent], live: Path, config_dir: Path) -> None:
    args = ["audit", "report", "--path", str(live), "--config", str(config_dir), "--since", "30d"]

    as_json = runner.invoke(app, [*args, "--format", "json", "--by", "model"])
    as_csv = runner.invoke(app, [*args, "--format", "csv", "--by", "service,model"])
    table = runner.invoke(app, [*args, "--by", "service,model,day"], env={"COLUMNS": "200"})

    assert as_json.exit_code == as_csv.exit_code == table.exit_code == 0, as_json.output + table.output
    data = json.loads(as_json.output)
    assert [row["model"] for row in data["rows"]] == ["general", "openai", "sensitive"]
    assert data["rows"][2]["cost_usd"] is None  # the shipped models.yaml prices no sensitive/0:ollama
    assert Decimal(data["total"]["cost_usd"]) == sum(
        (Decimal(row["cost_usd"]) for row in data["rows"] if row["cost_usd"] is not None), Decimal(0)
    )
    records = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert records[-1]["service"] == "total" and {
        r["cost_usd"] for r in records if r["model"] == "sensitive"
    } == {"unknown"}
    assert "unknown" in table.output and "unpriced" in table.output and "$0.000000" not in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--by", "service,colour"], "--by 'service,colour'"), (["--since", "soon"], "--since 'soon'")],
)
def test_cli_audit_report_bad_options_are_one_line(
    written: list[AuditEvent], live: Path, config_dir: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["audit", "report", "--path", str(live), "--config", str(config_dir), *args])

    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_report_of_a_stacks_plain_streamed_and_cached_calls_adds_up(
    stack: StartStack, redis_client: redis.Redis, config_dir: Path, tmp_path: Path
) -> None:
    s = stack(policies=[], services={"svc-a": {"cache": True}})
    plain = submit(s.api, {"prompt": "what is the audit for", "model": "general"}).json()
    cached = submit(s.api, {"prompt": "what is the audit for", "model": "general"}).json()
    local = submit(s.api, {"prompt": "keep this local", "model": "sensitive"}).json()
    with s.api.client() as client:
        body = {"model": "openai", "stream": True, "messages": [{"role": "user", "content": "stream it"}]}
        streamed = client.post("/v1/chat/completions", json=body)
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert (plain["status"], cached["result"]["cached"], local["status"]) == ("succeeded", True, "succeeded")
    live = tmp_path / "stack-audit.log"
    with AuditWriter(redis_client, live, consumer="t") as writer:
        assert writer.run_once() == 4
    lines = _file_lines(live)

    result = runner.invoke(
        app,
        [
            "audit",
            "report",
            "--path",
            str(live),
            "--config",
            str(config_dir),
            "--format",
            "json",
            "--since",
            "1h",
        ],
    )

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    rows = {row["model"]: row for row in data["rows"]}
    assert Decimal(data["total"]["cost_usd"]) == sum((line["cost_usd"] for line in lines), Decimal(0)) > 0
    assert Decimal(rows["general"]["cost_usd"]) == Decimal(
        str(plain["result"]["cost_usd"])
    )  # the cached call: $0
    assert rows["general"]["requests"] == 2 and rows["openai"]["cost_usd"] not in (None, "0")
    assert rows["sensitive"]["cost_usd"] is None and rows["sensitive"]["unpriced"] == 1
    assert data["total"]["input_tokens"] == sum(line["input_tokens"] for line in lines)
