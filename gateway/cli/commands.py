"""The ``aigw`` commands that use a running stack: ask, dashboard, gateway status, config check, service
tokens, jobs and policy explain (the audit log's are in ``audit_commands.py``).
``gateway/cli/__init__.py`` mounts the groups and ``ask``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table

from gateway.cli.helpers import (
    ConfigOpt,
    config_dir,
    connect,
    err,
    fail,
    out,
    read_config,
    settings_of,
    try_connect,
)
from gateway.config import load_config
from gateway.errors import ConfigError, GatewayError
from gateway.home import noted_api_url
from gateway.settings import Settings
from gateway.validation import first_error

gateway_app = typer.Typer(no_args_is_help=True, help="Inspect the running gateway.")
config_app = typer.Typer(no_args_is_help=True, help="Validate configuration.")
service_app = typer.Typer(no_args_is_help=True, help="Service tokens.")
jobs_app = typer.Typer(no_args_is_help=True, help="Jobs.")
policy_app = typer.Typer(no_args_is_help=True, help="Policies.")


# --- using it ------------------------------------------------------------------------------------


def ask(
    ctx: typer.Context,
    question: str,
    model: Annotated[str | None, typer.Option(help="Model alias.")] = None,
    task: Annotated[str | None, typer.Option(help="Task tag (matched against use_for).")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the answer.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 60.0,
    url: Annotated[str | None, typer.Option(envvar="AIGW_URL", help="API URL.")] = None,
    token: Annotated[str | None, typer.Option(envvar="AIGW_TOKEN", help="Service token.")] = None,
) -> None:
    """Send a question through the gateway and print the answer."""
    from gateway.client import AigwError, Client

    if not token:
        fail("no service token: set AIGW_TOKEN (printed by the first `aigw up`) or pass --token")
    try:
        # no --url / AIGW_URL: the URL `aigw up` noted in $AIGW_HOME
        with Client(url, token, environ=settings_of(ctx).environ) as client:
            job = client.submit(question, model=model, task=task, wait=min(timeout, 30) if wait else 0)
            if wait:
                job = client.wait(job["id"], timeout=timeout)
    except AigwError as exc:  # the API unreachable, or its error envelope
        fail(str(exc))
    _print_job(job, wait)


def _print_job(job: dict[str, Any], waited: bool) -> None:
    status = job["status"]
    if status == "succeeded":
        result = job["result"]
        out.print(result["output"], soft_wrap=True, markup=False)
        label = " (offline provider)" if result.get("offline") else ""
        label += " · draft, pending review" if result.get("draft") else ""
        usage = result["usage"]
        tokens = f"{usage['input_tokens']}+{usage['output_tokens']} tokens"
        err.print(
            f"[dim]{result['model']} via {result['provider']}/{result['provider_model']}{label} · "
            f"{tokens} · ${result['cost_usd']:.6f} · job {job['id']}[/]"
        )
    elif status in ("failed", "canceled"):
        error = job.get("error") or {}
        fail(f"job {job['id']} {status}: {error.get('type', '')}: {error.get('message', '')}")
    else:
        out.print(f"job {job['id']} is {status}")
        if waited:
            raise typer.Exit(2)


@gateway_app.command("status")
def gateway_status(
    ctx: typer.Context,
    config: ConfigOpt = None,
    url: Annotated[str | None, typer.Option(envvar="AIGW_URL", help="API URL.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """API, Redis, queues, workers, in-flight and failed jobs."""
    import httpx

    from gateway.status import stack_status

    settings = settings_of(ctx)
    cfg = read_config(settings, config)
    api_url = url or noted_api_url(f"http://{cfg.gateway.api.host}:{cfg.gateway.api.port}", settings.environ)
    try:
        api_ok = httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        api_ok = False
    status = stack_status(connect(settings, cfg), cfg)
    status["api"] = {"url": api_url, "ok": api_ok}
    if as_json:
        out.print_json(json.dumps(status))
    else:
        _print_status(status)
    if not api_ok:
        raise typer.Exit(1)


def _print_status(status: dict[str, Any]) -> None:
    api_, rds = status["api"], status["redis"]
    out.print(f"API     {api_['url']}  " + ("[green]up[/]" if api_["ok"] else "[red]down[/]"))
    persistence = "AOF on" if rds["aof_enabled"] else "[yellow]AOF off[/]"
    memory = f"memory {rds['used_memory_human']}  {rds['maxmemory_policy']}"
    out.print(f"Redis   {rds['version']}  {persistence}  {memory}")
    table = Table("queue", "queued", "running", "retrying", "failed", "succeeded", title="Queues")
    for name, q in status["queues"].items():
        table.add_row(name, *(str(q[k]) for k in ("queued", "running", "retrying", "failed", "succeeded")))
    out.print(table)
    workers = Table("worker", "queues", "state", "pid", "ok", "failed", title="Live workers")
    for w in status["workers"]:
        workers.add_row(w["name"], ",".join(w["queues"]), w["state"], str(w["pid"]), str(w["successful"]),
                        str(w["failed"]))  # fmt: skip
    out.print(workers if status["workers"] else "[yellow]no live workers[/]")
    auth = status["auth_failures_last_hour"]
    out.print(f"Auth    {auth['refused']} failed, {auth['throttled']} throttled in the last hour")


@config_app.command("check")
def config_check(
    ctx: typer.Context, directory: Annotated[Path | None, typer.Argument(help="Config directory.")] = None
) -> None:
    """Validate every config file; names the file, entry and field of the first error."""
    settings = settings_of(ctx)
    target = config_dir(settings, directory)
    try:
        cfg = load_config(target)
    except ConfigError as exc:
        fail(str(exc))
    aliases = ", ".join(cfg.models.models)
    out.print(f"[green]ok[/] {cfg.directory}: {len(cfg.models.models)} models ({aliases}), "
              f"{len(cfg.policies.policies)} policies, {len(cfg.channels.channels)} channel(s), "
              f"{len(cfg.services.services)} service(s)")  # fmt: skip


# --- services ------------------------------------------------------------------------------------


def _registry(settings: Settings, config: Path | None) -> Any:
    from gateway.services import ServiceRegistry

    cfg = read_config(settings, config)
    return ServiceRegistry(connect(settings, cfg), cfg)


@service_app.command("add")
def service_add(ctx: typer.Context, name: str, config: ConfigOpt = None) -> None:
    """Create a token for a service (printed once)."""
    settings = settings_of(ctx)
    try:
        token = _registry(settings, config).create_token(name)
    except GatewayError as exc:
        fail(str(exc))
    out.print(token, soft_wrap=True)


@service_app.command("rotate")
def service_rotate(
    ctx: typer.Context,
    name: str,
    grace: Annotated[
        str, typer.Option(help="How long the old tokens keep working: 30s, 15m, 1h, 2d (0: revoked at once).")
    ] = "0",
    config: ConfigOpt = None,
) -> None:
    """Print a new token for a service; its old ones stop working after --grace."""
    from gateway.services import parse_grace

    settings = settings_of(ctx)
    try:
        seconds = parse_grace(grace)
        out.print(_registry(settings, config).rotate(name, seconds), soft_wrap=True)
    except GatewayError as exc:
        fail(str(exc))


@service_app.command("remove")
def service_remove(ctx: typer.Context, name: str, config: ConfigOpt = None) -> None:
    """Revoke every token of a service."""
    settings = settings_of(ctx)
    try:
        count = _registry(settings, config).remove(name)
    except GatewayError as exc:
        fail(str(exc))
    out.print(f"revoked {count} token(s) of {name}")


@service_app.command("list")
def service_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per token, a line each.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Every token: service, id, created, last used (approximate to a minute), expiry; never the token."""
    settings = settings_of(ctx)
    registry = _registry(settings, config)
    tokens = registry.tokens()
    if as_json:
        for info in tokens:
            out.print(json.dumps(info.as_json()), soft_wrap=True, markup=False)
        return
    table = Table("service", "id", "created", "last used", "expires")
    for info in tokens:
        source = " (services.yaml)" if info.declared else ""
        table.add_row(info.service, info.id + source, _when(info.created_at, "unknown"),
                      _when(info.last_used_at, "-"), _when(info.expires_at, "never"))  # fmt: skip
    for name in sorted(set(registry.config.services.services) - {t.service for t in tokens}):
        table.add_row(name, "(no token)", "", "", "")
    out.print(table)


