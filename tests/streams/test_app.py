"""streams.app in-process: the Faust agent under ``test_context()`` with the ``memory://`` store.

No broker: ``Topic.send`` is replaced by a recorder, so what the agent would
publish (verdicts, findings, dead letters) is captured per topic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import faust
import pytest

from ingest import DLQ, FINDINGS, SUMMARIES, VERDICTS, DeadLetter, Finding, Verdict, encode_envelope, verify_verdict
from ingest.templating import hash_object_id
from streams.app import create_app
from streams.settings import WorkerSettings
from streams.state import ActorStore
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
    settings = WorkerSettings(bootstrap="127.0.0.1:1", verdict_key=KEY, state_flush_s=0.001)
    app = create_app(settings)
    app.conf.store = "memory://"
    yield app


def _agent(app: faust.App) -> Any:
    (name,) = [n for n in app.agents if n.endswith(".process")]
    return app.agents[name]


def _attack(summary_factory: Any) -> bytes:
    now = time.time()  # the app stamps verdicts with the wall clock
    rows = [summary_factory(principal="mallory", time=now + i * 0.001, object_ids=[hash_object_id(str(i), b"k")]) for i in range(100)]
    return encode_envelope(rows)


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
    assert len(proc.store) == 1 and int(proc.store.cols["requests"][0]) == 100
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


def test_state_buckets_are_written_to_the_table(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    asyncio.run(_put_all(app, [(None, _attack(summary_factory))]))
    table = app.tables["actor-state"]
    items = list(table.items())
    assert items and all(k.startswith(b"0:") for k, _ in items)
    restored = ActorStore()
    assert restored.import_buckets(v for k, v in items if not k.endswith(b":destinations")) == 1
    assert dict(items)[b"0:destinations"] == b'{"orders": 0}' 


def test_benign_messages_publish_nothing(app: faust.App, sent: dict[str, Any], summary_factory: Any) -> None:
    rows = [summary_factory(principal=f"user-{u}") for u in range(30)]
    asyncio.run(_put_all(app, [(None, encode_envelope(rows)), (None, json.dumps(rows[0].model_dump()).encode())]))
    assert sent.get(VERDICTS.name, []) == [] and sent.get(DLQ.name, []) == []
    (proc,) = app.kubeward_pipeline.processors.values()  # type: ignore[attr-defined]
    assert len(proc.store) == 30 and int(proc.store.cols["requests"][: len(proc.store)].sum()) == 31
