"""An identity flood through the real worker: the session's Kafka broker and a `kubeward worker` process as shipped
(every enricher and rule), with a short window so the test need not wait out minutes of learning.

One client address presents a fresh API key on every call (each call a new actor with empty per-actor counts); the
worker's ``identityflood`` enricher counts the new identities of its /24 and the ``identity-flood-source`` rule turns
the flood into an OCSF finding on security.findings.v1 and an observe-only verdict naming the address. Known users
calling before it raise none. Event times lie in the recent past, so nothing waits for the wall clock.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kafka import KafkaConsumer

from deploy.runtime.process import free_port, start_worker, stop_process
from ingest import FINDINGS, VERDICTS, Finding, Policy, Verdict, summary_row
from ingest.publish import SummaryPublisher

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
NET = f"100.{64 + int(RUN[:2], 16) % 64}.{int(RUN[2:4], 16)}"  # a /24 of this run's own (shared broker)
FLOODER = f"{NET}.7"
SERVICE = f"idflood-{RUN}"
WINDOW_S = 10  # learning: 1 window (the enricher's learn_s = window_s * learn_windows)


@dataclass
class Worker:
    bootstrap: str


@pytest.fixture(scope="module")
def worker(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    logs = tmp_path_factory.mktemp("idflood")
    settings = {"bootstrap": kafka_bootstrap, "web_port": free_port(), "app_id": f"kubeward-it-idflood-{RUN}", "window_s": WINDOW_S,
                "learn_windows": 1, "state_flush_s": 0.5, "policy": Policy(name=f"it-idflood-{RUN}").model_dump()}
    proc = start_worker(logs / "worker.log", settings)
    try:
        yield Worker(kafka_bootstrap)
    finally:
        stop_process(proc)


def _row(t: float, ip: str, principal: str) -> dict[str, Any]:
    return summary_row(id=uuid.uuid4().hex, time=t, reporter="test", principal=principal, auth_type="api_key", source={"ip": ip},
                       destination={"service": SERVICE, "namespace": "shop"}, method="GET", path_template="/items/{id}", status=200)


def _traffic(now: float) -> list[dict[str, Any]]:
    """Known users for three windows, then one address rotating keys at 15 a second for the last window."""
    known = [_row(now - 40 + i * 0.25, f"198.51.100.{i % 20 + 1}", f"jwt:user-{RUN}-{i % 20}") for i in range(120)]
    flood = [_row(now - 10 + i / 15, FLOODER, f"apikey:{RUN}-{i:06d}") for i in range(150)]
    return known + flood


def _read(bootstrap: str, topic: str, match: Any, timeout: float) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None, consumer_timeout_ms=1000)
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not found:
            for records in consumer.poll(timeout_ms=500).values():
                found += [m for m in (match(r.value) for r in records if r.value) if m is not None]
    finally:
        consumer.close()
    return found


def test_a_key_rotation_flood_through_the_worker_is_a_finding(worker: Worker) -> None:
    with SummaryPublisher(worker.bootstrap, envelope_rows=50, linger_ms=1.0) as pub:
        pub.publish_rows(_traffic(time.time()))
        pub.flush()
        assert pub.stats()["rows_failed"] == 0

    def finding(value: bytes) -> Finding | None:
        f = Finding.model_validate_json(value)
        return f if f.unmapped.get("actor") == FLOODER and f.finding_info.analytic.get("name") == "identity-flood-source" else None

    def verdict(value: bytes) -> Verdict | None:
        v = Verdict.model_validate_json(value)
        return v if v.subject.value == FLOODER or (v.scope is not None and v.scope.service == SERVICE) else None

    findings = _read(worker.bootstrap, FINDINGS.name, finding, timeout=45.0)
    assert findings, f"no identity-flood finding for {FLOODER}"
    assert findings[0].finding_info.types == ["anomaly"] and "identity_flood_source=50" in findings[0].finding_info.desc
    verdicts = _read(worker.bootstrap, VERDICTS.name, verdict, timeout=10.0)
    assert [(v.subject.kind, v.subject.value, v.mode, v.action) for v in verdicts] == [("ip", FLOODER, "observe", "throttle")]
    assert verdicts[0].scope is not None and (verdicts[0].scope.service, verdicts[0].scope.path_template) == (SERVICE, "/items/{id}")
    assert [r.detector for r in verdicts[0].reasons] == ["identity-flood-source"]
