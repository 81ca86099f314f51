"""``python -m bench.plots FILE.json [...] [--out docs/img]``: PNGs from the bench's JSON results.

A sweep file (bench/sweep.py) gives ``sweep-jobs.png`` (jobs/s against clients),
``sweep-cpu.png`` (CPU per job against clients) and ``sweep-memory.png`` (RSS and PSS against
jobs in flight); a ``bench.run --peers`` file gives ``peers.png`` (aigw beside direct and the peers).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from bench.peers import figures  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
COLOURS = {"direct": "#7f7f7f", "aigw": "#1f77b4", "aigw-chat": "#6baed6", "litellm": "#d62728",
           "portkey": "#2ca02c", "1": "#1f77b4", "2": "#ff7f0e"}  # fmt: skip
LABELS = {"direct": "direct", "aigw": "aigw /v1/jobs", "aigw-chat": "aigw /v1/chat/completions",
          "litellm": "LiteLLM proxy", "portkey": "Portkey gateway"}  # fmt: skip


def _subtitle(report: dict[str, Any]) -> str:
    code = report.get("code")
    cpu = report.get("machine", {}).get("cpu_model") or "?"
    return (
        f"code {code}, {report.get('machine', {}).get('nproc')} × {cpu}, {report.get('started_at', '')[:10]}"
    )


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plain(ax: Axes, axis: str) -> None:
    """Log axis labelled 1,000 rather than 10^3, without minor labels."""
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}"))
    target.set_minor_formatter(NullFormatter())


def _clients_axis(ax: Axes, clients: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(clients)
    _plain(ax, "x")
    ax.set_xlabel("concurrent clients (closed loop)")
    ax.grid(True, which="major", alpha=0.3)


def sweep_plots(report: dict[str, Any], out: Path) -> list[Path]:
    clients = list(report["params"]["clients"])
    written = []

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    direct = report.get("direct") or []
    if direct:
        ax.plot([p["clients"] for p in direct], [p["jobs_per_s"] for p in direct], "o--",
                color=COLOURS["direct"], label="direct to the fake (ceiling)")  # fmt: skip
    for index, (workers, points) in enumerate(report["load"].items()):
        ax.plot([p["clients"] for p in points], [p["jobs_per_s"] for p in points], "o-",
                color=COLOURS.get(workers), label=f"aigw, {workers} worker process(es)")  # fmt: skip
        for p in points:
            xy = (p["clients"], p["jobs_per_s"])
            ax.annotate(f"{p['jobs_per_s']:,.0f}", xy, textcoords="offset points",
                        xytext=(0, 6 if index % 2 == 0 else -13), ha="center",
                        fontsize=8, color=COLOURS.get(workers))  # fmt: skip
    _clients_axis(ax, clients)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    _plain(ax, "y")
    ax.set_ylabel("completed per second (log)")
    ax.set_title(f"Jobs/s against clients (POST /v1/jobs?wait=30)\n{_subtitle(report)}", fontsize=10)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "sweep-jobs.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for workers, points in report["load"].items():
        xs = [p["clients"] for p in points]
        colour = COLOURS.get(workers)
        ax.plot(xs, [p["cpu_ms_per_job"]["total"] for p in points], "o-", color=colour,
                label=f"{workers} worker(s): API + workers + Redis")  # fmt: skip
        for part, style in (("api", ":"), ("workers", "--"), ("redis", "-.")):
            ax.plot(xs, [p["cpu_ms_per_job"].get(part, 0) for p in points], style, color=colour, alpha=0.6,
                    label=f"{workers} worker(s): {part}")  # fmt: skip
    _clients_axis(ax, clients)
    top = max((p["cpu_ms_per_job"]["total"] for points in report["load"].values() for p in points), default=1)
    ax.set_ylim(0, top * 1.7)
    ax.set_ylabel("CPU ms per job")
    ax.set_title(f"CPU per job against clients\n{_subtitle(report)}", fontsize=10)
    ax.legend(fontsize=7, ncol=2, loc="upper center")
    written.append(_save(fig, out / "sweep-cpu.png"))

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    levels: set[int] = set()
    for workers, points in report["memory"].items():
        held = [p for p in points if p["in_flight"] > 0]
        xs = [p["in_flight"] for p in held]
        levels.update(p["target"] for p in held)
        colour = COLOURS.get(workers)
        ax.plot(xs, [p["rss_mb"]["total"] for p in held], "o-", color=colour,
                label=f"{workers} worker(s): RSS, API + workers")  # fmt: skip
        ax.plot(xs, [p["pss_mb"]["total"] for p in held], "s--", color=colour, alpha=0.7,
                label=f"{workers} worker(s): PSS, API + workers")  # fmt: skip
        idle = [p for p in points if p["in_flight"] == 0]
        if idle:
            ax.axhline(idle[0]["rss_mb"]["total"], color=colour, linewidth=0.8, alpha=0.5, linestyle=":")
    ax.set_xscale("log")
    ticks = sorted(levels)
    ax.set_xticks(ticks)
    _plain(ax, "x")
    ax.set_xlabel("jobs in flight (RQ started registry; dotted: idle RSS)")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Memory against jobs in flight\n{_subtitle(report)}", fontsize=10)
    ax.legend(fontsize=8)
    written.append(_save(fig, out / "sweep-memory.png"))
    return written


SHORT = {"aigw": "aigw\n/v1/jobs", "aigw-chat": "aigw\n/v1/chat", "litellm": "LiteLLM\nproxy",
         "portkey": "Portkey\ngateway"}  # fmt: skip


def peers_plot(report: dict[str, Any], out: Path) -> list[Path]:
    """Bars for the gateways; direct as a dashed line, or in the title when it is off the scale."""
    panels = [
        ("latency", "added_p50_ms", "added latency p50, 1 client (ms, lower is better)"),
        ("throughput", "throughput_per_s", "req/s at 100 clients (higher is better)"),
        ("slow500", "throughput_per_s", "req/s, 500 clients × 500 ms (higher is better)"),
        ("throughput", "cpu_ms_per_request", "CPU ms per request at 100 clients (lower)"),
    ]
    panels = [p for p in panels if "peers" in report["scenarios"].get(p[0], {})]
    if not panels:
        return []
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5), squeeze=False)
    for ax, (scenario, key, title) in zip(axes.flat, panels, strict=False):
        data = figures(report["scenarios"][scenario])
        systems = [s for s in SHORT if data.get(s, {}).get(key) is not None]
        values = [float(data[s][key] or 0) for s in systems]
        bars = ax.bar(range(len(systems)), values, color=[COLOURS[s] for s in systems])
        for bar, value in zip(bars, values, strict=True):
            ax.annotate(f"{value:,.0f}" if value >= 100 else f"{value:.1f}",
                        (bar.get_x() + bar.get_width() / 2, value), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=8)  # fmt: skip
        direct = data["direct"].get(key)
        if direct is not None and values and direct <= 1.6 * max(values):
            ax.axhline(direct, color=COLOURS["direct"], linestyle="--", linewidth=1)
            ax.annotate(f"direct {direct:,.0f}", (len(systems) - 0.5, direct), textcoords="offset points",
                        xytext=(0, 3), ha="right", fontsize=8, color=COLOURS["direct"])  # fmt: skip
        elif direct is not None:
            title += f"\n(direct: {direct:,.0f}, off the scale)"
        ax.set_xticks(range(len(systems)))
        ax.set_xticklabels([SHORT[s] for s in systems], fontsize=8)
        ax.set_ylim(
            0, max([*values, direct if direct and direct <= 1.6 * max(values, default=0) else 0]) * 1.15 or 1
        )
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"aigw beside the peers: same fake, same load generator, one run\n{_subtitle(report)}",
                 fontsize=10)  # fmt: skip
    return [_save(fig, out / "peers.png")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.plots", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="bench/results/*.json")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the PNGs go")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for path in args.files:
        report = json.loads(path.read_text())
        if report.get("kind") == "sweep":
            written += sweep_plots(report, args.out)
        elif any("peers" in s for s in report.get("scenarios", {}).values()):
            written += peers_plot(report, args.out)
        else:
            print(f"{path}: neither a sweep nor a --peers run; nothing to draw", file=sys.stderr)
    for path in written:
        print(path)
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
