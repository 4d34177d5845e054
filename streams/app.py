"""The Faust worker: the only module that imports faust.

One agent reads ``l7.summaries.v1`` (envelopes or single JSON summaries), hands
each message to ``streams.pipeline.Pipeline`` and publishes what comes back:
verdicts to ``enforcement.verdicts.v1`` keyed by subject, OCSF findings to
``security.findings.v1`` (one per actor and attack: repeats are published as
counted Updates, also from a timer, ``streams.findingdedup``), dead letters to
``l7.summaries.dlq.v1``. Per-actor
state lives in the columnar store of each partition and is checkpointed to the
changelog of the table ``actor-state`` (one entry per bucket), which Faust
recovers on restart or rebalance; the table is read once, when a partition's
processor is restored, and emptied then (the store is the one copy); a partition
assigned again to this worker keeps its processor. ``/metrics`` serves Prometheus
metrics, the state's keys, bytes and evictions among them (``streams.metrics``).

The policy (mode per destination namespace or service) follows the compacted
``enforcement.policy.v1`` through ``PolicyFollower``: a consumer of its own with
no consumer group, assigned every partition, so every worker sees every
snapshot (the summaries' group splits partitions across workers; the policy
must not be split). ``ingest.policyfile.PolicyTracker`` decides which snapshot
wins; an applied one replaces the pipeline's policy between two batches, so
every verdict decided after it arrives carries its mode and version. At start
the agent waits (``policy_sync_timeout_s``) until the topic has been read.
``kubeward_worker_policy_version{name}`` shows the version in force.

Run: ``kubeward worker``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
import faust.auth
from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge, generate_latest

from ingest import DLQ, FINDINGS, INVENTORY, POLICY, SUMMARIES, VERDICTS, Finding, Policy
from ingest.policyfile import PolicyTracker, PolicyUpdate
from streams import metrics
from streams.pipeline import Outcome, Pipeline
from streams.settings import WorkerSettings

__all__ = ["PolicyFollower", "create_app"]

log = logging.getLogger("kubeward.worker")
POLICY_VERSION = Gauge("kubeward_worker_policy_version", "Version of the enforcement policy in force", ["name"])
POLICY_UPDATES = Counter("kubeward_worker_policy_updates_total", "Records of the policy topic, by result (applied, unchanged, stale, ignored, invalid)", ["result"])
MISSING_TOPIC_RETRY_S = 10.0


def _show_version(policy: Policy) -> None:
    """Set the version gauge (a settings policy may carry a non-numeric version: shown as 0)."""
    POLICY_VERSION.labels(policy.name).set(float(policy.version) if policy.version.isdigit() else 0.0)


class PolicyFollower:
    """Keeps the pipeline's policy in step with ``enforcement.policy.v1``, in every worker.

    ``apply`` is the whole decision for one record (tested without a broker);
    ``run`` is the I/O: a group-less aiokafka consumer reading the topic from
    the beginning, reconnecting after errors while the policy in force stays.
    """

    def __init__(self, settings: WorkerSettings, pipeline: Pipeline):
        self.bootstrap, self.client_id = settings.bootstrap, f"{settings.app_id}-policy"
        self.auth = settings.kafka.aiokafka()
        self.tracker = PolicyTracker(settings.policy)
        self.pipeline = pipeline
        self.synced = asyncio.Event()
        self.rejected = 0
        if not settings.follow_policy:
            self.synced.set()
        _show_version(settings.policy)

    def apply(self, key: bytes | None, value: bytes | None) -> PolicyUpdate:
        """Consider one record; an applied snapshot becomes the policy of every later verdict."""
        update = self.tracker.offer(key, value)
        POLICY_UPDATES.labels(update.result).inc()
        if update.result == "applied":
            # Pipeline.handle_many reads settings.policy for each detection and runs without
            # awaiting, so one reference swap between batches is atomic for the agent.
            self.pipeline.settings = self.pipeline.settings.model_copy(update={"policy": update.policy})
            _show_version(update.policy)
            log.info("policy applied", extra={"policy": update.policy.name, "version": update.policy.version})
        elif update.result in ("invalid", "stale"):
            self.rejected += 1
            log.warning("policy snapshot rejected; the applied one stays", extra={"result": update.result, "error": update.detail, "applied_version": self.tracker.version})
        return update

    async def wait_synced(self, timeout: float) -> None:
        """Wait until the topic has been read to its end at start, at most ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self.synced.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("policy topic not read in time; verdicts use the policy in force", extra={"timeout_s": timeout, "version": self.tracker.version})

    async def run(self) -> None:
        """Follow the topic until cancelled; reconnect after errors (the policy in force stays)."""
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the broker may be away; the policy in force stays
                log.exception("policy topic unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _exists(self) -> bool:
        probe = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, client_id=self.client_id, **self.auth)
        await probe.start()
        try:
            return POLICY.name in await probe.topics()
        finally:
            await probe.stop()

    async def _follow(self) -> None:
        if not await self._exists():  # never auto-created here: it must be compacted
            log.warning("policy topic missing; the policy in force stays", extra={"topic": POLICY.name})
            self.synced.set()
            await asyncio.sleep(MISSING_TOPIC_RETRY_S)
            return
        # Subscribed without a group: aiokafka assigns this consumer every partition (and new ones as
        # they appear), so every worker reads every snapshot; the summaries' group is not involved.
        consumer = AIOKafkaConsumer(
            POLICY.name, bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=200, client_id=self.client_id, **self.auth,
        )
        await consumer.start()
        try:
            parts = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for rec in records:
                        self.apply(rec.key, rec.value)
                if not self.synced.is_set() and all([await consumer.position(tp) >= off for tp, off in end.items()]):
                    self.synced.set()
                    log.info("policy synced", extra={"version": self.tracker.version})
        finally:
            await consumer.stop()


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
        web_host=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=SUMMARIES.partitions,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        producer_linger=0.001,
        # Faust's default (1,200 s) let a produce stuck across a paused broker block the flush before every commit:
        # the fault test saw commits stop for good after a 30 s SIGSTOP.
        producer_request_timeout=30.0,
        broker_credentials=settings.kafka.faust_credentials(faust.auth),
        stream_wait_empty=False,
        table_standby_replicas=0,
        topic_allow_declare=True,
        topic_replication_factor=settings.topic_replication_factor,
        topic_disable_leader=True,
    )


