"""`segstream demo`: the embedded default runs end to end and reports from the outputs."""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from segstream.operators.events import Event
from segstream.operators.parse import EventParser
from segstream.services import clean_env
from segstream.tools.generate import generate

pytestmark = pytest.mark.integration


def test_demo_json_summary() -> None:
    """Scenario: `segstream demo --events 20000 --json` on this machine.

    We expect exit 0, one JSON object on stdout, journey changes, dead letters
    for the generator's malformed events, and one Redis profile per distinct
    valid user of the generated log.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "segstream.cli", "demo", "--events", "20000", "--json"],
        env=clean_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = orjson.loads(proc.stdout)

    log = generate(1000, 20000, 7)  # the demo's defaults: users = events / 20, seed 7
    parsed = [EventParser().parse(line) for line in log.lines]
    valid_users = {e.key for e in parsed if isinstance(e, Event)}
    rejected = sum(1 for e in parsed if not isinstance(e, Event))

    assert summary["events"] == 20000
    assert summary["changes"]["by_kind"]["journey"] > 0
    assert summary["redis_profiles"] == len(valid_users)
    assert summary["dead_letters"]["total"] == rejected > 0
    assert summary["valid_events"] == 20000 - rejected
    journeys = {k: v for k, v in summary["segments"].items() if k.startswith("journey:")}
    assert sum(journeys.values()) == len(valid_users)  # one journey phase each
    assert summary["segments"]["needs_enrichment"] > 0  # anonymous users have no email
    assert len(summary["sample_profiles"]) == 3
    # The models: every user in one cluster, most of them past the warm-up,
    # and churn bands once the churn model is warm.
    clusters = {k: v for k, v in summary["segments"].items() if k.startswith("cluster:")}
    assert sum(clusters.values()) == len(valid_users)
    assert sum(v for k, v in clusters.items() if k != "cluster:unassigned") > len(valid_users) / 2
    assert summary["changes"]["by_kind"]["churn"] > 0
