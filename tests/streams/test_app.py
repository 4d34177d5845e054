"""streams.app in-process: the Faust agent under ``test_context()`` with the ``memory://`` store.

No broker: ``Topic.send`` is replaced by a recorder, so what the agent would
publish (verdicts, findings, dead letters) is captured per topic. The policy
follower is fed records directly, or through a fake aiokafka consumer that
records how it was built (no consumer group) and what it was assigned.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import faust
import pytest
from aiokafka import TopicPartition

from prometheus_client import REGISTRY

import streams.app as app_module
from ingest import DLQ, FINDINGS, POLICY, SUMMARIES, VERDICTS, DeadLetter, Finding, Policy, Verdict, encode_envelope, verify_verdict
from streams.app import PolicyFollower, create_app
from streams.settings import WorkerSettings
from streams.replay import Replay
from tests.conftest import stolen_objects

KEY = "app-test-key"


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[bytes | None, bytes]]]:
    """Every ``Topic.send`` the app makes, by topic name (nothing reaches a broker)."""
    out: dict[str, list[tuple[bytes | None, bytes]]] = {}

    async def record(self: Any, *, key: bytes | None = None, value: bytes | None = None, **kwargs: Any) -> None:
        out.setdefault(self.get_topic_name(), []).append((key, value or b""))

    monkeypatch.setattr(faust.Topic, "send", record)
    return out


@pytest.fixture
def app() -> Iterator[faust.App]:
    settings = WorkerSettings(bootstrap="127.0.0.1:1", verdict_key=KEY, state_flush_s=0.001, follow_policy=False)
    app = create_app(settings)
    app.conf.store = "memory://"
    yield app


def _agent(app: faust.App) -> Any:
    (name,) = [n for n in app.agents if n.endswith(".process")]
    return app.agents[name]


def _attack(summary_factory: Any, principal: str = "mallory") -> bytes:
    """Owners create 100 orders, then ``principal`` reads them all (the app stamps verdicts with the wall clock)."""
    made, read = stolen_objects(summary_factory, principal, t=time.time(), step=0.001)
    return encode_envelope(made + read)


async def _put_all(app: faust.App, values: list[tuple[bytes | None, bytes]]) -> None:
    async with _agent(app).test_context() as agent:
        for key, value in values:
            await agent.put(value, key=key)


def test_the_app_has_one_agent_on_the_summaries_topic(app: faust.App) -> None:
    agent = _agent(app)
    assert agent.name == "streams.app.process"
    assert agent.channel.get_topic_name() == SUMMARIES.name
    assert agent.channel.topics == (SUMMARIES.name,)
    assert "actor-state" in app.tables


def test_an_enumerating_attacker_yields_a_verdict_and_a_finding(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    asyncio.run(_put_all(app, [(b"shop/web|mallory", _attack(summary_factory))]))
    pipeline = app.kubeward_pipeline  # type: ignore[attr-defined]
    (proc,) = pipeline.processors.values()
    assert len(proc.store) == 101 and sorted(proc.store.cols["requests"][:101].tolist()) == [1] * 100 + [100]
    (verdict_key, verdict_value), = sent[VERDICTS.name]
    verdict = Verdict.model_validate_json(verdict_value)
    assert verdict_key == b"actor:shop/web|mallory"
    assert verify_verdict(verdict, KEY.encode()) and verdict.action == "block"
    (finding_key, finding_value), = sent[FINDINGS.name]
    finding = Finding.model_validate_json(finding_value)
    assert finding_key == finding.finding_info.uid.encode() == verdict.finding_ids[0].encode()
    assert DLQ.name not in sent


def test_garbage_goes_to_the_dead_letter_topic(app: faust.App, sent: dict[str, Any]) -> None:
    asyncio.run(_put_all(app, [(b"k", b"definitely not a summary")]))
    (key, value), = sent[DLQ.name]
    dead = DeadLetter.model_validate_json(value)
    assert key == b"k" and "neither an Arrow IPC envelope" in dead.error
    assert dead.raw_bytes == len(b"definitely not a summary")
    assert VERDICTS.name not in sent and app.kubeward_pipeline.processors == {}  # type: ignore[attr-defined]


def _changelog(app: faust.App, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int | None, bytes, bytes]]:
    """What the app sends to the state table's changelog: (partition, key, value)."""
    out: list[tuple[int | None, bytes, bytes]] = []
    monkeypatch.setattr(app.tables["actor-state"], "send_changelog", lambda partition, key, value, *a, **k: out.append((partition, key, value)))
    return out


