"""Findings for the SOC through the real worker: deduplicated per actor and attack with counts, tailed with filters by
``kubeward findings tail``, read by the SIEM example consumer (deploy/siem/consume_findings.py); every record validated as
an OCSF 1.5.0 Detection Finding with pydantic-ocsf.

One actor of this run's own sends SQL injection (the shim's inline finding ``sqli``) every 3 s of event time, in the
recent past. The verdict TTL is 2 s and the worker takes one message per batch, so each call is a detection and a
verdict; the worker publishes one Create for the actor's injection finding and folds the rest into Updates of the
same finding uid (``findings_update_s`` 1 s, the last count from its timer) whose count reaches the number of verdicts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer

from deploy.cli import main
from deploy.runtime.process import free_port, start_worker, stop_process
from ingest import FINDINGS, VERDICTS, Finding, Policy, Verdict, summary_row
from ingest.publish import SummaryPublisher
from tests.ocsfcheck import validate

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
NAMESPACE, WORKLOAD, PRINCIPAL = f"it-findings-{RUN}", f"it-findings-{RUN}/web", f"eve-{RUN}"
ACTOR = f"{WORKLOAD}|{PRINCIPAL}"
CALLS = 5
SIEM = Path(__file__).resolve().parents[2] / "deploy" / "siem" / "consume_findings.py"


@pytest.fixture(scope="module")
def bootstrap(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("findings")
    settings = {"bootstrap": kafka_bootstrap, "web_port": free_port(), "app_id": f"kubeward-it-findings-{RUN}", "batch_max_messages": 1,
                "findings_update_s": 1.0, "state_flush_s": 0.5, "policy": Policy(name=f"it-findings-{RUN}", verdict_ttl_s=2).model_dump()}
    proc = start_worker(logs / "worker.log", settings)
    try:
        with SummaryPublisher(kafka_bootstrap, envelope_rows=1, linger_ms=1.0) as pub:
            now = time.time()
            pub.publish_rows([summary_row(id=uuid.uuid4().hex, time=now - 30 + 3 * i, reporter="test", principal=PRINCIPAL,
                                          source={"workload": WORKLOAD, "namespace": NAMESPACE, "ip": "10.9.9.9"},
                                          destination={"service": "orders", "namespace": NAMESPACE}, method="GET",
                                          path_template="/orders/{id}", status=403, inline_findings=["sqli"]) for i in range(CALLS)])
            pub.flush()
            assert pub.stats()["rows_failed"] == 0
        yield kafka_bootstrap
    finally:
        stop_process(proc)


def _read(bootstrap: str, topic: str, keep: Any, done: Any, timeout: float) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    found: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(found):
            for records in consumer.poll(timeout_ms=500).values():
                found += [m for m in (keep(r.value) for r in records if r.value) if m is not None]
    finally:
        consumer.close()
    return found


def _ours(value: bytes) -> tuple[Finding, bytes] | None:
    finding = Finding.model_validate_json(value)
    return (finding, value) if finding.unmapped.get("actor") == ACTOR else None


def test_repeated_detections_are_one_finding_with_a_count(bootstrap: str) -> None:
    def ours(value: bytes) -> Verdict | None:
        verdict = Verdict.model_validate_json(value)
        return verdict if verdict.subject.value == ACTOR else None

    verdicts = _read(bootstrap, VERDICTS.name, ours, lambda found: len(found) >= CALLS, timeout=60)
    assert len(verdicts) == CALLS, f"{len(verdicts)} verdicts for {ACTOR}"
    records = _read(bootstrap, FINDINGS.name, _ours, lambda found: any(f.count >= CALLS for f, _ in found), timeout=30)
    findings = [f for f, _ in records]
    assert [f.activity_id for f in findings].count(1) == 1 and findings[0].activity_id == 1, [(f.activity_id, f.count) for f in findings]
    assert {f.finding_info.uid for f in findings} == {v.finding_ids[0] for v in verdicts} == {findings[0].finding_info.uid}
    assert findings[-1].activity_id == 2 and findings[-1].count == CALLS and len(findings) <= CALLS
    assert findings[-1].start_time == findings[0].start_time and findings[-1].end_time > findings[0].end_time  # type: ignore[operator]
    for _, value in records:
        event = validate(value)
        assert event.finding_info.tags and event.finding_info.tags[0].value.startswith("API8:2023")


def test_findings_tail_filters_what_it_prints(bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    _read(bootstrap, FINDINGS.name, _ours, lambda found: any(f.count >= CALLS for f, _ in found), timeout=30)
    base = ["findings", "tail", "--bootstrap", bootstrap, "--from-beginning", "--actor", PRINCIPAL]
    assert main([*base, "--output", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(validate(line.encode()).unmapped is not None for line in lines)
    assert {json.loads(line)["unmapped"]["actor"] for line in lines} == {ACTOR}
    assert [json.loads(line)["activity_id"] for line in lines][0] == 1 and json.loads(lines[-1])["count"] == CALLS
    assert main([*base, "--output", "json", "--class", "API1"]) == 0 and capsys.readouterr().out == ""  # injection is API8
    assert main([*base, "--output", "json", "--namespace", "elsewhere"]) == 0 and capsys.readouterr().out == ""
    assert main([*base, "--class", "API8", "--class", "T1190", "--severity", "high", "--namespace", NAMESPACE, "--max", "1"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("TIME") and "injection" in row and "API8:2023" in row and ACTOR[:20] in row and ("High" in row or "Critical" in row)


def test_the_siem_example_prints_one_valid_ocsf_json_per_line(bootstrap: str) -> None:
    _read(bootstrap, FINDINGS.name, _ours, lambda found: any(f.count >= CALLS for f, _ in found), timeout=30)
    run = subprocess.run([sys.executable, str(SIEM), "--bootstrap", bootstrap, "--group", f"it-siem-{RUN}", "--from-beginning",
                          "--idle-exit-s", "5"], capture_output=True, text=True, timeout=120, check=True)
    lines = run.stdout.splitlines()
    ours = [line for line in lines if json.loads(line).get("unmapped", {}).get("actor") == ACTOR]
    assert ours and all(validate(line.encode()) for line in ours)
    assert all(json.loads(line)["class_uid"] == 2004 for line in lines)
