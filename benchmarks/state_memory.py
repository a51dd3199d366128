"""What a user costs in memory: snapshot bytes, and RSS growth through the real Bytewax flow.

    python -m benchmarks.state_memory                      # 100k and 1M users
    python -m benchmarks.state_memory --users 100000 --json

Per size U (issue 4's target is "<= 1 KB per active user"):

1. **Snapshot bytes** (what Bytewax stores per user, and what the user step
   holds between batches): ``generate(U, E * U, seed=1)`` personas
   (``--events-per-user`` E), parsed, stamped with one ``PartitionWatermark(30)``
   over the whole log order, each user's events through its own ``UserLogic``
   in log order; the distribution of ``len(snapshot)``. Above 200k users the
   distribution is measured on a 200k-user log (same generator, same E): the
   report says ``sampled``. Also the same after advancing every user to the
   final watermark (``settled``: what a tailing worker holds once its settle
   tick woke everyone past their last burst).
2. **RSS per user**: a fresh subprocess per size runs ``build_flow`` (recovery
   off) on a lazy ``TestingSource`` of U distinct users (page view, product
   view, identify with an email and a country: three events each, in time
   order over three days) with sinks that discard. VmRSS is read when the
   source hands out its first batch (Bytewax is up, no user yet) and on every
   batch the Redis sink receives until the source runs dry, when every user is
   held. ``(max VmRSS - start) / U`` is what one user holds.
3. **Where it goes**: the Python side of one user, measured with ``tracemalloc``
   and ``sys.getsizeof`` on the same synthetic users driven through the real
   user step and timer wheel (outside Bytewax); and a *baseline* flow in
   another subprocess, U keys into a ``stateful_batch`` whose logic holds
   nothing, which measures Bytewax's own cost per key (short epochs), and its
   extra cost per key touched in the current epoch (one long epoch: Bytewax
   keeps a copy of those keys to snapshot them when the epoch closes). The
   ``rest`` is RSS minus state bytes, Python objects and Bytewax's per-key cost:
   allocator slack (pymalloc arenas kept by a few live objects among the freed
   temporaries of every batch) and the keys touched in the last epoch.

``VmHWM`` (the child's own peak) is reported beside the end-of-input RSS: at
the end of a bounded input Bytewax wakes every key (``on_eof``), each user
settles and takes its session-end snapshot, and the sink gets every user's
update in one batch: a transient that a tailing job never sees. ``ru_maxrss`` is reported
too but Linux carries it across ``exec`` from the parent, so a child started by
a large parent shows the parent's size there.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main
from segstream.flows.segmentation import Sinks, _UserStep, build_flow, user_config
from segstream.flows.timers import WorkerState
from segstream.operators.event_time import PartitionWatermark, Stamped
from segstream.operators.events import Event, iso_utc
from segstream.operators.features import stamp_event
from segstream.operators.parse import EventParser
from segstream.operators.user import UserConfig, UserLogic

from segstream.config import Config, load_segments
from segstream.tools.generate import generate

PROJECT = Path(__file__).resolve().parent.parent
SAMPLE_CAP = 200_000
"""Largest log the snapshot distribution is measured on (users)."""
PYTHON_SIDE_CAP = 50_000
"""Users driven through the user step under ``tracemalloc`` for the Python-side breakdown."""
TARGET_BYTES = 1024
BASELINE_EPOCH_S = 0.1
"""Short epochs: the baseline's keys are not also held as "touched this epoch"."""
ONE_EPOCH_S = 3600.0
"""One epoch longer than the run: every key is also held as "touched this epoch"."""
LATENESS_S = 30.0
TOPIC = "clickstream"
CLOCK = f"{TOPIC}:0"
T0 = 1714557600.0  # 2024-05-01T10:00:00Z
SPAN_S = 3 * 86400.0
EVENTS_PER_SYNTHETIC_USER = 3


