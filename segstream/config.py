"""The one place configuration is read: a TOML file, then ``SEGSTREAM_*`` env.

``load_config()`` is the only function in segstream that reads the
environment. It layers three sources, later ones winning:

1. the defaults documented on each field of :class:`Config`;
2. a TOML file (``--config FILE`` or ``SEGSTREAM_CONFIG``);
3. environment variables, ``SEGSTREAM_`` + the field name in upper case
   (``brokers`` -> ``SEGSTREAM_BROKERS``). Lists are comma separated. Taxonomy
   roles are ``SEGSTREAM_TAXONOMY_<ROLE>`` (e.g. ``SEGSTREAM_TAXONOMY_PURCHASE=
   "Order Completed,purchase"``).

Any unknown key in the file or unknown ``SEGSTREAM_*`` variable, and any value
of the wrong type, raises :class:`~segstream.errors.ConfigError` naming the
field and where it came from, with the closest known name when there is one.

>>> cfg = load_config(env={"SEGSTREAM_BROKERS": "k1:9092,k2:9092"})
>>> cfg.brokers
('k1:9092', 'k2:9092')
>>> cfg.output_topic
'segment-changes'
>>> load_config(env={"SEGSTREAM_BROKER": "k1:9092"})
Traceback (most recent call last):
...
segstream.errors.ConfigError: config field 'SEGSTREAM_BROKER' (from environment): unknown setting;
did you mean 'SEGSTREAM_BROKERS'?
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segstream.errors import ConfigError, suggest
from segstream.health import DEFAULT_STALL_S
from segstream.operators.features import DEFAULT_HORIZONS
from segstream.operators.parse import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    DEFAULT_MAX_PRICE,
    DEFAULT_MAX_QUANTITY,
    DEFAULT_MAX_REVENUE,
    DEFAULT_MIN_EVENT_TIME,
    parse_timestamp,
)
from segstream.operators.segments import DEFAULT_SEGMENTS_FILE, SegmentsConfig, load_segments_text
from segstream.operators.taxonomy import DEFAULT_TAXONOMY, ROLES, Taxonomy
from segstream.operators.windows import WindowLayout

ENV_PREFIX = "SEGSTREAM_"
DEFAULT_DEAD_LETTER_MAX_BYTES = 262_144
"""Default ``dead_letter_max_bytes``: 256 KiB, well inside librdkafka's default
``message.max.bytes`` (1,000,000) and Apache Kafka's broker default (1,048,588)."""
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000
"""librdkafka's default ``message.max.bytes``: the largest message the producer sends."""
DEFAULT_GIVE_UP_S = 30.0
"""Default ``outage_give_up_s``."""
DEFAULT_REDIS_TIMEOUT_S = 5.0
"""Default ``redis_timeout_s``."""
PRODUCER_HEADROOM_BYTES = 65_536
"""What a dead letter's headers and record framing may take beside its key and value."""
LATE_POLICIES = ("apply", "dead_letter")
"""Values of ``late_events``."""
# Variables that carry no setting of their own and so are not "unknown".
_ENV_NOT_SETTINGS = frozenset({"SEGSTREAM_CONFIG"})
# Kubernetes adds these for a Service named "segstream" to every pod of the
# namespace (service links); they are not settings and must not stop a worker.
_ENV_SERVICE_LINKS = ("SEGSTREAM_PORT", "SEGSTREAM_SERVICE_")


def _doc(default_doc: str) -> dict[str, str]:
    return {"doc": default_doc}


