"""The control-topic consumer: keeps the shim's verdict cache and policy in step with Kafka (aiokafka, on the shim's loop).

It reads ``enforcement.verdicts.v1`` from the beginning at start (the topic is
compacted, so this rebuilds the cache after a restart), then follows it. A
verdict whose signature does not verify under the key its ``key_id`` names is
counted and ignored; so is a bare tombstone (no signature: lifting a verdict is
a signed ``lift`` record, ``enforcement.cache``), and a record older than the
one standing for its key (``stale``). ``synced`` turns true once the offsets that existed at start
have been read. Every ``PROBE_EVERY_S`` it asks the broker for the end offsets;
``cache_age_s`` is the time since the broker last answered (the cache was
current then), which ``/readyz`` compares with ``stale_after_s``. Detection-to-enforcement latency is the time from a verdict's
``evidence_time`` to its application here, for verdicts issued after start.

Given an ``on_policy`` callback it also follows ``enforcement.policy.v1`` (same
consumer, also read from the beginning, also part of ``synced``): which
snapshot wins is ``ingest.policyfile.PolicyTracker``'s rule; an applied one is
handed to ``on_policy`` (the shim swaps its policy reference), a rejected one is
logged and counted and the applied policy stays (xDS NACK). The version in force
is the gauge ``kubeward_shim_policy_version{name}``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from enforcement.cache import VerdictCache
from ingest import POLICY, VERDICTS, Policy, Verdict
from ingest.policyfile import PolicyTracker, PolicyUpdate
from ingest.kafkaauth import KafkaSecurity
from ingest.signing import VerdictKeys

__all__ = ["ControlConsumer"]

log = logging.getLogger("kubeward.shim.control")
PURGE_EVERY_S = 10.0  # expired verdicts are ignored at lookup at once, and dropped from memory this often
FUTURE_TOLERANCE_S = 60.0  # a record issued later than now + this is refused (a clock far ahead, or a forged date)
PROBE_EVERY_S = 5.0  # how often the broker is asked for end offsets (the cache's age is the time since the last answer)
APPLIED = Counter("kubeward_shim_verdicts_applied_total", "Verdicts applied to the cache", ["result"])
LATENCY = Histogram(
    "kubeward_shim_detect_to_enforce_seconds",
    "From the newest evidence of a verdict to its application in this shim",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
POLICY_VERSION = Gauge("kubeward_shim_policy_version", "Version of the enforcement policy in force", ["name"])
POLICY_UPDATES = Counter("kubeward_shim_policy_updates_total", "Records of the policy topic, by result (applied, unchanged, stale, ignored, invalid)", ["result"])


def _show_version(policy: Policy) -> None:
    """Set the version gauge (a settings policy may carry a non-numeric version: shown as 0)."""
    POLICY_VERSION.labels(policy.name).set(float(policy.version) if policy.version.isdigit() else 0.0)


class ControlConsumer:
    """Feeds a ``VerdictCache`` from the verdict topic, as a task on the shim's own event loop.

    It runs on the loop (aiokafka) rather than in a thread so that applying a
    verdict never competes with request handling for the interpreter lock.
    With ``on_policy`` it follows the policy topic too, starting from
    ``policy`` (the settings' one); ``policy_tracker.policy`` is the one in force.
    """

    def __init__(
        self,
        bootstrap: str,
        cache: VerdictCache,
        key: bytes | VerdictKeys,
        topic: str = VERDICTS.name,
        synced: threading.Event | None = None,
        policy: Policy | None = None,
        on_policy: Callable[[Policy], None] | None = None,
        policy_topic: str = POLICY.name,
        security: KafkaSecurity | None = None,
    ):
        self.bootstrap, self.cache, self.topic = bootstrap, cache, topic
        self._auth = (security or KafkaSecurity()).aiokafka()
        #: the keys verdicts are verified with (bytes: one key, id "")
        self.keys = key if isinstance(key, VerdictKeys) else VerdictKeys("", {"": key})
        self.synced = synced or threading.Event()
        self.policy_tracker = PolicyTracker(policy or Policy())
        self.on_policy, self.policy_topic = on_policy, policy_topic
        self.policy_rejected = 0
        if on_policy is not None:
            _show_version(self.policy_tracker.policy)
        self.started_at = time.time()
        #: when the broker last answered an end-offsets probe (None: never since start)
        self.confirmed_at: float | None = None
        self.latencies_ms: deque[float] = deque(maxlen=100_000)
        self.delivery_ms: deque[float] = deque(maxlen=100_000)
        self.rejected = 0
        self._stopping = False

    def cache_age_s(self, now: float) -> float:
        """Seconds since the broker last confirmed the cache current (since start when it never has)."""
        return now - (self.confirmed_at if self.confirmed_at is not None else self.started_at)

    def stop(self) -> None:
        """Ask the task to finish after its current fetch."""
        self._stopping = True

    def apply(self, key: bytes | None, value: bytes | None, now: float) -> None:
        """Apply one record of the verdict topic: a signed verdict or lift; anything else is counted and ignored."""
        if value is None:
            self.rejected += 1
            APPLIED.labels("unsigned_tombstone").inc()
            log.warning("tombstone on the verdict topic ignored: a lift must be a signed record", extra={"key": key.decode("utf-8", "replace") if key else None})
            return
        try:
            verdict = Verdict.model_validate_json(value)
        except ValidationError as exc:
            self.rejected += 1
            APPLIED.labels("invalid").inc()
            log.warning("invalid verdict ignored", extra={"error": str(exc.errors()[0]["msg"])})
            return
        if verdict.issued_at > now + FUTURE_TOLERANCE_S:  # signed or not: it would lock its key until then
            self.rejected += 1
            APPLIED.labels("future").inc()
            log.warning("verdict issued in the future ignored", extra={"verdict_id": verdict.id, "issued_at": verdict.issued_at})
            return
        if not self.keys.verify(verdict):
            self.rejected += 1
            APPLIED.labels("bad_signature").inc()
            log.warning("verdict with bad signature ignored", extra={"verdict_id": verdict.id, "key_id": verdict.key_id})
            return
        if not self.cache.apply(verdict):
            APPLIED.labels("stale").inc()
            log.info("verdict older than the one standing for its key ignored", extra={"verdict_id": verdict.id, "key": verdict.entry_key})
            return
        APPLIED.labels("lifted" if verdict.action == "lift" else "applied").inc()
        if verdict.action == "lift":
            return
        if verdict.issued_at >= self.started_at:
            LATENCY.observe(max(now - verdict.evidence_time, 0.0))
            self.latencies_ms.append((now - verdict.evidence_time) * 1000.0)
            self.delivery_ms.append((now - verdict.issued_at) * 1000.0)

    def apply_policy(self, key: bytes | None, value: bytes | None) -> PolicyUpdate:
        """Apply one record of the policy topic: a newer valid snapshot goes to ``on_policy``; a bad one is rejected."""
        update = self.policy_tracker.offer(key, value)
        POLICY_UPDATES.labels(update.result).inc()
        if update.result == "applied":
            _show_version(update.policy)
            log.info("policy applied", extra={"policy": update.policy.name, "version": update.policy.version})
            if self.on_policy is not None:
                self.on_policy(update.policy)
        elif update.result in ("invalid", "stale"):
            self.policy_rejected += 1
            log.warning("policy snapshot rejected; the applied one stays", extra={"result": update.result, "error": update.detail, "applied_version": self.policy_tracker.version})
        return update

    async def run(self) -> None:
        """Follow the topic until ``stop``; reconnect after errors (the cache keeps serving meanwhile)."""
        while not self._stopping:
            try:
                await self._follow()
            except Exception:  # noqa: BLE001 - the broker may be away; the cache keeps serving
                log.exception("control topic unreachable; retrying in 1 s")
                await asyncio.sleep(1.0)

    async def _topics(self) -> list[str]:
        """The verdict topic, plus the policy topic when following it and it exists (never auto-created here)."""
        if self.on_policy is None:
            return [self.topic]
        probe = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, client_id="kubeward-shim", **self._auth)
        try:
            await probe.start()
            names = await probe.topics()
        finally:
            await probe.stop()
        if self.policy_topic not in names:
            log.warning("policy topic missing; following the verdict topic only", extra={"topic": self.policy_topic})
            return [self.topic]
        return [self.topic, self.policy_topic]

    async def _follow(self) -> None:
        # Subscribed without a group: aiokafka assigns every partition of each topic to this consumer
        # (and new ones as they appear), so every shim reads everything.
        consumer = AIOKafkaConsumer(
            *await self._topics(), bootstrap_servers=self.bootstrap, enable_auto_commit=False, group_id=None,
            auto_offset_reset="earliest", fetch_max_wait_ms=100, client_id="kubeward-shim", **self._auth,
        )
        probe: asyncio.Future[Any] | None = None
        probe_sent = 0.0
        try:
            await consumer.start()
            parts = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*parts)
            end = await consumer.end_offsets(parts)
            self.confirmed_at = time.time()
            next_purge = self.confirmed_at + PURGE_EVERY_S
            next_probe = self.confirmed_at + PROBE_EVERY_S
            while not self._stopping:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.time()
                if now >= next_purge:
                    self.cache.purge(now)
                    next_purge = now + PURGE_EVERY_S
                if probe is not None and probe.done():
                    if not probe.cancelled() and probe.exception() is None:
                        self.confirmed_at = probe_sent
                    probe = None
                if probe is None and now >= next_probe:
                    # Not awaited here: with the broker gone the answer may take the request timeout, and
                    # records already fetched must keep flowing meanwhile.
                    probe, probe_sent, next_probe = asyncio.ensure_future(consumer.end_offsets(parts)), now, now + PROBE_EVERY_S
                for tp, records in batches.items():
                    for rec in records:
                        if tp.topic == self.topic:
                            self.apply(rec.key, rec.value, now)
                        else:
                            self.apply_policy(rec.key, rec.value)
                if not self.synced.is_set() and all([await consumer.position(tp) >= off for tp, off in end.items()]):
                    self.synced.set()
                    log.info("verdict cache synced", extra={"entries": len(self.cache), "policy_version": self.policy_tracker.version})
        finally:
            if probe is not None:
                probe.cancel()
            await consumer.stop()
