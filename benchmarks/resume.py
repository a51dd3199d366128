"""Resume after SIGKILL with many users in state: how long until new events flow again.

    python -m benchmarks.resume --users 1000000
    python -m benchmarks.resume --users 20000 --json /tmp/resume.json

A tailing ``segstream run`` (one process, recovery on) is started on an empty
one-partition topic on a Tansu broker, writing to a redis-server; its RSS is
read once it is up. Then it takes the synthetic users of
``benchmarks/state_memory.py`` (three events each, in time order over three
days). Once it has taken every event, it is left alone for two snapshot
intervals (its settle ticks settle every user's last burst, and a recovery
snapshot holding them lands), its RSS is read again (the growth per user is
what a tailing worker holds per settled user), and it is killed with SIGKILL.

Then the same command is started again on the same recovery directory, and one
new event (a user that did not exist) is produced at once. **Resume time** is
from that restart to the new user's profile appearing in Redis: process
start-up, Bytewax loading every user's snapshot, segstream rebuilding each
user's timers and population contribution, and the new event's way through.
``users_in_state`` (the worker's gauge) then shows the users came back from
the snapshot rather than from scratch.

The figures on this machine: ``benchmarks/RESULTS.md``. The broker is Tansu.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from redis import Redis
from segstream.operators.events import iso_utc
from segstream.state.redis import RedisLayout

from benchmarks.state_memory import SPAN_S, T0, synthetic_docs
from segstream.config import Config
from segstream.services import RedisServer, TansuBroker, clean_env, free_port
from segstream.tools.demo import processed, scrape

PROJECT = Path(__file__).resolve().parent.parent
TOPIC = "resume-in"
PREFIX = "resume:"
PROBE_USER = "resume-probe"


def worker_env(broker: TansuBroker, redis_url: str, recovery: Path, port: int,
               snapshot_interval_s: float, recovery_partitions: int) -> dict[str, str]:
    """The worker's environment: its own topics, recovery directory and metrics port."""
    return clean_env({
        "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": TOPIC,
        "SEGSTREAM_OUTPUT_TOPIC": "resume-out", "SEGSTREAM_DLQ_TOPIC": "resume-dlq",
        "SEGSTREAM_MODEL_EVENTS_TOPIC": "resume-models", "SEGSTREAM_REDIS_URL": redis_url,
        "SEGSTREAM_REDIS_PREFIX": PREFIX, "SEGSTREAM_RECOVERY_DIR": str(recovery),
        "SEGSTREAM_SNAPSHOT_INTERVAL_S": str(snapshot_interval_s),
        "SEGSTREAM_RECOVERY_PARTITIONS": str(recovery_partitions),
        "SEGSTREAM_METRICS_PORT": str(port), "PYTHONPATH": str(PROJECT),
    })


def vm_rss_of(pid: int) -> int:
    """Resident set size of process ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def directory_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def probe_event() -> tuple[bytes, bytes]:
    """One event of a user nobody has seen, after every synthetic event."""
    doc = {"type": "track", "event": "Product Viewed", "userId": PROBE_USER,
           "messageId": "resume-probe-1", "timestamp": iso_utc(T0 + SPAN_S + 60.0)}
    return PROBE_USER.encode(), orjson.dumps(doc)


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "segstream.cli", "run"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT)


def _wait(what: str, done: Any, worker: subprocess.Popen[bytes], log: Path,
          timeout_s: float, every_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if worker.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what}: worker exited or timed out\n{log.read_text()[-3000:]}")
        time.sleep(every_s)


def measure_resume(users: int, *, snapshot_interval_s: float = 5.0,
                   recovery_partitions: int = Config().recovery_partitions,
                   timeout_s: float = 3600.0) -> dict[str, Any]:
    """Build ``users`` users' state, SIGKILL the worker, restart it; return the figures."""
    events = 3 * users
    with tempfile.TemporaryDirectory() as tmp, TansuBroker() as broker, \
            RedisServer() as redis_server:
        broker.create_topics([TOPIC, "resume-out", "resume-dlq", "resume-models"])
        recovery, log = Path(tmp) / "recovery", Path(tmp) / "worker.log"
        port = free_port()
        env = worker_env(broker, redis_server.url, recovery, port, snapshot_interval_s,
                         recovery_partitions)
        worker = _start(env, log)
        try:
            _wait("starting", lambda: bool(scrape(port)), worker, log, 120)
            time.sleep(1.0)
            rss_empty = vm_rss_of(worker.pid)
            built = time.perf_counter()
            broker.produce(TOPIC, ((doc[doc.index(b'"userId":"') + 10:].split(b'"', 1)[0], doc)
                                   for doc in synthetic_docs(users)))
            _wait("building state", lambda: processed(scrape(port)) >= events, worker, log,
                  timeout_s, every_s=1.0)
            build_s = time.perf_counter() - built
            time.sleep(2 * snapshot_interval_s + 1.0)  # settled, and a snapshot holding it
            samples = scrape(port)
            rss_before = vm_rss_of(worker.pid)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(30)
        finally:
            if worker.poll() is None:
                worker.kill()
        snapshot_bytes = directory_bytes(recovery)

        redis = Redis.from_url(redis_server.url)
        probe_key = RedisLayout(PREFIX).user(PROBE_USER)
        restarted = time.perf_counter()
        worker = _start(env, log)
        try:
            broker.produce(TOPIC, [probe_event()])
            _wait("resuming", lambda: redis.hget(probe_key, "events_total") is not None, worker,
                  log, timeout_s, every_s=0.01)
            resume_s = time.perf_counter() - restarted
            resumed = scrape(port)
            rss_after = vm_rss_of(worker.pid)
        finally:
            worker.kill()
            worker.wait(30)
            redis.close()
    return {
        "users": users, "events": events, "recovery_partitions": recovery_partitions,
        "build_s": round(build_s, 1),
        "build_events_per_s": round(events / build_s),
        "users_in_state_before_kill": int(samples.get("segstream_users_in_state", 0)),
        "rss_empty_mib": round(rss_empty / 2**20, 1),
        "rss_before_kill_mib": round(rss_before / 2**20, 1),
        "rss_per_user_before_kill": round((rss_before - rss_empty) / users),
        "snapshot_dir_mib": round(snapshot_bytes / 2**20, 1),
        "snapshot_bytes_per_user": round(snapshot_bytes / users),
        "resume_s": round(resume_s, 2),
        "users_in_state_after_resume": int(resumed.get("segstream_users_in_state", 0)),
        "rss_after_resume_mib": round(rss_after / 2**20, 1),
    }


def report(result: dict[str, Any]) -> str:
    """One line per figure."""
    return "\n".join(f"{name:>28}  {value}" for name, value in result.items())


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m benchmarks.resume [--users N] [--json]``."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--snapshot-interval-s", type=float, default=5.0)
    ap.add_argument("--recovery-partitions", type=int, default=Config().recovery_partitions)
    ap.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = ap.parse_args(argv)
    result = measure_resume(args.users, snapshot_interval_s=args.snapshot_interval_s,
                            recovery_partitions=args.recovery_partitions)
    print(json.dumps(result) if args.json else report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
