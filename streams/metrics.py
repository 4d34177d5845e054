"""Prometheus metrics of the worker (served at ``/metrics`` by the Faust web server)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from streams.processor import BatchProcessor

__all__ = ["ACTORS", "BATCH_SECONDS", "DEAD_LETTERS", "DETECTIONS", "EVICTIONS",
    "LAG", "MESSAGES", "STATE_BYTES", "STATE_KEYS", "SUMMARIES", "VERDICTS", "observe_state"]

MESSAGES = Counter("kubeward_worker_messages_total", "Messages read from l7.summaries.v1")
SUMMARIES = Counter("kubeward_worker_summaries_total", "Request summaries processed")
DEAD_LETTERS = Counter("kubeward_worker_dead_letters_total", "Messages sent to the dead-letter topic")
DETECTIONS = Counter("kubeward_worker_detections_total", "Actors flagged", ["attack_class"])
VERDICTS = Counter("kubeward_worker_verdicts_total", "Verdicts published", ["action", "mode"])
BATCH_SECONDS = Histogram("kubeward_worker_batch_seconds", "Processing time per batch of messages", buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5))
LAG = Histogram("kubeward_worker_event_lag_seconds", "From the newest summary time in a message to its processing", buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ACTORS = Gauge("kubeward_worker_actors", "Actors held in state", ["partition"])
STATE_KEYS = Gauge("kubeward_worker_state_keys", "Keys held in per-key state, by partition and table (actor, source, rare)", ["partition", "table"])
STATE_BYTES = Gauge("kubeward_worker_state_bytes", "Bytes of a partition's per-key tables (what state_budget_bytes bounds)", ["partition"])
EVICTIONS = Counter("kubeward_worker_state_evictions_total", "Keys evicted from per-key state, by table and reason (ttl: idle past state_idle_ttl_s; budget: oldest past state_budget_bytes)", ["table", "reason"])


def observe_state(partition: int, processor: BatchProcessor) -> None:
    """Show one partition's state (keys and bytes per table) and count the keys it evicted since the last call."""
    stats = processor.state_stats()
    label = str(partition)
    ACTORS.labels(label).set(stats["keys"]["actor"])
    for table, keys in stats["keys"].items():
        STATE_KEYS.labels(label, table).set(keys)
    STATE_BYTES.labels(label).set(sum(stats["bytes"].values()))
    for name, count in processor.take_evictions().items():
        table, _, reason = name.partition(":")
        EVICTIONS.labels(table, reason).inc(count)