@dataclass(frozen=True, slots=True)
class Config:
    """Every setting of a segstream worker; immutable, built by :func:`load_config`.

    Each field's environment variable is ``SEGSTREAM_`` + its name in upper case.
    """

    brokers: tuple[str, ...] = field(
        default=("localhost:9092",), metadata=_doc("Kafka bootstrap servers (comma list).")
    )
    input_topics: tuple[str, ...] = field(
        default=("clickstream",), metadata=_doc("Clickstream topics to consume (comma list).")
    )
    output_topic: str = field(
        default="segment-changes", metadata=_doc("Topic receiving one message per change.")
    )
    dlq_topic: str = field(
        default="segstream-dead-letters",
        metadata=_doc("Dead-letter topic: raw bytes of unusable events plus a reason."),
    )
    redis_url: str = field(
        default="redis://localhost:6379/0", metadata=_doc("Redis holding profiles and sets.")
    )
    redis_prefix: str = field(default="seg:", metadata=_doc("Prefix of every Redis key."))
    metrics_port: int = field(
        default=9464,
        metadata=_doc(
            "Port of /metrics and /healthz; process N of a cluster, or shard N, uses port + N; "
            "0 disables."
        ),
    )
    segments_file: str = field(
        default="",
        metadata=_doc("Segments/journey definition (TOML); empty means the embedded default."),
    )
    recovery_dir: str = field(
        default="recovery",
        metadata=_doc("Bytewax recovery directory (created if missing); empty disables recovery."),
    )
    recovery_partitions: int = field(
        default=16,
        metadata=_doc("SQLite files a new recovery directory is split into (at least one per "
                      "worker); resume time grows with the square of the users per file."),
    )
    gc_threshold: int = field(
        default=50_000,
        metadata=_doc("Allocations between Python's youngest garbage collections (its own "
                      "700 costs a worker about a tenth of its CPU); 0 keeps Python's."),
    )
    outage_give_up_s: float = field(
        default=DEFAULT_GIVE_UP_S,
        metadata=_doc("How long Redis may refuse or hang (each command times out after "
                      "redis_timeout_s), and a Kafka produce stay undelivered, before the worker "
                      "stops non-zero rather than run without its output; the restart resumes "
                      "from the last snapshot."),
    )
    redis_timeout_s: float = field(
        default=DEFAULT_REDIS_TIMEOUT_S,
        metadata=_doc("Seconds a Redis connect or command may take before it counts as failed "
                      "(and is retried within outage_give_up_s)."),
    )
    health_stall_s: float = field(
        default=DEFAULT_STALL_S,
        metadata=_doc("/healthz answers 503 when no source was polled for this long (the worker "
                      "is blocked), or input waited this long with nothing consumed; besides "
                      "while a sink fails or after a background thread died."),
    )
    snapshot_interval_s: float = field(
        default=10.0,
        metadata=_doc("Seconds between state snapshots; a crash replays at most this much."),
    )
    backup_interval_s: float = field(
        default=0.0,
        metadata=_doc("Seconds old snapshots are kept (set to your off-machine backup interval)."),
    )
    session_gap_s: float = field(
        default=1800.0,
        metadata=_doc("Inactivity gap (event time) that starts a new session."),
    )
    allowed_lateness_s: float = field(
        default=30.0,
        metadata=_doc(
            "Event-time lateness tolerated per partition: out-of-order events within it give "
            "exactly the result of sorted input."
        ),
    )
    late_events: str = field(
        default="apply",
        metadata=_doc(
            "Events later than allowed_lateness_s: 'apply' (to counters and day windows "
            "only) or 'dead_letter' (reason 'late')."
        ),
    )
    state_ttl_s: float = field(
        default=90 * 86400.0,
        metadata=_doc("Event-time idleness after which a user is evicted (state and Redis)."),
    )
    window_horizons: tuple[str, ...] = field(
        default=("1h", "24h", "7d", "30d"),
        metadata=_doc("Rolling-count horizons per role (durations like 1h, 7d)."),
    )
    engagement_half_life_s: float = field(
        default=7 * 86400.0, metadata=_doc("Half-life of the decayed engagement score.")
    )
    required_attributes: tuple[str, ...] = field(
        default=("email", "country"),
        metadata=_doc(
            "Profile attributes (traits, or device/country/channel) whose absence puts a "
            "user in needs_enrichment."
        ),
    )
    max_traits: int = field(default=32, metadata=_doc("Traits kept per user."))
    max_pending_events: int = field(
        default=64,
        metadata=_doc("Events per user waiting for the watermark; beyond, the oldest settle early."),
    )
    timer_tick_s: float = field(
        default=0.2,
        metadata=_doc("How often each worker checks for due event-time timers while tailing."),
    )
    model_events_topic: str = field(
        default="segstream-model-events",
        metadata=_doc("Topic receiving model versions (cluster descriptions, quality) and drifts."),
    )
    snapshot_every_events: int = field(
        default=20,
        metadata=_doc("A feature snapshot for the models every N events of a user, "
                      "besides the one at each session's end."),
    )
    cluster_k: int = field(default=4, metadata=_doc("Number of behavioural clusters."))
    cluster_warmup: int = field(
        default=3000,
        metadata=_doc("Snapshots learned before clusters are assigned (until then: "
                      "cluster:unassigned)."),
    )
    cluster_halflife: float = field(
        default=0.002,
        metadata=_doc("How far a cluster centre moves towards each snapshot it wins (0-1)."),
    )
    churn_horizon_s: float = field(
        default=14 * 86400.0,
        metadata=_doc("Churned = no activity within this long (event time) after a session."),
    )
    churn_warmup: int = field(
        default=200, metadata=_doc("Churn labels learned before probabilities are published.")
    )
    churn_medium_p: float = field(
        default=0.3, metadata=_doc("Churn probability at which the medium band starts.")
    )
    churn_high_p: float = field(
        default=0.7, metadata=_doc("Churn probability at which the high band starts.")
    )
    churn_hysteresis: float = field(
        default=0.05,
        metadata=_doc("A churn band is entered this far above its threshold and left this far "
                      "below it."),
    )
    population_sync_s: float = field(
        default=5.0,
        metadata=_doc(
            "Seconds between exchanges of population statistics between processes (via Redis)."
        ),
    )
    model_version_tolerance: float = field(
        default=0.25,
        metadata=_doc("Movement (in standard deviations) of a cluster centre or churn weight "
                      "that makes a new model_version."),
    )
    max_event_bytes: int = field(
        default=32768, metadata=_doc("Events larger than this are dead-lettered as oversized.")
    )
    dead_letter_max_bytes: int = field(
        default=DEFAULT_DEAD_LETTER_MAX_BYTES,
        metadata=_doc("Key plus value of a dead letter at most; a larger input is cut to fit, "
                      "with headers giving its original sizes. At most the producer's "
                      "message.max.bytes (kafka_options, default 1000000) minus 64 KiB."),
    )
    max_revenue: float = field(
        default=DEFAULT_MAX_REVENUE,
        metadata=_doc("Largest magnitude of properties.revenue (or total); beyond, the event is "
                      "dead-lettered as bad_value."),
    )
    max_price: float = field(
        default=DEFAULT_MAX_PRICE,
        metadata=_doc("Largest magnitude of a price (properties.price, products[].price); beyond: "
                      "bad_value."),
    )
    max_quantity: float = field(
        default=DEFAULT_MAX_QUANTITY,
        metadata=_doc("Largest magnitude of a quantity (properties.quantity, "
                      "products[].quantity); beyond: bad_value."),
    )
    max_future_skew_s: float = field(
        default=DEFAULT_MAX_FUTURE_SKEW_S,
        metadata=_doc("Events stamped further than this ahead of the worker's clock are "
                      "dead-lettered as future (they would move their partition's watermark)."),
    )
    min_event_time: str = field(
        default=DEFAULT_MIN_EVENT_TIME,
        metadata=_doc("Events stamped before this ISO-8601 time are dead-lettered as too_old "
                      "(a device clock reset to 1970); lower it to backfill older logs."),
    )
    source_batch_size: int = field(
        default=1000, metadata=_doc("Max messages taken from a partition per poll.")
    )
    fetch_wait_max_ms: int = field(
        default=10,
        metadata=_doc("librdkafka fetch.wait.max.ms on the source: lower means less latency."),
    )
    producer_linger_ms: int = field(
        default=5, metadata=_doc("librdkafka linger.ms on the sink producer.")
    )
    kafka_options: tuple[tuple[str, str], ...] = field(
        default=(),
        metadata=_doc(
            "Extra librdkafka settings for consumer and producer (e.g. security.protocol). "
            'File: a [kafka_options] table; env: "key=value,key=value".'
        ),
    )
    workers_per_process: int = field(
        default=1, metadata=_doc("Bytewax workers per process (scale with processes instead).")
    )
    shards: int = field(
        default=1,
        metadata=_doc("Independent processes the input partitions are split between (partition "
                      "p goes to shard p mod shards): no Bytewax cluster, nothing exchanged "
                      "between them; 1 means one process reads every partition."),
    )
    shard: int = field(
        default=0,
        metadata=_doc("This process's shard, 0 to shards - 1; shard 0 holds the model learner."),
    )
    model_learn_topic: str = field(
        default="segstream-model-learn",
        metadata=_doc("Topic on which shards other than 0 send feature snapshots and churn "
                      "labels to shard 0's model learner (used only when shards > 1)."),
    )
    taxonomy: Taxonomy = field(
        default=DEFAULT_TAXONOMY,
        metadata=_doc("Event name -> semantic role mapping ([taxonomy] table)."),
    )

    def env_name(self, name: str) -> str:
        """Return the environment variable of field ``name``.

        >>> Config().env_name("redis_url")
        'SEGSTREAM_REDIS_URL'
        """
        return ENV_PREFIX + name.upper()

    @property
    def min_event_time_s(self) -> float:
        """``min_event_time`` in epoch seconds (checked when the config is loaded)."""
        found = parse_timestamp(self.min_event_time)
        assert found is not None, "load_config checks min_event_time"
        return found

    def replace(self, **changes: Any) -> Config:
        """Return a copy with ``changes`` applied (values already typed)."""
        return dataclasses.replace(self, **changes)


