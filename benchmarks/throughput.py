"""First throughput figure: the full segstream flow against a bare Bytewax passthrough.

Both read the same generated log from a local Tansu broker with the same source
settings and parser, in one process, start-up included, to the end of the topic
(``tail=False``). The passthrough parses each message and writes it to Kafka;
the full flow is ``build_flow`` with its Kafka and Redis sinks.

    python -m benchmarks.throughput --events 200000 --users 20000

Numbers measured on Tansu are partly Tansu's; production runs Apache Kafka.
The full harness (latency, scaling, memory) is issue 7's.
"""

from __future__ import annotations

import argparse
import platform
import time

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import run_main
from segstream.flows.connectors import KafkaOutSink, OutMessage, kafka_source
from segstream.flows.segmentation import build_flow, parse_batch
from segstream.operators.event_time import PartitionWatermark, Stamped
from segstream.operators.parse import EventParser

from segstream.config import load_config
from segstream.services import RedisServer, TansuBroker
from segstream.tools.generate import generate


def passthrough_flow(config) -> Dataflow:  # type: ignore[no-untyped-def]
    parser = EventParser(taxonomy=config.taxonomy)
    clock = PartitionWatermark(config.allowed_lateness_s)  # one partition: one clock
    flow = Dataflow("passthrough")
    raw = op.input("in", flow, kafka_source(config, tail=False))
    parsed = op.flat_map_batch("parse", raw, lambda b: parse_batch(parser, b, clock))
    out = op.map("out", parsed, lambda e: ("", OutMessage(
        config.output_topic, e.key.encode() if isinstance(e, Stamped) else None, b"{}")))
    op.output("kafka", out, KafkaOutSink(config))
    return flow


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--passthrough-only", action="store_true",
                    help="run only the passthrough, on the topics of SEGSTREAM_* (benchmarks/bench.py)")
    args = ap.parse_args()
    if args.passthrough_only:
        run_main(passthrough_flow(load_config()))
        return
    log = generate(args.users, args.events, seed=1)
    with TansuBroker() as broker, RedisServer() as redis_server:
        broker.create_topics(["clicks"], partitions=args.partitions)
        broker.create_topics(["out-pass", "out-full", "dlq-pass", "dlq-full"])
        broker.produce("clicks", ((None, line) for line in log.lines))
        results = {}
        for name, out, dlq in (("passthrough", "out-pass", "dlq-pass"), ("full", "out-full", "dlq-full")):
            config = load_config(env={
                "SEGSTREAM_BROKERS": broker.bootstrap, "SEGSTREAM_INPUT_TOPICS": "clicks",
                "SEGSTREAM_OUTPUT_TOPIC": out, "SEGSTREAM_DLQ_TOPIC": dlq,
                "SEGSTREAM_REDIS_URL": redis_server.url, "SEGSTREAM_RECOVERY_DIR": ""})
            flow = passthrough_flow(config) if name == "passthrough" else build_flow(config, tail=False)
            started = time.perf_counter()
            run_main(flow)
            results[name] = args.events / (time.perf_counter() - started)
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"broker: Tansu (local, memory), {args.events} events, {args.users} users, "
          f"{args.partitions} partition(s), 1 process")
    for name, rate in results.items():
        print(f"{name:<12} {rate:>10,.0f} events/s")
    print(f"full / passthrough = {results['full'] / results['passthrough']:.2f}")


if __name__ == "__main__":
    main()
