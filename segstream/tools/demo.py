"""``segstream demo``: the whole pipeline on this machine, with nothing to set up.

Starts a Tansu Kafka-protocol broker and a redis-server on free loopback
ports, creates the topics, generates a synthetic clickstream (``segstream
generate``'s personas, a few malformed events included), and runs the real
worker (``segstream run`` in a child process) on it with live progress. Then
it prints a summary read back from the outputs themselves (the
``segment-changes`` and dead-letter topics and Redis) and stops everything it
started.

- ``--events N`` (default 20000): produce N events, run the worker until they
  are all processed, then exit.
- ``--live``: stream the N events at ``--rate`` events/s to a tailing worker;
  Ctrl-C stops it (with SIGTERM, as a platform would) and prints the summary.
- ``--json``: the summary is one JSON object on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from segstream.kafka import produce_waiting
from segstream.operators.changes import REASON_HEADER
from segstream.operators.events import Event
from segstream.operators.parse import EventParser
from segstream.services import RedisServer, TansuBroker, clean_env, free_port
from segstream.state.redis import RedisStore
from segstream.tools.replay import Record, read_jsonl

INPUT_TOPIC = "clickstream"
OUTPUT_TOPIC = "segment-changes"
DLQ_TOPIC = "segstream-dead-letters"


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="run the whole pipeline locally on synthetic data", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=20000, help="events to generate (default 20000)")
    parser.add_argument("--users", type=int, default=None, help="users (default: events / 20)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    parser.add_argument("--partitions", type=int, default=2, help="input topic partitions")
    parser.add_argument("--live", action="store_true", help="stream until Ctrl-C instead")
    parser.add_argument("--rate", type=float, default=2000.0, help="events/s with --live")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=_cmd_demo)


def _progress(message: str) -> None:
    print(f"\r{message}\033[K", end="", file=sys.stderr, flush=True)


def scrape(port: int) -> dict[str, float]:
    """Read a worker's /metrics into ``{sample name{labels}: value}`` (empty if unreachable)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def processed(samples: dict[str, float]) -> int:
    """Count the inputs the worker has taken (valid events plus dead letters)."""
    total = samples.get("segstream_events_total", 0.0)
    total += sum(v for k, v in samples.items() if k.startswith("segstream_dead_letters_total{"))
    return int(total)


def summarize(
    broker: TansuBroker, store: RedisStore, lines: list[bytes], elapsed_s: float
) -> dict[str, Any]:
    """Build the summary from what the outputs hold, not from the worker's own counts."""
    parser = EventParser()
    valid_users = {e.key for e in map(parser.parse, lines) if isinstance(e, Event)}
    changes = [orjson.loads(r.value) for r in broker.read_topic(OUTPUT_TOPIC) if r.value]
    dead = broker.read_topic(DLQ_TOPIC)
    reasons = Counter(dict(r.headers).get(REASON_HEADER, b"?").decode() for r in dead)
    users = store.user_ids()
    segments = {name: len(members) for name, members in sorted(store.segments().items())}
    samples = [{"user_id": u, **store.profile(u)} for u in users[:3]]
    return {
        "broker": "tansu (local, memory)",
        "events": len(lines),
        "valid_events": len(lines) - len(dead),
        "dead_letters": {"total": len(dead), "by_reason": dict(sorted(reasons.items()))},
        "changes": {
            "total": len(changes),
            "by_kind": dict(sorted(Counter(c["kind"] for c in changes).items())),
        },
        "distinct_valid_users": len(valid_users),
        "redis_profiles": len(users),
        "segments": segments,
        "elapsed_s": round(elapsed_s, 3),
        "events_per_s": round(len(lines) / elapsed_s, 1) if elapsed_s > 0 else None,
        "sample_profiles": samples,
    }


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary).decode())
        return
    print(f"\nevents {summary['events']}  valid {summary['valid_events']}  "
          f"dead letters {summary['dead_letters']['total']} {summary['dead_letters']['by_reason']}")
    print(f"changes {summary['changes']['total']} by kind {summary['changes']['by_kind']}")
    print(f"users: {summary['distinct_valid_users']} distinct valid, "
          f"{summary['redis_profiles']} profiles in Redis")
    print(f"processed in {summary['elapsed_s']} s ({summary['events_per_s']} events/s, "
          f"{summary['broker']} broker, worker start-up included)")
    print("segment sizes:")
    for name, size in summary["segments"].items():
        print(f"  {name:<28} {size}")
    print("sample profiles:")
    for profile in summary["sample_profiles"]:
        print("  " + orjson.dumps(profile).decode())


