"""Config: defaults, a TOML file, SEGSTREAM_* overrides; bad settings fail naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
from segstream.operators.features import CartTrigger, expression_schema
from segstream.operators.journey import DEFAULT_JOURNEY, JourneyConfig

from segstream.config import DEFAULT_SEGMENTS_FILE, Config, describe, load_config, load_segments
from segstream.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "segstream.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_match_design_contract() -> None:
    """Without file or env the documented defaults apply."""
    config = load_config(env={})
    assert config == Config()
    assert (config.output_topic, config.dlq_topic, config.redis_prefix) == (
        "segment-changes", "segstream-dead-letters", "seg:")
    assert config.session_gap_s == 1800


def test_design_env_names_are_all_settings() -> None:
    """Every variable DESIGN.md promises is a setting."""
    env = {
        "SEGSTREAM_BROKERS": "a:1,b:2", "SEGSTREAM_INPUT_TOPICS": "x, y",
        "SEGSTREAM_OUTPUT_TOPIC": "out", "SEGSTREAM_DLQ_TOPIC": "dlq",
        "SEGSTREAM_REDIS_URL": "redis://r:6379/1", "SEGSTREAM_METRICS_PORT": "9000",
        "SEGSTREAM_SEGMENTS_FILE": str(DEFAULT_SEGMENTS_FILE), "SEGSTREAM_RECOVERY_DIR": "/tmp/r",
    }
    config = load_config(env=env)
    assert config.brokers == ("a:1", "b:2")
    assert config.input_topics == ("x", "y")
    assert (config.output_topic, config.dlq_topic, config.metrics_port) == ("out", "dlq", 9000)
    assert (config.redis_url, config.recovery_dir) == ("redis://r:6379/1", "/tmp/r")


def test_file_then_env(tmp_path: Path) -> None:
    """The file overrides defaults and the environment overrides the file."""
    path = write(tmp_path, 'brokers = ["f:1"]\noutput_topic = "from-file"\nsession_gap_s = 60\n'
                           '[kafka_options]\n"security.protocol" = "SSL"\n')
    config = load_config(path, env={"SEGSTREAM_OUTPUT_TOPIC": "from-env"})
    assert config.brokers == ("f:1",)
    assert config.output_topic == "from-env"
    assert config.session_gap_s == 60.0
    assert config.kafka_options == (("security.protocol", "SSL"),)


def test_config_path_from_env(tmp_path: Path) -> None:
    """SEGSTREAM_CONFIG names the file when no path is given."""
    path = write(tmp_path, 'dlq_topic = "d"\n')
    assert load_config(env={"SEGSTREAM_CONFIG": str(path)}).dlq_topic == "d"


def test_taxonomy_from_file_and_env(tmp_path: Path) -> None:
    """[taxonomy] in the file and SEGSTREAM_TAXONOMY_<ROLE> rename events by config."""
    path = write(tmp_path, '[taxonomy]\npurchase = ["purchase"]\n')
    config = load_config(path, env={"SEGSTREAM_TAXONOMY_ADD_TO_CART": "cart,basket"})
    assert config.taxonomy.role_of("track", "purchase") == "purchase"
    assert config.taxonomy.role_of("track", "basket") == "add_to_cart"
    assert config.taxonomy.role_of("track", "Product Viewed") == "product_view"  # kept


@pytest.mark.parametrize(
    ("text", "env", "field", "hint"),
    [
        ('brokerz = ["a"]', {}, "brokerz", "did you mean 'brokers'"),
        ("", {"SEGSTREAM_REDIS_ULR": "x"}, "SEGSTREAM_REDIS_ULR", "SEGSTREAM_REDIS_URL"),
        ('metrics_port = "high"', {}, "metrics_port", "expected an integer"),
        ("", {"SEGSTREAM_METRICS_PORT": "-1"}, "metrics_port", ">= 0"),
        ("session_gap_s = 0", {}, "session_gap_s", "> 0"),
        ('input_topics = []', {}, "input_topics", "at least one"),
        ('output_topic = "segstream-dead-letters"', {}, "output_topic", "must differ"),
        ('input_topics = ["segstream-dead-letters"]', {}, "dlq_topic", "loop back"),
        ('redis_url = "localhost:6379"', {}, "redis_url", "redis://"),
        ("[taxonomy]\npurchse = ['x']", {}, "taxonomy.purchse", "did you mean 'purchase'"),
        ("", {"SEGSTREAM_TAXONOMY_BUY": "x"}, "taxonomy.buy", "unknown role"),
        ("fetch_wait_max_ms = 0", {}, "fetch_wait_max_ms", ">= 1"),
        ("brokers = [", {}, "config", "not valid TOML"),
        ("snapshot_interval_s = true", {}, "snapshot_interval_s", "expected a number"),
        ('late_events = "drop"', {}, "late_events", "apply, dead_letter"),
        ("", {"SEGSTREAM_STATE_TTL_S": "0"}, "state_ttl_s", "> 0"),
        ('window_horizons = ["1h", "1w"]', {}, "window_horizons", "duration"),
        ("", {"SEGSTREAM_WINDOW_HORIZONS": "1h,3m"}, "window_horizons", "at least 7m"),
        ("max_pending_events = 0", {}, "max_pending_events", ">= 1"),
        ("allowed_lateness_s = -5", {}, "allowed_lateness_s", ">= 0"),
        ("", {"SEGSTREAM_RECOVERY_PARTITIONS": "0"}, "recovery_partitions", "at least 1"),
        ("gc_threshold = -1", {}, "gc_threshold", "must be >= 0"),
        ("shards = 0", {}, "shards", ">= 1"),
        ("shards = 2", {"SEGSTREAM_SHARD": "2"}, "shard", "numbered from 0"),
        ("", {"SEGSTREAM_SHARD": "1"}, "shard", "below shards (1)"),
        ('shards = 2\nmodel_learn_topic = "segment-changes"', {}, "model_learn_topic", "must differ"),
        ("max_revenue = 0", {}, "max_revenue", "finite number > 0"),
        ("", {"SEGSTREAM_MAX_PRICE": "inf"}, "max_price", "finite number > 0"),
        ("max_quantity = -1", {}, "max_quantity", ">= 0"),
        ("", {"SEGSTREAM_MAX_FUTURE_SKEW_S": "inf"}, "max_future_skew_s", "finite"),
        ('min_event_time = "last year"', {}, "min_event_time", "ISO-8601"),
        ("dead_letter_max_bytes = 100", {}, "dead_letter_max_bytes", "between 1024 and 934464"),
        ("dead_letter_max_bytes = 3000000\n[kafka_options]\n'message.max.bytes' = 3000000", {},
         "dead_letter_max_bytes", "between 1024 and 2934464"),
        ("[kafka_options]\n'message.max.bytes' = 'big'", {}, "kafka_options", "integer"),
        ('min_event_time = "0001-01-01T00:00:00+01:00"', {}, "min_event_time", "years 1-9999"),
    ],
)
def test_bad_settings_fail_naming_the_field(tmp_path: Path, text: str, env: dict[str, str],
                                            field: str, hint: str) -> None:
    """An unknown or invalid setting fails at start-up naming the field and the fix."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert info.value.field == field
    assert hint in str(info.value)


