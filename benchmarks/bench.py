"""`make bench`: throughput of segstream against the bare-engine ceiling, in one run.

Starts a Tansu broker and a redis-server, loads a generated log (default 1M
events, 100k users) into a two-partition topic keyed by user, then runs each
scenario on the same topic, each in its own process(es), reading to the end of
the topic (start-up included):

- ``ceiling``: a bare Bytewax Kafka -> Kafka passthrough with the same source
  settings and parser (``benchmarks/throughput.py``'s), one process;
- ``full``: ``segstream run --until-end``, one process;
- ``full_2p``: two ``segstream run`` processes, one partition each;
- ``baseline``: a plain confluent-kafka consumer loop doing the same features,
  rules and sinks (``benchmarks/baseline.py``), one process.

It prints a table (events/s, ratio to the ceiling) and writes it as JSON
(``--json``). The broker is Tansu: its costs are in every figure, and
production runs Apache Kafka.

    python -m benchmarks.bench                          # the full run
    python -m benchmarks.bench --events 20000 --users 2000 --scenarios ceiling,full
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from segstream.services import RedisServer, TansuBroker, clean_env, free_port

SCENARIOS = ("ceiling", "full", "full_2p", "baseline")
INPUT_TOPIC = "clicks"
PARTITIONS = 2


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario's run."""

    scenario: str
    processes: int
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        """Events per second, start-up included."""
        return self.events / self.seconds


def worker_env(broker: TansuBroker, redis_url: str, name: str) -> dict[str, str]:
    """Environment for one scenario's processes: its own output topics and Redis prefix."""
    return clean_env({
        "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": INPUT_TOPIC,
        "SEGSTREAM_OUTPUT_TOPIC": f"out-{name}", "SEGSTREAM_DLQ_TOPIC": f"dlq-{name}",
        "SEGSTREAM_MODEL_EVENTS_TOPIC": f"model-{name}", "SEGSTREAM_REDIS_URL": redis_url,
        "SEGSTREAM_REDIS_PREFIX": f"{name}:", "SEGSTREAM_RECOVERY_DIR": "",
        "SEGSTREAM_METRICS_PORT": "0", "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    })


def run_processes(commands: Sequence[list[str]], env: dict[str, str], logs: Path,
                  *, timeout_s: float) -> float:
    """Run commands together; return the wall time until the last one exits (all must exit 0)."""
    started = time.perf_counter()
    procs = []
    for i, command in enumerate(commands):
        log = open(logs / f"{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for proc, _log in procs:
            code = proc.wait(timeout_s)
            if code != 0:
                text = "".join((logs / f"{i}.log").read_text()[-3000:] for i in range(len(procs)))
                raise RuntimeError(f"{commands[0][:5]} exited {code}:\n{text}")
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
            log.close()
    return time.perf_counter() - started


def scenario_commands(scenario: str, expected: int) -> list[list[str]]:
    """The command lines of one scenario's processes."""
    run = [sys.executable, "-m", "segstream.cli", "run", "--until-end"]
    if scenario == "ceiling":
        return [[sys.executable, "-m", "benchmarks.throughput", "--passthrough-only"]]
    if scenario == "full":
        return [run]
    if scenario == "full_2p":
        addresses = f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"
        return [[*run, "-i", str(i), "-a", addresses] for i in range(2)]
    if scenario == "baseline":
        return [[sys.executable, "-m", "benchmarks.baseline", "--consume-only", str(expected)]]
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


def run_bench(events: int, users: int, scenarios: Sequence[str], *, seed: int = 1,
              timeout_s: float = 3600.0) -> tuple[list[Result], dict[str, str]]:
    """Load the log once and run every scenario on it; return the results and the setting."""
    from segstream.tools.generate import generate  # noqa: PLC0415
    from segstream.tools.replay import Record, read_jsonl  # noqa: PLC0415

    log = generate(users, events, seed=seed)
    records = [(r.key, r.value) for r in read_jsonl(log.lines) if isinstance(r, Record)]
    results = []
    with TansuBroker() as broker, RedisServer() as redis_server, \
            tempfile.TemporaryDirectory() as tmp:
        broker.create_topics([INPUT_TOPIC], partitions=PARTITIONS)
        for name in scenarios:
            broker.create_topics([f"out-{name}", f"dlq-{name}", f"model-{name}"])
        sent = broker.produce(INPUT_TOPIC, records)
        for name in scenarios:
            commands = scenario_commands(name, sent)
            logs = Path(tmp) / name
            logs.mkdir()
            seconds = run_processes(commands, worker_env(broker, redis_server.url, name), logs,
                                    timeout_s=timeout_s)
            results.append(Result(name, len(commands), sent, seconds))
    setting = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "broker": "Tansu (local, memory storage)",
        "log": f"{sent} events, {users} users, {PARTITIONS} partitions",
    }
    return results, setting


def table(results: Sequence[Result], setting: dict[str, str]) -> str:
    """The summary: events/s per scenario and the ratio to the ceiling."""
    ceiling = next((r.rate for r in results if r.scenario == "ceiling"), None)
    lines = [f"{k}: {v}" for k, v in setting.items()]
    lines.append(f"{'scenario':<10} {'processes':>9} {'seconds':>9} {'events/s':>10} {'/ ceiling':>9}")
    for r in results:
        ratio = f"{r.rate / ceiling:.2f}" if ceiling else "-"
        lines.append(f"{r.scenario:<10} {r.processes:>9} {r.seconds:>9.1f} {r.rate:>10,.0f} {ratio:>9}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench [--events N] [--users N] [--scenarios ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, from {', '.join(SCENARIOS)}")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in scenarios:
        if name not in SCENARIOS:
            ap.error(f"--scenarios: unknown {name!r}; choose from {', '.join(SCENARIOS)}")
    results, setting = run_bench(args.events, args.users, scenarios)
    print(table(results, setting))
    if args.json:
        args.json.write_text(json.dumps({"setting": setting, "results": [
            {**asdict(r), "rate": r.rate} for r in results]}, indent=2))


if __name__ == "__main__":
    main()
