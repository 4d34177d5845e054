"""Every finding the worker can emit is a valid OCSF 1.5.0 Detection Finding (pydantic-ocsf), and
``build/findings-sample.json`` holds a few, produced by the real ``streams.pipeline.Pipeline``.

The sample: BOLA by ownership (the test suite's ``stolen_objects`` traffic), an actor repeating SQL injection
(a Create, then counted Updates of the same finding) and an endpoint that starts returning a password hash
(excessive data exposure), each validated before it is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ingest import Policy, Reason, RequestSummary, encode_envelope
from models.taxonomy import CLASSES
from streams.exposure import exposure_finding
from streams.findingdedup import FindingDedup
from streams.pipeline import Pipeline
from streams.policy import decide, to_finding
from streams.processor import Detection
from streams.settings import WorkerSettings
from tests.conftest import T0, stolen_objects
from tests.ocsfcheck import validate

SAMPLE = Path(__file__).resolve().parents[2] / "build" / "findings-sample.json"
KEY = b"findings-sample-key"
_SUBJECTS = [("actor", "shop/web|mallory", None), ("actor", "203.0.113.9|-", ("orders", "/orders/{id}")), ("ip", "203.0.113.9", None),
             ("tool", "shop/mcp/send_invoice", None), ("actor", "-|apikey:k1", None)]


@pytest.mark.parametrize("attack_class", sorted(CLASSES))
@pytest.mark.parametrize(("kind", "actor", "scope"), _SUBJECTS, ids=[f"{k}:{a}" for k, a, _ in _SUBJECTS])
@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_every_class_and_subject_kind_gives_a_valid_finding_and_update(attack_class: str, kind: str, actor: str,
                                                                       scope: tuple[str, str] | None, mode: str) -> None:
    reason = Reason(detector="some-rule", score=0.8, evidence="x=3, threshold 1")
    det = Detection(actor, attack_class, 0.8, (reason,), T0, "shop", "orders", {}, subject_kind=kind, scope=scope)
    verdict = decide(det, Policy(default_mode=mode, actions={"exfiltration": "redact", "credential_abuse": "throttle"}), T0 + 1, KEY)
    finding = to_finding(det, verdict)
    event = validate(finding)
    assert (event.class_uid, event.type_uid, event.activity_id) == (2004, 200401, 1)
    assert event.finding_info.uid == verdict.finding_ids[0] and event.count == 1
    dedup = FindingDedup(update_s=0)
    dedup.offer("k", finding, T0 + 1)
    (update,) = dedup.offer("k", to_finding(det, decide(det, Policy(), T0 + 5, KEY)), T0 + 5)
    assert validate(update).type_uid == 200402 and update.count == 2


def test_an_exposure_finding_is_valid() -> None:
    event = validate(exposure_finding("accounts", "GET", "/users/{id}", "user.password_hash", T0))
    assert event.finding_info.tags and event.finding_info.tags[0].value.startswith("API3:2023")


def _injection(i: int, t: float) -> RequestSummary:
    return RequestSummary.model_validate({
        "id": f"sqli-{i}", "time": t, "source": {"workload": "shop/web", "namespace": "shop", "ip": "10.0.0.7"}, "principal": "eve",
        "destination": {"service": "orders", "namespace": "shop"}, "method": "GET", "path_template": "/orders/{id}", "status": 403,
        "inline_findings": ["sqli"]})


def _profile(i: int, t: float, extra: tuple[str, ...] = ()) -> RequestSummary:
    return RequestSummary.model_validate({
        "id": f"profile-{i}", "time": t, "source": {"workload": "shop/web", "namespace": "shop"}, "principal": f"user-{i % 7}",
        "destination": {"service": "accounts", "namespace": "shop"}, "method": "GET", "path_template": "/users/{id}", "status": 200,
        "response_properties": ["user.id", "user.name", "user.email", *extra]})


def _pipeline_findings(summary_factory: Any) -> list[Any]:
    settings = WorkerSettings(verdict_key=KEY.decode(), policy=Policy(verdict_ttl_s=2, modes={"shop": "enforce"}), findings_update_s=60,
                              inventory_interval_s=1)
    pipeline = Pipeline(settings, "l7.summaries.v1")
    made, read = stolen_objects(summary_factory, "mallory", owners=100, t=T0 + 1)
    out = pipeline.handle(0, encode_envelope(made + read), 0, now=T0 + 3)
    published = list(out.published)
    for i in range(4):  # SQL injection every 5 s of event time, each a detection (the verdict TTL is 2 s)
        published += pipeline.handle(1, encode_envelope([_injection(i, T0 + 10 + 5 * i)]), i, now=T0 + 10 + 20 * i).published
    published += pipeline.due_findings(T0 + 200)
    learn = [_profile(i, T0 + i * 0.01) for i in range(201)]
    pipeline.handle(2, encode_envelope(learn), 0, now=T0 + 300)
    published += pipeline.handle(2, encode_envelope([_profile(999, T0 + 5, ("user.password_hash",))]), 1, now=T0 + 302).exposures
    return published


def test_the_pipeline_writes_a_validated_sample(summary_factory: Any) -> None:
    findings = _pipeline_findings(summary_factory)
    kinds = [(f.finding_info.types[0], f.activity_id, f.count) for f in findings]
    assert ("bola", 1, 1) in kinds and ("injection", 1, 1) in kinds and ("excessive-data-exposure", 1, 1) in kinds
    assert any(k == "injection" and activity == 2 and count > 1 for k, activity, count in kinds), kinds
    events = [json.loads(f.to_wire()) for f in findings]
    for f in findings:
        validate(f)
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    SAMPLE.write_text(json.dumps(events, indent=2) + "\n")
    assert all(validate(json.dumps(e).encode()) for e in json.loads(SAMPLE.read_text()))
