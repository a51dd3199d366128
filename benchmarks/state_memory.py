"""What a user costs in memory: snapshot bytes, and RSS growth through the real Bytewax flow.

    python -m benchmarks.state_memory                      # 100k and 1M users
    python -m benchmarks.state_memory --users 100000 --json

1. **Snapshot bytes** (what Bytewax stores per user, and what the user step
   holds between batches): ``generate(U, 20 U)`` personas, every user's events
   through its own ``UserLogic`` in log order with real watermarks; the
   distribution of ``len(snapshot)``. Generation is capped at 200k users (a
   sample of the same distribution) to keep the run short.
2. **RSS per user**: a fresh subprocess per size runs ``build_flow`` on a lazy
   ``TestingSource`` of U distinct users (page view, product view, identify
   with an email and a country: three events each) with sinks that discard,
   recovery off; the sink records the process's VmRSS as the input goes by.
   ``(peak RSS - RSS before the first event) / U`` is what one user holds:
   its bytes, its ``UserLogic``, Bytewax's per-key entry, the timer wheel entry.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

from segstream.config import Config
from segstream.flows.segmentation import Sinks, build_flow
from segstream.operators.event_time import PartitionWatermark, Stamped
from segstream.operators.events import Event, iso_utc
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic
from segstream.tools.generate import generate

SAMPLE_CAP = 200_000
T0 = 1714557600.0


def vm_rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def snapshot_sizes(users: int, events_per_user: int = 20, seed: int = 1) -> dict[str, Any]:
    """Distribution of per-user snapshot bytes on generated personas."""
    sample = min(users, SAMPLE_CAP)
    log = generate(users=sample, events=sample * events_per_user, seed=seed)
    parser, clock = EventParser(), PartitionWatermark(30.0)
    config = UserConfig()
    logics: dict[str, UserLogic] = {}
    for line in log.lines:
        event = parser.parse(line)
        if not isinstance(event, Event):
            continue
        logic = logics.get(event.key)
        if logic is None:
            logic = logics[event.key] = UserLogic.build(config, None)
        logic.on_items([Stamped(event, clock.observe(event.timestamp), "clicks:0")])
    raw = _distribution(len(logic.snapshot() or b"") for logic in logics.values())
    # What a tailing worker holds once its clock has woken everyone past their
    # last burst (the settle tick): every user advanced to the final watermark.
    for logic in logics.values():
        logic.on_watermark(clock.watermark)
    settled = _distribution(len(logic.snapshot() or b"") for logic in logics.values()
                            if logic.snapshot() is not None)
    return {"users_sampled": raw["n"], "events_per_user": events_per_user,
            **{k: v for k, v in raw.items() if k != "n"}, "settled": settled}


def _distribution(values: Iterator[int]) -> dict[str, Any]:
    sizes = sorted(values)
    return {"n": len(sizes), "mean": round(statistics.fmean(sizes), 1),
            "p50": sizes[len(sizes) // 2], "p95": sizes[int(len(sizes) * 0.95)],
            "p99": sizes[int(len(sizes) * 0.99)], "max": sizes[-1]}


def synthetic_users(users: int) -> Iterator[KafkaSourceMessage[bytes | None, bytes | None]]:
    """Three events per user, in time order, never all in memory."""
    offset = 0
    for i in range(users):
        ts = T0 + i * 0.01
        user = f"user-{i:08d}"
        for kind, extra in (
            ("page", {"name": "Home"}),
            ("track", {"event": "Product Viewed", "properties": {"product_id": "p1"}}),
            ("identify", {"traits": {"email": f"{user}@example.com"},
                          "context": {"location": {"country": "DE"}}}),
        ):
            doc = {"type": kind, "userId": user, "messageId": f"{user}-{kind}",
                   "timestamp": iso_utc(ts), **extra}
            yield KafkaSourceMessage(None, orjson.dumps(doc), topic="clicks", partition=0,
                                     offset=offset)
            offset += 1
            ts += 1.0


class _Discard(StatelessSinkPartition[Any]):
    def __init__(self, peak: list[int]) -> None:
        self._peak = peak
        self._calls = 0

    def write_batch(self, items: list[Any]) -> None:
        self._calls += 1
        if self._calls % 20 == 1:  # the first batch too, so small runs are measured
            self._peak[0] = max(self._peak[0], vm_rss())


class _DiscardSink(DynamicSink[Any]):
    def __init__(self, peak: list[int]) -> None:
        self._peak = peak

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard(self._peak)


def flow_rss(users: int) -> dict[str, Any]:
    """Run the flow over ``users`` synthetic users in this process; measure RSS growth."""
    peak = [0]
    flow = build_flow(Config(recovery_dir=""), source=TestingSource(synthetic_users(users)),
                      sinks=Sinks(kafka=_DiscardSink([0]), redis=_DiscardSink(peak)), tail=False)
    before = vm_rss()
    started = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - started
    return {
        "users": users, "events": 3 * users, "rss_before_mib": round(before / 2**20, 1),
        "rss_peak_mib": round(peak[0] / 2**20, 1),
        "bytes_per_user": round((peak[0] - before) / users),
        "events_per_s": round(3 * users / elapsed), "seconds": round(elapsed, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(flow_rss(args.rss_child)))
        return
    results = []
    for users in args.users:
        snap = snapshot_sizes(users)
        child = subprocess.run([sys.executable, "-m", "benchmarks.state_memory", "--rss-child",
                                str(users)], capture_output=True, text=True, check=True)
        results.append({"users": users, "snapshot_bytes": snap,
                        "rss": json.loads(child.stdout.strip().splitlines()[-1])})
    if args.json:
        print(json.dumps(results))
        return
    print("users      snapshot bytes mean / p50 / p99 / max (settled mean / p99)"
          "   RSS per user   flow events/s")
    for r in results:
        s, rss = r["snapshot_bytes"], r["rss"]
        print(f"{r['users']:>9,}  {s['mean']:>8} / {s['p50']} / {s['p99']} / {s['max']}"
              f" ({s['settled']['mean']} / {s['settled']['p99']}; sample {s['users_sampled']:,})"
              f"   {rss['bytes_per_user']:>6} B   {rss['events_per_s']:>8,}")


if __name__ == "__main__":
    main()
