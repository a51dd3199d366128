"""``segstream run``: the long-lived worker.

Loads the config (file + ``SEGSTREAM_*``), checks the segments file, creates
the Bytewax recovery directory if missing, serves /metrics and /healthz, and
runs the dataflow until SIGTERM or SIGINT, on which it stops cleanly: sinks
are flushed and closed; the next start resumes from the last snapshot and
replays at most one snapshot interval (at-least-once).

Scaling: within a process, more workers share one GIL, so processes are the
way to scale, in one of two ways; process ``i`` serves metrics on
``metrics_port + i`` in both.

- Shards (``shards = N``, ``shard = i`` in each process): N independent
  processes, each reading the input partitions ``p`` with ``p mod N == i``,
  with its own recovery directory. Nothing crosses between them in Bytewax;
  shard 0 holds the model learner and the others send it what the models
  learn from on ``model_learn_topic``. The fastest way (``benchmarks/RESULTS.md``);
  the shard count is fixed for the life of the recovery directories.
- A Bytewax cluster (``--process-id i --addresses host0:port,...``, Bytewax's
  ``-i/-a``): users are exchanged between processes by key, so the process
  count may change between runs on one shared recovery directory.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import signal
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import orjson

from segstream.config import Config, load_config, load_segments, redact_url
from segstream.errors import ConfigError, SegstreamError
from segstream.health import HEALTH, fatal_reason

if TYPE_CHECKING:
    from segstream.flows.segmentation import Sinks

log = logging.getLogger("segstream.run")


def register(subparsers: Any) -> None:
    """Add the ``run`` subcommand."""
    parser = subparsers.add_parser(
        "run", help="run the worker (long-lived)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="TOML config (default: $SEGSTREAM_CONFIG)")
    parser.add_argument(
        "--until-end", action="store_true",
        help="stop once the input topics are read to their current end (backfills, tests, demo)",
    )
    parser.add_argument("-i", "--process-id", type=int, default=None,
                        help="this process's index in a multi-process cluster")
    parser.add_argument("-a", "--addresses", default=None,
                        help="comma list of host:port of every process of the cluster")
    parser.set_defaults(func=_cmd_run)


def recovery_config(config: Config, partitions: int) -> Any:
    """Return Bytewax's RecoveryConfig, creating and initialising the directory if needed.

    Returns ``None`` when ``recovery_dir`` is empty (recovery off).
    """
    from bytewax.recovery import RecoveryConfig, init_db_dir  # noqa: PLC0415

    if not config.recovery_dir:
        return None
    directory = Path(config.recovery_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("recovery_dir", "config", f"cannot create {directory}: {exc}") from exc
    # Every process of a cluster may start at once on a shared directory: the
    # lock makes exactly one of them create the partitions and the others wait.
    with open(directory / ".segstream-init.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not any(directory.glob("part-*.sqlite3")):
            init_db_dir(directory, partitions)
            (directory / LAYOUT_FILE).write_bytes(orjson.dumps(_layout(config)))
            log.info("initialised recovery directory %s with %d partitions", directory, partitions)
        else:
            _check_layout(config, directory)
    return RecoveryConfig(str(directory), backup_interval=timedelta(seconds=config.backup_interval_s))


LAYOUT_FILE = "segstream-layout.json"
"""Which shard a recovery directory holds: a shard's state is its partitions' users only."""


def _layout(config: Config) -> dict[str, int]:
    return {"shards": config.shards, "shard": config.shard}


def _check_layout(config: Config, directory: Path) -> None:
    """Refuse a recovery directory written by another shard, or by another shard count.

    A directory from before shards existed (no layout file) holds an unsharded run.
    """
    path = directory / LAYOUT_FILE
    try:
        found = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        found = {"shards": 1, "shard": 0}
    except orjson.JSONDecodeError as exc:
        raise ConfigError("recovery_dir", "config", f"{path} is unreadable: {exc}") from exc
    if found == _layout(config):
        return
    def describe(layout: dict[str, int]) -> str:
        if layout.get("shards") == 1:
            return "an unsharded run"
        return f"shard {layout.get('shard')} of {layout.get('shards')}"

    raise ConfigError(
        "shards" if found.get("shards") != config.shards else "shard", "config",
        f"{directory} holds the state of {describe(found)}, and this is {describe(_layout(config))}: "
        "give each shard its own recovery_dir, and keep the shard count (changing it moves "
        "users between shards; start the new count on empty directories)")


def _check_shard_topics(config: Config) -> None:
    """Fail at start-up if the input topics cannot be sharded, or the learn topic is missing.

    Shard 0 reads the learn topic and the others write to it.
    """
    from segstream.flows.connectors import kafka_source  # noqa: PLC0415 - keep --help fast

    parts = kafka_source(config).list_parts()  # raises ConfigError naming the problem
    log.info("shard %d of %d reads %s", config.shard, config.shards, ", ".join(parts))
    try:
        kafka_source(config, topics=[config.model_learn_topic]).list_parts()
    except RuntimeError as exc:
        raise ConfigError("model_learn_topic", "config", f"cannot use it: {exc}") from exc


def tune_gc(threshold: int) -> None:
    """Collect garbage less often, and never rescan what start-up built.

    Each event allocates a few short-lived containers that reference counting
    frees anyway; at Python's default (a young collection every 700
    allocations, and every so often a full one walking every live object, a
    million users' among them) a worker spent about a tenth of its CPU in the
    collector (py-spy, ``benchmarks/RESULTS.md``). ``gc.freeze`` moves what
    exists at start-up (modules, models, config) out of the collector's sight.
    ``threshold`` 0 leaves Python's settings alone.
    """
    if threshold <= 0:
        return
    gc.freeze()
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(threshold, middle, old)


_stop_signal: list[int] = []


def _request_stop(signum: int, _frame: FrameType | None) -> None:
    # Bytewax checks Python signals between activations and unwinds when a
    # handler raises; SIGTERM is made to take the same path as Ctrl-C. The
    # sinks wait for their writes only at epoch closes: _cmd_run waits for the
    # rest after the unwinding.
    _stop_signal.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


EXIT_PART_DIED = 3
"""Exit code of a worker stopped because a background thread died (segstream.health)."""
STOP_FLUSH_S = 10.0
"""How long a stopping worker waits for each sink's last writes."""