# --- value parsers: (raw value, field, source) -> typed value -------------------


def _parse_str(raw: Any, name: str, source: str) -> str:
    if not isinstance(raw, str):
        raise ConfigError(name, source, f"expected a string, got {type(raw).__name__} {raw!r}")
    return raw


def _non_negative(cast: type[int] | type[float], what: str) -> Callable[[Any, str, str], Any]:
    """Build a parser of a non-negative number, from TOML numbers or env text."""
    accepted: tuple[type, ...] = (int, str) if cast is int else (int, float, str)

    def parse(raw: Any, name: str, source: str) -> Any:
        if isinstance(raw, bool) or not isinstance(raw, accepted):
            raise ConfigError(name, source, f"expected {what}, got {raw!r}")
        try:
            value = cast(raw.strip() if isinstance(raw, str) else raw)
        except ValueError as exc:
            raise ConfigError(name, source, f"expected {what}, got {raw!r}") from exc
        if not value >= 0:  # also rejects NaN
            raise ConfigError(name, source, f"must be >= 0, got {raw!r}")
        return value

    return parse


_parse_int = _non_negative(int, "an integer")
_parse_float = _non_negative(float, "a number")


def _parse_str_list(raw: Any, name: str, source: str) -> tuple[str, ...]:
    if isinstance(raw, str):
        items = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list):
        items = [_parse_str(item, name, source).strip() for item in raw]
    else:
        raise ConfigError(name, source, f"expected a list of strings, got {raw!r}")
    items = [item for item in items if item]
    if not items:
        raise ConfigError(name, source, "must list at least one value")
    return tuple(items)


