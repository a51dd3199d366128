"""The online models: churn bands, warm-up, snapshots, versions, drift, quality."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segstream.errors import StateError
from segstream.operators.models import (
    CHURN_BANDS,
    LearnItem,
    ModelConfig,
    ModelHub,
    Models,
    churn_band,
    cluster_vector,
    silhouette,
)

CONFIG = ModelConfig(cluster_k=2, cluster_warmup=50, churn_warmup=20, version_every=50)


def blobs(n: int, seed: int = 1) -> list[dict[str, float]]:
    """Two well-separated groups of points."""
    rng = random.Random(seed)
    return [{"a": rng.gauss(5.0 * (i % 2), 0.3), "b": rng.gauss(-3.0 * (i % 2), 0.3)}
            for i in range(n)]


# --- churn bands --------------------------------------------------------------------------


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_band_moves_only_when_clear_of_a_threshold(ps: list[float]) -> None:
    """A band changes only when p is beyond a threshold by the hysteresis."""
    config = ModelConfig(churn_bands=(0.3, 0.7), churn_hysteresis=0.05)
    band = None
    for p in ps:
        new = churn_band(p, band, config)
        assert new in CHURN_BANDS
        if band is not None and new != band:
            up = CHURN_BANDS.index(new) > CHURN_BANDS.index(band)
            threshold = {"medium": 0.3, "high": 0.7}[new if up else band]
            assert (p >= threshold + 0.05) if up else (p < threshold - 0.05)
        band = new


@given(st.floats(0, 1), st.sampled_from([None, *CHURN_BANDS]))
def test_band_is_the_plain_band_away_from_thresholds(p: float, previous: str | None) -> None:
    config = ModelConfig(churn_bands=(0.3, 0.7), churn_hysteresis=0.05)
    plain = "high" if p >= 0.7 else "medium" if p >= 0.3 else "low"
    if min(abs(p - 0.3), abs(p - 0.7)) > 0.05 or previous is None:
        assert churn_band(p, previous, config) == plain


def test_a_user_near_a_threshold_does_not_flap() -> None:
    config = ModelConfig(churn_bands=(0.3, 0.7), churn_hysteresis=0.05)
    band = churn_band(0.8, None, config)
    bands = []
    for p in [0.69, 0.71, 0.68, 0.72, 0.66, 0.7]:
        band = churn_band(p, band, config)
        bands.append(band)
    assert bands == ["high"] * 6
    assert churn_band(0.64, "high", config) == "medium"


# --- clusters ------------------------------------------------------------------------------


def test_users_are_unassigned_until_warm_up_then_separated() -> None:
    models = Models(CONFIG)
    points = blobs(200)
    assert models.predict(points[0], None).cluster is None
    for x in points[:CONFIG.cluster_warmup - 1]:
        models.learn(LearnItem(cluster_x=x))
    assert not models.cluster.warm
    for x in points[CONFIG.cluster_warmup - 1:]:
        models.learn(LearnItem(cluster_x=x))
    assert models.cluster.warm
    assigned = [models.predict(x, None).cluster for x in points]
    assert len({assigned[i] for i in range(0, 200, 2)}) == 1  # each group has one id
    assert assigned[0] != assigned[1]
    described = models.cluster.describe()
    assert set(described) == {0, 1}
    assert all(("high a" in text) != ("low a" in text) for text in described.values())


def test_ids_stay_while_the_same_distribution_flows() -> None:
    models = Models(CONFIG)
    for x in blobs(400):
        models.learn(LearnItem(cluster_x=x))
    probe = blobs(200, seed=9)
    before = [models.predict(x, None).cluster for x in probe]
    for x in blobs(2000, seed=2):
        models.learn(LearnItem(cluster_x=x))
    assert [models.predict(x, None).cluster for x in probe] == before


def test_silhouette_is_high_for_separated_clusters() -> None:
    models = Models(CONFIG)
    for x in blobs(600):
        models.learn(LearnItem(cluster_x=x))
    assert models.summary()["cluster_silhouette"] > 0.8
    assert silhouette([], {0: {"a": 0.0}}) is None


def test_cluster_vector_is_shares_and_logs() -> None:
    values = {"product_view_30d": 0, "search_30d": 0, "add_to_cart_30d": 0, "checkout_30d": 0,
              "purchase_30d": 0, "events_total": 0, "events_per_session": None,
              "bounce_rate": None, "aov_90d": None, "device": None}
    assert set(cluster_vector(values).values()) == {0.0}  # a user with nothing yet


# --- churn ---------------------------------------------------------------------------------


def churn_items(n: int, seed: int = 1, flip: bool = False) -> list[LearnItem]:
    """Labels that depend on one feature (``x`` high: churned), or its opposite."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        x = rng.random()
        churned = (x > 0.5) != flip if rng.random() > 0.05 else rng.random() > 0.5
        out.append(LearnItem(churn_x={"x": x}, churned=churned, event_time=0.0))
    return out


def test_churn_is_published_after_warm_up_and_learns_the_signal() -> None:
    models = Models(CONFIG)
    items = churn_items(2000)
    for item in items[:CONFIG.churn_warmup - 1]:
        models.learn(item)
    assert models.predict(None, {"x": 0.9}).churn_p is None
    for item in items[CONFIG.churn_warmup - 1:]:
        p = models.predict(None, item.churn_x).churn_p
        models.learn(LearnItem(churn_x=item.churn_x, churned=item.churned, predicted=p))
    high, low = models.predict(None, {"x": 0.95}).churn_p, models.predict(None, {"x": 0.05}).churn_p
    assert high is not None and low is not None and high > 0.7 > 0.3 > low
    assert models.summary()["churn_roc_auc"] > 0.85


