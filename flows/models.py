"""The model learner in Bytewax: one keyed step holding the models, and what it emits.

Every user step predicts with its process's :class:`~segstream.operators.models.ModelHub`
and sends what the models learn from (snapshots, churn labels) here, under one
key, so there is one set of models for the whole dataflow: cluster ids mean the
same on every worker, and the models are in Bytewax's recovery snapshots with
the users they were learned from. The learner installs its live models in its
process's hub, so user steps of that process predict with them directly; the
other processes follow the model versions the learner sends on the
``model-events`` topic (:class:`ModelFollower`; ``docs/models.md``, "Where the
models live").
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable

import orjson
from bytewax.connectors.kafka import KafkaError
from bytewax.operators import StatefulBatchLogic
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from segstream.flows.connectors import OutMessage, SourceItem, consumer_settings, reject
from segstream.operators.changes import model_event_value
from segstream.operators.events import Reason, Rejected
from segstream.operators.models import LearnItem, ModelEvent, ModelHub, Models, Predictor
from segstream.operators.user import UserUpdate

from segstream.config import Config
from segstream.errors import StateError
from segstream.health import request_fatal_stop, supervised
from segstream.metrics import (
    CHURN_LABELS,
    CHURN_LOG_LOSS,
    CHURN_ROC_AUC,
    CLUSTER_SILHOUETTE,
    MODEL_DRIFTS,
    MODEL_LEARN_SENT,
    MODEL_SNAPSHOTS,
    MODEL_VERSION,
)

QUALITY_EVERY = 5000
"""Learned items between quality reports (log line and gauges) besides new versions."""

LEARNER_KEY = "models"
"""The one key of the learner step: every worker's snapshots meet there."""

log = logging.getLogger(__name__)


def learn_items(update: UserUpdate) -> list[tuple[str, LearnItem]]:
    """Route an update's snapshots and labels to the learner."""
    return [(LEARNER_KEY, item) for item in update.learn]


def learn_messages(topic: str, updates: list[UserUpdate]) -> list[OutMessage]:
    """Serialize a batch's snapshots and labels for shard 0's learner (``model_learn_topic``)."""
    items = [item for update in updates for item in update.learn]
    if items:
        MODEL_LEARN_SENT.labels("snapshot").inc(sum(item.cluster_x is not None for item in items))
        MODEL_LEARN_SENT.labels("label").inc(sum(item.churned is not None for item in items))
    return [OutMessage(topic, None, item.to_json()) for item in items]


def read_learn_message(item: SourceItem) -> tuple[str, LearnItem] | Rejected:
    """Read a message of ``model_learn_topic``, routed to the learner; unreadable: a dead letter."""
    if isinstance(item, KafkaError):
        return reject(item, Reason.SOURCE_ERROR, str(item.err))
    try:
        return LEARNER_KEY, LearnItem.from_json(item.value)
    except StateError as exc:
        return reject(item, Reason.WRONG_TYPE, exc.problem)


class LearnerStep(StatefulBatchLogic[LearnItem, ModelEvent, bytes]):
    """Learns every item, in order, on the models it installs in the process's hub."""

    def __init__(self, hub: ModelHub, resume: bytes | None) -> None:
        self.hub = hub
        models = Models(hub.config) if resume is None else Models.from_bytes(resume)
        hub.install(models)
        self._reported = models.learned // QUALITY_EVERY
        MODEL_VERSION.set(models.version)
        if resume is not None:
            log.info("models resumed at version %d after %d learned items",
                     models.version, models.learned)

    def on_batch(self, values: list[LearnItem]) -> tuple[list[ModelEvent], bool]:
        """Learn a batch in order; emit drifts and new versions."""
        events = self.hub.learn(values)
        MODEL_SNAPSHOTS.inc(sum(item.cluster_x is not None for item in values))
        outcomes = Counter(item.churned for item in values if item.churned is not None)
        for churned, count in outcomes.items():
            CHURN_LABELS.labels(str(churned).lower()).inc(count)
        models = self.hub.models
        if models is not None and models.learned // QUALITY_EVERY > self._reported:
            # Quality is reported on a schedule too, not only with new versions.
            self._reported = models.learned // QUALITY_EVERY
            with self.hub.lock:
                self._report(ModelEvent("quality", models.version, 0.0, models.summary()))
        for event in events:
            if event.kind == "drift":
                MODEL_DRIFTS.labels(event.detail.get("detector", "")).inc()
                log.info("drift at model version %d: %s", event.model_version, event.detail)
            else:
                self._report(event)
        return events, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        """Serialize the models for the recovery snapshot."""
        with self.hub.lock:
            models = self.hub.models
            assert models is not None, "the learner installs its models when built"
            return models.to_bytes()

    @staticmethod
    def _report(event: ModelEvent) -> None:
        detail = event.detail
        MODEL_VERSION.set(event.model_version)
        for gauge, name in ((CHURN_ROC_AUC, "churn_roc_auc"), (CHURN_LOG_LOSS, "churn_log_loss"),
                            (CLUSTER_SILHOUETTE, "cluster_silhouette")):
            if detail.get(name) is not None:
                gauge.set(detail[name])
        log.info("model %s %d: churn ROC-AUC %s, log loss %s, silhouette %s, clusters %s",
                 event.kind, event.model_version, detail.get("churn_roc_auc"), detail.get("churn_log_loss"),
                 detail.get("cluster_silhouette"), detail.get("clusters"))


