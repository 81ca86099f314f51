"""``aigw audit``: tail, verify, report and anomalies read the log's files (the live one and the
rotated ones); ``writer`` runs until stopped, draining the stream into them.

The readers never print more of a line than the line holds: bodies are in it only under the
``log_all_requests_and_responses`` policy, and secrets were scrubbed before it was written.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.table import Table

from gateway.cli.helpers import ConfigOpt, connect, fail, out, read_config, settings_of, setup_logging
from gateway.config import Config

audit_app = typer.Typer(no_args_is_help=True, help="The audit log: read it, check it, sum it up.")

PathOpt = Annotated[Path | None, typer.Option(help="Audit log path (the live file; rotated ones beside it).")]
SinceOpt = Annotated[str | None, typer.Option(help="From this long ago (30m, 1h, 7d) or an ISO time.")]


def _live_path(config: Config, home: Path) -> Path:
    return Path(config.gateway.audit.path or home / "audit.log").expanduser()


def _existing_log(
    ctx: typer.Context, config: Path | None, path: Path | None, cfg: Config | None = None
) -> Path:
    """``--path``, else the config's audit log; one readable line and exit 1 when it has no file."""
    from gateway.audit import AuditFiles

    settings = settings_of(ctx)
    target = path or _live_path(cfg or read_config(settings, config), settings.home)
    if not AuditFiles(target).chain():
        fail(f"no audit log at {target}")
    return target


def _since(text: str | None, now: datetime) -> datetime | None:
    from gateway.audit import parse_since

    if text is None:
        return None
    try:
        return parse_since(text, now)
    except ValueError as exc:
        fail(str(exc))


def _print_line(line: dict[str, Any]) -> None:
    out.print(json.dumps(line), soft_wrap=True, markup=False)


@audit_app.command("tail")
def audit_tail(
    ctx: typer.Context,
    config: ConfigOpt = None,
    lines: Annotated[int, typer.Option("-n", min=0, help="How many lines.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing lines as they come.")] = False,
    service: Annotated[str | None, typer.Option(help="Only this service's lines.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model alias.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status (succeeded, failed, ...).")] = None,
    since: SinceOpt = None,
    path: PathOpt = None,
) -> None:
    """The last audit lines (one JSON object each), across rotated files; -f follows rotations."""
    from gateway.audit import LineFilter, tail
    from gateway.audit import follow as follow_lines

    try:
        where = LineFilter(service, model, status, _since(since, datetime.now(UTC)))
    except ValueError as exc:
        fail(str(exc))
    target = _existing_log(ctx, config, path)
    if not follow:
        for line in tail(target, lines, where):
            _print_line(line)
        return
    # -f goes on from where the tail stopped reading, in the same open file: no line is missed or twice
    opened = target.open("rb") if target.exists() else None  # absent: a crash mid-rotation
    offset = os.fstat(opened.fileno()).st_size if opened else 0
    for line in tail(target, lines, where, live_end=offset if opened else None):
        _print_line(line)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for line in follow_lines(target, offset=offset, opened=opened, stop=stop):
            if where(line):
                _print_line(line)
    except KeyboardInterrupt:
        stop.set()


@audit_app.command("verify")
def audit_verify(ctx: typer.Context, config: ConfigOpt = None, path: PathOpt = None) -> None:
    """Check the hash chain across every file; exits 1 at the first edited, deleted or reordered line."""
    from gateway.audit import verify

    target = _existing_log(ctx, config, path)
    report = verify(target)
    if not report.ok:
        assert report.bad_file is not None
        fail(f"{report.bad_file}: chain broken at line {report.first_bad_line}: {report.reason}")
    across = f" across {len(report.files)} files" if len(report.files) > 1 else ""
    out.print(f"[green]ok[/] {target}: {report.lines} lines, chain intact{across}", markup=True)
    if report.note:
        out.print(f"note: {report.note}", markup=False)


@audit_app.command("report")
def audit_report(
    ctx: typer.Context,
    config: ConfigOpt = None,
    by: Annotated[
        str, typer.Option(help="Group by: service, model, day (comma-separated).")
    ] = "service,model",
    since: SinceOpt = "7d",
    output: Annotated[
        Literal["table", "csv", "json"], typer.Option("--format", help="table, csv or json.")
    ] = "table",
    path: PathOpt = None,
) -> None:
    """Requests, failures, tokens, cost and latency percentiles per group; unpriced models show as unknown."""
    from gateway.audit import parse_group_by, priced_deployments, report

    try:
        keys = parse_group_by(by)
    except ValueError as exc:
        fail(str(exc))
    moment = _since(since, datetime.now(UTC))
    cfg = read_config(settings_of(ctx), config)  # its prices
    target = _existing_log(ctx, config, path, cfg)
    result = report(target, keys, moment, priced_deployments(cfg.models))
    rows = [_report_record(row.group, row) for row in result.rows]
    total = _report_record({k: "total" if i == 0 else "" for i, k in enumerate(keys)}, result.total)
    if output == "json":
        out.print_json(
            json.dumps({"since": moment.isoformat() if moment else None, "rows": rows, "total": total})
        )
    elif output == "csv":
        _print_csv([*rows, total])
    else:
        _print_report_table(keys, rows, total, moment)