def _when(stamp: float | None, otherwise: str) -> str:
    from datetime import UTC, datetime

    return otherwise if stamp is None else f"{datetime.fromtimestamp(stamp, UTC):%Y-%m-%d %H:%M:%S} UTC"


# --- jobs and policies -----------------------------------------------------------------------------


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, job_id: str, config: ConfigOpt = None) -> None:
    """Show one job (any service's) as JSON."""
    from gateway.store import JobStore

    settings = settings_of(ctx)
    cfg = read_config(settings, config)
    try:
        view = JobStore(connect(settings, cfg), cfg).view(job_id, None)
    except GatewayError as exc:
        fail(str(exc))
    out.print_json(view.model_dump_json(exclude_none=True))


@jobs_app.command("failed")
def jobs_failed(
    ctx: typer.Context,
    config: ConfigOpt = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Dead letters: failed jobs with their errors."""
    from gateway.store import JobStore, failed_jobs

    settings = settings_of(ctx)
    cfg = read_config(settings, config)
    views = failed_jobs(JobStore(connect(settings, cfg), cfg), limit)
    if as_json:
        for view in views:
            out.print(view.model_dump_json(exclude_none=True), soft_wrap=True, markup=False)
        return
    if not views:
        out.print("no failed jobs")
        return
    table = Table("service", "queue", "ended", "attempts", "error")
    table.columns.insert(0, Column("job", no_wrap=True, min_width=32))
    for view in views:
        error = view.error or {}
        table.add_row(view.id, view.service, view.queue, view.ended_at or "", str(view.attempts),
                      f"{error.get('type', '')}: {error.get('message', '')}")  # fmt: skip
    out.print(table)


@jobs_app.command("retry")
def jobs_retry(
    ctx: typer.Context,
    job_id: Annotated[str | None, typer.Argument(help="The failed job to requeue.")] = None,
    all_failed: Annotated[bool, typer.Option("--all-failed", help="Requeue every failed job.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Requeue a failed job, or all of them."""
    from rich.progress import track

    from gateway.store import JobStore, failed_jobs, retry_failed

    settings = settings_of(ctx)
    if (job_id is None) == (not all_failed):
        fail("give a job id or --all-failed")
    cfg = read_config(settings, config)
    store = JobStore(connect(settings, cfg), cfg)
    ids = [job_id] if job_id else [v.id for v in failed_jobs(store, limit=1_000_000)]
    for one in track(ids, description="requeueing", console=err, disable=len(ids) < 20):
        try:
            retry_failed(store, one)
        except GatewayError as exc:
            fail(str(exc))
    out.print(f"requeued {len(ids)} job(s)")


@jobs_app.command("review")
def jobs_review(
    ctx: typer.Context,
    job_id: str,
    approve: Annotated[bool, typer.Option("--approve", help="Approve the draft.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Reject the draft.")] = False,
    comment: Annotated[str | None, typer.Option(help="Why (kept with the review).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Approve or reject a draft result (all_outputs_are_drafts); recorded as reviewed by `cli`."""
    from gateway.jobs import ReviewRequest
    from gateway.store import JobStore

    settings = settings_of(ctx)
    if approve == reject:
        fail("give exactly one of --approve or --reject")
    cfg = read_config(settings, config)
    try:
        review = ReviewRequest(decision="approve" if approve else "reject", comment=comment)
        view = JobStore(connect(settings, cfg), cfg).review(job_id, review, reviewer="cli")
    except GatewayError as exc:
        fail(str(exc))
    assert view.review is not None
    out.print(f"job {job_id}: {view.review['state']}")


@policy_app.command("explain")
def policy_explain(
    ctx: typer.Context,
    service: Annotated[str, typer.Option(help="The service the job would come from.")],
    prompt: Annotated[str | None, typer.Option(help="The prompt to check.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A job request as JSON (the POST /v1/jobs body).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="The model alias the job asks for.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the explanation as JSON.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Which policies fire for a job, what each decides and why, and the deployments it would use.

    Calls no provider and counts nothing; budgets are read from Redis when it is reachable.
    """
    from pydantic import ValidationError as PydanticValidationError

    from gateway.jobs import JobRequest
    from workers.explain import explain

    settings = settings_of(ctx)
    if (prompt is None) == (file is None):
        fail("give exactly one of --prompt or --file")
    cfg = read_config(settings, config)
    try:
        body: dict[str, Any] = {"prompt": prompt} if prompt is not None else _read_job_file(file)
        if model is not None:
            body["model"] = model
        request = JobRequest.model_validate(body)
        report = explain(cfg, service, request, try_connect(settings, cfg), environ=settings.environ)
    except PydanticValidationError as exc:
        first = first_error(exc)
        fail(f"job request: {first.where or 'body'}: {first.msg}")
    except GatewayError as exc:
        fail(str(exc))
    if as_json:
        out.print_json(json.dumps(report))
        return
    _print_explanation(report)


def _read_job_file(path: Path | None) -> dict[str, Any]:
    assert path is not None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        fail(f"{path}: {exc}")
    if not isinstance(data, dict):
        fail(f"{path}: a job request is a JSON object")
    return data


def _print_explanation(report: dict[str, Any]) -> None:
    verdict = "[green]accepted[/]" if report["outcome"] == "accepted" else "[red]refused[/]"
    if report.get("note"):
        err.print(f"[yellow]note:[/] {report['note']}")
    asked = report["requested_model"]
    out.print(f"service {report['service']} → model {report['model']} (asked: {asked}): {verdict}")
    names = (Column("policy", overflow="fold"), Column("rule", overflow="fold"))
    table = Table(*names, "decision", "enforced", Column("why", overflow="fold"), title="policies")
    for d in report["decisions"]:
        table.add_row(
            d["policy"], d["rule"], d["outcome"], "yes" if d["enforced"] else "monitor", d["reason"]
        )
    out.print(table)
    if report["error"]:
        out.print(f"[red]{report['error']['type']}[/]: {report['error']['message']}")
        return
    flags = [f"max_tokens {report['max_tokens']}"]
    flags += ["sensitive models only"] * report["sensitive_only"] + ["draft"] * report["draft"]
    flags += ["PII masked before the call"] * report["redacted"]
    out.print("job: " + ", ".join(flags))
    if report.get("kept_local"):  # why it stays local: categories or the rule, never values
        out.print(str(report["kept_local"]))
    chain = Table("#", "deployment", "provider model", "sensitive", "callable", title="deployment chain")
    for i, step in enumerate(report["chain"], 1):
        chain.add_row(
            str(i), step["deployment"], step["model"], str(step["sensitive"]).lower(), step["callable"]
        )
    out.print(chain)
    for b in report["budgets"]:
        spent, held, limit = b["spent_usd"], b["held_usd"], b["limit_usd"]
        out.print(f"budget {b['policy']}: ${spent:.4f} spent, ${held:.4f} held, of ${limit:.2f}")
    for name in report.get("budgets_unread", []):
        out.print(f"budget {name}: not read (no Redis reachable); the job may still be refused for it")


# --- the dashboard -------------------------------------------------------------------------------


def dashboard(
    ctx: typer.Context,
    config: ConfigOpt = None,
    print_url: Annotated[
        bool, typer.Option("--print-url", help="Print a one-time login link and exit (scripts, headless).")
    ] = False,
    url: Annotated[str | None, typer.Option(envvar="AIGW_URL", help="API URL.")] = None,
) -> None:
    """Open the dashboard the API serves at /dashboard, through a one-time login link."""
    import webbrowser

    from gateway.dashboard.sessions import create_login

    settings = settings_of(ctx)
    cfg = read_config(settings, config)
    api = cfg.gateway.api
    api_url = url or noted_api_url(f"http://{api.host}:{api.port}", settings.environ)
    token = create_login(connect(settings, cfg), api.dashboard_link_seconds)
    # the token rides in the fragment: a browser never sends it to a server or in a Referer
    link = f"{api_url.rstrip('/')}/dashboard#login={token}"
    out.print(link, markup=False)
    if print_url:
        return
    minutes = api.dashboard_link_seconds / 60
    err.print(f"[dim]one-time link, valid {minutes:g} min; opening it in your browser[/]")
    if not webbrowser.open(link):
        err.print("[yellow]no browser found: open the link above yourself[/]")