def model_event_messages(topic: str, events: list[ModelEvent]) -> list[OutMessage]:
    """Serialize model events for the ``model-events`` topic."""
    emitted_at = time.time()
    return [OutMessage(topic, event.kind.encode(), model_event_value(event, emitted_at=emitted_at))
            for event in events]


FOLLOWER_THREAD = "model follower"


class ModelFollower:
    """Reads model versions from the ``model-events`` topic into a process's hub.

    A process whose workers do not hold the learner predicts with the newest
    :class:`~segstream.operators.models.Predictor` read here (a process that
    holds it predicts with the live models, which the hub prefers). Reads the
    topic from its start without a consumer group, on a daemon thread.
    """

    def __init__(self, config: Config, hub: ModelHub, *,
                 on_fatal: Callable[[str], None] = request_fatal_stop) -> None:
        """Follow ``config.model_events_topic`` into ``hub``.

        Broker errors (a metadata timeout, the broker away) are retried with
        backoff for as long as the worker runs; anything else kills the thread,
        and ``on_fatal`` stops the worker (non-zero) rather than leave it
        predicting with models that no longer follow the learner.
        """
        self._config = config
        self._hub = hub
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=supervised, args=(FOLLOWER_THREAD, self._run, on_fatal),
            name="segstream-model-follower", daemon=True)

    def start(self) -> ModelFollower:
        """Start following; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following and wait for the consumer to close.

        A consumer still open when the interpreter exits can hang the process.
        """
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        config = self._config
        consumer = Consumer({
            "bootstrap.servers": ",".join(config.brokers),
            "group.id": f"segstream-model-follower-{uuid.uuid4().hex}",  # never committed
            "enable.auto.commit": "false",
            **consumer_settings(config),
        })
        try:
            assigned = False
            failures = 0
            while not self._stop.is_set():
                try:
                    if not assigned:
                        assigned = self._assign(consumer)
                        if not assigned:
                            self._stop.wait(1.0)
                            continue
                    msg = consumer.poll(0.2)
                except KafkaException as exc:  # the broker away or slow: retried
                    failures += 1
                    log.warning("model follower: %s (retrying)", exc)
                    self._stop.wait(min(10.0, 0.5 * 2 ** min(failures, 5)))
                    continue
                failures = 0
                if msg is None or msg.error() is not None:
                    continue
                self._take(msg.value())
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> bool:
        topic = self._config.model_events_topic
        found = consumer.list_topics(topic, timeout=2).topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            return False
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in found.partitions])
        return True

    def _take(self, value: bytes | None) -> None:
        try:
            event = orjson.loads(value or b"")
            if event.get("kind") != "version" or "predictor" not in event.get("detail", {}):
                return
            predictor = Predictor.from_json(event["detail"]["predictor"])
        except (orjson.JSONDecodeError, AttributeError, StateError) as exc:
            log.warning("ignoring an unreadable model event: %s", exc)
            return
        if self._hub.follow(predictor):
            log.debug("following model version %d", predictor.version)