def _report_record(group: dict[str, str | None], row: Any) -> dict[str, Any]:
    """One row as JSON: the cost as an exact decimal string, ``null`` when unknown."""
    return {
        **group,
        "requests": row.requests,
        "attempts": row.attempts,
        "failures": row.failures,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_usd": None if row.cost_usd is None else str(row.cost_usd),
        "unpriced": row.unpriced,
        "p50_latency_ms": _ms(row.p50_latency_ms),
        "p95_latency_ms": _ms(row.p95_latency_ms),
    }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _cost_text(record: dict[str, Any]) -> str:
    if record["cost_usd"] is None:
        return "unknown"
    dollars = f"${Decimal(record['cost_usd']).quantize(Decimal('0.000001'))}"
    return f"{dollars} + {record['unpriced']} unpriced" if record["unpriced"] else dollars


def _print_csv(records: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(
        {k: "unknown" if k == "cost_usd" and v is None else v for k, v in r.items()} for r in records
    )
    out.print(buffer.getvalue(), end="", soft_wrap=True, markup=False)


def _print_report_table(
    keys: tuple[str, ...], rows: list[dict[str, Any]], total: dict[str, Any], since: datetime | None
) -> None:
    title = f"audit since {since:%Y-%m-%d %H:%M} UTC" if since else "audit, whole log"
    numbers = ("requests", "failures", "tokens in", "tokens out", "cost", "p50 ms", "p95 ms")
    table = Table(*keys, *numbers, title=title)
    for record in [*rows, total]:
        table.add_row(
            *(record[k] or ("-" if record is not total else "") for k in keys),
            str(record["requests"]),
            str(record["failures"]),
            str(record["input_tokens"]),
            str(record["output_tokens"]),
            _cost_text(record),
            _latency_text(record["p50_latency_ms"]),
            _latency_text(record["p95_latency_ms"]),
            end_section=record is rows[-1] if rows else False,
        )
    out.print(table)
    if total["unpriced"]:
        out.print(
            f"{total['unpriced']} line(s) used a deployment without `pricing` in models.yaml: their cost is "
            "unknown and left out of the sums (give it `pricing`, 0 for a free one)",
            markup=False,
        )


def _latency_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@audit_app.command("anomalies")
def audit_anomalies(
    ctx: typer.Context,
    config: ConfigOpt = None,
    since: Annotated[
        str, typer.Option(help="The recent window to check (1h, 24h, 2d) or an ISO time.")
    ] = "24h",
    baseline: Annotated[
        int, typer.Option(min=1, max=366, help="Days before the window that set the norm.")
    ] = 14,
    output: Annotated[Literal["table", "json"], typer.Option("--format", help="table or json.")] = "table",
    path: PathOpt = None,
) -> None:
    """Each service's recent hours against its own baseline: volume, cost, failures, new models, odd hours."""
    from gateway.audit import anomalies, priced_deployments

    now = datetime.now(UTC)
    start = _since(since, now)
    assert start is not None
    cfg = read_config(settings_of(ctx), config)  # its prices
    target = _existing_log(ctx, config, path, cfg)
    found = anomalies(target, now, now - start, timedelta(days=baseline), priced_deployments(cfg.models))
    if output == "json":
        flags = [{**vars(a), "hour": a.hour.isoformat()} for a in found.anomalies]
        window = {
            "window_start": found.window_start.isoformat(),
            "baseline_start": found.baseline_start.isoformat(),
        }
        out.print_json(json.dumps({**window, "anomalies": flags, "notes": found.notes}))
        return
    if not found.anomalies:
        out.print(f"no anomalies since {found.window_start:%Y-%m-%d %H}:00 UTC", markup=False)
    else:
        since_text = f"{found.window_start:%Y-%m-%d %H}:00 UTC"
        title = f"anomalies since {since_text} (baseline from {found.baseline_start:%Y-%m-%d})"
        table = Table("hour (UTC)", "service", "check", "observed", "baseline", "why", title=title)
        for a in found.anomalies:
            table.add_row(f"{a.hour:%m-%d %H}:00", a.service, a.kind, a.observed, a.baseline, a.reason)
        out.print(table)
    for note in found.notes:
        out.print(f"note: {note}", markup=False)


@audit_app.command("writer")
def audit_writer(ctx: typer.Context, config: ConfigOpt = None, path: PathOpt = None) -> None:
    """Drain the audit stream into the JSON-lines file (one writer per file; `aigw up` runs one)."""
    from gateway.audit import AuditWriter

    settings = settings_of(ctx)
    setup_logging(settings)
    cfg = read_config(settings, config)
    target = path or _live_path(cfg, settings.home)
    audit = cfg.gateway.audit
    writer = AuditWriter(
        connect(settings, cfg),
        target,
        consumer=f"writer-{os.getpid()}",
        rotate_bytes=audit.rotate_bytes,
        keep=audit.keep,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        writer.run(stop)
    except KeyboardInterrupt:
        stop.set()
