"""The control-topic consumer: keeps the shim's verdict cache in step with Kafka (aiokafka, on the shim's loop).

It reads ``enforcement.verdicts.v1`` from the beginning at start (the topic is
compacted, so this rebuilds the cache after a restart), then follows it. A
verdict with a bad signature is counted and ignored; a tombstone lifts the
subject's verdict. ``synced`` turns true once the offsets that existed at start
have been read. Detection-to-enforcement latency is the time from a verdict's
``evidence_time`` to its application here, for verdicts issued after start.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from enforcement.cache import VerdictCache
from ingest import VERDICTS, Verdict, verify_verdict

__all__ = ["ControlConsumer"]

log = logging.getLogger("kubeward.shim.control")
PURGE_EVERY_S = 10.0  # expired verdicts are ignored at lookup at once, and dropped from memory this often
APPLIED = Counter("kubeward_shim_verdicts_applied_total", "Verdicts applied to the cache", ["result"])
LATENCY = Histogram(
    "kubeward_shim_detect_to_enforce_seconds",
    "From the newest evidence of a verdict to its application in this shim",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class ControlConsumer:
    """Feeds a ``VerdictCache`` from the verdict topic, as a task on the shim's own event loop.

    It runs on the loop (aiokafka) rather than in a thread so that applying a
    verdict never competes with request handling for the interpreter lock.
    """

    def __init__(self, bootstrap: str, cache: VerdictCache, key: bytes, topic: str = VERDICTS.name, synced: threading.Event | None = None):
        self.bootstrap, self.cache, self.key, self.topic = bootstrap, cache, key, topic
        self.synced = synced or threading.Event()
        self.started_at = time.time()
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        self.delivery_ms: deque[float] = deque(maxlen=100_000)
        self.rejected = 0
        self._stopping = False

    def stop(self) -> None:
        """Ask the task to finish after its current fetch."""
        self._stopping = True

    def apply(self, key: bytes | None, value: bytes | None, now: float) -> None:
        """Apply one record of the verdict topic (a verdict or a tombstone)."""
        if value is None:
            if key is not None:
                self.cache.remove(key.decode())
            APPLIED.labels("tombstone").inc()
            return
        try:
            verdict = Verdict.model_validate_json(value)
        except ValidationError as exc:
            self.rejected += 1
            APPLIED.labels("invalid").inc()
            log.warning("invalid verdict ignored", extra={"error": str(exc.errors()[0]["msg"])})
            return
        if not verify_verdict(verdict, self.key):
            self.rejected += 1
            APPLIED.labels("bad_signature").inc()
            log.warning("verdict with bad signature ignored", extra={"verdict_id": verdict.id})
            return
        self.cache.apply(verdict)
        APPLIED.labels("applied").inc()
        if verdict.issued_at >= self.started_at:
            LATENCY.observe(max(now - verdict.evidence_time, 0.0))
            self.latencies_ms.append((now - verdict.evidence_time) * 1000.0)
            self.delivery_ms.append((now - verdict.issued_at) * 1000.0)

    async def run(self) -> None:
        """Follow the topic until ``stop``; reconnect after errors (the cache keeps serving meanwhile)."""
        while not self._stopping:
            try:
                await self._follow()
            except Exception:  # noqa: BLE001 - the broker may be away; the cache keeps serving
                log.exception("control topic unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None, fetch_max_wait_ms=100, client_id="kubeward-shim")
        await consumer.start()
        try:
            await consumer.topics()  # loads cluster metadata
            parts = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic) or {0})]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            next_purge = time.time() + PURGE_EVERY_S
            while not self._stopping:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time()
                if now >= next_purge:
                    self.cache.purge(now)
                    next_purge = now + PURGE_EVERY_S
                for records in batches.values():
                    for rec in records:
                        self.apply(rec.key, rec.value, now)
                if not self.synced.is_set() and all([await consumer.position(tp) >= off for tp, off in end.items()]):
                    self.synced.set()
                    log.info("verdict cache synced", extra={"entries": len(self.cache)})
        finally:
            await consumer.stop()
