"""bench/peers.py, bench/plots.py and httpload's timed_loop, without installing or running any peer."""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import peers, plots
from bench.httpload import Request, timed_loop
from bench.run import _peer_list


def test_peer_list_parses_and_rejects_unknown_names() -> None:
    assert _peer_list("litellm, portkey,litellm") == ["litellm", "portkey"]
    with pytest.raises(argparse.ArgumentTypeError):
        _peer_list("litellm,nginx")


def test_unknown_peer_and_missing_node_are_reported_not_raised_through(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(peers.PeerUnavailable):
        peers.install("nginx", lambda _m: None)
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    with pytest.raises(peers.PeerUnavailable, match="node and npm"):
        peers.install("portkey", lambda _m: None)


def test_cache_is_outside_the_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AIGW_BENCH_CACHE", str(tmp_path))
    assert peers.cache_root() == tmp_path
    monkeypatch.delenv("AIGW_BENCH_CACHE")
    assert peers.cache_root() == Path.home() / ".cache" / "aigw-bench"


def _scenario(kind: str) -> dict[str, Any]:
    peer = {"p50_ms": 3.0, "p99_ms": 5.0, "throughput_per_s": 500.0, "added_ms": {"p50": 2.5, "p99": 4.0},
            "usage": {"cpu_ms_per_request": {"serving": 2.0}}}  # fmt: skip
    return {
        "params": {"clients": 100},
        "direct": {"p50_ms": 0.5, "p99_ms": 1.0, "throughput_per_s": 5000.0},
        "aigw": {"p50_ms": 6.0, "p99_ms": 8.0, "throughput_per_s": 250.0},
        "added_ms": {"p50": 5.5, "p99": 7.0} if kind == "latency" else {},
        "usage": {"cpu_ms_per_job": {"api": 2.0, "workers": 3.0, "redis": 0.5, "fake": 0.3}},
        "peers": {"aigw-chat": peer, "portkey": peer, "litellm": {"error": "TimeoutError: not ready"}},
    }


def test_figures_normalise_each_system_and_skip_a_failed_peer() -> None:
    fig = peers.figures(_scenario("latency"))
    assert set(fig) == {"direct", "aigw", "aigw-chat", "portkey"}
    assert fig["aigw"]["cpu_ms_per_request"] == 5.5  # API + workers + Redis, not the fake
    assert fig["aigw"]["added_p50_ms"] == 5.5
    assert fig["portkey"]["cpu_ms_per_request"] == 2.0
    assert peers.ratio(fig["aigw"]["throughput_per_s"], fig["portkey"]["throughput_per_s"]) == 0.5
    assert peers.ratio(1.0, None) is None and peers.ratio(1.0, 0.0) is None
    report = {"peers": {"portkey": {}}, "scenarios": {"latency": _scenario("latency")}}
    assert peers.unavailable(report) == {"litellm": "TimeoutError: not ready"}


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_draw_a_peers_run_and_a_sweep(tmp_path: Path) -> None:
    meta = {
        "code": "abc1234",
        "machine": {"nproc": 2, "cpu_model": "AMD EPYC"},
        "started_at": "2026-12-02T00:00",
    }
    run = {**meta, "scenarios": {k: _scenario(k) for k in ("latency", "throughput", "slow500")}}
    assert [p.name for p in plots.peers_plot(run, tmp_path)] == ["peers.png"]

    def load(rate: float) -> list[dict[str, Any]]:
        cpu = {"api": 2, "workers": 3, "redis": 1, "total": 6}
        return [
            {"clients": c, "jobs_per_s": rate * (1 + i), "cpu_ms_per_job": cpu}
            for i, c in enumerate((1, 10, 100))
        ]

    def memory(base: float) -> list[dict[str, Any]]:
        return [
            {
                "target": n,
                "in_flight": n,
                "rss_mb": {"total": base + n / 100},
                "pss_mb": {"total": base + n / 200},
            }
            for n in (0, 100, 1000)
        ]

    sweep = {**meta, "kind": "sweep", "params": {"clients": [1, 10, 100]},
             "direct": load(4000), "load": {"1": load(150), "2": load(200)}, "memory": {"1": memory(170),
             "2": memory(270)}}  # fmt: skip
    written = plots.sweep_plots(sweep, tmp_path)
    assert [p.name for p in written] == ["sweep-jobs.png", "sweep-cpu.png", "sweep-memory.png"]
    assert all(_png(p) for p in [*written, tmp_path / "peers.png"])


def test_timed_loop_counts_answers_inside_its_window_only() -> None:
    body = b'{"choices": []}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    marks: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(0.001)
                writer.write(answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def scenario() -> tuple[int, int, bool]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        request = Request.build("GET", "/", port)
        result = await timed_loop(
            port, 3, request, lambda status, b: status == 200 and b"choices" in b,
            warmup_s=0.05, measure_s=0.2, request_timeout_s=5,
            on_start=lambda: marks.append("start"), on_end=lambda: marks.append("end"),
        )  # fmt: skip
        server.close()
        await server.wait_closed()
        return result.ok, result.failed, result.timed_out

    ok, failed, timed_out = asyncio.run(scenario())
    assert marks == ["start", "end"]
    assert ok > 0 and failed == 0 and not timed_out