def _parse_options(raw: Any, name: str, source: str) -> tuple[tuple[str, str], ...]:
    if isinstance(raw, str):
        pairs = []
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise ConfigError(name, source, f"expected key=value pairs, got {part!r}")
            pairs.append((key.strip(), value.strip()))
        return tuple(pairs)
    if isinstance(raw, dict):
        return tuple((str(k), str(v).lower() if isinstance(v, bool) else str(v))
                     for k, v in raw.items())
    raise ConfigError(name, source, f"expected a table of librdkafka settings, got {raw!r}")


_PARSERS: dict[str, Callable[[Any, str, str], Any]] = {
    "str": _parse_str,
    "int": _parse_int,
    "float": _parse_float,
    "tuple[str, ...]": _parse_str_list,
    "tuple[tuple[str, str], ...]": _parse_options,
}

_FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def _parse_taxonomy(raw: Any, source: str, base: Taxonomy) -> Taxonomy:
    if not isinstance(raw, dict):
        raise ConfigError("taxonomy", source, "expected a table mapping roles to event names")
    roles = dict(base.roles)
    for role, names in raw.items():
        field_name = f"taxonomy.{role}"
        if role not in ROLES:
            raise ConfigError(
                field_name, source,
                f"unknown role{suggest(role, list(ROLES))} (roles: {', '.join(ROLES)})",
            )
        roles[role] = _parse_str_list(names, field_name, source)
    return Taxonomy.build(roles, source=source)


