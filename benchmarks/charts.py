"""PNG charts of a ``make bench`` result: throughput bars, latency against load, memory against users.

    python -m benchmarks.charts benchmarks/charts/bench.json benchmarks/charts/

Each chart is drawn from the figures ``python -m benchmarks.bench`` printed
(it keeps them beside the charts as ``bench.json``, and in ``--json FILE``), so
the pictures in ``benchmarks/RESULTS.md`` show the figures the run printed.
A part the run skipped (no latency runs, no memory sizes) draws no chart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a benchmark machine
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

BROKER_NOTE = "broker: Tansu (in-memory); redis-server 7.0; 2 cores"


def throughput_chart(results: list[dict[str, Any]], path: Path) -> None:
    """Median events/s per scenario as bars, each labelled with its share of the ceiling."""
    names = [r["scenario"] for r in results]
    rates = [r["rate"] for r in results]
    ceiling = next((r["rate"] for r in results if r["scenario"] == "ceiling"), None)
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(names, rates, color=["#888888" if n == "ceiling" else "#3b75af" for n in names])
    for bar, rate in zip(bars, rates, strict=True):
        label = f"{rate:,.0f}" + (f"\n{rate / ceiling:.2f}x" if ceiling else "")
        ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=9)
    ax.set_ylabel("events/s (start-up included)")
    ax.set_title("Throughput against the bare Bytewax ceiling")
    ax.set_ylim(0, max(rates) * 1.25)
    fig.text(0.01, 0.01, BROKER_NOTE, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def latency_chart(runs: list[dict[str, Any]], path: Path) -> None:
    """p50 / p95 / p99 of both paths against the achieved input rate (log scale).

    The bare broker's p50 and p99 at the same rates, where measured, are drawn
    in grey: the floor under both paths.
    """
    fig, ax = plt.subplots(figsize=(7, 4))
    rates = [run["achieved"] for run in runs]
    for path_name, style in (("redis", "-"), ("kafka", "--")):
        for pct, color in (("p50", "#3b75af"), ("p95", "#e08a2c"), ("p99", "#c03d3d")):
            ax.plot(rates, [run[path_name][pct] for run in runs], style, marker="o",
                    color=color, label=f"produce -> {path_name} {pct}")
    if all(run.get("broker") for run in runs):
        for pct, style in (("p50", ":"), ("p99", "-.")):
            ax.plot(rates, [run["broker"][pct] for run in runs], style, marker=".",
                    color="#777777", label=f"bare broker {pct}")
    ax.axhline(25, color="#555555", linewidth=0.8, linestyle=":")
    ax.annotate("target: p99 -> Redis <= 25 ms at 50 %", (rates[0], 25), fontsize=8,
                va="bottom", color="#555555")
    ax.set_yscale("log")
    ax.set_xlabel("input rate (events/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("End-to-end latency against load")
    ax.legend(fontsize=7, ncol=2)
    fig.text(0.01, 0.01, BROKER_NOTE, fontsize=7, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def memory_chart(sizes: list[dict[str, Any]], path: Path) -> None:
    """Bytes per user against users: RSS through the flow and snapshot bytes."""
    users = [size["users"] for size in sizes]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(users, [size["rss"]["bytes_per_user"] for size in sizes], marker="o",
            label="RSS growth per user (flow)")
    ax.plot(users, [size["snapshot_bytes"]["mean"] for size in sizes], marker="s",
            label="snapshot bytes per user (mean)")
    ax.axhline(1024, color="#555555", linewidth=0.8, linestyle=":")
    ax.annotate("target: 1 KB per user", (users[0], 1024), fontsize=8, va="bottom",
                color="#555555")
    ax.set_xscale("log")
    ax.set_ylim(0, 1400)
    ax.set_xlabel("users in state")
    ax.set_ylabel("bytes per user")
    ax.set_title("Memory against users")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_charts(result: dict[str, Any], directory: Path) -> list[Path]:
    """Draw every chart the result has data for into ``directory``; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if result.get("results"):
        written.append(directory / "throughput.png")
        throughput_chart(result["results"], written[-1])
    if result.get("latency"):
        written.append(directory / "latency.png")
        latency_chart(result["latency"], written[-1])
    if result.get("memory"):
        written.append(directory / "memory.png")
        memory_chart(result["memory"], written[-1])
    return written


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.charts RESULT.json DIRECTORY``."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("result", type=Path, help="JSON written by python -m benchmarks.bench --json")
    ap.add_argument("directory", type=Path)
    args = ap.parse_args(argv)
    for path in write_charts(json.loads(args.result.read_text()), args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
