"""Excessive data exposure: an endpoint's responses that start carrying properties never returned before."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr

from ingest import Finding, encode_envelope
from streams import Pipeline, WorkerSettings
from streams.exposure import CATEGORY, ExposureTracker, exposure_finding, is_sensitive_name
from tests.conftest import T0
from tests.ocsfcheck import validate

PROFILE = ["id", "email", "name"]


def _learned(tracker: ExposureTracker, n: int = 5) -> None:
    for i in range(n):
        assert tracker.observe("accounts", "GET", "/users/{id}", T0 + i, 200, PROFILE) == []


def test_a_new_sensitive_property_after_learning_is_a_high_finding_once() -> None:
    tracker = ExposureTracker(learn_responses=5)
    _learned(tracker)
    found = tracker.observe("accounts", "GET", "/users/{id}", T0 + 10, 200, [*PROFILE, "password_hash"])
    assert len(found) == 1
    finding = found[0]
    assert isinstance(finding, Finding) and finding.finding_info.types == [CATEGORY] and finding.severity_id == 4
    assert finding.unmapped["property"] == "password_hash" and "password_hash" in finding.message
    assert tracker.observe("accounts", "GET", "/users/{id}", T0 + 11, 200, [*PROFILE, "password_hash"]) == []
    again = ExposureTracker(learn_responses=5)
    _learned(again)
    assert again.observe("accounts", "GET", "/users/{id}", T0 + 12, 200, [*PROFILE, "password_hash"])[0].finding_info.uid == finding.finding_info.uid


def test_a_new_ordinary_property_is_medium_and_learning_raises_nothing() -> None:
    tracker = ExposureTracker(learn_responses=5)
    assert tracker.observe("accounts", "GET", "/users/{id}", T0, 200, PROFILE) == []
    assert tracker.observe("accounts", "GET", "/users/{id}", T0 + 1, 200, [*PROFILE, "nickname"]) == []  # still learning
    _learned(tracker)
    assert tracker.observe("accounts", "GET", "/users/{id}", T0 + 9, 200, [*PROFILE, "nickname"]) == []  # learned
    assert [f.severity_id for f in tracker.observe("accounts", "GET", "/users/{id}", T0 + 9, 200, ["phone_ext"])] == [3]


def test_the_learning_window_also_ends_with_time_and_error_responses_are_ignored() -> None:
    tracker = ExposureTracker(learn_responses=1000, learn_seconds=60)
    assert tracker.observe("billing", "GET", "/invoices", T0, 200, ["total"]) == []
    assert tracker.observe("billing", "GET", "/invoices", T0 + 61, 500, ["stack_trace"]) == []
    assert [f.unmapped["property"] for f in tracker.observe("billing", "GET", "/invoices", T0 + 61, 200, ["total", "api_token"])] == ["api_token"]


def test_memory_and_finding_bounds_hold() -> None:
    tracker = ExposureTracker(learn_responses=1, max_endpoints=3, max_properties=10, max_findings=4)
    for i in range(10):
        tracker.observe("s", "GET", f"/e{i}", T0, 200, ["a"])
    assert len(tracker.endpoints) == 3 and tracker.counts["endpoints_dropped"] == 7
    found = tracker.observe("s", "GET", "/e0", T0 + 1, 200, [f"k{i}" for i in range(50)])
    assert len(found) == 4 and len(tracker.endpoints[(None, "s", "GET", "/e0")].properties) == 10
    assert tracker.counts["properties_dropped"] == 41 and tracker.counts["findings_dropped"] == 5


def test_sensitive_names() -> None:
    assert all(is_sensitive_name(n) for n in ("password", "user.passwd", "salt", "data[].access_token", "ssn", "card_number", "clientSecret"))
    assert not any(is_sensitive_name(n) for n in ("email", "name", "items[].price", "created_at", "status"))


def test_the_pipeline_reports_exposure_findings_apart_from_verdict_findings(summary_factory: Any) -> None:
    # inventory_interval_s: the pipeline folds gathered batches into the tracker at most this often
    pipeline = Pipeline(WorkerSettings(verdict_key=SecretStr("k"), inventory_interval_s=1.0), "l7.summaries.v1")
    pipeline.exposure = ExposureTracker(learn_responses=3)
    rows = [summary_factory(time=T0 + i, method="GET", path_template="/users/{id}", status=200, response_properties=PROFILE) for i in range(4)]
    assert pipeline.handle(0, encode_envelope(rows), 1, now=T0 + 5).exposures == []
    leak = summary_factory(time=T0 + 6, method="GET", path_template="/users/{id}", status=200, response_properties=[*PROFILE, "token"])
    out = pipeline.handle(0, encode_envelope([leak]), 2, now=T0 + 7)
    assert [f.unmapped["property"] for f in out.exposures] == ["token"] and len(out.findings) == len(out.verdicts)


def test_one_service_name_in_two_namespaces_is_two_endpoints_and_the_finding_names_its_namespace() -> None:
    """``api`` in ``shop`` learned a property that ``api`` in ``billing`` never returned: only billing's is a finding,
    and it names ``billing`` in its OCSF resources (the blueprint reads it there), still a valid OCSF 1.5.0 finding."""
    tracker = ExposureTracker(learn_responses=3)
    for i in range(3):
        tracker.observe("api", "GET", "/users/{id}", T0 + i, 200, [*PROFILE, "ssn"], namespace="shop")
        tracker.observe("api", "GET", "/users/{id}", T0 + i, 200, PROFILE, namespace="billing")
    assert sorted(k[0] or "" for k in tracker.endpoints) == ["billing", "shop"]
    assert tracker.observe("api", "GET", "/users/{id}", T0 + 5, 200, [*PROFILE, "ssn"], namespace="shop") == []
    found = tracker.observe("api", "GET", "/users/{id}", T0 + 5, 200, [*PROFILE, "ssn"], namespace="billing")
    assert len(found) == 1
    finding = found[0]
    assert [(r.type, r.namespace, r.uid) for r in finding.resources] == [("kubernetes.service", "billing", "billing/api"),
                                                                       ("api.endpoint", "billing", None)]
    assert "namespace" not in finding.unmapped and "billing/api GET /users/{id}" in finding.message
    validate(finding)
    shop = exposure_finding("api", "GET", "/users/{id}", "ssn", T0, namespace="shop")
    assert shop.finding_info.uid != finding.finding_info.uid  # two endpoints, two findings


def test_the_pipeline_keys_exposure_by_the_destination_namespace(summary_factory: Any) -> None:
    pipeline = Pipeline(WorkerSettings(verdict_key=SecretStr("k"), inventory_interval_s=1.0), "l7.summaries.v1")
    pipeline.exposure = ExposureTracker(learn_responses=3)
    rows = [summary_factory(time=T0 + i, method="GET", path_template="/users/{id}", status=200, response_properties=PROFILE) for i in range(4)]
    pipeline.handle(0, encode_envelope(rows), 1, now=T0 + 5)
    namespace = rows[0].destination.namespace
    assert namespace and [k[0] for k in pipeline.exposure.endpoints] == [namespace]
    leak = summary_factory(time=T0 + 6, method="GET", path_template="/users/{id}", status=200, response_properties=[*PROFILE, "token"])
    out = pipeline.handle(0, encode_envelope([leak]), 2, now=T0 + 7)
    assert [r.namespace for r in out.exposures[0].resources] == [namespace, namespace]


def test_without_a_namespace_the_finding_uid_is_the_one_it_always_was() -> None:
    """An external host (no namespace): the same uid as before namespaces took part, so deduplication holds across versions."""
    finding = exposure_finding("api.psp.example.com", "GET", "/v1/charges", "card_number", T0)
    assert finding.finding_info.uid == "82c4824d-4547-58bb-a529-6de21a09418f" and finding.resources[0].namespace is None
