"""The model learner in Bytewax: one keyed step holding the models, and what it emits.

Every user step predicts with its process's :class:`~segstream.operators.models.ModelHub`
and sends what the models learn from (snapshots, churn labels) here, under one
key, so there is one set of models for the whole dataflow: cluster ids mean the
same on every worker, and the models are in Bytewax's recovery snapshots with
the users they were learned from. The learner installs its live models in its
process's hub, so user steps of that process predict with them directly
(``docs/models.md``, "Parallelism").
"""

from __future__ import annotations

import logging
import time

from bytewax.operators import StatefulBatchLogic
from segstream.flows.connectors import OutMessage
from segstream.operators.changes import model_event_value
from segstream.operators.models import LearnItem, ModelEvent, ModelHub, Models
from segstream.operators.user import UserUpdate

from segstream.metrics import (
    CHURN_LABELS,
    CHURN_LOG_LOSS,
    CHURN_ROC_AUC,
    CLUSTER_SILHOUETTE,
    MODEL_DRIFTS,
    MODEL_SNAPSHOTS,
    MODEL_VERSION,
)

LEARNER_KEY = "models"
"""The one key of the learner step: every worker's snapshots meet there."""

log = logging.getLogger(__name__)


def learn_items(update: UserUpdate) -> list[tuple[str, LearnItem]]:
    """Route an update's snapshots and labels to the learner."""
    return [(LEARNER_KEY, item) for item in update.learn]


class LearnerStep(StatefulBatchLogic[LearnItem, ModelEvent, bytes]):
    """Learns every item, in order, on the models it installs in the process's hub."""

    def __init__(self, hub: ModelHub, resume: bytes | None) -> None:
        self.hub = hub
        models = Models(hub.config) if resume is None else Models.from_bytes(resume)
        hub.install(models)
        MODEL_VERSION.set(models.version)
        if resume is not None:
            log.info("models resumed at version %d after %d learned items",
                     models.version, models.learned)

    def on_batch(self, values: list[LearnItem]) -> tuple[list[ModelEvent], bool]:
        """Learn a batch in order; emit drifts and new versions."""
        events: list[ModelEvent] = []
        snapshots = labels = 0
        for item in values:
            events += self.hub.learn(item)
            if item.cluster_x is not None:
                snapshots += 1
            if item.churned is not None:
                labels += 1
                CHURN_LABELS.labels(str(item.churned).lower()).inc()
        MODEL_SNAPSHOTS.inc(snapshots)
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
        log.info("model version %d: churn ROC-AUC %s, log loss %s, silhouette %s, clusters %s",
                 event.model_version, detail.get("churn_roc_auc"), detail.get("churn_log_loss"),
                 detail.get("cluster_silhouette"), detail.get("clusters"))


def model_event_messages(topic: str, events: list[ModelEvent]) -> list[OutMessage]:
    """Serialize model events for the ``model-events`` topic."""
    emitted_at = time.time()
    return [OutMessage(topic, event.kind.encode(), model_event_value(event, emitted_at=emitted_at))
            for event in events]
