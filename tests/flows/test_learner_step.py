"""The learner step's Bytewax face: resume from its snapshot, report quality, emit events."""

from __future__ import annotations

import logging
import random

import pytest

import segstream.flows.models as learner
from segstream.flows.models import LearnerStep, learn_items, model_event_messages
from segstream.metrics import CHURN_ROC_AUC
from segstream.operators.models import LearnItem, ModelConfig, ModelHub
from segstream.operators.user import UserUpdate

CONFIG = ModelConfig(cluster_k=2, cluster_warmup=50, churn_warmup=20, version_every=100)


def items(n: int) -> list[LearnItem]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        a = rng.gauss(4.0 * (i % 2), 0.3)
        out.append(LearnItem(cluster_x={"a": a}, churn_x={"a": a}, churned=a > 2,
                             predicted=0.9 if a > 2 else 0.1, event_time=float(i)))
    return out


def test_resumes_from_its_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = ModelHub(CONFIG)
    step = LearnerStep(hub, None)
    events, retain = step.on_batch(items(300))
    assert retain is False
    assert any(e.kind == "version" for e in events)
    other = ModelHub(CONFIG)
    LearnerStep(other, step.snapshot())
    assert other.models is not None and hub.models is not None
    assert (other.models.learned, other.models.version) == (hub.models.learned, hub.models.version)
    assert other.predict({"a": 4.0}, {"a": 4.0}) == hub.predict({"a": 4.0}, {"a": 4.0})


def test_reports_quality_on_a_schedule(monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(learner, "QUALITY_EVERY", 100)
    step = LearnerStep(ModelHub(CONFIG), None)
    CHURN_ROC_AUC.set(0.0)
    with caplog.at_level(logging.INFO, logger="segstream.flows.models"):
        step.on_batch(items(250))
    assert any("model quality" in r.getMessage() for r in caplog.records)
    assert CHURN_ROC_AUC._value.get() > 0.9


def test_routes_and_serializes() -> None:
    [item] = items(1)
    update = UserUpdate("u1", 1, 1, b"{}", (), learn=(item, item))
    assert learn_items(update) == [("models", item), ("models", item)]
    step = LearnerStep(ModelHub(CONFIG), None)
    events, _ = step.on_batch(items(300))
    messages = model_event_messages("model-events", events)
    assert [m.key for m in messages] == [e.kind.encode() for e in events]
    assert all(m.topic == "model-events" for m in messages)
