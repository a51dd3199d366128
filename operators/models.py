"""Online models: behavioural clusters with stable ids, churn with delayed labels, drift.

The user step takes a *feature snapshot* of a user at meaningful moments (the
end of a session, every N settled events) and asks the worker's
:class:`ModelHub` for a prediction: the user's cluster and churn probability,
with the ``model_version`` that made them. What the models learn from reaches
the one *learner* (a keyed Bytewax step, so its state is in recovery
snapshots) as :class:`LearnItem` s:

- every snapshot, for the clusterer;
- every churn *label*: a user's session-end snapshot is labelled ``0`` when
  they come back within the churn horizon and ``1`` when the horizon passes in
  event time without activity (a timer), and learned then, with the
  probability that was predicted for it (progressive validation: predict
  before learn).

Everything here is plain Python over River; ``docs/models.md`` explains the
choices and how to tune them.

>>> models = Models(ModelConfig(cluster_k=2, cluster_warmup=4))
>>> for i in range(8):
...     _ = models.learn(LearnItem(cluster_x={"a": float(i % 2), "b": 1.0}))
>>> models.predict({"a": 1.0, "b": 1.0}, None).cluster is not None
True
"""

from __future__ import annotations

import itertools
import math
import pickle
import random
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import river.cluster
import river.drift
import river.linear_model
import river.metrics
import river.optim
import river.preprocessing
import river.utils

from segstream.errors import StateError

# River ships without type hints; reach it through ``Any`` rather than
# silencing every call.
cluster: Any = river.cluster
drift: Any = river.drift
linear_model: Any = river.linear_model
metrics: Any = river.metrics
optim: Any = river.optim
preprocessing: Any = river.preprocessing
utils: Any = river.utils

UNASSIGNED = "unassigned"
"""Cluster of a user before the clusterer is warm (segment ``cluster:unassigned``)."""

CHURN_BANDS = ("low", "medium", "high")

SEED_RESTARTS = 8
"""k-means++ starts tried when the clusterer is seeded; the tightest is kept."""

RESEED_AFTER = 2
"""The clusterer is seeded again, once, on the ``RESEED_AFTER * cluster_warmup``
snapshots after its warm-up (measured: worst ARI of six runs 0.566 -> 0.604)."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Settings of the online models (``[models]`` in the config file).

    Attributes:
        snapshot_every_events: a snapshot every N settled events of a user,
            besides the one at the end of each session.
        cluster_k: number of behavioural clusters.
        cluster_halflife: how far a cluster centre moves towards each point it wins
            (River ``KMeans`` ``halflife``).
        cluster_warmup: snapshots buffered before the clusterer is seeded (k-means++
            and a few Lloyd rounds on the buffer); until then users are
            ``cluster:unassigned``.
        churn_horizon_s: "churned" means no activity within this long after a
            session ends.
        churn_warmup: labels learned before churn probabilities are published.
        churn_learning_rate: SGD step of the logistic regression.
        churn_bands: probability thresholds of the ``medium`` and ``high`` bands.
        churn_hysteresis: a band is entered ``hysteresis`` above its threshold and
            left ``hysteresis`` below it, so a user near a threshold does not flap.
        quality_window: labels (churn) and snapshots (clusters) the rolling quality
            metrics and the silhouette sample cover.
        version_every: learned items between checks whether the model changed
            enough to count as a new ``model_version``.
        version_tolerance: how far (in standard deviations of a feature) a cluster
            centre, or how much a churn weight, must move for a new version.
        seed: seed of the clusterer's random choices.

    """

    snapshot_every_events: int = 20
    cluster_k: int = 4
    cluster_halflife: float = 0.002
    cluster_warmup: int = 3000
    churn_horizon_s: float = 14 * 86400.0
    churn_warmup: int = 200
    churn_learning_rate: float = 0.05
    churn_bands: tuple[float, float] = (0.3, 0.7)
    churn_hysteresis: float = 0.05
    quality_window: int = 2000
    version_every: int = 1000
    version_tolerance: float = 0.25
    seed: int = 42