def _apply(values: dict[str, Any], name: str, raw: Any, source: str) -> None:
    kind = str(_FIELDS[name].type)
    values[name] = _PARSERS[kind](raw, name, source)


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the worker's :class:`Config` from defaults, a TOML file and the environment.

    Args:
        path: TOML file; ``None`` means ``$SEGSTREAM_CONFIG`` if set, else no file.
        env: the environment to read; ``None`` means ``os.environ``.

    Raises:
        ConfigError: an unknown setting, a bad value or an unreadable file.

    """
    env = os.environ if env is None else env
    if path is None and env.get("SEGSTREAM_CONFIG"):
        path = env["SEGSTREAM_CONFIG"]
    values: dict[str, Any] = {}
    taxonomy = DEFAULT_TAXONOMY

    if path is not None:
        source = str(path)
        try:
            document = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError("config", source, "file not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("config", source, f"not valid TOML: {exc}") from exc
        for key, raw in document.items():
            if key == "taxonomy":
                taxonomy = _parse_taxonomy(raw, source, DEFAULT_TAXONOMY)
            elif key in _FIELDS:
                _apply(values, key, raw, source)
            else:
                raise ConfigError(key, source, "unknown setting" + suggest(key, list(_FIELDS)))

    env_taxonomy: dict[str, str] = {}
    for var, raw in env.items():
        if not var.startswith(ENV_PREFIX) or var in _ENV_NOT_SETTINGS:
            continue
        if var.startswith(_ENV_SERVICE_LINKS):
            continue
        name = var[len(ENV_PREFIX):].lower()
        if name.startswith("taxonomy_"):
            env_taxonomy[name.removeprefix("taxonomy_")] = raw
        elif name in _FIELDS and name != "taxonomy":
            _apply(values, name, raw, "environment")
        else:
            known = [ENV_PREFIX + n.upper() for n in _FIELDS if n != "taxonomy"]
            known += [f"{ENV_PREFIX}TAXONOMY_{r.upper()}" for r in ROLES]
            raise ConfigError(var, "environment", "unknown setting" + suggest(var, known))
    if env_taxonomy:
        taxonomy = _parse_taxonomy(env_taxonomy, "environment", taxonomy)

    config = Config(taxonomy=taxonomy, **values)
    _check(config, source=str(path) if path is not None else "environment")
    return config


def _check(config: Config, *, source: str) -> None:
    """Cross-field checks that a single value parser cannot make."""
    if config.snapshot_interval_s <= 0:
        raise ConfigError("snapshot_interval_s", source, "must be > 0 seconds")
    if config.recovery_partitions < 1:
        raise ConfigError("recovery_partitions", source, "must be at least 1")
    if config.session_gap_s <= 0:
        raise ConfigError("session_gap_s", source, "must be > 0 seconds")
    if config.late_events not in LATE_POLICIES:
        raise ConfigError(
            "late_events", source,
            f"expected one of {', '.join(LATE_POLICIES)}, got {config.late_events!r}",
        )
    for name in ("state_ttl_s", "engagement_half_life_s", "timer_tick_s", "outage_give_up_s",
                 "redis_timeout_s", "health_stall_s"):
        if getattr(config, name) <= 0:
            raise ConfigError(name, source, "must be > 0 seconds")
    if config.max_pending_events < 1:
        raise ConfigError("max_pending_events", source, "must be >= 1")
    try:
        WindowLayout.build(config.window_horizons)
    except ValueError as exc:
        raise ConfigError("window_horizons", source, str(exc)) from exc
    if config.source_batch_size < 1:
        raise ConfigError("source_batch_size", source, "must be >= 1")
    if config.workers_per_process < 1:
        raise ConfigError("workers_per_process", source, "must be >= 1")
    if config.fetch_wait_max_ms < 1:
        raise ConfigError(
            "fetch_wait_max_ms", source, "must be >= 1 (0 makes some brokers never answer)"
        )
    if not config.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "redis_url", source,
            f"expected redis://host:port/db, got {redact_url(config.redis_url)!r}"
        )
    if config.output_topic == config.dlq_topic or config.output_topic in config.input_topics:
        raise ConfigError(
            "output_topic", source, "must differ from the dead-letter and input topics"
        )
    if config.dlq_topic in config.input_topics:
        raise ConfigError(
            "dlq_topic", source, "must not be an input topic (dead letters would loop back in)"
        )
    _check_input_bounds(config, source)
    _check_dead_letters(config, source)
    _check_models(config, source)
    if config.metrics_port > 65535:
        raise ConfigError("metrics_port", source, "must be a TCP port (0 disables)")


def _check_dead_letters(config: Config, source: str) -> None:
    options = dict(config.kafka_options)
    try:
        producer_max = int(options.get("message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES))
    except ValueError as exc:
        raise ConfigError("kafka_options", source, "message.max.bytes must be an integer") from exc
    ceiling = producer_max - PRODUCER_HEADROOM_BYTES
    if not 1024 <= config.dead_letter_max_bytes <= ceiling:
        raise ConfigError("dead_letter_max_bytes", source,
                          f"must be between 1024 and {ceiling} (the producer's message.max.bytes "
                          f"{producer_max} minus {PRODUCER_HEADROOM_BYTES} for headers), got "
                          f"{config.dead_letter_max_bytes}")


def _check_input_bounds(config: Config, source: str) -> None:
    for name in ("max_revenue", "max_price", "max_quantity"):
        if not 0 < getattr(config, name) < float("inf"):
            raise ConfigError(name, source, "must be a finite number > 0")
    if config.max_future_skew_s == float("inf"):
        raise ConfigError("max_future_skew_s", source, "must be a finite number of seconds")
    if parse_timestamp(config.min_event_time) is None:
        raise ConfigError("min_event_time", source,
                          f"expected an ISO-8601 date-time within years 1-9999 (e.g. "
                          f"{DEFAULT_MIN_EVENT_TIME}), got {config.min_event_time!r}")


def _check_models(config: Config, source: str) -> None:
    if config.snapshot_every_events < 1:
        raise ConfigError("snapshot_every_events", source, "must be >= 1")
    if config.cluster_k < 2:
        raise ConfigError("cluster_k", source, "must be >= 2")
    if config.cluster_warmup < config.cluster_k:
        raise ConfigError("cluster_warmup", source, f"must be >= cluster_k ({config.cluster_k})")
    if not 0 < config.cluster_halflife <= 1:
        raise ConfigError("cluster_halflife", source, "must be in (0, 1]")
    if config.churn_horizon_s <= 0:
        raise ConfigError("churn_horizon_s", source, "must be > 0 seconds")
    if config.churn_warmup < 1:
        raise ConfigError("churn_warmup", source, "must be >= 1")
    if not 0 < config.churn_medium_p < config.churn_high_p < 1:
        raise ConfigError("churn_high_p", source,
                          "must be above churn_medium_p, both strictly between 0 and 1")
    if not 0 <= config.churn_hysteresis < (config.churn_high_p - config.churn_medium_p) / 2:
        raise ConfigError("churn_hysteresis", source,
                          "must be >= 0 and under half the gap between churn_medium_p and "
                          "churn_high_p")
    if config.population_sync_s <= 0:
        raise ConfigError("population_sync_s", source, "must be > 0 seconds")
    if config.model_version_tolerance <= 0:
        raise ConfigError("model_version_tolerance", source, "must be > 0")
    if config.model_events_topic in (config.output_topic, config.dlq_topic, *config.input_topics):
        raise ConfigError("model_events_topic", source,
                          "must differ from the output, dead-letter and input topics")
    _check_shards(config, source)


def _check_shards(config: Config, source: str) -> None:
    if config.shards < 1:
        raise ConfigError("shards", source, "must be >= 1")
    if config.shard >= config.shards:
        raise ConfigError("shard", source,
                          f"must be below shards ({config.shards}): shards are numbered from 0")
    if config.shards > 1 and config.model_learn_topic in (
            config.output_topic, config.dlq_topic, config.model_events_topic, *config.input_topics):
        raise ConfigError("model_learn_topic", source,
                          "must differ from the output, dead-letter, model-events and input topics")


_SECRET_PARAMETERS = frozenset({"password", "pass", "passwd", "pwd", "auth", "token", "secret",
                                "ssl_password", "ssl_keyfile_password"})


def redact_url(url: str) -> str:
    """Hide every credential a URL can carry, for logs and error messages.

    A password after ``user:``, a userinfo without a colon (some clients read
    it as the password), and query parameters such as ``?password=``.

    >>> redact_url("redis://:s3cret@redis:6379/0"), redact_url("redis://redis:6379/0")
    ('redis://:***@redis:6379/0', 'redis://redis:6379/0')
    >>> redact_url("rediss://app:s3cret@redis:6380/0?password=s3cret&db=1")
    'rediss://app:***@redis:6380/0?password=***&db=1'
    >>> redact_url("unix:///run/redis.sock?db=0&password=s3cret"), redact_url("redis://s3cret@redis")
    ('unix:///run/redis.sock?db=0&password=***', 'redis://***@redis')
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, hash_, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    credentials, at, host = authority.rpartition("@")
    if at:
        user, colon, _password = credentials.partition(":")
        authority = f"{user}:***@{host}" if colon else f"***@{host}"
    if question:
        parts = []
        for part in query.split("&"):
            name, equals, _value = part.partition("=")
            parts.append(f"{name}=***" if equals and name.lower() in _SECRET_PARAMETERS else part)
        query = "&".join(parts)
    return f"{scheme}://{authority}{slash}{path}{question}{query}{hash_}{fragment}"