def test_state_buckets_are_sent_to_the_changelog_and_not_kept_in_the_table(app: faust.App, sent: dict[str, Any], summary_factory: Any,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    changelog = _changelog(app, monkeypatch)
    asyncio.run(_put_all(app, [(None, _attack(summary_factory))]))
    assert changelog and all(partition == 0 and key.startswith(b"0:") for partition, key, _ in changelog)
    assert list(app.tables["actor-state"].data.items()) == []  # one copy of the state: the processor's (issue 9)
    written = {key: value for _, key, value in changelog}
    restored = Replay(WorkerSettings(verdict_key=KEY), changelog=written)  # what a restarted worker recovers
    assert len(restored.processor().store) == 101  # the thief and the 100 owners
    assert written[b"0:destinations"] == b'{"orders": 0}'


def test_the_recovered_table_is_emptied_once_the_partition_is_restored(app: faust.App, sent: dict[str, Any], summary_factory: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    changelog = _changelog(app, monkeypatch)
    asyncio.run(_put_all(app, [(None, _attack(summary_factory))]))
    second = create_app(WorkerSettings(bootstrap="127.0.0.1:1", verdict_key=KEY, state_flush_s=0.001, follow_policy=False))
    table = second.tables["actor-state"]
    for _, key, value in changelog:  # what Faust's recovery puts in the table, plus another partition's entry
        table.data[key] = value
    table.data[b"1:0"] = b"another partition"
    asyncio.run(_put_all(second, [(None, encode_envelope([summary_factory(principal="late", time=time.time())]))]))
    (proc,) = second.kubeward_pipeline.processors.values()  # type: ignore[attr-defined]
    assert len(proc.store) == 102
    assert dict(table.data.items()) == {b"1:0": b"another partition"}


def test_a_partition_keeps_its_processor_through_a_rebalance_and_drops_it_once_assigned_elsewhere(
        app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    asyncio.run(_put_all(app, [(None, _attack(summary_factory))]))
    pipeline = app.kubeward_pipeline  # type: ignore[attr-defined]
    proc = pipeline.processors[0]

    async def rebalance(partitions: set[int]) -> None:
        revoked = {TopicPartition(SUMMARIES.name, 0)}  # eager: everything is revoked first
        await app.on_partitions_revoked.send(revoked)
        await app.on_partitions_assigned.send({TopicPartition(SUMMARIES.name, p) for p in partitions})

    asyncio.run(rebalance({0, 1}))
    assert pipeline.processors[0] is proc and len(proc.store) == 101  # kept: the table holds no copy to restore from
    asyncio.run(rebalance({1}))
    assert 0 not in pipeline.processors  # moved away: its new owner restores it from the changelog


def test_state_metrics_show_keys_bytes_and_evictions(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    asyncio.run(_put_all(app, [(None, _attack(summary_factory))]))
    assert REGISTRY.get_sample_value("kubeward_worker_state_keys", {"partition": "0", "table": "actor"}) == 101
    assert REGISTRY.get_sample_value("kubeward_worker_actors", {"partition": "0"}) == 101
    assert (REGISTRY.get_sample_value("kubeward_worker_state_bytes", {"partition": "0"}) or 0) > 101 * 100


def test_benign_messages_publish_nothing(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    rows = [summary_factory(principal=f"user-{u}") for u in range(30)]
    again = rows[0].model_copy(update={"id": "another-call"})  # the same id again would be the same call, counted once
    asyncio.run(_put_all(app, [(None, encode_envelope(rows)), (None, json.dumps(again.model_dump()).encode())]))
    assert sent.get(VERDICTS.name, []) == [] and sent.get(DLQ.name, []) == []
    (proc,) = app.kubeward_pipeline.processors.values()  # type: ignore[attr-defined]
    assert len(proc.store) == 30 and int(proc.store.cols["requests"][: len(proc.store)].sum()) == 31


# ------------------------------------------------------------------ policy


def _snapshot(version: int, **fields: Any) -> tuple[bytes, bytes]:
    policy = Policy(version=str(version), **fields)
    return policy.name.encode(), policy.model_dump_json().encode()


def _follower(app: faust.App) -> PolicyFollower:
    follower: PolicyFollower = app.kubeward_policy  # type: ignore[attr-defined]
    return follower


def _verdict_modes(sent: dict[str, Any]) -> dict[str, tuple[str, str]]:
    verdicts = [Verdict.model_validate_json(v) for _, v in sent.get(VERDICTS.name, [])]
    return {v.subject.value.split("|")[1]: (v.mode, v.policy_version) for v in verdicts}


def test_a_new_policy_applies_to_the_verdicts_decided_after_it(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    asyncio.run(_put_all(app, [(b"shop/web|before", _attack(summary_factory, "before"))]))
    update = _follower(app).apply(*_snapshot(2, modes={"shop": "enforce"}))
    assert update.result == "applied"
    asyncio.run(_put_all(app, [(b"shop/web|after", _attack(summary_factory, "after"))]))
    assert _verdict_modes(sent) == {"before": ("observe", "1"), "after": ("enforce", "2")}


def test_an_invalid_or_stale_snapshot_is_rejected_and_the_applied_policy_stays(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    follower = _follower(app)
    invalid_before = REGISTRY.get_sample_value("kubeward_worker_policy_updates_total", {"result": "invalid"}) or 0.0
    assert follower.apply(*_snapshot(3, modes={"shop": "enforce"})).result == "applied"
    bad = follower.apply(b"default", b'{"name": "default", "version": "4", "default_mode": "enforced"}')
    stale = follower.apply(*_snapshot(2, default_mode="observe"))
    assert (bad.result, stale.result, follower.rejected) == ("invalid", "stale", 2)
    assert "default_mode='enforced'" in bad.detail
    assert REGISTRY.get_sample_value("kubeward_worker_policy_updates_total", {"result": "invalid"}) == invalid_before + 1
    assert REGISTRY.get_sample_value("kubeward_worker_policy_version", {"name": "default"}) == 3.0
    asyncio.run(_put_all(app, [(b"shop/web|x", _attack(summary_factory, "x"))]))
    assert _verdict_modes(sent) == {"x": ("enforce", "3")}


def test_another_policys_record_is_ignored(app: faust.App) -> None:
    follower = _follower(app)
    assert follower.apply(*_snapshot(9, name="canary", default_mode="enforce")).result == "ignored"
    assert app.kubeward_pipeline.settings.policy == Policy()  # type: ignore[attr-defined]


def test_verdicts_wait_at_start_until_the_policy_topic_is_read(sent: dict[str, Any], summary_factory: Any) -> None:
    app = create_app(WorkerSettings(bootstrap="127.0.0.1:1", verdict_key=KEY, policy_sync_timeout_s=30))
    follower = _follower(app)

    async def run() -> None:
        async with _agent(app).test_context() as agent:
            put = asyncio.ensure_future(agent.put(_attack(summary_factory), key=b"shop/web|mallory"))
            await asyncio.sleep(0.3)
            assert not put.done() and VERDICTS.name not in sent  # still reading the policy topic
            follower.apply(*_snapshot(2, default_mode="enforce"))
            follower.synced.set()
            await asyncio.wait_for(put, 10)

    asyncio.run(run())
    assert _verdict_modes(sent) == {"mallory": ("enforce", "2")}


class _FakeConsumer:
    """The slice of AIOKafkaConsumer the follower uses: subscribed without a group, it is assigned every partition."""

    built: list[_FakeConsumer] = []

    def __init__(self, records: list[tuple[bytes, bytes]], partitions: set[int], *topics: str, **kwargs: Any):
        self.built.append(self)
        self.records, self.subscribed, self.kwargs = records, topics, kwargs
        self.parts = {TopicPartition(t, p) for t in topics for p in partitions}
        self.position_ = 0

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def topics(self) -> set[str]:
        return {POLICY.name, SUMMARIES.name}

    def assignment(self) -> set[TopicPartition]:
        return self.parts

    async def seek_to_beginning(self, *parts: Any) -> None:
        self.position_ = 0

    async def end_offsets(self, parts: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.records) if tp.partition == 0 else 0 for tp in parts}

    async def position(self, tp: TopicPartition) -> int:
        return self.position_ if tp.partition == 0 else 0

    async def getmany(self, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        if self.position_ >= len(self.records):
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch, self.position_ = self.records[self.position_ :], len(self.records)
        return {TopicPartition(POLICY.name, 0): [type("Rec", (), {"key": k, "value": v})() for k, v in batch]}


def test_every_worker_reads_the_whole_policy_topic_outside_the_consumer_group(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [_snapshot(2, default_mode="enforce"), _snapshot(4, modes={"shop": "enforce"}), (b"default", b"{broken")]
    _FakeConsumer.built = []
    monkeypatch.setattr(app_module, "AIOKafkaConsumer", lambda *topics, **kw: _FakeConsumer(records, {0, 1}, *topics, **kw))
    app = create_app(WorkerSettings(bootstrap="127.0.0.1:1", verdict_key=KEY))
    follower = _follower(app)
    assert all(POLICY.name not in agent.channel.topics for agent in app.agents.values())

    async def run() -> None:
        task = asyncio.ensure_future(follower.run())
        await asyncio.wait_for(follower.synced.wait(), 5)
        task.cancel()

    asyncio.run(run())
    probe, consumer = _FakeConsumer.built
    assert probe.subscribed == () and consumer.subscribed == (POLICY.name,)
    assert all(c.kwargs["group_id"] is None for c in (probe, consumer)) and consumer.kwargs["enable_auto_commit"] is False
    assert follower.tracker.policy.version == "4" and follower.rejected == 1
    assert app.kubeward_pipeline.settings.policy.modes == {"shop": "enforce"}  # type: ignore[attr-defined]