def vm_rss(field: str = "VmRSS") -> int:
    """This process's resident set size in bytes (``VmRSS``, or ``VmHWM``: its peak)."""
    prefix = field + ":"
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(prefix):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def max_rss() -> int:
    """``ru_maxrss`` in bytes (KiB on Linux).

    Linux keeps it across ``exec``: a child started by a big parent reports at
    least the parent's RSS at fork, so ``VmHWM`` is the child's own peak.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- 1. snapshot bytes on generated personas ---------------------------------------------


def snapshot_sizes(users: int, events_per_user: int = 10, seed: int = 1) -> dict[str, Any]:
    """Distribution of per-user snapshot bytes on ``generate`` personas."""
    started = time.perf_counter()
    sample = min(users, SAMPLE_CAP)
    log = generate(users=sample, events=sample * events_per_user, seed=seed)
    parser, clock = EventParser(), PartitionWatermark(LATENESS_S)
    by_user: dict[str, list[Stamped]] = {}
    for line in log.lines:
        event = parser.parse(line)
        if isinstance(event, Event):
            stamped = stamp_event(event, clock.observe(event.timestamp), CLOCK)
            by_user.setdefault(event.key, []).append(stamped)
    del log
    config = UserConfig()
    logics: list[UserLogic] = []
    for items in by_user.values():
        # One batch per user gives the same bytes as one event per batch (the
        # stamps carry the watermarks), about 4x faster.
        logic = UserLogic(config, None)
        logic.on_items(items)
        logics.append(logic)
    del by_user
    raw = _distribution(len(logic.snapshot() or b"") for logic in logics)
    for logic in logics:
        logic.on_watermark(clock.watermark)
    settled = _distribution(len(snap) for logic in logics if (snap := logic.snapshot()) is not None)
    return {
        "users": users, "users_measured": raw.pop("n"), "sampled": users > SAMPLE_CAP,
        "events_per_user": events_per_user, **raw, "settled": settled,
        "seconds": round(time.perf_counter() - started, 1),
    }


def _distribution(values: Iterable[int]) -> dict[str, Any]:
    sizes = sorted(values)
    n = len(sizes)
    return {"n": n, "mean": round(statistics.fmean(sizes), 1), "p50": sizes[n // 2],
            "p95": sizes[min(n - 1, int(n * 0.95))], "p99": sizes[min(n - 1, int(n * 0.99))],
            "max": sizes[-1]}


# --- 2. RSS through the real flow ---------------------------------------------------------


def synthetic_docs(users: int) -> Iterator[bytes]:
    """Three JSON events per user (page, product view, identify), in time order, lazily."""
    step = SPAN_S / users
    for i in range(users):
        user = f"user-{i:08d}"
        base = T0 + i * step
        calls: tuple[tuple[str, dict[str, Any]], ...] = (
            ("page", {"name": "Home"}),
            ("track", {"event": "Product Viewed", "properties": {"product_id": f"p{i % 997}"}}),
            ("identify", {"traits": {"email": f"{user}@example.com"},
                          "context": {"location": {"country": "DE"}}}),
        )
        for k, (kind, extra) in enumerate(calls):
            yield orjson.dumps({"type": kind, "userId": user, "messageId": f"{user}-{kind}",
                                "timestamp": iso_utc(base + k * step / 3), **extra})


class _Probe:
    """VmRSS when the input starts, and the largest VmRSS the sink saw."""

    def __init__(self) -> None:
        self.start = 0
        self.peak = 0
        self.samples = 0
        self.exhausted = False

    def source(self, items: Iterable[Any]) -> Iterator[Any]:
        """Pass ``items`` through, reading VmRSS just before the first goes out."""
        for i, item in enumerate(items):
            if i == 0:
                self.start = vm_rss()
            yield item
        self.exhausted = True

    def sample(self) -> None:
        """Read VmRSS for a batch the sink got, until the input runs dry.

        After that comes the end-of-input settle: it wakes every user at once
        (each takes its session-end snapshot) and the sink gets all their
        updates in one batch, a transient of bounded runs that ``VmHWM`` shows.
        """
        if not self.exhausted:
            self.peak = max(self.peak, vm_rss())
            self.samples += 1


class _Discard(StatelessSinkPartition[Any]):
    def __init__(self, probe: _Probe | None) -> None:
        self._probe = probe

    def write_batch(self, items: list[Any]) -> None:
        if self._probe is not None:
            self._probe.sample()


class DiscardSink(DynamicSink[Any]):
    """A sink that drops everything; with a probe, it samples VmRSS on every batch."""

    def __init__(self, probe: _Probe | None = None) -> None:
        self._probe = probe

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Discard:
        return _Discard(self._probe)


def _run(flow: Dataflow, probe: _Probe, users: int, events: int, epoch_s: float) -> dict[str, Any]:
    before = vm_rss()
    started = time.perf_counter()
    run_main(flow, epoch_interval=timedelta(seconds=epoch_s))  # type: ignore[no-untyped-call]
    elapsed = time.perf_counter() - started
    return {
        "users": users, "events": events, "epoch_s": epoch_s,
        "rss_before_run_mib": round(before / 2**20, 1),
        "rss_start_mib": round(probe.start / 2**20, 1),
        "rss_end_mib": round(probe.peak / 2**20, 1),
        "vm_hwm_mib": round(vm_rss("VmHWM") / 2**20, 1),
        "ru_maxrss_mib": round(max_rss() / 2**20, 1),
        "bytes_per_user": round((probe.peak - probe.start) / users),
        "rss_samples": probe.samples,
        "events_per_s": round(events / elapsed), "seconds": round(elapsed, 1),
    }


def flow_rss(users: int, batch_size: int = 1000, epoch_s: float = 10.0) -> dict[str, Any]:
    """Run the segstream flow over ``users`` synthetic users in this process; RSS growth.

    ``epoch_s`` is Bytewax's epoch (segstream runs it at ``snapshot_interval_s``).
    """
    probe = _Probe()
    messages = (KafkaSourceMessage(None, doc, topic=TOPIC, partition=0, offset=i)
                for i, doc in enumerate(synthetic_docs(users)))
    flow = build_flow(Config(recovery_dir=""),
                      source=TestingSource(probe.source(messages), batch_size=batch_size),
                      sinks=Sinks(kafka=DiscardSink(), redis=DiscardSink(probe)), tail=False)
    return _run(flow, probe, users, EVENTS_PER_SYNTHETIC_USER * users, epoch_s)


class _Empty(StatefulBatchLogic[Any, None, None]):
    """A per-key logic that holds nothing of its own."""

    __slots__ = ()

    def on_batch(self, values: list[Any]) -> tuple[list[None], bool]:
        # One output per key and batch, as the user step's update: the sink
        # samples VmRSS on it. Nothing at EOF (segstream's settle emits next
        # to nothing for these users), so no output buffer of one item per key.
        return [None], StatefulBatchLogic.RETAIN

    def on_eof(self) -> tuple[list[None], bool]:
        return [], StatefulBatchLogic.RETAIN

    def snapshot(self) -> None:
        return None


def baseline_rss(users: int, batch_size: int = 1000, epoch_s: float = 0.1) -> dict[str, Any]:
    """Bytewax's own cost per key: ``users`` keys (same ids) into a ``stateful_batch`` of nothing.

    Besides its map entry, ``stateful_batch`` keeps a copy of every key touched
    in the current epoch (to snapshot them when it closes): short epochs leave
    only the held cost, one epoch longer than the run adds that copy for every key.
    """
    probe = _Probe()
    keys = (f"user-{i:08d}" for i in range(users))
    flow = Dataflow("baseline")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(probe.source(keys), batch_size)),
                      lambda key: key)
    held = op.stateful_batch("hold", keyed, lambda _resume: _Empty())
    op.output("out", held, DiscardSink(probe))
    return _run(flow, probe, users, users, epoch_s)


# --- 3. the Python side of one user -------------------------------------------------------


def _drive(steps: list[Any]) -> None:
    """Fill ``steps`` with one user step per synthetic user, each after its one batch."""
    config = Config(recovery_dir="")
    ucfg = user_config(config, load_segments(config.segments_file))
    worker = WorkerState(config.allowed_lateness_s)
    parser, clock = EventParser(), PartitionWatermark(config.allowed_lateness_s)
    docs = synthetic_docs(len(steps))
    for i in range(len(steps)):
        items = []
        for _ in range(EVENTS_PER_SYNTHETIC_USER):
            event = parser.parse(next(docs), topic=TOPIC, partition=0)
            assert isinstance(event, Event)
            items.append(stamp_event(event, clock.observe(event.timestamp), CLOCK))
        step = _UserStep(ucfg, None, worker)
        step.on_batch(items)
        steps[i] = step


def python_side(users: int, traced: int = PYTHON_SIDE_CAP) -> dict[str, Any]:
    """Per-user memory of the user step outside Bytewax, as the flow holds it at the end of input.

    The same synthetic users go through the real ``_UserStep`` (with its
    worker's timer wheel and RFM population), one batch each as in the flow:
    first ``users`` of them for the RSS growth (``rss``: the objects plus what
    the allocator adds), then ``traced`` of them under ``tracemalloc`` for what
    each object takes. Meant for a fresh process (RSS).
    """
    steps: list[Any] = [None] * users
    gc.collect()
    before = vm_rss()
    _drive(steps)
    gc.collect()
    rss = (vm_rss() - before) / users
    steps = [None] * min(users, traced)
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.take_snapshot()
    _drive(steps)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    by_file = after.compare_to(base, "filename")
    n = len(steps)
    total = sum(stat.size_diff for stat in by_file) / n
    wheel = sum(stat.size_diff for stat in by_file
                if stat.traceback[0].filename.endswith("event_time.py")) / n
    mean = statistics.fmean
    parts = {
        "state_bytes_len": mean(len(step.data) for step in steps),
        "state_bytes_object": mean(sys.getsizeof(step.data) for step in steps),
        "user_step": mean(sys.getsizeof(step) for step in steps),
        "deadline": mean(0 if step.deadline is None else sys.getsizeof(step.deadline)
                         for step in steps),
        "timer_wheel": wheel,
    }
    listed = sum(v for k, v in parts.items() if k != "state_bytes_len")
    return {"users": users, "traced_users": n, **{k: round(v, 1) for k, v in parts.items()},
            "other": round(total - listed, 1), "total": round(total, 1), "rss": round(rss, 1)}


# --- the report ---------------------------------------------------------------------------


def _child(kind: str, users: int, batch_size: int, epoch_s: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.state_memory", "--child", kind, "--users", str(users),
         "--batch-size", str(batch_size), "--epoch-s", str(epoch_s)],
        capture_output=True, text=True, check=True, cwd=PROJECT,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def measure(users: int, events_per_user: int = 10, batch_size: int = 1000,
            epoch_s: float = 10.0) -> dict[str, Any]:
    """All measurements for one size (each flow in a fresh subprocess)."""
    started = time.perf_counter()
    # The flows first, while this process is small (see max_rss).
    rss = _child("flow", users, batch_size, epoch_s)
    base = _child("baseline", users, batch_size, BASELINE_EPOCH_S)
    base_one_epoch = _child("baseline", users, batch_size, ONE_EPOCH_S)
    py = _child("python", users, batch_size, epoch_s)
    snap = snapshot_sizes(users, events_per_user)
    per_user = rss["bytes_per_user"]
    empty = sys.getsizeof(_Empty())
    bytewax_key = base["bytes_per_user"] - empty
    breakdown = {
        "state_bytes": py["state_bytes_object"],
        "python_objects": round(py["total"] - py["state_bytes_object"], 1),
        "python_allocator": round(py["rss"] - py["total"], 1),
        "bytewax_per_key": bytewax_key,
        "rest": round(per_user - py["rss"] - bytewax_key, 1),
        "bytewax_per_key_touched_this_epoch": base_one_epoch["bytes_per_user"] - empty - bytewax_key,
    }
    return {"users": users, "snapshot_bytes": snap, "rss": rss, "baseline_rss": base,
            "baseline_rss_one_epoch": base_one_epoch, "python_side": py, "breakdown": breakdown,
            "rss_per_user_within_target": per_user <= TARGET_BYTES,
            "seconds": round(time.perf_counter() - started, 1)}


def machine() -> dict[str, Any]:
    """Where the figures come from."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "bytewax": version("bytewax")}


def report(sizes: list[int], events_per_user: int = 10, batch_size: int = 1000,
           epoch_s: float = 10.0) -> dict[str, Any]:
    """The benchmark's one JSON object."""
    return {"target_bytes_per_user": TARGET_BYTES, "events_per_user": events_per_user,
            "source_batch_size": batch_size, "epoch_s": epoch_s, "machine": machine(),
            "sizes": [measure(users, events_per_user, batch_size, epoch_s) for users in sizes]}


def print_table(result: dict[str, Any]) -> None:
    """Human-readable tables of :func:`report`."""
    print(f"Snapshot bytes per user (generate personas, {result['events_per_user']} events/user; "
          "settled = advanced to the final watermark)")
    print(f"{'users':>10} {'measured':>9} {'mean':>7} {'p50':>6} {'p95':>6} {'p99':>6} {'max':>6}"
          f"   {'settled mean':>12} {'p99':>6}")
    for size in result["sizes"]:
        s = size["snapshot_bytes"]
        print(f"{size['users']:>10,} {s['users_measured']:>9,} {s['mean']:>7} {s['p50']:>6}"
              f" {s['p95']:>6} {s['p99']:>6} {s['max']:>6}   {s['settled']['mean']:>12}"
              f" {s['settled']['p99']:>6}" + ("  (sample)" if s["sampled"] else ""))
    print()
    print(f"RSS through build_flow ({EVENTS_PER_SYNTHETIC_USER} events/user, source batches of "
          f"{result['source_batch_size']}, {result['epoch_s']:g} s epochs); "
          f"target {result['target_bytes_per_user']} B/user")
    print(f"{'users':>10} {'start MiB':>10} {'end MiB':>8} {'VmHWM':>7} {'ru_maxrss':>9}"
          f" {'B/user':>7} {'events/s':>9} {'run s':>6}")
    for size in result["sizes"]:
        r = size["rss"]
        flag = "" if size["rss_per_user_within_target"] else "  OVER TARGET"
        print(f"{size['users']:>10,} {r['rss_start_mib']:>10} {r['rss_end_mib']:>8}"
              f" {r['vm_hwm_mib']:>7} {r['ru_maxrss_mib']:>9} {r['bytes_per_user']:>7}"
              f" {r['events_per_s']:>9,} {r['seconds']:>6}{flag}")
    print()
    print("Where a user's bytes go (B/user): state bytes object and other Python objects")
    print("(tracemalloc), what the allocator adds to them (RSS of the same objects outside Bytewax),")
    print("Bytewax per key (baseline flow), rest (flow RSS minus those); and Bytewax's extra per")
    print("key touched in the current epoch (transient, bounded by one epoch of traffic)")
    print(f"{'users':>10} {'RSS':>6} {'state':>7} {'py obj':>7} {'alloc':>6} {'bytewax':>8}"
          f" {'rest':>6} {'epoch key':>10}")
    for size in result["sizes"]:
        b = size["breakdown"]
        print(f"{size['users']:>10,} {size['rss']['bytes_per_user']:>6} {b['state_bytes']:>7}"
              f" {b['python_objects']:>7} {b['python_allocator']:>6} {b['bytewax_per_key']:>8}"
              f" {b['rest']:>6} {b['bytewax_per_key_touched_this_epoch']:>10}")
    print()
    print("Python side per user (tracemalloc / getsizeof on the traced users, RSS on all; outside Bytewax):")
    for size in result["sizes"]:
        p = size["python_side"]
        print(f"{size['users']:>10,}  " + ", ".join(f"{k} {v}" for k, v in p.items() if k != "users"))
    print()
    print("Seconds per size (flow, baselines, Python side, snapshot log): "
          + ", ".join(f"{size['users']:,}: {size['seconds']}" for size in result["sizes"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--events-per-user", type=int, default=10,
                        help="generated events per user for the snapshot distribution")
    parser.add_argument("--batch-size", type=int, default=Config().source_batch_size,
                        help="TestingSource batch size (the Kafka source's default poll size)")
    parser.add_argument("--epoch-s", type=float, default=Config().snapshot_interval_s,
                        help="Bytewax epoch of the segstream flow (segstream: snapshot_interval_s)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.add_argument("--child", choices=("flow", "baseline", "python"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "python":
        print(json.dumps(python_side(args.users[0])))
        return 0
    if args.child:
        run = flow_rss if args.child == "flow" else baseline_rss
        print(json.dumps(run(args.users[0], args.batch_size, args.epoch_s)))
        return 0
    result = report(args.users, args.events_per_user, args.batch_size, args.epoch_s)
    if args.json:
        print(json.dumps(result))
    else:
        print_table(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