# --- feature vectors -----------------------------------------------------------------

ROLE_SHARES = ("product_view", "search", "add_to_cart", "checkout", "purchase")


def _log(value: float | None) -> float:
    return math.log1p(value) if value and value > 0 else 0.0


def _role_shares(values: dict[str, Any]) -> dict[str, float]:
    counts = {role: values[f"{role}_30d"] for role in ROLE_SHARES}
    commerce = sum(counts.values())
    return {role: (n / commerce if commerce else 0.0) for role, n in counts.items()}


def cluster_vector(values: dict[str, Any]) -> dict[str, float]:
    """Return the behaviour a user is clustered on, from their ``features()``.

    Shares and rates rather than counts, so a heavy and a light user with the
    same habits land together; heavy-tailed amounts on a log scale. Six
    features that tell the generated personas apart best (``docs/models.md``);
    a 0/1 feature such as "on mobile" is left to the churn model, since after
    scaling it splits users by device rather than by what they do.

    >>> x = cluster_vector({"product_view_30d": 3, "search_30d": 1, "add_to_cart_30d": 0,
    ...     "checkout_30d": 0, "purchase_30d": 0, "events_total": 8, "events_per_session": 4.0,
    ...     "bounce_rate": 0.5, "aov_90d": None, "device": "mobile"})
    >>> x["search_share"], x["commerce_share"], x["order_value"]
    (0.25, 0.5, 0.0)
    """
    shares = _role_shares(values)
    commerce = sum(values[f"{role}_30d"] for role in ROLE_SHARES)
    events = values["events_total"]
    return {
        "search_share": shares["search"],
        "purchase_share": shares["purchase"],
        "commerce_share": min(1.0, commerce / events) if events else 0.0,
        "events_per_session": _log(values["events_per_session"]),
        "order_value": _log(values["aov_90d"]),
        "bounce_rate": float(values["bounce_rate"] or 0.0),
    }


def churn_vector(values: dict[str, Any]) -> dict[str, float]:
    """Return what the churn model reads: the behaviour mix plus device, activity and tenure."""
    out = cluster_vector(values)
    shares = _role_shares(values)
    out["product_view_share"] = shares["product_view"]
    out["add_to_cart_share"] = shares["add_to_cart"]
    out["mobile"] = 1.0 if values["device"] == "mobile" else 0.0
    first, last = values["first_seen"], values["last_seen"]
    out["tenure_days"] = _log(0.0 if first is None or last is None else (last - first) / 86400.0)
    out["sessions"] = _log(values["sessions_total"])
    out["events"] = _log(values["events_total"])
    out["purchases_90d"] = _log(values["purchases_90d"])
    out["engagement"] = _log(values["engagement"])
    return out


# --- what flows between the user step and the learner ----------------------------------


