"""The Faust worker: the only module that imports faust.

One agent reads ``l7.summaries.v1`` (envelopes or single JSON summaries), hands
each message to ``streams.pipeline.Pipeline`` and publishes what comes back:
verdicts to ``enforcement.verdicts.v1`` keyed by subject, OCSF findings to
``security.findings.v1``, dead letters to ``l7.summaries.dlq.v1``. Per-actor
state lives in the columnar store of each partition and is checkpointed to the
changelog-backed table ``actor-state`` (one entry per bucket), which Faust
restores on restart or rebalance. ``/metrics`` serves Prometheus metrics.

Run: ``kubeward worker``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from prometheus_client import generate_latest

from ingest import DLQ, FINDINGS, SUMMARIES, VERDICTS
from streams import metrics
from streams.pipeline import Outcome, Pipeline
from streams.settings import WorkerSettings

__all__ = ["create_app"]

log = logging.getLogger("kubeward.worker")


def _shorten_prefetch_backoff(seconds: float) -> None:
    """Make aiokafka re-fetch sooner while another partition's records are still being handed over.

    aiokafka keeps one fetch in flight per broker and, while any partition holds
    records the application has not taken yet, waits up to ``prefetch_backoff``
    (100 ms, not a consumer option) before fetching again. Faust takes records
    across a thread boundary, so with several partitions on one broker that wait
    was most of our detection latency. Applied once, before the consumer exists.
    """
    from aiokafka.consumer import fetcher

    original = fetcher.Fetcher.__init__
    if getattr(original, "_kubeward_backoff", None) == seconds:
        return
    unpatched = getattr(original, "_kubeward_original", original)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefetch_backoff", seconds)
        unpatched(self, *args, **kwargs)

    init._kubeward_backoff = seconds  # type: ignore[attr-defined]
    init._kubeward_original = unpatched  # type: ignore[attr-defined]
    fetcher.Fetcher.__init__ = init  # type: ignore[method-assign]


def _faust_app(settings: WorkerSettings) -> faust.App:
    return faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
        store="memory://",
        web_host="127.0.0.1",
        web_port=settings.web_port,
        topic_partitions=SUMMARIES.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        producer_linger=0.001,
        stream_wait_empty=False,
        table_standby_replicas=0,
        topic_allow_declare=True,
        topic_disable_leader=True,
    )


def create_app(settings: WorkerSettings) -> faust.App:
    """Build the Faust app for these settings (agents, table, topics, metrics page)."""
    _shorten_prefetch_backoff(settings.fetch_backoff_s)
    app = _faust_app(settings)
    summaries = app.topic(SUMMARIES.name, key_serializer="raw", value_serializer="raw", partitions=SUMMARIES.partitions)
    verdicts = app.topic(VERDICTS.name, key_serializer="raw", value_serializer="raw")
    findings = app.topic(FINDINGS.name, key_serializer="raw", value_serializer="raw")
    dead = app.topic(DLQ.name, key_serializer="raw", value_serializer="raw")
    state = app.Table("actor-state", key_type=bytes, value_type=bytes, partitions=SUMMARIES.partitions)
    pipeline = Pipeline(settings, SUMMARIES.name)

    async def publish(out: Outcome) -> None:
        for key, letter in out.dead_letters:
            metrics.DEAD_LETTERS.inc()
            log.warning("dead letter", extra={"error": letter.error, "partition": letter.partition, "offset": letter.offset})
            await dead.send(key=key, value=letter.model_dump_json().encode())
        for verdict, finding, det in zip(out.verdicts, out.findings, out.detections):
            metrics.DETECTIONS.labels(det.attack_class).inc()
            metrics.VERDICTS.labels(verdict.action, verdict.mode).inc()
            log.info("verdict", extra={"actor": det.actor, "attack_class": det.attack_class, "score": round(det.score, 3), "mode": verdict.mode})
            await verdicts.send(key=verdict.subject.cache_key.encode(), value=verdict.model_dump_json().encode())
            await findings.send(key=finding.finding_info.uid.encode(), value=finding.model_dump_json().encode())

    def checkpoint(partition: int, writes: list[tuple[bytes, bytes]]) -> None:
        # Written with an explicit partition: a batch may end on another partition's event.
        for key, blob in writes:
            state.data[key] = blob
            state.send_changelog(partition, key, blob)

    @app.agent(summaries)
    async def process(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max_messages, within=settings.batch_within_s):
            started = time.perf_counter()
            by_partition: dict[int, list[tuple[bytes | None, bytes, int | None]]] = {}
            for event in events:
                by_partition.setdefault(event.message.partition, []).append((event.key, event.value, event.message.offset))
            for partition, messages in by_partition.items():
                stored = list(state.data.items()) if partition not in pipeline.processors else ()
                out = pipeline.handle_many(partition, messages, time.time(), stored)
                await publish(out)  # verdicts first: they must not queue behind state checkpoints
                checkpoint(partition, out.state_writes)
                metrics.SUMMARIES.inc(out.rows)
                if out.newest_time is not None:
                    metrics.LAG.observe(max(time.time() - out.newest_time, 0.0))
                if partition in pipeline.processors:
                    metrics.ACTORS.labels(str(partition)).set(len(pipeline.processors[partition].store))
            metrics.MESSAGES.inc(len(events))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        for tp in revoked:
            if tp.topic == SUMMARIES.name:
                pipeline.forget(tp.partition)

    @app.page("/metrics")
    async def metrics_page(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(), content_type="text/plain")

    app.kubeward_pipeline = pipeline  # type: ignore[attr-defined]
    return app
