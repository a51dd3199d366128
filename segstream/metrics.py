"""Prometheus metrics of a worker process, and the HTTP server for /metrics and /healthz.

``/healthz`` answers 200 when the worker is ready and 503 with the reasons when
it is not (:mod:`segstream.health`).

Names follow Prometheus conventions: ``segstream_`` prefix, ``_total`` on
counters, base units (seconds, bytes), low-cardinality labels only (reason,
kind, sink), never a user id. Each process of a cluster serves its own
``/metrics`` on ``metrics_port + process_id``.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from segstream.health import HEALTH

EVENTS_IN = Counter(
    "segstream_events_total", "Valid events taken from the clickstream topics."
)
DEAD_LETTERS = Counter(
    "segstream_dead_letters_total", "Inputs sent to the dead-letter topic, by reason.", ["reason"]
)
DEAD_LETTER_FAILURES = Counter(
    "segstream_dead_letter_failures_total",
    "Dead letters the producer or broker refused (each logged with its source), by Kafka error.",
    ["error"],
)
CHANGES_OUT = Counter(
    "segstream_changes_total", "Segment membership changes emitted, by kind.", ["kind"]
)
LATE_EVENTS = Counter(
    "segstream_late_events_total",
    "Events older than their partition's watermark, by the policy applied (apply, dead_letter).",
    ["policy"],
)
EVICTIONS = Counter(
    "segstream_evictions_total", "Users evicted from state and Redis after state_ttl_s idle."
)
TIMER_TICKS = Counter(
    "segstream_timer_ticks_total", "Wake-ups sent to users whose event-time timer came due."
)
USERS_IN_STATE = Gauge(
    "segstream_users_in_state", "Users this process holds state for (all its workers)."
)
REDIS_PROFILE_WRITES = Counter(
    "segstream_redis_profile_writes_total",
    "Profile hashes written to Redis (stale replays that the version guard skipped excluded).",
)
SINK_BATCH_SECONDS = Histogram(
    "segstream_sink_batch_seconds",
    "Time to hand one batch to a sink without waiting for it to land, by sink.",
    ["sink"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SINK_EPOCH_WAIT_SECONDS = Histogram(
    "segstream_sink_epoch_wait_seconds",
    "Time an epoch's close waited for a sink's outstanding writes, by sink.",
    ["sink"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
CONSUMER_LAG_SECONDS = Gauge(
    "segstream_consumer_lag_seconds",
    "Wall-clock now minus the Kafka timestamp of the newest message parsed (how far behind).",
)
EVENT_TIME_LAG_SECONDS = Gauge(
    "segstream_event_time_lag_seconds",
    "Wall-clock now minus the newest event time parsed.",
)
LAST_BATCH_UNIXTIME = Gauge(
    "segstream_last_batch_timestamp_seconds", "Unix time the worker last took a batch of input."
)

MODEL_SNAPSHOTS = Counter(
    "segstream_model_snapshots_total", "Feature snapshots the model learner learned from."
)
MODEL_LEARN_SENT = Counter(
    "segstream_model_learn_items_sent_total",
    "Items a shard other than 0 sent to shard 0's learner on model_learn_topic, "
    "by kind (snapshot, label).",
    ["kind"],
)
CHURN_LABELS = Counter(
    "segstream_churn_labels_total", "Delayed churn labels learned, by outcome.", ["churned"]
)
MODEL_VERSION = Gauge("segstream_model_version", "Version of the models the learner holds.")
MODEL_DRIFTS = Counter(
    "segstream_model_drifts_total", "Drifts detected, by detector (churn_error, cluster_mix).",
    ["detector"],
)
CHURN_ROC_AUC = Gauge(
    "segstream_churn_roc_auc", "Rolling ROC-AUC of churn predictions (predicted before learned)."
)
CHURN_LOG_LOSS = Gauge("segstream_churn_log_loss", "Rolling log loss of churn predictions.")
CLUSTER_SILHOUETTE = Gauge(
    "segstream_cluster_silhouette", "Simplified silhouette of a rolling sample of snapshots."
)

SEGMENT_MEMBERS = Gauge(
    "segstream_segment_members",
    "Users this process holds in each segment (sum over processes for the total).",
    ["kind", "segment"],
)
JOURNEY_TRANSITIONS = Counter(
    "segstream_journey_transitions_total",
    "Journey transitions taken, by phase left (empty for a new user) and phase entered.",
    ["from_phase", "to_phase"],
)
POPULATION_STATISTIC = Gauge(
    "segstream_population_statistic",
    "Population statistics rules read, merged over processes (users, mean, std, p50, p90, p99).",
    ["feature", "statistic"],
)

_STARTED = time.time()
HEALTH_STATUS = Gauge(
    "segstream_ready", "1 when /healthz answers ready, 0 when it answers 503 (read at each scrape)."
)
HEALTH_STATUS.set_function(lambda: 1.0 if HEALTH.report()[0] else 0.0)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/metrics"):
            body, ctype, status = generate_latest(REGISTRY), CONTENT_TYPE_LATEST, 200
        elif self.path.startswith("/healthz"):
            last = REGISTRY.get_sample_value("segstream_last_batch_timestamp_seconds") or 0.0
            ready, report = HEALTH.report()
            body = orjson.dumps(
                {
                    **report,
                    "uptime_s": round(time.time() - _STARTED, 3),
                    "last_batch_age_s": None if last == 0 else round(time.time() - last, 3),
                }
            )
            ctype, status = "application/json", 200 if ready else 503
        else:
            body, ctype, status = b"not found: try /metrics or /healthz\n", "text/plain", 404
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        # Scrapes every few seconds would drown the worker's own log.
        return


def serve_metrics(port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:  # noqa: S104
    """Serve /metrics and /healthz on ``host:port`` from a daemon thread."""
    server = ThreadingHTTPServer((host, port), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="segstream-metrics", daemon=True)
    thread.start()
    return server
