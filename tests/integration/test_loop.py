"""The whole loop on real parts: Kafka broker, `kubeward worker` and `kubeward shim` processes.

(a) an attacker in the simulated cluster is detected and then denied by the shim, benign users are not;
(b) malformed and oversized records land in the dead-letter topic with a reason and the worker keeps going;
(c) a restarted shim rebuilds its verdict cache from the compacted topic and keeps denying;
(d) a restarted worker recovers per-actor state from its changelog and finishes a detection it had begun.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from deploy.lab.checkclient import CheckClient, check_request
from deploy.lab.driver import pace
from deploy.runtime.stack import LocalStack
from deploy.lab.tally import Tally
from ingest import DLQ, VERDICTS, DeadLetter, Policy, Verdict, actor_key, summary_row
from ingest.publish import SummaryPublisher
from ingest.simulator import AttackPlan, ClusterSimulator

OBJECT_KEY = b"kubeward-dev-object-key"

POLICY = Policy(default_mode="enforce", verdict_ttl_s=600)


async def drive(sim: Any, seconds: float, client: CheckClient, publisher: Any, tally: Tally, lock: threading.Lock) -> None:
    """Replay simulated calls through the shim in real time, publishing allowed calls as access-log summaries.

    This exercises the worker/shim loop on its own, with the simulator's summaries; the
    demo (``deploy.lab.demo``) sends real HTTP through Envoy and derives every feature.
    """
    async def one(call: Any) -> None:
        sent = time.time()
        res = await client.check(check_request(call.method, call.raw_path, call.dest_service, call.dest_namespace, call.source_workload, call.principal, call.source_ip))
        denied = res.status != 200
        with lock:
            tally.record_check(call.actor, call.malicious, call.scenario, call.attack_id, denied, res.reason, sent)
        if not denied:
            call.time = sent
            publisher.publish_rows([call.to_row(uuid.uuid4().hex, OBJECT_KEY, decision="allow", reporter="access_log")])

    await pace(sim.calls(seconds), one)



@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    worker = {"window_s": 30, "learn_windows": 3, "state_flush_s": 0.5, "enricher_flush_s": 0.5, "max_message_bytes": 256 * 1024, "policy": POLICY.model_dump()}
    shim = {"report": "denied", "policy": POLICY.model_dump()}
    with LocalStack(tmp_path_factory.mktemp("loop"), worker_settings=worker, shim_settings=shim) as running:
        yield running


def _actor(principal: str) -> str:
    """The actor key the worker gives ``_row``'s calls."""
    return actor_key("shop/frontend", principal)


def _row(principal: str, object_id: str, status: int = 200, t: float | None = None, created: bool = False) -> dict[str, Any]:
    """A read of ``object_id`` by ``principal`` (or, ``created``, the POST that created it and got its id back)."""
    shape: dict[str, Any] = ({"method": "POST", "path_template": "/orders", "status": 201, "object_ids_created": [object_id]} if created
                             else {"method": "GET", "path_template": "/orders/{id}", "status": status, "object_ids": [object_id]})
    return summary_row(
        id=uuid.uuid4().hex, time=t or time.time(), reporter="test", principal=principal, auth_type="jwt",
        source={"workload": "shop/frontend", "namespace": "shop", "ip": "10.0.0.7"},
        destination={"service": "orders", "namespace": "shop"}, **shape,
    )


def _orders(thief: str, count: int, start: int = 0) -> list[str]:
    return [f"{thief}-{i:06d}" for i in range(start, start + count)]


def _created(thief: str, count: int, t: float | None = None) -> list[dict[str, Any]]:
    """Each of ``count`` customers creates an order (the worker learns its owner)."""
    return [_row(f"customer-{oid}", oid, t=t, created=True) for oid in _orders(thief, count)]


def _theft(thief: str, count: int, start: int = 0, t: float | None = None) -> list[dict[str, Any]]:
    """``thief`` reads customers' orders (BOLA by ownership; a volume of reads of nobody's objects is no attack)."""
    return [_row(thief, oid, t=t) for oid in _orders(thief, count, start)]


