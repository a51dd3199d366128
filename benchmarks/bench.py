"""`make bench`: throughput of segstream against the bare-engine ceiling, in one run.

Starts a Tansu broker and a redis-server, loads a generated log (default 1M
events, 100k users) into a two-partition topic keyed by user, then runs each
scenario on the same topic, each in its own process(es), reading to the end of
the topic (start-up included):

- ``ceiling``: a bare Bytewax Kafka -> Kafka passthrough with the same source
  settings and parser (``benchmarks/throughput.py``'s), one process;
- ``full``: ``segstream run --until-end``, one process;
- ``full_2p``: two ``segstream run`` processes in a Bytewax cluster (``-i/-a``),
  one partition each, users exchanged between them by key;
- ``full_2s``: two shards (``shards = 2``): independent ``segstream run``
  processes, one partition each, nothing exchanged; shard 0 learns what
  shard 1 sends on the learn topic;
- ``baseline``: a plain confluent-kafka consumer loop doing the same features,
  rules and sinks (``benchmarks/baseline.py``), one process.

Each scenario runs ``--runs`` times (default 3, round the scenarios), each
run with its own output topics and Redis prefix; its figure is the median
run, printed with every run's rate and the CPU seconds its processes, Tansu
and redis-server used.

Then, unless ``--latency-seconds 0``, latency (``benchmarks/latency.py``): a
tailing ``segstream run`` (one process) gets the log's next records at 25 %,
50 % and 90 % of the ``full`` scenario's rate, and produce -> ``segment-changes``
and produce -> Redis are measured (p50 / p95 / p99 / max). Then memory per
user at ``--memory-users`` (``benchmarks/state_memory.py``), and resume after
SIGKILL with ``--resume-users`` in state (``benchmarks/resume.py``).

It prints every table, writes the same text into the generated section of
``benchmarks/RESULTS.md`` (``--results``; between its ``bench:begin`` and
``bench:end`` markers, with the command, commit and date; the analysis around it
is written by hand), writes the figures as JSON (``--json``) and draws the PNG
charts from that JSON (``--charts``, default ``charts/`` beside the results
file, with the JSON as ``bench.json``; a run with ``--results ''`` draws none
unless asked). The broker
is Tansu: its costs are in every figure, and production runs Apache Kafka.

    python -m benchmarks.bench                          # everything, about 75 min on 2 cores
    python -m benchmarks.bench --events 20000 --users 2000 --scenarios ceiling,full \
        --runs 1 --latency-seconds 0 --memory-users --resume-users 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from benchmarks.charts import write_charts
from benchmarks.latency import CPU_WINDOW_S, WARMUP_RECORDS, LatencyRun, paced_run, process_cpu_s
from benchmarks.resume import measure_resume
from benchmarks.resume import report as resume_report
from segstream.config import Config
from segstream.services import RedisServer, TansuBroker, clean_env, free_port, free_ports
from segstream.tools.demo import processed, scrape

SCENARIOS = ("ceiling", "full", "full_2p", "full_2s", "baseline")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
CHART_DATA = "bench.json"
"""The run's figures, written beside its charts (latency samples left out)."""
BEGIN = "<!-- bench:begin: written by `make bench` (benchmarks/bench.py); edit outside the markers -->"
END = "<!-- bench:end -->"
LOADS = (0.25, 0.50, 0.90)
"""Latency is measured at these shares of the ``full`` scenario's throughput."""
INPUT_TOPIC = "clicks"
PARTITIONS = 2
RECOVERABLE = ("full", "full_2p", "full_2s")
"""Scenarios that are ``segstream run`` (``--recovery`` gives them Bytewax recovery)."""
DEFAULTS = Config()


@dataclass(frozen=True, slots=True)
class Result:
    """One scenario's run."""

    scenario: str
    processes: int
    events: int
    seconds: float
    """The median of ``runs``."""
    runs: tuple[float, ...] = ()
    """Wall seconds of each run, in order."""
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per run (mean over the runs) of the scenario's processes, the broker and Redis."""

    @property
    def rate(self) -> float:
        """Events per second, start-up included (median run)."""
        return self.events / self.seconds


