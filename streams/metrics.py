"""Prometheus metrics of the worker (served at ``/metrics`` by the Faust web server)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ACTORS", "BATCH_SECONDS", "DEAD_LETTERS", "DETECTIONS",
    "LAG", "MESSAGES", "SUMMARIES", "VERDICTS"]

MESSAGES = Counter("kubeward_worker_messages_total", "Messages read from l7.summaries.v1")
SUMMARIES = Counter("kubeward_worker_summaries_total", "Request summaries processed")
DEAD_LETTERS = Counter("kubeward_worker_dead_letters_total", "Messages sent to the dead-letter topic")
DETECTIONS = Counter("kubeward_worker_detections_total", "Actors flagged", ["attack_class"])
VERDICTS = Counter("kubeward_worker_verdicts_total", "Verdicts published", ["action", "mode"])
BATCH_SECONDS = Histogram("kubeward_worker_batch_seconds", "Processing time per batch of messages", buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
LAG = Histogram("kubeward_worker_event_lag_seconds", "From the newest summary time in a message to its processing", buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ACTORS = Gauge("kubeward_worker_actors", "Actors held in state", ["partition"])