def test_input_bounds_reach_the_parser() -> None:
    """The bounds on amounts and event times configure the parse step's validator."""
    from segstream.flows.segmentation import event_parser  # noqa: PLC0415

    config = load_config(env={"SEGSTREAM_MAX_REVENUE": "500", "SEGSTREAM_MAX_FUTURE_SKEW_S": "0",
                              "SEGSTREAM_MIN_EVENT_TIME": "1990-01-01T00:00:00Z"})
    parser = event_parser(config)
    assert (parser.max_revenue, parser.max_future_skew_s) == (500.0, 0.0)
    assert parser.min_event_time == 631152000.0
    assert event_parser(Config()).min_event_time == 946684800.0  # 2000-01-01


def test_kubernetes_service_links_are_not_settings() -> None:
    """Variables Kubernetes adds for a Service named segstream do not stop the worker."""
    env = {"SEGSTREAM_PORT": "tcp://10.0.0.1:9464", "SEGSTREAM_SERVICE_HOST": "10.0.0.1",
           "SEGSTREAM_SERVICE_PORT": "9464", "SEGSTREAM_PORT_9464_TCP_ADDR": "10.0.0.1"}
    assert load_config(env=env) == Config()


def test_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist is an error, not silently defaults."""
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_embedded_segments_file_is_the_default_journey() -> None:
    """The shipped segments file and DEFAULT_JOURNEY say the same thing."""
    assert load_segments().journey == JourneyConfig.from_dict(DEFAULT_JOURNEY, schema=expression_schema())
    assert load_segments("").journey == load_segments(DEFAULT_SEGMENTS_FILE).journey


def test_bad_segments_file_names_file_and_field(tmp_path: Path) -> None:
    """A segments file with an unknown role fails naming the file and the transition."""
    text = DEFAULT_SEGMENTS_FILE.read_text().replace('"checkout", "purchase"', '"checkout", "buy"')
    path = write(tmp_path, text, "segments.toml")
    with pytest.raises(ConfigError) as info:
        load_segments(path)
    assert info.value.field == "journey.transitions[1].on"
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="unknown section"):
        load_segments(write(tmp_path, "[jouney]\n", "s2.toml"))


def test_cart_trigger_from_segments_file(tmp_path: Path) -> None:
    """[triggers.cart_abandoner] sets the trigger; bad keys and durations name the field."""
    assert load_segments().cart_abandoner == CartTrigger()
    base = DEFAULT_SEGMENTS_FILE.read_text()
    tuned = load_segments(write(tmp_path, base.replace('"24h"', '"2h"').replace(
        "views = 5", "views = 3"), "s.toml")).cart_abandoner
    assert tuned == CartTrigger(views=3, views_within_s=600.0, no_purchase_for_s=7200.0)
    for old, new, field in [('"24h"', '"soon"', "triggers.cart_abandoner.no_purchase_for"),
                            ("views = 5", "views = 0", "triggers.cart_abandoner.views"),
                            ("views = 5", "view = 5", "triggers.cart_abandoner.view"),
                            ("[triggers.cart_abandoner]", "[triggers.cart]", "triggers.cart")]:
        with pytest.raises(ConfigError) as info:
            load_segments(write(tmp_path, base.replace(old, new), "bad.toml"))
        assert info.value.field == field


def test_describe_lists_every_setting_with_env_name() -> None:
    """describe() documents every field with its variable (used by the README)."""
    rows = {row[0]: row for row in describe()}
    assert rows["brokers"][1] == "SEGSTREAM_BROKERS"
    assert set(rows) == set(Config.__dataclass_fields__)
    assert all(row[3] for row in rows.values())


def test_check_config_prints_the_machine_or_the_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`segstream check-config FILE`: 0 and a listing, or 2 naming file, line and setting."""
    from segstream.cli import main  # noqa: PLC0415

    assert main(["check-config", str(DEFAULT_SEGMENTS_FILE)]) == 0
    listing = capsys.readouterr().out
    assert "any phase -> churn_risk  after 14d without events (event-time timer)  [inactive_14d]" in listing
    assert "high_value: order value above the population mean + 2 SD (buyers)" in listing
    bad = DEFAULT_SEGMENTS_FILE.read_text().replace('when = "purchases_30d > 5"',
                                                    'when = "purchases_30d >> 5"')
    path = write(tmp_path, bad, "bad.toml")
    assert main(["check-config", str(path)]) == 2
    error = capsys.readouterr().err
    line = bad.splitlines().index('when = "purchases_30d >> 5"') + 1
    assert f"bad.toml:{line}: rules.loyal.when: column 16: expected a value" in error