def worker_env(broker: TansuBroker, redis_url: str, name: str) -> dict[str, str]:
    """Environment for one scenario's processes: its own output topics and Redis prefix."""
    return clean_env({
        "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": INPUT_TOPIC,
        "SEGSTREAM_OUTPUT_TOPIC": f"out-{name}", "SEGSTREAM_DLQ_TOPIC": f"dlq-{name}",
        "SEGSTREAM_MODEL_EVENTS_TOPIC": f"model-{name}", "SEGSTREAM_MODEL_LEARN_TOPIC": f"learn-{name}",
        "SEGSTREAM_REDIS_URL": redis_url,
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


def cpu_seconds(services: dict[str, subprocess.Popen[bytes] | None],
                since: dict[str, float] | None = None) -> dict[str, float]:
    """CPU seconds used so far by waited-for children (``workers``) and by each service.

    With ``since``: the CPU used after that reading.
    """
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    now = {"workers": children.ru_utime + children.ru_stime}
    for name, proc in services.items():
        if proc is not None:
            now[name] = process_cpu_s(proc.pid)
    return now if since is None else {k: v - since.get(k, 0.0) for k, v in now.items()}


def scenario_commands(scenario: str, expected: int, recovery_dir: str = "") -> list[list[str]]:
    """The command lines of one scenario's processes (``recovery_dir``: shards' parent directory)."""
    run = [sys.executable, "-m", "segstream.cli", "run", "--until-end"]
    if scenario == "full_2s":
        # A shard's settings differ from the other's: set per process through env(1).
        return [["env", "SEGSTREAM_SHARDS=2", f"SEGSTREAM_SHARD={i}",
                 *([f"SEGSTREAM_RECOVERY_DIR={recovery_dir}/shard-{i}"] if recovery_dir else []),
                 *run] for i in range(2)]
    if scenario == "ceiling":
        return [[sys.executable, "-m", "benchmarks.throughput", "--passthrough-only"]]
    if scenario == "full":
        return [run]
    if scenario == "full_2p":
        addresses = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
        return [[*run, "-i", str(i), "-a", addresses] for i in range(2)]
    if scenario == "baseline":
        return [[sys.executable, "-m", "benchmarks.baseline", "--consume-only", str(expected)]]
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIOS)}")


@dataclass(frozen=True, slots=True)
class Stage:
    """A broker and a redis-server with the generated log loaded into ``INPUT_TOPIC``."""

    broker: TansuBroker
    redis_server: RedisServer
    workdir: Path
    """Where each run keeps its processes' logs."""
    records: list[tuple[bytes | None, bytes]]
    sent: int
    """Events in the topic."""


@contextmanager
def staged_log(events: int, users: int, *, seed: int = 1) -> Iterator[Stage]:
    """Generate the log, start a broker and a redis-server, and load the log into the topic."""
    from segstream.tools.generate import generate  # noqa: PLC0415
    from segstream.tools.replay import Record, read_jsonl  # noqa: PLC0415

    log = generate(users, events, seed=seed)
    records = [(r.key, r.value) for r in read_jsonl(log.lines) if isinstance(r, Record)]
    with TansuBroker() as broker, RedisServer() as redis_server, \
            tempfile.TemporaryDirectory() as tmp:
        broker.create_topics([INPUT_TOPIC], partitions=PARTITIONS)
        sent = broker.produce(INPUT_TOPIC, records)
        yield Stage(broker, redis_server, Path(tmp), records, sent)


def run_scenario(stage: Stage, scenario: str, tag: str, *, env: dict[str, str] | None = None,
                 recovery: bool = False, timeout_s: float = 3600.0,
                 ) -> tuple[float, dict[str, float], int]:
    """Run ``scenario`` once to the end of the log, with its own output topics and Redis prefix.

    ``env`` is added to the workers' environment. ``recovery``: a segstream
    scenario keeps Bytewax recovery in a fresh directory (checked written).
    Returns the wall seconds, the CPU seconds its workers, the broker and Redis
    used, and its process count.
    """
    stage.broker.create_topics([f"out-{tag}", f"dlq-{tag}", f"model-{tag}", f"learn-{tag}"])
    logs = stage.workdir / tag
    logs.mkdir()
    env = dict(env or {})
    store = None
    if recovery and scenario in RECOVERABLE:
        env |= recovery_env(stage.workdir, tag)
        store = Path(env["SEGSTREAM_RECOVERY_DIR"])
    commands = scenario_commands(scenario, stage.sent, str(store or ""))
    services = {"broker": stage.broker.proc, "redis": stage.redis_server.proc}
    before = cpu_seconds(services)
    seconds = run_processes(
        commands, worker_env(stage.broker, stage.redis_server.url, tag) | env, logs,
        timeout_s=timeout_s)
    if store is not None and not (store.is_dir() and any(store.iterdir())):
        raise RuntimeError(f"{tag}: recovery was asked for, but the run wrote none")
    return seconds, cpu_seconds(services, before), len(commands)


