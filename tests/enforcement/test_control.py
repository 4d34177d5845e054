"""ControlConsumer: what one record of the verdict or policy topic does (no broker needed; a fake consumer stands in for aiokafka)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka import TopicPartition
from prometheus_client import REGISTRY

import enforcement.control as control_module
from enforcement.cache import VerdictCache
from enforcement.control import ControlConsumer
from enforcement.decision import RequestView, decide
from enforcement.ratelimit import TokenBuckets
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import load_signatures
from ingest import POLICY, VERDICTS, Policy, sign_verdict
from tests.conftest import T0

KEY = b"test-key"


def _consumer() -> ControlConsumer:
    return ControlConsumer("127.0.0.1:1", VerdictCache(), KEY)


def test_a_signed_verdict_is_applied_and_its_latency_recorded(verdict_factory: Any) -> None:
    control = _consumer()
    now = time.time()
    verdict = sign_verdict(verdict_factory(issued_at=now, evidence_time=now - 0.02), KEY)
    control.apply(verdict.subject.cache_key.encode(), verdict.model_dump_json().encode(), now)
    assert verdict.subject.cache_key in control.cache.entries
    assert len(control.latencies_ms) == 1 and 19.0 <= control.latencies_ms[0] <= 21.0


def test_a_verdict_with_a_bad_signature_is_ignored(verdict_factory: Any) -> None:
    control = _consumer()
    forged = sign_verdict(verdict_factory(), b"someone-else")
    control.apply(b"k", forged.model_dump_json().encode(), time.time())
    assert len(control.cache) == 0 and control.rejected == 1


def test_garbage_is_ignored_and_counted() -> None:
    control = _consumer()
    control.apply(b"k", b"{not json", time.time())
    assert len(control.cache) == 0 and control.rejected == 1


def test_a_bare_tombstone_lifts_nothing(verdict_factory: Any) -> None:
    control = _consumer()
    verdict = sign_verdict(verdict_factory(), KEY)
    control.apply(b"x", verdict.model_dump_json().encode(), time.time())
    control.apply(verdict.subject.cache_key.encode(), None, time.time())
    assert verdict.subject.cache_key in control.cache.entries and control.rejected == 1


def test_a_signed_lift_lifts_the_verdict_and_keeps_a_replayed_one_out(verdict_factory: Any) -> None:
    control = _consumer()
    block = sign_verdict(verdict_factory(issued_at=100.0), KEY)
    lift = sign_verdict(verdict_factory(action="lift", issued_at=200.0, expires_at=T0 + 86_400), KEY)
    control.apply(b"x", block.model_dump_json().encode(), time.time())
    control.apply(b"x", lift.model_dump_json().encode(), time.time())
    assert len(control.cache) == 0
    control.apply(b"x", block.model_dump_json().encode(), time.time())  # the old signed block, replayed
    assert len(control.cache) == 0 and control.cache.stale == 1
    newer = sign_verdict(verdict_factory(issued_at=300.0), KEY)
    control.apply(b"x", newer.model_dump_json().encode(), time.time())
    assert block.subject.cache_key in control.cache.entries  # a verdict issued after the lift stands


def test_a_forged_lift_is_ignored(verdict_factory: Any) -> None:
    control = _consumer()
    control.apply(b"x", sign_verdict(verdict_factory(issued_at=100.0), KEY).model_dump_json().encode(), time.time())
    forged = sign_verdict(verdict_factory(action="lift", issued_at=200.0), b"attacker")
    control.apply(b"x", forged.model_dump_json().encode(), time.time())
    assert len(control.cache) == 1 and control.rejected == 1


def test_a_verdict_issued_in_the_future_is_refused(verdict_factory: Any) -> None:
    control = _consumer()
    now = time.time()
    control.apply(b"x", sign_verdict(verdict_factory(issued_at=now + 3600, expires_at=now + 7200), KEY).model_dump_json().encode(), now)
    assert len(control.cache) == 0 and control.rejected == 1


def test_a_verdict_signed_before_key_ids_still_verifies(verdict_factory: Any) -> None:
    import hashlib
    import hmac

    from ingest import Verdict
    from ingest.signing import VerdictKeys

    old = verdict_factory()
    body = old.model_dump_json(exclude={"signature", "key_id"}).encode()  # what the previous release signed
    legacy = old.model_copy(update={"signature": hmac.new(KEY, body, hashlib.sha256).hexdigest()})
    assert VerdictKeys("k1", {"k1": KEY}).verify(Verdict.model_validate_json(legacy.model_dump_json()))


def test_keys_rotate_by_id(verdict_factory: Any) -> None:
    from ingest.signing import VerdictKeys

    control = ControlConsumer("127.0.0.1:1", VerdictCache(), VerdictKeys("k2", {"k1": b"old", "k2": b"new"}))
    old, new = VerdictKeys("k1", {"k1": b"old"}), VerdictKeys("k2", {"k2": b"new"})
    control.apply(b"x", old.sign(verdict_factory(issued_at=1.0)).model_dump_json().encode(), time.time())
    control.apply(b"y", new.sign(verdict_factory(issued_at=2.0, subject={"kind": "ip", "value": "10.0.0.1"})).model_dump_json().encode(), time.time())
    assert len(control.cache) == 2 and control.rejected == 0
    moved = old.sign(verdict_factory(issued_at=3.0)).model_copy(update={"key_id": "k2"})  # the id is signed too
    control.apply(b"x", moved.model_dump_json().encode(), time.time())
    unknown = VerdictKeys("k9", {"k9": b"old"}).sign(verdict_factory(issued_at=3.0))
    control.apply(b"x", unknown.model_dump_json().encode(), time.time())
    assert control.rejected == 2


def test_replayed_old_verdicts_do_not_count_as_latency(verdict_factory: Any) -> None:
    control = _consumer()
    old = sign_verdict(verdict_factory(issued_at=control.started_at - 60, evidence_time=control.started_at - 61), KEY)
    control.apply(b"x", old.model_dump_json().encode(), time.time())
    assert len(control.cache) == 1 and not control.latencies_ms


# ------------------------------------------------------------------ policy topic


def _snapshot(version: int, **fields: Any) -> tuple[bytes, bytes]:
    policy = Policy(version=str(version), **fields)
    return policy.name.encode(), policy.model_dump_json().encode()


class _PolicyHolder:
    """Stands in for the shim: one reference the control consumer swaps."""

    def __init__(self, policy: Policy):
        self.policy = policy

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy


def _following(initial: Policy | None = None) -> tuple[ControlConsumer, _PolicyHolder]:
    holder = _PolicyHolder(initial or Policy())
    return ControlConsumer("127.0.0.1:1", VerdictCache(), KEY, policy=holder.policy, on_policy=holder.set_policy), holder


def _inline_status(policy: Policy, namespace: str) -> int:
    req = RequestView("GET", "/search?q=1' OR '1'='1", "shop/web", "alice", "10.0.0.7", "orders", namespace)
    return decide(req, VerdictCache(), TokenBuckets(), WafInspector(load_signatures(), InspectionSettings()), policy, time.time()).status


def test_a_newer_snapshot_flips_the_inline_mode_of_its_namespace_only() -> None:
    control, shim = _following()
    assert (_inline_status(shim.policy, "shop"), _inline_status(shim.policy, "blog")) == (200, 200)
    update = control.apply_policy(*_snapshot(2, modes={"shop": "enforce"}))
    assert update.result == "applied" and shim.policy is update.policy
    assert (_inline_status(shim.policy, "shop"), _inline_status(shim.policy, "blog")) == (403, 200)
    assert REGISTRY.get_sample_value("kubeward_shim_policy_version", {"name": "default"}) == 2.0


def test_a_snapshot_failing_validation_is_rejected_counted_and_the_old_one_stays() -> None:
    control, shim = _following()
    control.apply_policy(*_snapshot(2, default_mode="enforce"))
    before = REGISTRY.get_sample_value("kubeward_shim_policy_updates_total", {"result": "invalid"}) or 0.0
    bad = [
        b'{"name": "default", "version": "3", "default_mode": "enforced"}',
        b'{"name": "default", "version": "3", "modes": {"Shop Floor": "enforce"}}',
        b'{"name": "default", "version": "three"}',
        b"{not json",
        None,
    ]
    results = [control.apply_policy(b"default", value).result for value in bad]
    assert results == ["invalid"] * len(bad)
    assert shim.policy.version == "2" and shim.policy.default_mode == "enforce" and control.policy_rejected == len(bad)
    assert REGISTRY.get_sample_value("kubeward_shim_policy_updates_total", {"result": "invalid"}) == before + len(bad)
    assert REGISTRY.get_sample_value("kubeward_shim_policy_version", {"name": "default"}) == 2.0


def test_an_older_snapshot_or_another_policys_record_changes_nothing() -> None:
    control, shim = _following()
    control.apply_policy(*_snapshot(5, default_mode="enforce"))
    assert control.apply_policy(*_snapshot(4)).result == "stale"
    assert control.apply_policy(*_snapshot(9, name="canary")).result == "ignored"
    assert control.apply_policy(*_snapshot(5, default_mode="enforce")).result == "unchanged"
    assert shim.policy.version == "5" and shim.policy.default_mode == "enforce"


def test_the_shim_follows_the_policy_name_of_its_settings() -> None:
    control, shim = _following(Policy(name="edge"))
    assert control.apply_policy(*_snapshot(2, default_mode="enforce")).result == "ignored"
    assert control.apply_policy(*_snapshot(2, name="edge", default_mode="enforce")).result == "applied"
    assert shim.policy.name == "edge" and shim.policy.default_mode == "enforce"


class _Record:
    def __init__(self, key: bytes | None, value: bytes | None):
        self.key, self.value = key, value


class _FakeConsumer:
    """The slice of AIOKafkaConsumer ControlConsumer uses: subscribed without a group, one partition per topic."""

    def __init__(self, records: dict[str, list[tuple[bytes, bytes | None]]], *topics: str, **kwargs: Any):
        self.records, self.subscribed, self.kwargs = records, topics, kwargs
        self.read: dict[TopicPartition, int] = {}

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def topics(self) -> set[str]:
        return set(self.records)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(t, 0) for t in self.subscribed}

    async def seek_to_beginning(self, *parts: TopicPartition) -> None:
        self.read = {tp: 0 for tp in parts}

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records[tp.topic]) for tp in parts}

    async def position(self, tp: TopicPartition) -> int:
        return self.read[tp]

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[_Record]]:
        # one record per call, the policy topic last: ``synced`` must wait for both topics
        for tp in sorted(self.read, key=lambda t: t.topic != VERDICTS.name):
            if self.read[tp] < len(self.records[tp.topic]):
                self.read[tp] += 1
                return {tp: [_Record(*self.records[tp.topic][self.read[tp] - 1])]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}


def _run_until_synced(control: ControlConsumer, monkeypatch: pytest.MonkeyPatch, records: dict[str, Any]) -> _FakeConsumer:
    built: list[_FakeConsumer] = []
    monkeypatch.setattr(control_module, "AIOKafkaConsumer", lambda *topics, **kw: built.append(_FakeConsumer(records, *topics, **kw)) or built[-1])

    async def run() -> None:
        task = asyncio.ensure_future(control.run())
        for _ in range(100):
            if control.synced.is_set():
                break
            await asyncio.sleep(0.02)
        control.stop()
        await asyncio.wait_for(task, 5)

    asyncio.run(run())
    return built[-1]  # the follower (a probe for topic names may come first)


def test_the_consumer_reads_both_topics_before_it_counts_as_synced(verdict_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    control, shim = _following()
    verdict = sign_verdict(verdict_factory(), KEY)
    records = {VERDICTS.name: [(b"v", verdict.model_dump_json().encode())], POLICY.name: [_snapshot(2), _snapshot(3, default_mode="enforce")]}
    consumer = _run_until_synced(control, monkeypatch, records)
    assert consumer.kwargs["group_id"] is None and consumer.subscribed == (VERDICTS.name, POLICY.name)
    assert control.synced.is_set() and len(control.cache) == 1
    assert shim.policy.version == "3" and shim.policy.default_mode == "enforce"


def test_without_on_policy_or_a_policy_topic_only_verdicts_are_followed(verdict_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    verdict = sign_verdict(verdict_factory(), KEY)
    records = {VERDICTS.name: [(b"v", verdict.model_dump_json().encode())], POLICY.name: [_snapshot(2)]}
    consumer = _run_until_synced(_consumer(), monkeypatch, records)
    assert consumer.subscribed == (VERDICTS.name,)
    control, shim = _following()
    consumer = _run_until_synced(control, monkeypatch, {VERDICTS.name: records[VERDICTS.name]})
    assert consumer.subscribed == (VERDICTS.name,) and control.synced.is_set() and shim.policy == Policy()