def declared_specs(settings: WorkerSettings) -> dict[str, dict[tuple[str, str], bool]] | None:
    """The declared endpoints of the specs in ``settings.specs_dir`` (read once at start)."""
    if settings.specs_dir is None:
        return None
    from ingest.openapi import declared_endpoints, load_spec_dir

    return declared_endpoints(load_spec_dir(settings.specs_dir))


def create_app(settings: WorkerSettings) -> faust.App:
    """Build the Faust app for these settings (agents, table, topics, metrics page)."""
    _shorten_prefetch_backoff(settings.fetch_backoff_s)
    app = _faust_app(settings)
    summaries = app.topic(SUMMARIES.name, key_serializer="raw", value_serializer="raw", partitions=SUMMARIES.partitions)
    verdicts = app.topic(VERDICTS.name, key_serializer="raw", value_serializer="raw")
    findings = app.topic(FINDINGS.name, key_serializer="raw", value_serializer="raw")
    dead = app.topic(DLQ.name, key_serializer="raw", value_serializer="raw")
    state = app.Table("actor-state", key_type=bytes, value_type=bytes, partitions=SUMMARIES.partitions)
    inventory = app.topic(INVENTORY.name, key_serializer="raw", value_serializer="raw")
    pipeline = Pipeline(settings, SUMMARIES.name, declared_specs(settings))
    follower = PolicyFollower(settings, pipeline)

    async def send_findings(records: list[Finding]) -> None:
        for finding in records:
            await findings.send(key=finding.finding_info.uid.encode(), value=finding.to_wire())

    @app.timer(interval=min(max(settings.findings_update_s, 1.0), 10.0))
    async def publish_due_findings() -> None:
        # the counted Updates of findings whose attack went quiet (no detection left to carry them)
        await send_findings(pipeline.due_findings(time.time()))

    async def publish(out: Outcome) -> None:
        for key, letter in out.dead_letters:
            metrics.DEAD_LETTERS.inc()
            log.warning("dead letter", extra={"error": letter.error, "partition": letter.partition, "offset": letter.offset})
            await dead.send(key=key, value=letter.model_dump_json().encode())
        for verdict, det in zip(out.verdicts, out.detections):
            metrics.DETECTIONS.labels(det.attack_class).inc()
            metrics.VERDICTS.labels(verdict.action, verdict.mode).inc()
            log.info("verdict", extra={"actor": det.actor, "attack_class": det.attack_class, "score": round(det.score, 3), "mode": verdict.mode})
            await verdicts.send(key=verdict.entry_key.encode(), value=verdict.model_dump_json().encode())
        await send_findings(out.published)
        for finding in out.exposures:
            log.info("excessive data exposure", extra={"finding": finding.finding_info.title})
        await send_findings(out.exposures)
        for record in out.inventory:
            await inventory.send(key=record.key.encode(), value=record.model_dump_json().encode())

    def checkpoint(partition: int, writes: list[tuple[bytes, bytes]]) -> None:
        # Written with an explicit partition: a batch may end on another partition's event. Sent, not kept:
        # the processor holds the state, a copy in the table would double the worker's memory (issue 9).
        for key, blob in writes:
            state.send_changelog(partition, key, blob)

    if settings.follow_policy:
        app.task(follower.run)

    @app.agent(summaries)
    async def process(stream: Any) -> None:
        await follower.wait_synced(settings.policy_sync_timeout_s)
        async for events in stream.take_events(settings.batch_max_messages, within=settings.batch_within_s):
            started = time.perf_counter()
            by_partition: dict[int, list[tuple[bytes | None, bytes, int | None]]] = {}
            for event in events:
                by_partition.setdefault(event.message.partition, []).append((event.key, event.value, event.message.offset))
            for partition, messages in by_partition.items():
                stored = list(state.data.items()) if partition not in pipeline.processors else ()
                out = pipeline.handle_many(partition, messages, time.time(), stored)
                if stored and partition in pipeline.processors:  # restored from the recovered table: drop its copy
                    for key in [k for k, _ in stored if k.startswith(f"{partition}:".encode())]:
                        state.data.pop(key, None)
                await publish(out)  # verdicts first: they must not queue behind state checkpoints
                checkpoint(partition, out.state_writes)
                metrics.SUMMARIES.inc(out.rows)
                if out.newest_time is not None:
                    metrics.LAG.observe(max(time.time() - out.newest_time, 0.0))
                if partition in pipeline.processors:
                    metrics.observe_state(partition, pipeline.processors[partition])
            metrics.MESSAGES.inc(len(events))
            metrics.BATCH_SECONDS.observe(time.perf_counter() - started)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = {tp.partition for tp in assigned if tp.topic == SUMMARIES.name}
        # Dropped only once assigned elsewhere (its new owner restores it from the changelog): a rebalance revokes
        # every partition first (aiokafka's eager protocol), and the table keeps no copy to restore a kept one from.
        for partition in set(pipeline.processors) - mine:
            pipeline.forget(partition)
        # during the rebalance, before the worker is ready: the first messages must not pay for building processors
        pipeline.prepare(mine)

    @app.page("/metrics")
    async def metrics_page(self: Any, request: Any) -> Any:
        return self.bytes(generate_latest(), content_type="text/plain")

    app.kubeward_pipeline = pipeline  # type: ignore[attr-defined]
    app.kubeward_policy = follower  # type: ignore[attr-defined]
    return app
