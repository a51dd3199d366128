"""Helpers for integration tests: worker configs, running `segstream run`, reading outputs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import orjson

from segstream.config import Config, load_config
from segstream.services import TansuBroker, TopicRecord, clean_env, free_ports
from segstream.tools.demo import processed, scrape
from segstream.tools.replay import Record, read_jsonl


def worker_env(config: Config, recovery_dir: Path | str, metrics_port: int = 0,
               snapshot_interval_s: float = 0.5) -> dict[str, str]:
    """Environment that makes `segstream run` use ``config``'s topics, Redis and prefix."""
    return clean_env({
        "SEGSTREAM_BROKERS": ",".join(config.brokers),
        "SEGSTREAM_INPUT_TOPICS": ",".join(config.input_topics),
        "SEGSTREAM_OUTPUT_TOPIC": config.output_topic,
        "SEGSTREAM_DLQ_TOPIC": config.dlq_topic,
        "SEGSTREAM_MODEL_EVENTS_TOPIC": config.model_events_topic,
        "SEGSTREAM_REDIS_URL": config.redis_url,
        "SEGSTREAM_REDIS_PREFIX": config.redis_prefix,
        "SEGSTREAM_RECOVERY_DIR": str(recovery_dir),
        "SEGSTREAM_METRICS_PORT": str(metrics_port),
        "SEGSTREAM_SNAPSHOT_INTERVAL_S": str(snapshot_interval_s),
    })


def make_config(broker: TansuBroker, redis_url: str, prefix: str, input_topic: str,
                output_topic: str, dlq_topic: str) -> Config:
    return load_config(env={
        "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": input_topic,
        "SEGSTREAM_OUTPUT_TOPIC": output_topic, "SEGSTREAM_DLQ_TOPIC": dlq_topic,
        "SEGSTREAM_REDIS_URL": redis_url, "SEGSTREAM_REDIS_PREFIX": prefix,
        "SEGSTREAM_RECOVERY_DIR": "",
        # Every worker follows its model-events topic: one per test, or a worker
        # would predict with another test's models.
        "SEGSTREAM_MODEL_EVENTS_TOPIC": f"{output_topic}-model-events",
    })


class WorkerProcess(subprocess.Popen[bytes]):
    """A `segstream run` process writing its output to ``log``."""

    def __init__(self, env: dict[str, str], args: tuple[str, ...], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:  # the child keeps its own descriptor
            super().__init__([sys.executable, "-m", "segstream.cli", "run", *args], env=env,
                             stdout=out, stderr=subprocess.STDOUT)


def start_worker(env: dict[str, str], *args: str, log: Path) -> WorkerProcess:
    return WorkerProcess(env, args, log)


def assert_running(*workers: WorkerProcess) -> None:
    """Fail with the exit code and the end of the log of any worker that has exited."""
    for worker in workers:
        if worker.poll() is not None:
            tail = worker.log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"a worker exited with code {worker.returncode}; "
                                 f"the end of {worker.log.name}:\n{tail}")


def cluster_ports(count: int) -> tuple[int, str]:
    """Ports for ``count`` processes: the metrics port and the ``-a`` addresses.

    Process N serves metrics on ``metrics_port + N``; all the ports are chosen
    together, so none of them is taken when the processes start.
    """
    ports = free_ports(2 * count, consecutive=True)  # metrics, then the cluster's addresses
    return ports[0], ",".join(f"127.0.0.1:{port}" for port in ports[count:])


def run_processes(env: dict[str, str], count: int, tmp_path: Path,
                  *args: str) -> tuple[list[int], str]:
    """Run ``count`` `segstream run --until-end -i N -a ...` processes together; exit codes, logs."""
    metrics_port, addresses = cluster_ports(count)
    env = env | {"SEGSTREAM_METRICS_PORT": str(metrics_port)}
    procs = [start_worker(env, "--until-end", "-i", str(i), "-a", addresses, *args,
                          log=tmp_path / f"p{i}.log") for i in range(count)]
    try:
        codes = [p.wait(120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return codes, "".join((tmp_path / f"p{i}.log").read_text() for i in range(count))


def keyed(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Generated lines as Kafka records keyed by user, as `segstream replay` sends them."""
    return [(r.key, r.value) for r in read_jsonl(lines) if isinstance(r, Record)]


def wait_processed(port: int, at_least: int, *workers: WorkerProcess, timeout: float = 60) -> int:
    """Wait until the workers together took ``at_least`` inputs; return how many they took.

    Worker N serves metrics on ``port + N``.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = sum(processed(scrape(port + i)) for i in range(len(workers)))
        if done >= at_least:
            return done
        assert_running(*workers)
        time.sleep(0.05)
    raise AssertionError(f"the workers did not process {at_least} inputs within {timeout}s")


def wait_ready(port: int, worker: WorkerProcess, timeout: float = 60) -> None:
    """Wait until the worker's /healthz answers ready (its dataflow polls its sources)."""
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        assert_running(worker)
        time.sleep(0.05)
    raise AssertionError(f"the worker was not ready within {timeout}s")


def change_docs(records: list[TopicRecord], *, drop: tuple[str, ...] = ("emitted_at",)) -> list[dict]:
    docs = []
    for record in records:
        doc = orjson.loads(record.value)
        assert record.key == doc["user_id"].encode()
        for name in drop:
            doc.pop(name)
        docs.append(doc)
    return docs
