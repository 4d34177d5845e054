"""enforcement.shim: summarize, and Shim.handle / decide_view / handle_unparsed without sockets.

How each adapter reads checks and renders answers is tested in test_adapters.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from enforcement.adapters.httpcheck import UnparsedRequest
from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.settings import ShimSettings
from enforcement.shim import Shim, build_adapter, summarize
from ingest import Policy, RequestSummary, Subject
from ingest.templating import hash_object_id
from tests.conftest import T0


# ------------------------------------------------------------------ summarize

KEY = b"object-key"


def _view(path: str, **kw: Any) -> RequestView:
    return RequestView("GET", path, kw.get("workload", "shop/web"), kw.get("principal", "alice"), "10.0.0.7", kw.get("service", "orders"), "shop")


def test_summarize_hashes_object_ids_and_drops_the_query() -> None:
    raw_id, uuid_id = "81231", "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    summary = summarize(T0, _view(f"/orders/{raw_id}/lines/{uuid_id}?token=s3cr3t-99&email=a@b.c"), ALLOW, KEY)
    assert summary.path_template == "/orders/{id}/lines/{id}"
    assert summary.object_ids == [hash_object_id(raw_id, KEY), hash_object_id(uuid_id, KEY)]
    wire = summary.model_dump_json()
    for secret in (raw_id, uuid_id, "s3cr3t-99", "a@b.c"):
        assert secret not in wire
    assert summary.raw_path is None


def test_summarize_fills_identity_and_reporter() -> None:
    summary = summarize(T0, _view("/x"), ALLOW, KEY)
    assert isinstance(summary, RequestSummary)
    assert (summary.time, summary.reporter, summary.actor) == (T0, "shim", "shop/web|alice")
    assert (summary.source.workload, summary.source.namespace, summary.source.ip) == ("shop/web", "shop", "10.0.0.7")
    assert (summary.destination.service, summary.destination.namespace) == ("orders", "shop")


def test_summarize_without_workload_or_service() -> None:
    summary = summarize(T0, _view("/x", workload=None, service=None), ALLOW, KEY)
    assert (summary.source.workload, summary.source.namespace, summary.destination.service) == (None, None, "-")
    assert summary.actor == "10.0.0.7|alice"


@pytest.mark.parametrize(
    ("decision", "status", "recorded"),
    [
        (ALLOW, None, "allow"),
        (Decision(403, "deny", True, "r"), 403, "deny"),
        (Decision(429, "throttle", True, "r", 2), 429, "throttle"),
        (Decision(200, "deny", False, "r"), None, "observe:deny"),
        (Decision(200, "throttle", False, "r", 2), None, "observe:throttle"),
    ],
    ids=["allow", "deny", "throttle", "observe-deny", "observe-throttle"],
)
def test_summarize_records_the_decision(decision: Decision, status: int | None, recorded: str) -> None:
    summary = summarize(T0, _view("/x"), decision, KEY)
    assert (summary.status, summary.decision) == (status, recorded)


def test_summarize_carries_inline_findings() -> None:
    decision = Decision(403, "deny", True, "inline:injection", None, ("injection", "traversal"))
    assert summarize(T0, _view("/x"), decision, KEY).inline_findings == ["injection", "traversal"]


def test_summarize_gives_unique_ids() -> None:
    assert summarize(T0, _view("/x"), ALLOW, KEY).id != summarize(T0, _view("/x"), ALLOW, KEY).id


def test_summarize_uses_the_data_planes_request_id_and_auth_type() -> None:
    view = RequestView("GET", "/x", "shop/web", "jwt:0123", "10.0.0.7", "orders", "shop", request_id="rid-1", auth_type="jwt")
    summary = summarize(T0, view, ALLOW, KEY)
    assert (summary.id, summary.auth_type) == ("rid-1", "jwt")


@pytest.mark.parametrize("mode", ["allow", "deny"])
def test_summarize_records_an_unparsed_check_as_unparsed(mode: str) -> None:
    from enforcement.adapters.httpcheck import unparsed_decision

    assert summarize(T0, RequestView("-", "/"), unparsed_decision(mode, "path"), KEY).decision == "unparsed"


# ------------------------------------------------------------------ Shim.handle (no sockets, no Kafka)


def _shim(**settings: Any) -> Shim:
    return Shim(ShimSettings(bootstrap=None, **settings))


@pytest.mark.parametrize(("mode", "status"), [("allow", 200), ("deny", 403)])
def test_before_sync_the_failure_mode_answers(mode: str, status: int) -> None:
    shim = _shim(failure_mode=mode)
    response = shim.handle("GET", "/orders/1", {}, "10.0.0.7")
    assert response.startswith(f"HTTP/1.1 {status} ".encode()) and b"kubeward-unsynced" in response


def test_after_sync_verdicts_decide(verdict_factory: Any) -> None:
    shim = _shim(path_prefix="/authz")
    shim.synced.set()
    shim.cache.apply(verdict_factory(subject=Subject(kind="ip", value="203.0.113.7"), expires_at=4_102_444_800.0))
    blocked = shim.handle("GET", "/authz/orders/1", {b"x-forwarded-for": b"203.0.113.7"}, "127.0.0.1")
    allowed = shim.handle("GET", "/authz/orders/1", {}, "127.0.0.1")
    assert blocked.startswith(b"HTTP/1.1 403 ") and allowed.startswith(b"HTTP/1.1 200 ")
    assert shim.decision_counts() == {"deny:enforce": 1, "allow": 1}
    pending = shim.take_pending()
    assert [p[1].path for p in pending] == ["/orders/1", "/orders/1"] and shim.take_pending() == []


@pytest.mark.parametrize(("report", "kept"), [("all", 2), ("denied", 1), ("none", 0)])
def test_report_setting_selects_what_is_reported(report: str, kept: int) -> None:
    shim = _shim(report=report, policy={"default_mode": "enforce"})
    shim.synced.set()
    shim.handle("GET", "/ok", {}, None)
    shim.handle("GET", "/files/../../etc/passwd", {}, None)
    assert len(shim.take_pending()) == kept


def test_the_adapter_setting_picks_the_adapter() -> None:
    assert [_shim(adapter=name).adapter.name for name in ("envoy", "nginx", "traefik")] == ["envoy", "nginx", "traefik"]


@pytest.mark.parametrize(
    ("adapter", "status", "action"),
    [("envoy", 429, None), ("traefik", 429, None), ("nginx", 403, b"x-kubeward-action: throttle")],
)
def test_a_throttle_verdict_is_answered_in_each_data_planes_terms(verdict_factory: Any, adapter: str, status: int, action: bytes | None) -> None:
    shim = _shim(adapter=adapter)
    shim.synced.set()
    shim.cache.apply(verdict_factory(subject=Subject(kind="ip", value="203.0.113.7"), action="throttle", rate_per_s=0.001, burst=1, expires_at=4_102_444_800.0))
    headers = {b"x-forwarded-for": b"203.0.113.7", b"x-original-method": b"GET", b"x-original-uri": b"/a", b"x-forwarded-method": b"GET", b"x-forwarded-uri": b"/a"}
    first, second = (shim.handle("GET", "/a", dict(headers), "127.0.0.1") for _ in range(2))
    assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"retry-after: " in second and (action is None or action in second)
    assert shim.decision_counts() == {"allow": 1, "throttle:enforce": 1}


@pytest.mark.parametrize(("mode", "status"), [("allow", 200), ("deny", 403)])
def test_an_unparsed_check_answers_per_failure_mode_and_is_counted_and_reported(mode: str, status: int) -> None:
    shim = _shim(adapter="nginx", failure_mode=mode, report="denied")
    shim.synced.set()
    answer = shim.handle("GET", "/_kubeward/check", {b"x-original-method": b"GET"}, "10.0.0.7")
    assert answer.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"x-kubeward-decision: unparsed" in answer and b"unparsed:x-original-uri" in answer
    assert shim.unparsed == 1 and shim.decision_counts() == {"allow": 0}
    [(_, view, decision)] = shim.take_pending()
    assert (view.ip, decision.would, decision.enforced) == ("10.0.0.7", "unparsed", mode == "deny")


def test_handle_unparsed_answers_garbage_the_http_parser_rejected() -> None:
    shim = _shim(failure_mode="deny")
    answer = shim.handle_unparsed("-", "/", "10.0.0.7", UnparsedRequest("http", "not HTTP/1.1"))
    assert answer.startswith(b"HTTP/1.1 403 ") and b"unparsed:http" in answer and shim.unparsed == 1


def test_no_unparsed_report_when_reports_are_off() -> None:
    shim = _shim(adapter="traefik", report="none")
    shim.handle("GET", "/", {}, None)
    assert shim.unparsed == 1 and shim.take_pending() == []


def test_decide_view_decides_counts_and_reports_like_handle() -> None:
    shim = _shim(policy={"default_mode": "enforce"})
    shim.synced.set()
    benign, attack = RequestView("GET", "/ok", ip="10.0.0.7"), RequestView("GET", "/files/../../etc/passwd", ip="10.0.0.7")
    assert shim.decide_view(benign) is ALLOW
    decided = shim.decide_view(attack)
    assert (decided.status, decided.would, decided.findings) == (403, "deny", ("traversal",))
    assert shim.decision_counts() == {"allow": 1, "deny:enforce": 1} and len(shim.take_pending()) == 2


def test_set_policy_swaps_the_policy_the_next_check_uses() -> None:
    shim = _shim()
    shim.synced.set()
    attack = RequestView("GET", "/files/../../etc/passwd")
    assert shim.decide_view(attack).status == 200
    shim.set_policy(Policy(default_mode="enforce"))
    assert shim.decide_view(attack).status == 403


def test_a_shim_can_be_given_its_adapter() -> None:
    settings = ShimSettings(bootstrap=None, adapter="nginx")
    adapter = build_adapter(settings)
    assert Shim(settings, adapter).adapter is adapter


def test_inline_inspection_denies_before_the_verdict_cache_has_synced_and_nothing_is_learned() -> None:
    from enforcement.decision import RequestView

    shim = Shim(ShimSettings(bootstrap=None, failure_mode="allow", policy={"default_mode": "enforce"}))
    assert not shim.synced.is_set()
    attack = shim.decide_view(RequestView("GET", "/search?q=%27%20UNION%20SELECT%20password%20FROM%20users--"))
    assert (attack.status, attack.would) == (403, "deny") and attack.reason == "inline:sqli"
    benign = shim.decide_view(RequestView("POST", "/api/users/signup", headers={"content-type": "application/json"}, body=b'{"email": "a@b.c"}'))
    assert benign.reason == "kubeward-unsynced" and benign.status == 200
    assert shim.schema is not None and shim.schema.stats()["learned"] == 0


def test_the_report_carries_the_external_bit_the_adapter_derived() -> None:
    """``source.external`` as a collector sets it, so ``policy suggest`` names a client only the shim saw by its network."""
    outside = RequestView("GET", "/x", None, None, "198.51.100.7", "orders", "shop", external=True)
    assert summarize(T0, outside, ALLOW, KEY).source.external is True
    assert summarize(T0, _view("/x"), ALLOW, KEY).source.external is False
    # a workload is never external, whatever a view says (the report names the workload, as peer_of does)
    assert summarize(T0, RequestView("GET", "/x", "shop/web", None, "198.51.100.7", external=True), ALLOW, KEY).source.external is False