def run_bench(events: int, users: int, scenarios: Sequence[str], *, seed: int = 1,
              runs: int = 1, timeout_s: float = 3600.0, latency_seconds: float = 0.0,
              latency_loads: Sequence[float] = LOADS, recovery: bool = False,
              ) -> tuple[list[Result], list[LatencyRun], dict[str, str]]:
    """Load the log once, run every scenario on it ``runs`` times, then the latency runs.

    Runs go round the scenarios (all of them once, then again), each run with
    its own output topics and Redis prefix, so no run finds another's output.
    A scenario's figure is its median run. ``recovery``: the segstream runs
    (``full``, ``full_2p``, ``full_2s``, latency) keep Bytewax recovery as ``segstream run``
    does by default, each in a fresh directory; otherwise it is off.
    """
    with staged_log(events, users, seed=seed) as stage:
        sent = stage.sent
        timings: dict[str, list[float]] = {name: [] for name in scenarios}
        cpu: dict[str, dict[str, float]] = {name: {} for name in scenarios}
        processes: dict[str, int] = {}
        for run in range(runs):
            for name in scenarios:
                tag = f"{name}-{run}"
                seconds, used, processes[name] = run_scenario(stage, name, tag, recovery=recovery,
                                                              timeout_s=timeout_s)
                timings[name].append(seconds)
                for part, spent in used.items():
                    cpu[name][part] = cpu[name].get(part, 0.0) + spent / runs
        results = [Result(name, processes[name], sent, statistics.median(timings[name]),
                          tuple(timings[name]), {k: round(v, 1) for k, v in cpu[name].items()})
                   for name in scenarios]
        full = next((r.rate for r in results if r.scenario == "full"), None)
        latency = [] if not latency_seconds or full is None else measure_latency(
            stage.broker, stage.redis_server, stage.records,
            [full * load for load in latency_loads], latency_seconds, stage.workdir,
            recovery=recovery)
    setting = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "broker": "Tansu (local, memory storage)",
        "log": f"{sent} events, {users} users, {PARTITIONS} partitions",
        "recovery": (f"on for segstream ({DEFAULTS.recovery_partitions} files, a snapshot "
                     f"every {DEFAULTS.snapshot_interval_s:g} s)" if recovery else "off"),
    }
    return results, latency, setting


def recovery_env(workdir: Path, tag: str) -> dict[str, str]:
    """Environment giving one run Bytewax recovery in a directory of its own (default settings)."""
    return {"SEGSTREAM_RECOVERY_DIR": str(workdir / f"recovery-{tag}")}