def _check(stack: LocalStack, principal: str) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports['shim']}/orders/1234",
        headers={"x-kubeward-source-workload": "shop/frontend", "x-kubeward-principal": principal, "host": "orders"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _verdict_subjects(bootstrap: str, wait_for: str | None = None, timeout: float = 30.0) -> set[str]:
    """Subjects of the enforcing verdicts on the control topic (observe-only ones are left out)."""
    consumer = KafkaConsumer(VERDICTS.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=1000)
    seen: set[str] = set()
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                verdicts = [Verdict.model_validate_json(r.value) for r in records if r.value]
                seen |= {v.subject.value for v in verdicts if v.mode != "observe"}  # observe-only findings enforce nothing
            if wait_for is None or wait_for in seen:
                break
    finally:
        consumer.close()
    return seen


def _publish(stack: LocalStack, rows: list[dict[str, Any]]) -> None:
    with SummaryPublisher(stack.bootstrap, envelope_rows=500, linger_ms=1.0) as pub:
        pub.publish_rows(rows)
        pub.flush()
        assert pub.stats()["rows_failed"] == 0


def _wait_status(stack: LocalStack, principal: str, status: int, timeout: float = 20.0) -> int:
    deadline, got = time.time() + timeout, 0
    while time.time() < deadline:
        got = _check(stack, principal)
        if got == status:
            break
        time.sleep(0.1)
    return got


def test_attacker_in_simulated_cluster_is_denied_and_benign_users_are_not(stack: LocalStack) -> None:
    plan = AttackPlan("bola", "bola-it", start=4.0, duration_s=8.0, rate_eps=20.0)
    tally, lock = Tally(), threading.Lock()
    pub = SummaryPublisher(stack.bootstrap, envelope_rows=200, linger_ms=5.0)
    pub.start_background_flush()
    sim = ClusterSimulator(seed=21, users=400, start_time=time.time(), attacks=[plan], benign_rate_eps=150.0)

    async def run() -> None:
        client = CheckClient("127.0.0.1", stack.ports["shim"], connections=8)
        await client.open()
        await drive(sim, 14.0, client, pub, tally, lock)
        await client.close()

    asyncio.run(run())
    pub.close()
    report = tally.report([])
    attacker = report["attackers"]["by_attack"]["bola-it"]
    assert attacker["denied"] > 0, report
    assert attacker["allowed_before_block"] < 60, report  # ~25 distinct objects + transport, at 20 calls/s
    assert report["benign"]["requests"] > 1000
    assert report["benign"]["requests_blocked"] == 0, report
    assert attacker["actor"] in _verdict_subjects(stack.bootstrap, wait_for=attacker["actor"])


def test_bad_records_go_to_the_dead_letter_topic_and_the_worker_keeps_going(stack: LocalStack) -> None:
    producer = KafkaProducer(bootstrap_servers=stack.bootstrap, max_request_size=4 << 20)
    producer.send("l7.summaries.v1", key=b"bad-1", value=b"\x00\x01not a summary")
    producer.send("l7.summaries.v1", key=b"bad-2", value=json.dumps({"id": "x", "time": "yesterday"}).encode())
    producer.send("l7.summaries.v1", key=b"bad-3", value=b"{" + b" " * (300 * 1024) + b"}")
    producer.flush()
    producer.close()
    _publish(stack, _created("after-garbage", 40) + _theft("after-garbage", 40))
    consumer = KafkaConsumer(DLQ.name, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=15000)
    letters = {}
    for rec in consumer:
        letters[rec.key] = DeadLetter.model_validate_json(rec.value)
        if len(letters) >= 3:
            break
    consumer.close()
    assert "neither an Arrow IPC envelope nor a JSON object" in letters[b"bad-1"].error
    assert "'time'" in letters[b"bad-2"].error
    assert "exceeds max_message_bytes" in letters[b"bad-3"].error
    assert letters[b"bad-3"].raw_bytes > 300 * 1024 and len(letters[b"bad-3"].raw_b64) < 100 * 1024
    assert _actor("after-garbage") in _verdict_subjects(stack.bootstrap, wait_for=_actor("after-garbage"))
    assert _wait_status(stack, "after-garbage", 403) == 403


def test_restarted_shim_rebuilds_its_cache_and_keeps_denying(stack: LocalStack) -> None:
    _publish(stack, _created("before-shim-restart", 40) + _theft("before-shim-restart", 40))
    assert _wait_status(stack, "before-shim-restart", 403) == 403
    from deploy.runtime.process import stop_process

    stop_process(stack.shim)
    stack.start_shim()  # returns once /healthz says the cache synced from the topic
    assert _check(stack, "before-shim-restart") == 403
    assert _check(stack, "never-seen-user") == 200


def test_restarted_worker_recovers_state_from_its_changelog(stack: LocalStack) -> None:
    from deploy.runtime.process import stop_process

    metrics = f"http://127.0.0.1:{stack.ports['worker_web']}/metrics"
    # Event times, not wall-clock times, place calls in windows: keep both halves in one 30 s window
    # however long the restart takes.
    t = time.time() // 30 * 30 + 3
    # 8 foreign owners in a window is quiet, 16 is BOLA (bola-foreign-owners-burst, floor 12): only the recovered
    # window counts and the recovered ownership table (customers' orders created before the restart) tell them apart.
    owned = _created("split-attacker", 16, t=t - 1) + _created("half-only", 8, t=t - 1) + _created("fresh-after-restart", 8, t=t - 1)
    _publish(stack, owned + _theft("split-attacker", 8, t=t) + _theft("half-only", 8, t=t))
    time.sleep(1.0)  # past state_flush_s and enricher_flush_s, so the next message on the partition checkpoints them
    _publish(stack, [_row("split-attacker", "nudge-1", t=t + 1), _row("half-only", "nudge-2", t=t + 1)])
    time.sleep(2.0)
    assert _actor("split-attacker") not in _verdict_subjects(stack.bootstrap, timeout=3)
    stop_process(stack.worker)
    stack.start_worker()
    _publish(stack, _theft("split-attacker", 8, start=8, t=t + 2))
    subjects = _verdict_subjects(stack.bootstrap, wait_for=_actor("split-attacker"))
    assert _actor("split-attacker") in subjects, "state of the first half was not recovered"
    _publish(stack, _theft("fresh-after-restart", 8, t=t + 2))
    time.sleep(3.0)
    assert _actor("fresh-after-restart") not in _verdict_subjects(stack.bootstrap, timeout=3)
    assert urllib.request.urlopen(metrics, timeout=5).status == 200
