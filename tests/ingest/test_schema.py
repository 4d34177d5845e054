"""ingest.schema: the wire contract survives JSON, ignores unknown fields, stays frozen."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from ingest import DeadLetter, Finding, Policy, Reason, RequestSummary, Subject, Verdict, actor_key
from ingest.schema import SCHEMA_VERSION
from tests.strategies import dead_letters, findings, summaries, verdicts

FAST = settings(max_examples=60, deadline=None)


def _round_trip(record: BaseModel) -> BaseModel:
    return type(record).model_validate_json(record.model_dump_json())


@FAST
@given(summaries)
def test_summary_survives_json_round_trip(summary: RequestSummary) -> None:
    assert _round_trip(summary) == summary


@FAST
@given(verdicts)
def test_verdict_survives_json_round_trip(verdict: Verdict) -> None:
    assert _round_trip(verdict) == verdict


@FAST
@given(findings)
def test_finding_survives_json_round_trip(finding: Finding) -> None:
    back = _round_trip(finding)
    assert back == finding
    assert back.class_uid == 2004 and back.type_uid == 200401


@FAST
@given(dead_letters)
def test_dead_letter_survives_json_round_trip(dead: DeadLetter) -> None:
    assert _round_trip(dead) == dead


def _with_unknown_fields(doc: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Add ``extra`` to the top level and to every nested object of ``doc`` (not to the count maps, whose keys are data)."""
    out = {k: (_with_unknown_fields(v, extra) if isinstance(v, dict) and k not in ("sensitive", "redacted") else v) for k, v in doc.items()}
    out.update(extra)
    return out


unknown_fields = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).map(lambda s: f"zz_future_{s}"),
    st.none() | st.integers() | st.text(max_size=5) | st.lists(st.integers(), max_size=2),
    min_size=1,
    max_size=3,
)


@FAST
@given(summaries, unknown_fields)
def test_unknown_summary_fields_are_ignored_on_read(summary: RequestSummary, extra: dict[str, Any]) -> None:
    doc = _with_unknown_fields(json.loads(summary.model_dump_json()), extra)
    assert RequestSummary.model_validate_json(json.dumps(doc)) == summary


@FAST
@given(verdicts, unknown_fields)
def test_unknown_verdict_fields_are_ignored_on_read(verdict: Verdict, extra: dict[str, Any]) -> None:
    doc = _with_unknown_fields(json.loads(verdict.model_dump_json()), extra)
    assert Verdict.model_validate_json(json.dumps(doc)) == verdict


def test_a_newer_schema_version_is_read(summary_factory: Any) -> None:
    doc = json.loads(summary_factory().model_dump_json())
    doc.update(schema_version=SCHEMA_VERSION + 1, some_field_from_v2={"nested": [1, 2]})
    back = RequestSummary.model_validate(doc)
    assert back.schema_version == SCHEMA_VERSION + 1
    assert not hasattr(back, "some_field_from_v2")


def test_records_are_frozen(summary_factory: Any, verdict_factory: Any) -> None:
    summary = summary_factory()
    with pytest.raises(ValidationError, match="frozen"):
        summary.status = 500
    with pytest.raises(ValidationError, match="frozen"):
        summary.source.workload = "evil/pod"
    verdict = verdict_factory()
    with pytest.raises(ValidationError, match="frozen"):
        verdict.signature = "forged"
    with pytest.raises(ValidationError, match="frozen"):
        Policy().default_mode = "enforce"
    assert summary.status == 200 and verdict.signature == ""


def test_model_copy_is_the_way_to_change_a_record(verdict_factory: Any) -> None:
    verdict = verdict_factory()
    changed = verdict.model_copy(update={"mode": "observe"})
    assert changed.mode == "observe" and verdict.mode == "enforce"


def test_records_carry_the_schema_version(summary_factory: Any, verdict_factory: Any) -> None:
    assert summary_factory().schema_version == SCHEMA_VERSION == 1
    assert verdict_factory().schema_version == SCHEMA_VERSION
    assert Policy().schema_version == SCHEMA_VERSION