def test_a_reversed_relation_is_a_drift_and_the_model_follows() -> None:
    models = Models(CONFIG)

    def feed(items: list[LearnItem]) -> list[str]:
        kinds = []
        for item in items:
            p = models.predict(None, item.churn_x).churn_p
            events = models.learn(LearnItem(churn_x=item.churn_x, churned=item.churned,
                                            predicted=p))
            kinds += [e.detail.get("detector") for e in events if e.kind == "drift"]
        return kinds

    feed(churn_items(3000))
    drifts = feed(churn_items(3000, seed=2, flip=True))
    assert "churn_error" in drifts
    p = models.predict(None, {"x": 0.95}).churn_p
    assert p is not None and p < 0.5  # it kept adapting


# --- versions, snapshots, the hub ------------------------------------------------------------


def test_versions_count_changes_that_matter() -> None:
    models = Models(CONFIG)
    versions = []
    for x in blobs(1000):
        for event in models.learn(LearnItem(cluster_x=x, event_time=1.0)):
            if event.kind == "version":
                versions.append(event.model_version)
                assert event.detail["model_version"] == event.model_version
    assert versions == list(range(1, len(versions) + 1))
    settled = models.version
    for x in blobs(500, seed=3):  # the same distribution: centres stay put
        models.learn(LearnItem(cluster_x=x))
    assert models.version == settled


def test_snapshot_restores_the_same_models() -> None:
    models = Models(CONFIG)
    for x in blobs(300):
        models.learn(LearnItem(cluster_x=x))
    for item in churn_items(100):
        models.learn(item)
    restored = Models.from_bytes(models.to_bytes())
    probe = blobs(50, seed=5)
    assert [restored.predict(x, {"x": 0.3}) for x in probe] == [models.predict(x, {"x": 0.3})
                                                                  for x in probe]
    assert (restored.version, restored.learned) == (models.version, models.learned)


@pytest.mark.parametrize("data", [b"", b"not a pickle", b"\x80\x05K\x01."])
def test_a_bad_snapshot_is_a_state_error(data: bytes) -> None:
    with pytest.raises(StateError, match="models"):
        Models.from_bytes(data)


def test_hub_predicts_nothing_until_models_are_installed() -> None:
    hub = ModelHub(CONFIG)
    assert hub.predict({"a": 1.0}, {"x": 1.0}) == hub.predict(None, None)
    assert hub.predict(None, None).cluster is None
    hub.learn([LearnItem(cluster_x={"a": 1.0})])
    assert hub.models is not None and hub.models.learned == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.fixed_dictionaries({"a": st.floats(-1e6, 1e6), "b": st.floats(-1e6, 1e6)}),
                min_size=60, max_size=120))
def test_learning_and_predicting_never_raise(points: list[dict[str, float]]) -> None:
    models = Models(CONFIG)
    for x in points:
        models.predict(x, {"x": x["a"]})
        models.learn(LearnItem(cluster_x=x, churn_x={"x": x["b"]}, churned=x["a"] > 0,
                               predicted=0.5))
    assert models.summary()["learned"] == len(points)


def test_predictor_predicts_exactly_like_the_models_it_came_from() -> None:
    """Another process predicts with the parameters sent on model-events: the same answers."""
    import orjson  # noqa: PLC0415

    from segstream.operators.models import Predictor  # noqa: PLC0415

    models = Models(CONFIG)
    rng = random.Random(4)
    for x in blobs(400):
        models.learn(LearnItem(cluster_x=x, churn_x={"c": x["a"], "d": rng.random()},
                               churned=x["a"] > 2.5, predicted=0.5))
    wire = orjson.loads(orjson.dumps(models.predictor().to_json()))
    follower = Predictor.from_json(wire)
    for x in blobs(200, seed=8):
        churn_x = {"c": x["a"], "d": rng.random()}
        assert follower.predict(x, churn_x) == models.predict(x, churn_x)
    with pytest.raises(StateError, match="malformed"):
        Predictor.from_json({**wire, "centres": {"x": 1}})


def test_hub_prefers_its_own_models_and_follows_only_newer_versions() -> None:
    models = Models(CONFIG)
    for x in blobs(300):
        models.learn(LearnItem(cluster_x=x))
    hub = ModelHub(CONFIG)
    predictor = models.predictor()
    assert hub.follow(predictor)
    assert not hub.follow(predictor)  # not newer
    assert hub.predict(blobs(1)[0], None).cluster is not None
    assert hub.predict(blobs(1)[0], None).model_version == predictor.version
    hub.install(Models(CONFIG))  # a learner here: its (cold) models win
    assert hub.predict(blobs(1)[0], None).cluster is None


def test_version_events_carry_the_predictor() -> None:
    models = Models(CONFIG)
    events = [e for x in blobs(300) for e in models.learn(LearnItem(cluster_x=x))]
    version = [e for e in events if e.kind == "version"][-1]
    assert version.detail["predictor"]["version"] == version.model_version


def test_the_second_seeding_keeps_each_clusters_id() -> None:
    """Seeded again after its warm-up, the clusterer gives each behaviour the id it had."""
    from segstream.operators.models import RESEED_AFTER  # noqa: PLC0415

    models = Models(CONFIG)
    points = blobs(CONFIG.cluster_warmup * (RESEED_AFTER + 2), seed=4)
    warm_up = CONFIG.cluster_warmup
    for x in points[:warm_up + 1]:
        models.learn(LearnItem(cluster_x=x))
    probe = blobs(100, seed=9)
    before = [models.predict(x, None).cluster for x in probe]
    assert models.cluster.recent is not None  # not seeded again yet
    for x in points[warm_up + 1:]:
        models.learn(LearnItem(cluster_x=x))
    assert models.cluster.recent is None  # seeded again
    assert [models.predict(x, None).cluster for x in probe] == before