def measure_latency(broker: TansuBroker, redis_server: RedisServer,
                    records: Sequence[tuple[bytes, bytes]], rates: Sequence[float],
                    seconds: float, tmp: Path, *, recovery: bool = False) -> list[LatencyRun]:
    """Measure the bare broker and a tailing worker at each rate.

    Each rate gets fresh topics: the worker tails one input topic per rate
    (warmed up on the first), and the broker's own produce -> consume latency
    is measured at the same rate on a topic of its own. Tansu's fetch slows as
    a partition fills (at 1,500 events/s its own p50 went from 5 to 24 ms in
    50 s, then to 44 ms with p99 530 ms), so a rate sent after another would be
    measured on a slower broker.
    """
    records = [r for r in records if r[0] is not None]  # keyed by user: attributable in Redis
    name = "latency"
    inputs = [f"{name}-in-{i}" for i in range(len(rates))]
    floors = [f"floor-{i}" for i in range(len(rates))]
    broker.create_topics([*inputs, *floors], partitions=PARTITIONS)
    broker.create_topics([f"out-{name}", f"dlq-{name}", f"model-{name}"])
    port = free_port()
    env = worker_env(broker, redis_server.url, name) | {
        "SEGSTREAM_INPUT_TOPICS": ",".join(inputs), "SEGSTREAM_METRICS_PORT": str(port)}
    if recovery:
        env |= recovery_env(tmp, name)
    log = open(tmp / "latency.log", "wb")  # noqa: SIM115 - closed below
    worker = subprocess.Popen([sys.executable, "-m", "segstream.cli", "run"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        warm = broker.produce(inputs[0], records[:WARMUP_RECORDS])
        deadline = time.monotonic() + 120
        while processed(scrape(port)) < warm:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the latency worker did not take its warm-up: "
                                   + (tmp / "latency.log").read_text()[-2000:])
            time.sleep(0.2)
        assert broker.proc is not None
        broker_pid = broker.proc.pid
        runs, start = [], WARMUP_RECORDS
        for rate, topic, floor_topic in zip(rates, inputs, floors, strict=True):
            count = int(rate * seconds)
            paced = records[start:start + count]
            floor = paced_run(broker.bootstrap, floor_topic, floor_topic, None, "", paced,
                              rate=rate, seconds=seconds, id_field="messageId",
                              watch={"broker": broker_pid})
            run = paced_run(broker.bootstrap, topic, f"out-{name}", redis_server.url,
                            f"{name}:", paced, rate=rate, seconds=seconds,
                            watch={"broker": broker_pid, "worker": worker.pid})
            cpu = {"broker alone": floor.cpu["broker"], **run.cpu}
            runs.append(replace(run, broker=floor.kafka, cpu=cpu))
            start += count
        return runs
    finally:
        worker.terminate()
        worker.wait(30)
        log.close()


def latency_table(runs: Sequence[LatencyRun]) -> str:
    """Latency percentiles per load, in ms, and the CPU shares of the watched processes."""
    lines = [f"{'rate':>8} {'achieved':>9}  {'path':<6} {'count':>7} {'p50':>8} {'p95':>8} "
             f"{'p99':>8} {'max':>8}  (ms)"]
    for run in runs:
        paths = [("broker", run.broker)] if run.broker is not None else []
        for path, p in [*paths, ("kafka", run.kafka), ("redis", run.redis)]:
            lines.append(f"{run.rate:>8,.0f} {run.achieved:>9,.0f}  {path:<6} {p.count:>7} "
                         f"{p.p50:>8.1f} {p.p95:>8.1f} {p.p99:>8.1f} {p.max:>8.1f}")
        if run.cpu:
            shares = ", ".join(f"{name} {100 * first:.0f} -> {100 * last:.0f} %"
                               for name, (first, last) in run.cpu.items())
            lines.append(f"{'':>20}CPU share of the machine, first -> last "
                         f"{CPU_WINDOW_S:g} s: {shares}")
    return "\n".join(lines)


def table(results: Sequence[Result], setting: dict[str, str]) -> str:
    """The summary: events/s per scenario and the ratio to the ceiling."""
    ceiling = next((r.rate for r in results if r.scenario == "ceiling"), None)
    lines = [f"{k}: {v}" for k, v in setting.items()]
    lines.append(f"{'scenario':<10} {'processes':>9} {'seconds':>9} {'events/s':>10} {'/ ceiling':>9}"
                 f"  {'CPU s: workers/broker/redis':>27}  events/s of each run")
    for r in results:
        ratio = f"{r.rate / ceiling:.2f}" if ceiling else "-"
        each = "/".join(f"{r.events / seconds:,.0f}" for seconds in r.runs) or "-"
        used = "/".join(f"{r.cpu[k]:.0f}" for k in ("workers", "broker", "redis")
                        if k in r.cpu) or "-"
        lines.append(f"{r.scenario:<10} {r.processes:>9} {r.seconds:>9.1f} {r.rate:>10,.0f} {ratio:>9}"
                     f"  {used:>27}  {each}")
    return "\n".join(lines)


def memory_table(memory: dict[str, Any]) -> str:
    """Bytes per user at each size: snapshot bytes, and RSS growth through the flow."""
    lines = [f"{'users':>10} {'snapshot mean':>13} {'p99':>6} {'settled mean':>12} "
             f"{'RSS B/user':>10} {'VmHWM MiB':>10}  (target {memory['target_bytes_per_user']} B)"]
    for size in memory["sizes"]:
        snap, rss = size["snapshot_bytes"], size["rss"]
        lines.append(f"{size['users']:>10,} {snap['mean']:>13} {snap['p99']:>6} "
                     f"{snap['settled']['mean']:>12} {rss['bytes_per_user']:>10} "
                     f"{rss['vm_hwm_mib']:>10}")
    return "\n".join(lines)


def measure_memory(sizes: Sequence[int], timeout_s: float = 7200.0) -> dict[str, Any]:
    """``benchmarks/state_memory.py`` at ``sizes`` users, in its own process (RSS is per process)."""
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.state_memory", "--users", *map(str, sizes), "--json"],
        capture_output=True, text=True, check=True, timeout=timeout_s,
        cwd=Path(__file__).resolve().parent.parent)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def commit() -> str:
    """The checkout's commit, ``+changes`` when tracked files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               check=True, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"{head}+changes" if dirty else head


def chart_directory(charts: Path | None, results: str) -> Path | None:
    """Where a run draws its charts: ``--charts``, else beside the results file it writes.

    The generated section links the charts beside RESULTS.md, so a side run that
    writes no results file (``--results ''``) must not redraw them either.

    >>> chart_directory(None, "benchmarks/RESULTS.md")
    PosixPath('benchmarks/charts')
    >>> chart_directory(None, "") is None
    True
    """
    if charts is not None:
        return charts
    return Path(results).parent / "charts" if results else None


def results_section(command: str, printed: Sequence[str], charts: Sequence[Path],
                    results: Path, at: str | None = None) -> str:
    """The generated section of RESULTS.md: the command, then exactly what was printed.

    ``at``: the commit measured (default: the checkout's now).
    """
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [BEGIN, "", f"Command: `{command}`, {when}, at {at or commit()}.", "", "```text",
             *printed, "```", ""]
    for chart in charts:
        try:
            where = chart.resolve().relative_to(results.resolve().parent)
        except ValueError:
            where = chart.resolve()
        lines.append(f"![{chart.stem}]({where.as_posix()})")
    lines.extend(["", END])
    return "\n".join(lines)


def write_results(path: Path, section: str) -> None:
    """Replace the generated section of ``path`` (or add it after the title)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start, end = text.find(BEGIN), text.find(END)
    if start >= 0 and end > start:
        text = text[:start] + section + text[end + len(END):]
    else:
        title, newline, rest = text.partition("\n")
        text = f"{title}{newline}\n{section}\n{rest}"
    path.write_text(text)


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m benchmarks.bench [--events N] [--users N] [--scenarios ...]``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS),
                    help=f"comma-separated, from {', '.join(SCENARIOS)}")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs of each throughput scenario; the figure is the median")
    ap.add_argument("--latency-seconds", type=float, default=30.0,
                    help="seconds of paced input per load for the latency runs (0: none)")
    ap.add_argument("--memory-users", type=int, nargs="*", default=[100_000, 1_000_000],
                    help="state sizes for benchmarks/state_memory.py (none: skip)")
    ap.add_argument("--resume-users", type=int, default=1_000_000,
                    help="users in state for the resume after SIGKILL (0: skip)")
    ap.add_argument("--recovery", action="store_true",
                    help="give the segstream runs Bytewax recovery, as `segstream run` has by "
                         "default (off otherwise: no snapshots, no epoch commits)")
    ap.add_argument("--json", type=Path, help="write the results here as JSON")
    ap.add_argument("--charts", type=Path,
                    help="directory for the PNG charts (default: charts/ beside the --results "
                         "file; none without one)")
    ap.add_argument("--results", default=str(RESULTS),
                    help="Markdown file whose generated section gets the printed tables "
                         "(default benchmarks/RESULTS.md; empty: none)")
    args = ap.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in scenarios:
        if name not in SCENARIOS:
            ap.error(f"--scenarios: unknown {name!r}; choose from {', '.join(SCENARIOS)}")
    if args.runs < 1:
        ap.error("--runs: at least 1")
    measured = commit()  # before this run writes its JSON and charts into the checkout
    results, latency, setting = run_bench(args.events, args.users, scenarios, runs=args.runs,
                                          latency_seconds=args.latency_seconds,
                                          recovery=args.recovery)
    setting["runs"] = f"median of {args.runs}"
    printed: list[str] = []

    def show(text: str) -> None:
        print(text, flush=True)
        printed.append(text)

    show(table(results, setting))
    if latency:
        show(latency_table(latency))
    memory = measure_memory(args.memory_users) if args.memory_users else None
    if memory:
        show(memory_table(memory))
    resume = measure_resume(args.resume_users) if args.resume_users else None
    if resume:
        show(resume_report(resume))
    document = {
        "setting": setting,
        "results": [{**asdict(r), "rate": r.rate} for r in results],
        "latency": [{k: v for k, v in asdict(run).items() if not k.endswith("_samples")}
                    for run in latency],
        "memory": memory["sizes"] if memory else [],
        "resume": resume,
    }
    figures = json.dumps(document, indent=2)
    if args.json:
        args.json.write_text(figures)
    where = chart_directory(args.charts, args.results)
    charts: list[Path] = []
    if where is not None:
        charts = write_charts(document, where)
        # The figures behind the charts, kept with them (`python -m benchmarks.charts` redraws).
        (where / CHART_DATA).write_text(figures)
    for path in charts:
        print(f"chart: {path}")
    if args.results:
        command = " ".join(["python -m benchmarks.bench", *(argv if argv is not None else sys.argv[1:])])
        write_results(Path(args.results), results_section(command, printed, charts,
                                                          Path(args.results), measured))
        print(f"tables written to {args.results}")


if __name__ == "__main__":
    main()