@pytest.mark.parametrize(
    ("modes", "namespace", "service", "expected"),
    [
        ({}, "shop", "orders", "observe"),
        ({"shop": "enforce"}, "shop", "orders", "enforce"),
        ({"shop": "enforce", "shop/orders": "observe"}, "shop", "orders", "observe"),
        ({"shop": "observe", "shop/orders": "enforce"}, "shop", "orders", "enforce"),
        ({"shop/orders": "enforce"}, "shop", "payments", "observe"),
        ({"shop/orders": "enforce"}, "bank", "orders", "observe"),
        ({"shop": "enforce"}, None, "orders", "observe"),
        ({"shop": "enforce", "shop/orders": "observe"}, "shop", None, "enforce"),
        ({"orders": "enforce"}, None, "orders", "observe"),
    ],
    ids=["default", "namespace", "service-over-namespace-observe", "service-over-namespace-enforce",
         "other-service", "other-namespace", "no-namespace", "no-service", "service-name-is-not-a-namespace"],
)
def test_policy_mode_for_precedence(modes: dict[str, str], namespace: str | None, service: str | None, expected: str) -> None:
    assert Policy(modes=modes).mode_for(namespace, service) == expected


def test_policy_default_mode_applies_when_nothing_matches() -> None:
    policy = Policy(default_mode="enforce", modes={"lab": "observe"})
    assert policy.mode_for("shop", "orders") == "enforce"
    assert policy.mode_for("lab", "orders") == "observe"


@pytest.mark.parametrize("bad", [{"default_mode": "block"}, {"modes": {"shop": "deny"}}, {"verdict_ttl_s": 0}, {"throttle_burst": 0}])
def test_policy_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Policy(**bad)


@given(st.floats(min_value=0.0, max_value=1.0))
def test_reason_accepts_scores_in_unit_interval(score: float) -> None:
    assert Reason(detector="d", score=score, evidence="e").score == score


@given(st.floats(allow_nan=True).filter(lambda x: not 0.0 <= x <= 1.0))
def test_reason_rejects_scores_outside_unit_interval(score: float) -> None:
    with pytest.raises(ValidationError, match="score"):
        Reason(detector="d", score=score, evidence="e")


@pytest.mark.parametrize(
    ("workload", "ip", "principal", "expected"),
    [
        ("shop/web", "10.0.0.7", "alice", "shop/web|alice"),
        (None, "10.0.0.7", "alice", "10.0.0.7|alice"),
        ("shop/web", None, None, "shop/web|-"),
        (None, None, None, "-|-"),
    ],
)
def test_summary_actor_is_source_and_principal(summary_factory: Any, workload: str | None, ip: str | None, principal: str | None, expected: str) -> None:
    summary = summary_factory(workload=workload, ip=ip, principal=principal)
    assert summary.actor == expected == actor_key(workload or ip, principal)


def test_subject_cache_key_is_kind_and_value() -> None:
    assert Subject(kind="ip", value="10.0.0.7").cache_key == "ip:10.0.0.7"


@pytest.mark.parametrize(("field", "value"), [("severity_id", 7), ("severity_id", -1), ("confidence_score", 101)])
def test_finding_rejects_out_of_range_ocsf_values(field: str, value: int) -> None:
    fields: dict[str, Any] = {"time": 0, "severity_id": 1, "confidence_score": 50, "message": "m", "finding_info": {"uid": "u", "title": "t"}}
    fields[field] = value
    with pytest.raises(ValidationError, match=field):
        Finding(**fields)


def test_required_summary_fields_are_required() -> None:
    with pytest.raises(ValidationError) as info:
        RequestSummary.model_validate({"id": "x"})
    missing = {e["loc"][0] for e in info.value.errors() if e["type"] == "missing"}
    assert missing == {"time", "source", "destination", "method", "path_template"}