def describe() -> list[tuple[str, str, str, str]]:
    """List ``(field, env var, default, doc)`` for every setting (README, --help)."""
    rows = []
    for f in dataclasses.fields(Config):
        env_var = f"{ENV_PREFIX}TAXONOMY_<ROLE>" if f.name == "taxonomy" else ENV_PREFIX + f.name.upper()
        default = "Segment e-commerce names" if f.name == "taxonomy" else repr(f.default)
        rows.append((f.name, env_var, default, f.metadata.get("doc", "")))
    return rows


def load_segments(
    path: str | os.PathLike[str] | None = None, *, horizons: tuple[str, ...] = DEFAULT_HORIZONS
) -> SegmentsConfig:
    """Read and check a segments file; ``None`` or ``""`` means the embedded default.

    ``horizons`` are the worker's ``window_horizons``: they name the window
    features conditions may read (``product_view_7d``).

    >>> load_segments().journey.initial
    'awareness'

    Raises:
        ConfigError: naming the file and the field at fault.
        ExpressionError: a condition does not parse, with file, line and column.

    """
    file = Path(path) if path else DEFAULT_SEGMENTS_FILE
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError("segments_file", source, "file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("segments_file", source, f"cannot read it: {exc}") from exc
    return load_segments_text(text, source, horizons=horizons)