@pytest.mark.parametrize(("when", "column", "message"), [
    ("""'country == "\\x"'""", 13, "unknown escape"),
    ("'" + "(" * 300 + "purchases_30d > 5" + ")" * 300 + "'", 33, "nested more than 32 levels"),
    ("'purchases_30d > 1e999'", 17, "too large for a number"),
])
def test_check_config_exits_2_on_any_malformed_expression(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], when: str, column: int, message: str) -> None:
    """A bad escape, deep nesting or a huge number: exit 2 naming file, line and column, no traceback."""
    from segstream.cli import main  # noqa: PLC0415

    original = 'when = "purchases_30d > 5"'
    text = DEFAULT_SEGMENTS_FILE.read_text().replace(original, f"when = {when}")
    path = write(tmp_path, text, "bad.toml")
    assert main(["check-config", str(path)]) == 2
    error = capsys.readouterr().err
    line = DEFAULT_SEGMENTS_FILE.read_text().splitlines().index(original) + 1
    assert f"bad.toml:{line}: rules.loyal.when: column {column}: " in error
    assert message in error and "Traceback" not in error


def test_a_500_term_or_and_any_unicode_in_a_segments_file(tmp_path: Path) -> None:
    """A long chain and non-ASCII strings load and decide as written."""
    long_or = " or ".join(f"purchases_30d > {i}" for i in range(500))
    text = DEFAULT_SEGMENTS_FILE.read_text().replace(
        'when = "purchases_30d > 5"', f'when = """{long_or} or country == "España\\u0021\""""')
    rules = load_segments(write(tmp_path, text, "s.toml")).rules
    loyal = next(rule for rule in rules.rules if rule.name == "loyal")
    assert loyal.when.evaluate({"country": "España!"})
    assert not loyal.when.evaluate({"country": "Espana!", "purchases_30d": 0})