def _flush_on_stop(sinks: Sinks) -> None:
    """Finish the writes the sinks still hold (output of the epoch a signal cut short)."""
    for sink in sinks.epoch_sinks():
        try:
            left = sink.wait(STOP_FLUSH_S)
        except SegstreamError as exc:
            log.error("while stopping: %s (the next start writes it again from its snapshot)", exc)
            continue
        if left:
            log.error("while stopping: %d items not written to %s within %.0f s (the next start "
                      "writes them again from its snapshot)", left, sink.label, STOP_FLUSH_S)


def _cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    segments = load_segments(config.segments_file, horizons=config.window_horizons)
    HEALTH.stall_s = config.health_stall_s

    from bytewax.errors import BytewaxRuntimeError  # noqa: PLC0415 - keep --help fast
    from bytewax.run import cli_main  # noqa: PLC0415

    from segstream.flows.models import ModelFollower  # noqa: PLC0415
    from segstream.flows.population import PopulationSync  # noqa: PLC0415
    from segstream.flows.segmentation import Sinks, build_flow, model_config  # noqa: PLC0415
    from segstream.metrics import serve_metrics  # noqa: PLC0415
    from segstream.operators.models import ModelHub  # noqa: PLC0415

    addresses = args.addresses.split(",") if args.addresses else None
    process_id = args.process_id
    if (addresses is None) != (process_id is None):
        raise ConfigError("--addresses", "command line", "give --process-id and --addresses together")
    if addresses is not None and config.shards > 1:
        raise ConfigError("--addresses", "command line", "a shard (shards > 1) runs on its own: "
                          "scale with shards or with a Bytewax cluster (-i/-a), not both")
    processes = len(addresses) if addresses else 1
    # This process's index among the processes: metrics port, population statistics.
    index = config.shard if config.shards > 1 else process_id or 0
    if config.metrics_port:
        port = config.metrics_port + index
        try:
            serve_metrics(port)
        except OSError as exc:
            raise ConfigError("metrics_port", "config", f"cannot listen on {port}: {exc}") from exc
        log.info("metrics on :%d/metrics, health on :%d/healthz", port, port)

    if config.shards > 1:
        _check_shard_topics(config)
    recovery = recovery_config(
        config, partitions=max(config.recovery_partitions, processes * config.workers_per_process))
    hub = ModelHub(model_config(config))
    population = segments.new_population()
    sinks = Sinks.default(config, process_id=process_id or 0, processes=processes)
    flow = build_flow(config, segments=segments, tail=not args.until_end, hub=hub,
                      population=population, sinks=sinks)
    # Another process may hold the model learner: predict with its versions.
    follower = ModelFollower(config, hub).start()
    # Rules' statistics cover every process's users.
    population_sync = PopulationSync(config, population, str(index)).start()
    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    tune_gc(config.gc_threshold)
    if recovery is None:
        log.warning("recovery_dir is empty: recovery is OFF, a restart starts from scratch")
    log.info(
        "consuming %s from %s; changes -> %s, dead letters -> %s, model events -> %s, "
        "redis %s (prefix %r)",
        ",".join(config.input_topics), ",".join(config.brokers), config.output_topic,
        config.dlq_topic, config.model_events_topic, redact_url(config.redis_url),
        config.redis_prefix,
    )
    try:
        cli_main(
            flow,
            workers_per_process=config.workers_per_process,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=config.snapshot_interval_s),
            recovery_config=recovery,
        )
    except (KeyboardInterrupt, BytewaxRuntimeError):
        if not _stop_signal:
            raise
        _flush_on_stop(sinks)
        fatal = fatal_reason()
        if fatal is not None:
            log.error("stopped because %s; state is in %s (a restart resumes from it)", fatal,
                      config.recovery_dir or "(recovery off)")
            return EXIT_PART_DIED
        log.info("stopped by signal %d; state is in %s", _stop_signal[0],
                 config.recovery_dir or "(recovery off)")
        return 0
    finally:
        follower.stop()
        population_sync.stop()
    log.info("input exhausted; stopped")
    return 0