@dataclass(frozen=True, slots=True)
class LearnItem:
    """One thing for the learner: a snapshot to cluster, and/or a churn label.

    Attributes:
        cluster_x: the snapshot's :func:`cluster_vector` (``None``: a label only).
        churn_x: for a label, the :func:`churn_vector` of the labelled snapshot.
        churned: the label (``None``: no label).
        predicted: the churn probability published for the labelled snapshot
            (``None`` if none was: the model was not warm yet).
        event_time: when it happened, in event time.

    """

    cluster_x: dict[str, float] | None = None
    churn_x: dict[str, float] | None = None
    churned: bool | None = None
    predicted: float | None = None
    event_time: float = 0.0

    def to_json(self) -> bytes:
        """Encode for the ``model-learn`` topic (plain JSON, as the model events are).

        >>> item = LearnItem(cluster_x={"bounce_rate": 0.5}, event_time=60.0)
        >>> item.to_json()
        b'{"cluster_x":{"bounce_rate":0.5},"churn_x":null,"churned":null,"predicted":null,"event_time":60.0}'
        >>> LearnItem.from_json(item.to_json()) == item
        True
        """
        return orjson.dumps({"cluster_x": self.cluster_x, "churn_x": self.churn_x,
                             "churned": self.churned, "predicted": self.predicted,
                             "event_time": self.event_time})

    @staticmethod
    def from_json(value: bytes | None) -> LearnItem:
        """Decode :meth:`to_json` output.

        Raises:
            StateError: not such a document (a field missing or of the wrong type).

        """
        try:
            data = orjson.loads(value or b"")
            return LearnItem(
                cluster_x=_vector(data["cluster_x"]), churn_x=_vector(data["churn_x"]),
                churned=_optional(data["churned"], bool), predicted=_optional(data["predicted"], float),
                event_time=float(data["event_time"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise StateError("model-learn", f"not a learn item: {exc!r}") from exc


def _vector(raw: Any) -> dict[str, float] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TypeError(f"expected a feature vector, got {raw!r}")
    return {str(name): float(x) for name, x in raw.items()}


def _optional(raw: Any, kind: type) -> Any:
    if raw is None:
        return None
    if kind is bool and not isinstance(raw, bool):
        raise TypeError(f"expected true or false, got {raw!r}")
    return kind(raw)


@dataclass(frozen=True, slots=True)
class Prediction:
    """What the models say of one snapshot.

    Attributes:
        cluster: stable cluster id, or ``None`` while the clusterer warms up.
        churn_p: churn probability, or ``None`` while the churn model warms up.
        model_version: the version of the models that decided.

    """

    cluster: int | None
    churn_p: float | None
    model_version: int


@dataclass(frozen=True, slots=True)
class ModelEvent:
    """Something the learner reports on the ``model-events`` topic.

    Attributes:
        kind: ``version`` (the models changed enough for a new version; carries
            the cluster descriptions and quality), or ``drift`` (a detector fired).
        model_version: the version after the event.
        event_time: event time of the item that caused it.
        detail: kind-specific fields (JSON-ready).

    """

    kind: str
    model_version: int
    event_time: float
    detail: dict[str, Any]


def churn_band(p: float, previous: str | None, config: ModelConfig) -> str:
    """Return the churn band of probability ``p``, with hysteresis around the thresholds.

    A band is entered only ``churn_hysteresis`` beyond its threshold and left
    only ``churn_hysteresis`` short of it, so a probability wandering around a
    threshold keeps the user where they are.

    >>> config = ModelConfig(churn_bands=(0.3, 0.7), churn_hysteresis=0.05)
    >>> churn_band(0.72, "medium", config), churn_band(0.76, "medium", config)
    ('medium', 'high')
    >>> churn_band(0.66, "high", config), churn_band(0.64, "high", config)
    ('high', 'medium')
    """
    medium, high = config.churn_bands
    h = config.churn_hysteresis
    plain = "high" if p >= high else "medium" if p >= medium else "low"
    if previous is None or previous == plain:
        return plain
    rank = CHURN_BANDS.index
    thresholds = {"medium": medium, "high": high}
    if rank(plain) > rank(previous):  # moving up: the band entered needs p clear of its threshold
        target = plain
        while target != previous and p < thresholds[target] + h:
            target = CHURN_BANDS[rank(target) - 1]
        return target
    # moving down: leave each band only when p is clear below its threshold
    target = previous
    while target != plain and p < thresholds[target] - h:
        target = CHURN_BANDS[rank(target) - 1]
    return target


# --- the models --------------------------------------------------------------------------


def _distance2(a: dict[str, float], b: dict[str, float]) -> float:
    return sum((a.get(k, 0.0) - b.get(k, 0.0)) ** 2 for k in a.keys() | b.keys())


class ClusterModel:
    """Standard scaling and River's online ``KMeans``, both seeded from a warm-up buffer.

    River's ``KMeans`` starts from random centres and only moves the centre a
    point is closest to, so a badly placed centre never wins a point and a
    cluster stays empty. This one buffers the first ``cluster_warmup``
    snapshots, seeds the centres with k-means++ and a few Lloyd rounds on them,
    and learns online from there. River's ``KMeans`` never renumbers its
    centres, so once seeded a cluster keeps its id for as long as it lives.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.scaler = preprocessing.StandardScaler()
        self.kmeans = cluster.KMeans(n_clusters=config.cluster_k, halflife=config.cluster_halflife,
                                     seed=config.seed)
        self.warmup: list[dict[str, float]] | None = []
        self.rng = random.Random(config.seed)
        self.recent: list[dict[str, float]] | None = []  # for the one re-seeding

    @property
    def warm(self) -> bool:
        """Whether the centres are seeded and users get a cluster."""
        return self.warmup is None

    def predict(self, x: dict[str, float]) -> int | None:
        """Return the cluster of ``x`` (``None`` before warm-up ends)."""
        if self.warmup is not None:
            return None
        return int(self.kmeans.predict_one(self.scaler.transform_one(x)))

    def learn(self, x: dict[str, float]) -> tuple[int, dict[str, float]] | None:
        """Learn one snapshot; return its cluster before it was learned, and its scaled vector.

        ``None`` while warming up. Scaling once serves the assignment, the
        quality sample and the update.
        """
        if self.warmup is not None:
            # The scale is learned on the warm-up only: a scale that kept moving
            # would move every point relative to the centres, and ids with them
            # (measured: 91-94 % of snapshots kept their id, against 96-98 %).
            self.scaler.learn_one(x)
            self.warmup.append(x)
            if len(self.warmup) >= self.config.cluster_warmup:
                self._seed(self.warmup)
                self.warmup = None
            return None
        z = self.scaler.transform_one(x)
        assigned = int(self.kmeans.predict_one(z))
        self.kmeans.learn_one(z)
        if self.recent is not None:
            self.recent.append(x)
            if len(self.recent) >= RESEED_AFTER * self.config.cluster_warmup:
                self._reseed(self.recent)
                self.recent = None
        return assigned, z

    def _reseed(self, points: list[dict[str, float]]) -> None:
        """Seed scale and centres again on later snapshots, keeping each cluster's id.

        The warm-up sees users early, with little history; a second seeding on
        the snapshots that followed places the centres where users settle.
        Each new centre takes the id of the old centre it is matched to (the
        pairing with the least total distance, in the new scale), so a
        behaviour keeps its id.
        """
        scale = _scale_of(self.scaler)
        old = {i: {n: z * scale[n][1] ** 0.5 + scale[n][0] for n, z in c.items()}
               for i, c in self.centres().items()}  # back to raw units
        self.scaler = preprocessing.StandardScaler()
        for x in points:
            self.scaler.learn_one(x)
        self._seed(points)
        new = self.centres()
        old_z = {i: self.scaler.transform_one(c) for i, c in old.items()}
        for i, j in match_centres(old_z, new).items():
            self.kmeans.centers[i].clear()
            self.kmeans.centers[i].update(new[j])

    def centres(self) -> dict[int, dict[str, float]]:
        """Return the centres in standard deviations from the mean of each feature."""
        if self.warmup is not None:
            return {}
        return {i: dict(centre) for i, centre in self.kmeans.centers.items()}

    def describe(self, top: int = 3, threshold: float = 0.5) -> dict[int, str]:
        """Return a readable description of each cluster from its centre.

        The features furthest from the population mean (``|z| >= threshold``),
        at most ``top`` of them, e.g. ``high search_share, low order_value``.
        """
        out = {}
        for i, centre in self.centres().items():
            notable = sorted(((abs(z), name, z) for name, z in centre.items() if abs(z) >= threshold),
                             reverse=True)[:top]
            out[i] = ", ".join(f"{'high' if z > 0 else 'low'} {name}" for _, name, z in notable) or "average"
        return out

    def _seed(self, points: list[dict[str, float]]) -> None:
        """Seed the centres: the best of a few k-means++ starts, each refined by Lloyd rounds.

        In numpy over a points-by-features matrix: seeding blocks the worker, and
        in pure Python it took seconds on 3,000 snapshots (8 starts, 10 rounds).
        """
        scaled = [self.scaler.transform_one(x) for x in points]
        names = sorted({name for p in scaled for name in p})
        matrix = np.array([[p.get(n, 0.0) for n in names] for p in scaled])
        best: tuple[float, np.ndarray] | None = None
        for _ in range(SEED_RESTARTS):
            centres = _lloyd(matrix, self._kmeans_plus_plus(matrix))
            inertia = float(_nearest(matrix, centres)[1].sum())
            if best is None or inertia < best[0]:
                best = (inertia, centres)
        assert best is not None
        for i, centre in enumerate(best[1]):
            self.kmeans.centers[i].clear()
            self.kmeans.centers[i].update(dict(zip(names, centre.tolist(), strict=True)))

    def _kmeans_plus_plus(self, points: np.ndarray) -> np.ndarray:
        """k-means++ starting centres (rows of ``points``), drawn with the model's seeded rng."""
        n = len(points)
        chosen = [self.rng.randrange(n)]
        while len(chosen) < min(self.config.cluster_k, n):
            weights = _nearest(points, points[chosen])[1]
            total = float(weights.sum())
            if total == 0:
                chosen.append(self.rng.randrange(n))
            else:  # far points are likelier seeds
                cumulative = np.cumsum(weights)
                pick = int(np.searchsorted(cumulative, self.rng.random() * total, side="right"))
                chosen.append(min(pick, n - 1))
        return points[chosen].copy()


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centre and squared distance to it."""
    d2 = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    nearest = d2.argmin(axis=1)
    return nearest, d2[np.arange(len(points)), nearest]


def _lloyd(points: np.ndarray, centres: np.ndarray, rounds: int = 10) -> np.ndarray:
    """Lloyd rounds: each centre moves to the mean of its points (an empty one stays)."""
    for _ in range(rounds):
        nearest, _d2 = _nearest(points, centres)
        for i in range(len(centres)):
            members = points[nearest == i]
            if len(members):
                centres[i] = members.mean(axis=0)
    return centres


class ChurnModel:
    """Standard scaling and logistic regression, learned from delayed labels."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.model = preprocessing.StandardScaler() | linear_model.LogisticRegression(
            optimizer=optim.SGD(config.churn_learning_rate))
        self.labels = 0

    @property
    def warm(self) -> bool:
        """Whether probabilities are published."""
        return self.labels >= self.config.churn_warmup

    def predict(self, x: dict[str, float]) -> float | None:
        """Return the churn probability of ``x`` (``None`` before warm-up ends)."""
        if not self.warm:
            return None
        return float(self.model.predict_proba_one(x).get(True, 0.0))

    def learn(self, x: dict[str, float], churned: bool) -> None:
        """Learn one label."""
        self.model.learn_one(x, churned)
        self.labels += 1

    def weights(self) -> dict[str, float]:
        """Return the regression's weights (per standardized feature)."""
        return dict(self.model["LogisticRegression"].weights)


@dataclass
class Quality:
    """Online quality of the models, over the last ``quality_window`` items."""

    window: int
    roc_auc: Any = None
    log_loss: Any = None
    labels_seen: int = 0
    sample: deque[tuple[dict[str, float], int]] = field(default_factory=deque)
    silhouette: float | None = None

    def __post_init__(self) -> None:
        self.roc_auc = metrics.RollingROCAUC(window_size=self.window)
        self.log_loss = utils.Rolling(metrics.LogLoss, window_size=self.window)
        self.sample = deque(maxlen=min(self.window, 500))


class Models:
    """The learner's state: both models, their version, quality and drift detectors.

    Pickled whole into the learner's Bytewax snapshot (:meth:`to_bytes`).
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.cluster = ClusterModel(config)
        self.churn = ChurnModel(config)
        self.version = 0
        self.learned = 0
        self.quality = Quality(config.quality_window)
        self.churn_drift = drift.ADWIN()
        self.mix_drift: dict[int, Any] = {}
        self.drifts = 0
        self._published_centres: dict[int, dict[str, float]] = {}
        self._published_weights: dict[str, float] = {}
        self._published_warm = (False, False)

    def predict(self, cluster_x: dict[str, float] | None, churn_x: dict[str, float] | None
                ) -> Prediction:
        """Predict one snapshot (either vector may be ``None``: not asked)."""
        return Prediction(
            None if cluster_x is None else self.cluster.predict(cluster_x),
            None if churn_x is None else self.churn.predict(churn_x),
            self.version,
        )

    def learn(self, item: LearnItem) -> list[ModelEvent]:
        """Learn one item; return what should be reported (drift, a new version)."""
        events: list[ModelEvent] = []
        if item.cluster_x is not None:
            learned = self.cluster.learn(item.cluster_x)
            if learned is not None:
                self._observe_mix(*learned, item, events)
        if item.churn_x is not None and item.churned is not None:
            if item.predicted is not None:
                self._observe_churn(item.predicted, item.churned, item, events)
            self.churn.learn(item.churn_x, item.churned)
        self.learned += 1
        if self.learned % self.config.version_every == 0 or self._warmth_changed():
            self._maybe_new_version(item.event_time, events)
        return events

    def predictor(self) -> Predictor:
        """Return the parameters another process predicts with (see :class:`Predictor`)."""
        churn = self.churn.model
        return Predictor(
            version=self.version,
            cluster_scale=_scale_of(self.cluster.scaler),
            centres=self.cluster.centres(),
            churn_scale=_scale_of(churn["StandardScaler"]),
            churn_weights=self.churn.weights(),
            churn_intercept=float(churn["LogisticRegression"].intercept),
            churn_warm=self.churn.warm,
        )

    def to_bytes(self) -> bytes:
        """Serialize for the learner's recovery snapshot."""
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def from_bytes(data: bytes) -> Models:
        """Rebuild from :meth:`to_bytes` output.

        Raises:
            StateError: the bytes are not a models snapshot.

        """
        try:
            models = pickle.loads(data)  # noqa: S301 - our own recovery store
        except Exception as exc:
            raise StateError("models", f"models snapshot is not readable: {exc}") from exc
        if not isinstance(models, Models):
            raise StateError("models", f"models snapshot holds a {type(models).__name__}")
        return models

    def summary(self) -> dict[str, Any]:
        """Return the models' version, warmth, quality and cluster descriptions."""
        q = self.quality
        return {
            "model_version": self.version,
            "learned": self.learned,
            "cluster_warm": self.cluster.warm,
            "churn_warm": self.churn.warm,
            "churn_labels": self.churn.labels,
            "churn_roc_auc": q.roc_auc.get() if q.labels_seen else None,
            "churn_log_loss": q.log_loss.get() if q.labels_seen else None,
            "cluster_silhouette": q.silhouette,
            "clusters": {str(i): text for i, text in self.cluster.describe().items()},
            "centres": {str(i): {name: round(z, 4) for name, z in centre.items()}
                        for i, centre in self.cluster.centres().items()},
            "drifts": self.drifts,
        }

    # --- internals ----------------------------------------------------------------------

    def _observe_churn(self, p: float, churned: bool, item: LearnItem,
                       events: list[ModelEvent]) -> None:
        q = self.quality
        q.roc_auc.update(churned, p)
        q.log_loss.update(churned, p)
        q.labels_seen += 1
        self.churn_drift.update(abs(float(churned) - p))
        if self.churn_drift.drift_detected:
            self.drifts += 1
            events.append(ModelEvent("drift", self.version, item.event_time,
                                     {"detector": "churn_error", "labels": q.labels_seen}))

    def _observe_mix(self, assigned: int, scaled: dict[str, float], item: LearnItem,
                     events: list[ModelEvent]) -> None:
        q = self.quality
        q.sample.append((scaled, assigned))
        for i in range(self.config.cluster_k):
            detector = self.mix_drift.setdefault(i, drift.ADWIN())
            detector.update(1.0 if i == assigned else 0.0)
            if detector.drift_detected:
                self.drifts += 1
                events.append(ModelEvent("drift", self.version, item.event_time,
                                         {"detector": "cluster_mix", "cluster": i,
                                          "share": detector.estimation}))

    def _warmth_changed(self) -> bool:
        return (self.cluster.warm, self.churn.warm) != self._published_warm

    def _maybe_new_version(self, event_time: float, events: list[ModelEvent]) -> None:
        centres = self.cluster.centres()
        weights = self.churn.weights() if self.churn.warm else {}
        tolerance = self.config.version_tolerance
        moved = any(
            i not in self._published_centres
            or math.sqrt(_distance2(centre, self._published_centres[i])) > tolerance
            for i, centre in centres.items()
        ) or any(
            abs(w - self._published_weights.get(name, 0.0)) > tolerance for name, w in weights.items()
        )
        self.quality.silhouette = silhouette(self.quality.sample, centres)
        if not (moved or self._warmth_changed()):
            return
        self.version += 1
        self._published_centres = centres
        self._published_weights = weights
        self._published_warm = (self.cluster.warm, self.churn.warm)
        events.append(ModelEvent("version", self.version, event_time,
                                 {**self.summary(), "predictor": self.predictor().to_json()}))


@dataclass(frozen=True, slots=True)
class Predictor:
    """What another process needs to predict like the learner: the models' parameters.

    The learner sends it with every model version on the ``model-events``
    topic (plain JSON, no pickles on the wire); processes that do not hold the
    learner predict with the newest one they read (``flows/models.py``).

    Attributes:
        version: the models' version.
        cluster_scale: per feature ``(mean, variance)`` of the clustering scaler.
        centres: cluster id -> centre (scaled), empty before the warm-up ends.
        churn_scale: per feature ``(mean, variance)`` of the churn scaler.
        churn_weights: logistic regression weights (on scaled features).
        churn_intercept: its intercept.
        churn_warm: whether probabilities are published.

    """

    version: int
    cluster_scale: dict[str, tuple[float, float]]
    centres: dict[int, dict[str, float]]
    churn_scale: dict[str, tuple[float, float]]
    churn_weights: dict[str, float]
    churn_intercept: float
    churn_warm: bool

    def predict(self, cluster_x: dict[str, float] | None, churn_x: dict[str, float] | None
                ) -> Prediction:
        """Predict one snapshot as the learner's models of the same version would."""
        cluster_id = None
        if cluster_x is not None and self.centres:
            z = _scale(cluster_x, self.cluster_scale)
            cluster_id = min(self.centres, key=lambda i: _distance2(self.centres[i], z))
        churn_p = None
        if churn_x is not None and self.churn_warm:
            z = _scale(churn_x, self.churn_scale)
            logit = sum(w * z.get(name, 0.0) for name, w in self.churn_weights.items())
            churn_p = _sigmoid(logit + self.churn_intercept)
        return Prediction(cluster_id, churn_p, self.version)

    def to_json(self) -> dict[str, Any]:
        """Return the parameters as JSON-ready data."""
        return {
            "version": self.version,
            "cluster_scale": self.cluster_scale,
            "centres": {str(i): c for i, c in self.centres.items()},
            "churn_scale": self.churn_scale,
            "churn_weights": self.churn_weights,
            "churn_intercept": self.churn_intercept,
            "churn_warm": self.churn_warm,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Predictor:
        """Rebuild from :meth:`to_json` output.

        Raises:
            StateError: a field is missing or malformed.

        """
        try:
            return Predictor(
                version=int(data["version"]),
                cluster_scale={k: (float(m), float(v)) for k, (m, v) in data["cluster_scale"].items()},
                centres={int(i): {k: float(x) for k, x in c.items()}
                         for i, c in data["centres"].items()},
                churn_scale={k: (float(m), float(v)) for k, (m, v) in data["churn_scale"].items()},
                churn_weights={k: float(w) for k, w in data["churn_weights"].items()},
                churn_intercept=float(data["churn_intercept"]),
                churn_warm=bool(data["churn_warm"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StateError("models", f"model parameters are malformed: {exc!r}") from exc


def match_centres(old: dict[int, dict[str, float]], new: dict[int, dict[str, float]]
                  ) -> dict[int, int]:
    """Pair each old centre id with a new centre, least total squared distance first.

    Exhaustive for up to 7 centres (5,040 pairings), greedy by nearest pair beyond.

    >>> match_centres({0: {"x": 0.0}, 1: {"x": 5.0}}, {0: {"x": 4.8}, 1: {"x": 0.1}})
    {0: 1, 1: 0}
    """
    ids, candidates = list(old), list(new)
    if len(ids) <= 7 and len(ids) == len(candidates):
        best = min(itertools.permutations(candidates),
                   key=lambda perm: sum(_distance2(old[i], new[j])
                                        for i, j in zip(ids, perm, strict=True)))
        return dict(zip(ids, best, strict=True))
    pairs = sorted((_distance2(old[i], new[j]), i, j) for i in ids for j in candidates)
    out: dict[int, int] = {}
    for _, i, j in pairs:
        if i not in out and j not in out.values():
            out[i] = j
    return out


def _scale(x: dict[str, float], scale: dict[str, tuple[float, float]]) -> dict[str, float]:
    """River's ``StandardScaler.transform_one`` on stored means and variances."""
    out = {}
    for name, value in x.items():
        mean, var = scale.get(name, (0.0, 0.0))
        out[name] = (value - mean) / var**0.5 if var else 0.0
    return out


def _sigmoid(z: float) -> float:
    """River's ``utils.math.sigmoid``."""
    if z < -30:
        return 0.0
    if z > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-z))


def _scale_of(scaler: Any) -> dict[str, tuple[float, float]]:
    return {name: (float(scaler.means[name]), float(scaler.vars[name])) for name in scaler.means}


def silhouette(sample: Any, centres: dict[int, dict[str, float]]) -> float | None:
    """Simplified silhouette of a sample against cluster centres, in [-1, 1].

    For each point, ``a`` is the distance to its own centre and ``b`` to the
    nearest other one; the score is the mean of ``(b - a) / max(a, b)``. It is
    the centroid form of the silhouette (Vendramin et al. 2010), linear in the
    sample, which is what an online check can afford.

    >>> silhouette([({"x": 0.0}, 0), ({"x": 1.0}, 1)], {0: {"x": 0.0}, 1: {"x": 1.0}})
    1.0
    """
    if len(centres) < 2 or not sample:
        return None
    scores = []
    for x, own in sample:
        if own not in centres:
            continue
        a = math.sqrt(_distance2(x, centres[own]))
        b = min(math.sqrt(_distance2(x, c)) for i, c in centres.items() if i != own)
        top = max(a, b)
        scores.append(0.0 if top == 0 else (b - a) / top)
    return sum(scores) / len(scores) if scores else None


class ModelHub:
    """The models a worker predicts with, shared by the worker threads of a process.

    The learner step installs its live :class:`Models` here; in a process
    without the learner, the newest :class:`Predictor` read from the
    ``model-events`` topic is followed instead. User steps call :meth:`predict`
    from their own threads, so all of it goes through one lock.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._models: Models | None = None
        self._followed: Predictor | None = None
        self.lock = threading.Lock()

    def follow(self, predictor: Predictor) -> bool:
        """Predict with ``predictor`` while this process holds no learner; say if it was newer."""
        with self.lock:
            if self._followed is not None and predictor.version <= self._followed.version:
                return False
            self._followed = predictor
            return True

    def install(self, models: Models) -> None:
        """Use ``models`` from now on."""
        with self.lock:
            self._models = models

    def predict(self, cluster_x: dict[str, float] | None, churn_x: dict[str, float] | None
                ) -> Prediction:
        """Predict one snapshot; before any models are installed, nothing is known."""
        with self.lock:
            if self._models is not None:
                return self._models.predict(cluster_x, churn_x)
            if self._followed is not None:
                return self._followed.predict(cluster_x, churn_x)
            return Prediction(None, None, 0)

    def learn(self, items: Iterable[LearnItem]) -> list[ModelEvent]:
        """Learn items in order on the installed models (created on first use), under one lock."""
        with self.lock:
            if self._models is None:
                self._models = Models(self.config)
            learn = self._models.learn
            return [event for item in items for event in learn(item)]

    @property
    def models(self) -> Models | None:
        """The installed models, if any."""
        return self._models