def test_a_new_recovery_directory_is_split_into_the_configured_files(tmp_path: Path) -> None:
    """Resume reads each file in pages that rescan it: more files, shorter resumes."""
    from segstream.tools.run import recovery_config  # noqa: PLC0415

    config = load_config(env={"SEGSTREAM_RECOVERY_DIR": str(tmp_path / "r"),
                              "SEGSTREAM_RECOVERY_PARTITIONS": "4"})
    assert recovery_config(config, partitions=config.recovery_partitions) is not None
    assert len(list((tmp_path / "r").glob("part-*.sqlite3"))) == 4
    recovery_config(config, partitions=8)  # an existing directory keeps its files
    assert len(list((tmp_path / "r").glob("part-*.sqlite3"))) == 4


def test_the_worker_collects_garbage_less_often_and_freezes_what_start_up_built() -> None:
    """A young collection every 700 allocations cost a worker about a tenth of its CPU."""
    import gc  # noqa: PLC0415

    from segstream.tools.run import tune_gc  # noqa: PLC0415

    saved = gc.get_threshold()
    try:
        tune_gc(0)  # 0: Python's settings stay
        assert gc.get_threshold() == saved
        tune_gc(load_config(env={"SEGSTREAM_GC_THRESHOLD": "40000"}).gc_threshold)
        assert gc.get_threshold() == (40000, *saved[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*saved)


def test_a_shard_s_recovery_directory_holds_that_shard_alone(tmp_path: Path) -> None:
    """A shard's state is its partitions' users: another shard or shard count must not resume it."""
    from segstream.tools.run import LAYOUT_FILE, recovery_config  # noqa: PLC0415

    def config(directory: str, **env: str) -> Config:
        return load_config(env={"SEGSTREAM_RECOVERY_DIR": str(tmp_path / directory),
                                "SEGSTREAM_RECOVERY_PARTITIONS": "1", **env})

    shard_0 = config("s0", SEGSTREAM_SHARDS="2", SEGSTREAM_SHARD="0")
    recovery_config(shard_0, partitions=1)
    assert recovery_config(shard_0, partitions=1) is not None  # its own directory again
    with pytest.raises(ConfigError) as info:
        recovery_config(shard_0.replace(shard=1), partitions=1)
    assert info.value.field == "shard" and "holds the state of shard 0 of 2" in str(info.value)
    with pytest.raises(ConfigError) as info:
        recovery_config(shard_0.replace(shards=3), partitions=1)
    assert info.value.field == "shards"
    assert recovery_config(config("one"), partitions=1) is not None
    with pytest.raises(ConfigError, match="an unsharded run"):
        recovery_config(shard_0.replace(recovery_dir=str(tmp_path / "one")), partitions=1)
    with pytest.raises(ConfigError, match="holds the state of shard 0 of 2, and this is an unsharded run"):
        recovery_config(shard_0.replace(shards=1), partitions=1)
    # A directory from before shards existed has no layout file: an unsharded run's.
    (tmp_path / "one" / LAYOUT_FILE).unlink()
    assert recovery_config(config("one"), partitions=1) is not None
    with pytest.raises(ConfigError, match="an unsharded run"):
        recovery_config(shard_0.replace(recovery_dir=str(tmp_path / "one")), partitions=1)
