"""GET /metrics: what the workers counted in Redis and the live gauges, as Prometheus reads them."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.audit import AuditWriter, tail
from gateway.metrics import exposed_names
from gateway.status import live_workers
from tests.fakes.provider import FakeProvider, Fault
from tests.integration.harness import (
    SERVICE,
    Api,
    ConfigFactory,
    SpawnWorker,
    StartApi,
    StartStack,
    StartWorker,
    submit,
    wait_until,
    with_api_settings,
)

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-aigw.json"


def scrape(api: Api) -> list[Sample]:
    response = httpx.get(f"{api.url}/metrics", timeout=10)  # no token: operators on this machine
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(response.text) for s in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


def histograms(samples: list[Sample], name: str) -> Iterator[tuple[dict[str, str], list[float], float]]:
    """(labels, cumulative bucket counts in ``le`` order, _count) of each series of a histogram."""
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = defaultdict(list)
    for s in samples:
        if s.name == f"{name}_bucket":
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series[key].append((float(s.labels["le"]), s.value))
    for key, buckets in series.items():
        labels = dict(key)
        yield labels, [count for _le, count in sorted(buckets)], total(samples, f"{name}_count", **labels)


def test_jobs_are_counted_by_service_model_and_state(stack: StartStack, fake: FakeProvider) -> None:
    s = stack(policies=[])
    for i in range(3):
        assert submit(s.api, {"prompt": f"hello {i}", "model": "general"}).json()["status"] == "succeeded"
    for i in range(2):
        assert submit(s.api, {"prompt": f"hi {i}", "model": "openai"}).json()["status"] == "succeeded"
    fake.script(Fault.status(400), model="gpt-fake")  # not retryable: the job fails for good
    assert submit(s.api, {"prompt": "refused upstream", "model": "openai"}).json()["status"] == "failed"
    with s.api.client() as client:  # a streamed job: time to first token
        body = {"model": "openai", "stream": True, "messages": [{"role": "user", "content": "stream"}]}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            assert "[DONE]" in "".join(response.iter_text())

    samples = scrape(s.api)
    jobs = "aigw_jobs_total"
    common = {"service": SERVICE, "queue": "interactive"}
    assert total(samples, jobs, model="general", state="succeeded", **common) == 3
    assert total(samples, jobs, model="openai", state="succeeded", **common) == 3
    assert total(samples, jobs, model="openai", state="failed", **common) == 1
    assert total(samples, jobs) == 7
    assert total(samples, "aigw_provider_latency_seconds_count", provider="anthropic", model="general") == 3
    assert total(samples, "aigw_gateway_overhead_seconds_count") == 6  # succeeded attempts
    assert total(samples, "aigw_queue_wait_seconds_count") == 7  # every attempt
    assert total(samples, "aigw_time_to_first_token_seconds_count", model="openai") == 1
    for name in ("aigw_provider_latency_seconds", "aigw_gateway_overhead_seconds", "aigw_queue_wait_seconds"):
        seen = list(histograms(samples, name))
        assert seen
        for _labels, cumulative, count in seen:
            assert cumulative == sorted(cumulative)  # cumulative: never decreasing with le
            assert cumulative[-1] == count  # +Inf holds every observation
    assert total(samples, "aigw_queue_depth", queue="interactive") == 0
    assert total(samples, "aigw_workers", queue="interactive") == 1
    assert total(samples, "aigw_breaker_open") == 0
    names = {s.name for s in samples}
    assert names <= exposed_names()


def test_n_jobs_across_two_worker_processes_count_exactly_n(
    gateway_config: ConfigFactory,
    start_api: StartApi,
    spawn_worker: SpawnWorker,
    fake: FakeProvider,
    redis_client: redis.Redis,
) -> None:
    config = gateway_config(policies=[])
    api = start_api(config)
    spawn_worker(config, concurrency=4)
    spawn_worker(config, concurrency=4)
    wait_until(lambda: total(scrape(api), "aigw_workers", queue="interactive") == 2, "two workers", 60)
    fake.latency = 0.05  # four slots each: neither worker can take every job
    n = 40
    with api.client() as client:
        ids = [client.post("/v1/jobs", json={"prompt": f"job {i}"}).json()["id"] for i in range(n)]
        for job_id in ids:
            assert client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()["status"] == "succeeded"
    samples = scrape(api)
    assert total(samples, "aigw_jobs_total", state="succeeded", model="general") == n
    assert total(samples, "aigw_jobs_total") == n
    assert total(samples, "aigw_queue_wait_seconds_count") == n
    by_worker = [w["successful"] for w in live_workers(redis_client)]
    assert len(by_worker) == 2 and all(by_worker) and sum(by_worker) == n  # both ran some


def test_tokens_and_cost_equal_the_audit_lines(
    stack: StartStack, fake: FakeProvider, redis_client: redis.Redis, tmp_path: Path
) -> None:
    s = stack(policies=[])
    for i in range(4):
        submit(s.api, {"prompt": f"count the cost {i} " * (i + 1), "model": "general"})
        submit(s.api, {"prompt": f"and this {i}", "model": "openai"})
    submit(s.api, {"prompt": "local", "model": "sensitive"})  # unpriced: tokens, no cost
    fake.script(Fault.status(400), model="gpt-fake")
    submit(s.api, {"prompt": "fails", "model": "openai"})
    audit = tmp_path / "audit.log"
    AuditWriter(redis_client, audit, consumer="test").run_once(block_ms=100)
    lines = tail(audit, 100)
    assert len(lines) == 10
    tokens: dict[tuple[str, str, str], int] = defaultdict(int)
    cost: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        for direction in ("input", "output"):
            tokens[(line["service"], line["model"], direction)] += line[f"{direction}_tokens"]
        cost[(line["service"], line["model"])] += Decimal(str(line["cost_usd"]))
    samples = scrape(s.api)
    for (service, model, direction), expected in tokens.items():
        got = total(samples, "aigw_tokens_total", service=service, model=model, direction=direction)
        assert got == expected, (service, model, direction)
    for (service, model), usd in cost.items():
        counted = Decimal(str(total(samples, "aigw_cost_usd_total", service=service, model=model)))
        assert abs(counted - usd) < Decimal("1e-8"), (service, model)
    assert total(samples, "aigw_cost_usd_total", model="general") > 0
    assert total(samples, "aigw_cost_usd_total", model="sensitive") == 0
    assert total(samples, "aigw_tokens_total", model="sensitive") > 0


def test_gauges_read_the_queue_and_breakers_live(
    gateway_config: ConfigFactory, start_api: StartApi, redis_client: redis.Redis
) -> None:
    api = start_api(gateway_config())
    for i in range(3):  # no worker: they wait
        assert submit(api, {"prompt": f"waiting {i}"}, wait=0).status_code == 202
    redis_client.set("aigw:breaker:general/0:anthropic:open", "1", ex=60)  # as Breakers opens it
    samples = scrape(api)
    assert total(samples, "aigw_queue_depth", queue="interactive") == 3
    assert total(samples, "aigw_queue_depth", queue="batch") == 0
    assert total(samples, "aigw_queue_oldest_job_age_seconds", queue="interactive") >= 0
    assert total(samples, "aigw_jobs_in_flight", queue="interactive") == 0
    assert total(samples, "aigw_workers") == 0
    assert total(samples, "aigw_breaker_open", deployment="general/0:anthropic") == 1
    assert total(samples, "aigw_breaker_open", deployment="openai/0:openai") == 0


def test_policy_refusals_and_decisions_are_counted(stack: StartStack) -> None:
    secret = "AKIA" + "Z7QW3RT5YU8IO2PL"
    s = stack(policies=[{"name": "no_keys", "rule": "block_secrets"}])
    refused = submit(s.api, {"prompt": f"use aws key {secret} to upload"}, wait=0)
    assert refused.status_code == 403
    assert submit(s.api, {"prompt": "an ordinary question"}).json()["status"] == "succeeded"
    samples = scrape(s.api)
    assert total(samples, "aigw_requests_refused_total", service=SERVICE, reason="policy_denied") == 1
    deny = {"policy": "no_keys", "rule": "block_secrets", "outcome": "deny"}
    assert total(samples, "aigw_policy_decisions_total", **deny) == 1
    assert total(samples, "aigw_jobs_total") == 1  # a refusal creates no job
    text = httpx.get(f"{s.api.url}/metrics", timeout=10).text
    assert secret not in text and "ordinary question" not in text  # never a prompt in a label


def test_metrics_are_refused_unless_the_api_is_on_loopback(
    config_dir: Path, gateway_config: ConfigFactory, start_api: StartApi
) -> None:
    config = with_api_settings(config_dir, gateway_config, host="0.0.0.0")
    api = start_api(config)  # (the test still binds 127.0.0.1)
    response = httpx.get(f"{api.url}/metrics", timeout=10)
    assert response.status_code == 403
    assert "loopback" in response.json()["error"]["message"]


def test_the_grafana_dashboard_uses_only_exposed_metric_names(stack: StartStack) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    assert exprs
    used = {name for expr in exprs for name in re.findall(r"\baigw_[a-z_]+\b", expr)}
    assert used and used <= exposed_names(), sorted(used - exposed_names())
    s = stack(policies=[])
    submit(s.api, {"prompt": "one job"})
    assert {sample.name for sample in scrape(s.api)} <= exposed_names()


def test_cancels_retries_and_failovers_are_counted(
    gateway_config: ConfigFactory, start_api: StartApi, start_worker: StartWorker, fake: FakeProvider
) -> None:
    config = gateway_config(jobs={"max_attempts": 2}, policies=[])
    api = start_api(config)
    with api.client() as client:
        queued = client.post("/v1/jobs", json={"prompt": "never mind", "model": "openai"}).json()["id"]
        assert client.delete(f"/v1/jobs/{queued}").json()["status"] == "canceled"  # no worker yet
        start_worker(config)
        fake.latency = 20
        running = client.post("/v1/jobs", json={"prompt": "slow", "model": "openai"}).json()["id"]
        wait_until(lambda: client.get(f"/v1/jobs/{running}").json()["status"] == "running", "job running")
        client.delete(f"/v1/jobs/{running}")
        wait_until(lambda: client.get(f"/v1/jobs/{running}").json()["status"] == "canceled", "job canceled")
    fake.latency = 0
    fake.script(Fault.status(503), model="gpt-fake")  # openai has no fallback: the job is retried
    assert submit(api, {"prompt": "again", "model": "openai"}).json()["status"] == "succeeded"
    fake.script(Fault.status(503), model="claude-fake")  # general fails over to offline
    answered = submit(api, {"prompt": "over", "model": "general"}).json()["result"]["model"]
    samples = scrape(api)
    assert total(samples, "aigw_jobs_total", state="canceled", model="openai", service=SERVICE) == 2
    assert total(samples, "aigw_job_retries_total", model="openai") == 1
    assert total(samples, "aigw_jobs_total", state="succeeded", model="openai") == 1
    assert total(samples, "aigw_failovers_total", model=answered) == 1  # the alias that answered