def _cmd_demo(args: argparse.Namespace) -> int:
    from segstream.tools.generate import generate  # noqa: PLC0415

    if args.events < 1:
        print("segstream demo: --events must be >= 1", file=sys.stderr)
        return 2
    users = args.users or max(10, args.events // 20)
    workdir = Path(tempfile.mkdtemp(prefix="segstream-demo-"))
    _progress("starting broker and redis-server ...")
    with TansuBroker(log_path=workdir / "broker.log") as broker, RedisServer() as redis_server:
        broker.create_topics([INPUT_TOPIC], partitions=args.partitions)
        broker.create_topics([OUTPUT_TOPIC, DLQ_TOPIC])
        metrics_port = free_port()
        env = clean_env({
            "SEGSTREAM_BROKERS": broker.bootstrap,
            "SEGSTREAM_INPUT_TOPICS": INPUT_TOPIC,
            "SEGSTREAM_OUTPUT_TOPIC": OUTPUT_TOPIC,
            "SEGSTREAM_DLQ_TOPIC": DLQ_TOPIC,
            "SEGSTREAM_REDIS_URL": redis_server.url,
            "SEGSTREAM_METRICS_PORT": str(metrics_port),
            "SEGSTREAM_RECOVERY_DIR": str(workdir / "recovery"),
            "SEGSTREAM_SNAPSHOT_INTERVAL_S": "2",
            # The default warm-up (3,000 snapshots) is most of what a 20k-event
            # demo makes; users get a cluster at their first snapshot after it.
            "SEGSTREAM_CLUSTER_WARMUP": "500",
        })
        _progress(f"generating {args.events} events for {users} users ...")
        log = generate(users, args.events, args.seed)
        lines = list(log.lines)
        started = time.monotonic()
        if args.live:
            return _run_live(args, broker, redis_server, env, metrics_port, lines, workdir)
        _progress(f"producing {len(lines)} events to {INPUT_TOPIC} ...")
        broker.produce(INPUT_TOPIC, ((r.key, r.value) for r in _records(lines)))
        worker = _start_worker(env, workdir, until_end=True)
        code = _watch(worker, metrics_port, len(lines))
        elapsed = time.monotonic() - started
        _progress("")
        if code != 0:
            print(f"\nworker failed with exit code {code}; log: {workdir / 'worker.log'}",
                  file=sys.stderr)
            print((workdir / "worker.log").read_text()[-4000:], file=sys.stderr)
            return 1
        store = RedisStore.from_url(redis_server.url)
        try:
            _print_summary(summarize(broker, store, lines, elapsed), args.json)
        finally:
            store.close()
    return 0


def _records(lines: list[bytes]) -> list[Record]:
    """Lines as replay sends them: byte for byte, keyed by user when they parse."""
    return [r for r in read_jsonl(lines) if isinstance(r, Record)]


def _start_worker(env: dict[str, str], workdir: Path, *, until_end: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "segstream.cli", "run"] + (["--until-end"] if until_end else [])
    log = open(workdir / "worker.log", "wb")  # noqa: SIM115 - lives as long as the worker
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _watch(worker: subprocess.Popen[bytes], metrics_port: int, total: int) -> int:
    started = time.monotonic()
    while worker.poll() is None:
        done = processed(scrape(metrics_port))
        rate = done / max(time.monotonic() - started, 1e-9)
        _progress(f"worker: {done}/{total} events processed ({rate:,.0f} events/s)")
        time.sleep(0.2)
    return worker.returncode


def _run_live(
    args: argparse.Namespace, broker: TansuBroker, redis_server: RedisServer,
    env: dict[str, str], metrics_port: int, lines: list[bytes], workdir: Path,
) -> int:
    from confluent_kafka import Producer  # noqa: PLC0415

    worker = _start_worker(env, workdir, until_end=False)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    records = _records(lines)
    started = time.monotonic()
    sent = 0
    print("streaming; Ctrl-C to stop", file=sys.stderr)
    try:
        while worker.poll() is None:
            due = int((time.monotonic() - started) * args.rate)
            while sent < min(due, len(records)):
                produce_waiting(producer, INPUT_TOPIC, records[sent].value, records[sent].key)
                sent += 1
            producer.poll(0)
            done = processed(scrape(metrics_port))
            _progress(f"sent {sent}, worker processed {done}")
            time.sleep(0.1)
    except KeyboardInterrupt:
        pass
    producer.flush(10)
    worker.send_signal(signal.SIGTERM)
    code = worker.wait(30)
    elapsed = time.monotonic() - started
    _progress("")
    store = RedisStore.from_url(redis_server.url)
    try:
        _print_summary(summarize(broker, store, lines[:sent], elapsed), args.json)
    finally:
        store.close()
    return 0 if code == 0 else 1
