"""enforcement.shim pure helpers: request_view, _render, summarize, and Shim.handle without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.settings import ShimSettings
from enforcement.shim import Shim, _render, request_view, summarize
from ingest import RequestSummary, Subject
from ingest.templating import hash_object_id
from tests.conftest import T0

SPIFFE = "By=spiffe://cluster.local/ns/shop/sa/orders;Hash=abc123;Subject=\"\";URI=spiffe://cluster.local/ns/shop/sa/web"


# ------------------------------------------------------------------ request_view


def _fields(view: RequestView) -> tuple[str | None, ...]:
    return (view.method, view.path, view.source_workload, view.principal, view.ip, view.service, view.namespace)


def _keys_of(view: RequestView) -> tuple[str, ...]:
    return RequestView(*_fields(view)).subject_keys()


def test_request_view_reads_identity_headers() -> None:
    headers = {
        b"x-kubeward-source-workload": b"shop/web",
        b"x-kubeward-principal": b"alice",
        b"x-forwarded-for": b"203.0.113.7, 10.0.0.1",
        b"host": b"orders.shop.svc.cluster.local:8080",
        b"x-kubeward-namespace": b"shop",
    }
    view = request_view("GET", "/orders/1", headers, "10.9.9.9")
    assert _fields(view) == ("GET", "/orders/1", "shop/web", "alice", "203.0.113.7", "orders", "shop")
    assert view.subject_keys() == ("actor:shop/web|alice", "principal:alice", "workload:shop/web", "ip:203.0.113.7")


def test_request_view_without_headers_uses_the_peer() -> None:
    view = request_view("POST", "/", {}, "10.9.9.9")
    assert _fields(view) == ("POST", "/", None, None, "10.9.9.9", None, None)
    assert view.subject_keys() == ("actor:10.9.9.9|-", "ip:10.9.9.9")


def test_request_view_keys_always_match_the_headers_of_that_request() -> None:
    """request_view may memoise identities; each request must still get its own keys."""
    a = {b"x-kubeward-source-workload": b"shop/web", b"x-kubeward-principal": b"alice"}
    b = {b"x-kubeward-source-workload": b"shop/web", b"x-kubeward-principal": b"bob"}
    views = [request_view("GET", p, h, ip) for p, h, ip in [("/1", a, "1.1.1.1"), ("/2", b, "1.1.1.1"), ("/3", a, "2.2.2.2"), ("/4", a, "1.1.1.1")]]
    assert [v.path for v in views] == ["/1", "/2", "/3", "/4"]
    assert [v.subject_keys() for v in views] == [_keys_of(v) for v in views]
    assert [v.principal for v in views] == ["alice", "bob", "alice", "alice"] and views[2].ip == "2.2.2.2"


@pytest.mark.parametrize(
    ("headers", "service"),
    [
        ({b"host": b"orders"}, "orders"),
        ({b"host": b"orders:8080"}, "orders"),
        ({b"host": b"orders.shop.svc"}, "orders"),
        ({b"host": b"orders.shop", b"x-kubeward-destination": b"payments"}, "payments"),
        ({b"x-kubeward-destination": b"payments.bank"}, "payments"),
        ({b"host": b""}, None),
    ],
    ids=["bare", "port", "fqdn", "destination-header-wins", "destination-first-label", "empty-host"],
)
def test_destination_is_the_first_host_label(headers: dict[bytes, bytes], service: str | None) -> None:
    assert request_view("GET", "/", headers, None).service == service


@pytest.mark.parametrize(
    ("xff", "ip"),
    [(b"203.0.113.7", "203.0.113.7"), (b" 203.0.113.7 ,10.0.0.1, 10.0.0.2", "203.0.113.7"),
     (b"", "10.9.9.9")],
    ids=["single", "first-of-many", "empty-falls-back"],
)
def test_ip_is_the_first_forwarded_for_entry(xff: bytes, ip: str) -> None:
    assert request_view("GET", "/", {b"x-forwarded-for": xff}, "10.9.9.9").ip == ip


def test_workload_falls_back_to_the_spiffe_id_in_xfcc() -> None:
    assert request_view("GET", "/", {b"x-forwarded-client-cert": SPIFFE.encode()}, None).source_workload == "shop/web"


def test_the_workload_header_beats_xfcc() -> None:
    headers = {b"x-kubeward-source-workload": b"lab/tool", b"x-forwarded-client-cert": SPIFFE.encode()}
    assert request_view("GET", "/", headers, None).source_workload == "lab/tool"


@pytest.mark.parametrize(
    "xfcc",
    ["Hash=abc;Subject=\"CN=web\"", "URI=https://example.com/ns/shop/sa/web", "URI=spiffe://td/other/shop/sa/web", "URI=spiffe://td/ns/shop"],
    ids=["no-uri", "not-spiffe", "not-ns", "too-short"],
)
def test_xfcc_without_a_spiffe_workload_gives_none(xfcc: str) -> None:
    assert request_view("GET", "/", {b"x-forwarded-client-cert": xfcc.encode()}, None).source_workload is None


def test_xfcc_with_several_elements_gives_a_clean_workload() -> None:
    xfcc = "By=spiffe://td/ns/shop/sa/orders;URI=spiffe://td/ns/shop/sa/web,By=spiffe://td/ns/shop/sa/gw;URI=spiffe://td/ns/edge/sa/gateway"
    assert request_view("GET", "/", {b"x-forwarded-client-cert": xfcc.encode()}, None).source_workload in {"shop/web", "edge/gateway"}


def test_an_empty_principal_header_means_no_principal() -> None:
    view = request_view("GET", "/", {b"x-kubeward-source-workload": b"shop/web", b"x-kubeward-principal": b""}, None)
    assert view.principal is None


def test_header_values_are_decoded_as_latin1() -> None:
    assert request_view("GET", "/", {b"x-kubeward-principal": "jos\xe9".encode("latin-1")}, None).principal == "jos\xe9"


# ------------------------------------------------------------------ _render


def _parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["content-length"]) == len(body)
    return status, headers, body


def test_render_allow() -> None:
    status, headers, body = _parse(_render(ALLOW))
    assert (status, headers["x-kubeward-decision"], body) == ("HTTP/1.1 200 OK", "allow", b"")
    assert "x-kubeward-would" not in headers and "x-kubeward-reason" not in headers


def test_render_enforced_deny() -> None:
    status, headers, body = _parse(_render(Decision(403, "deny", True, "bola_breadth", verdict_id="v1")))
    assert status == "HTTP/1.1 403 Forbidden"
    assert headers == {"content-length": str(len(body)), "x-kubeward-decision": "deny", "x-kubeward-reason": "bola_breadth"}
    assert body == b"kubeward: deny (bola_breadth)\n"


def test_render_enforced_throttle() -> None:
    status, headers, body = _parse(_render(Decision(429, "throttle", True, "auth_failures", retry_after=7)))
    assert status == "HTTP/1.1 429 Too Many Requests"
    assert (headers["retry-after"], headers["x-kubeward-decision"], headers["x-kubeward-reason"]) == ("7", "throttle", "auth_failures")
    assert body == b"kubeward: throttle (auth_failures)\n"


@pytest.mark.parametrize(("would", "retry"), [("deny", None), ("throttle", 3)])
def test_render_observe_lets_the_request_pass(would: str, retry: int | None) -> None:
    status, headers, body = _parse(_render(Decision(200, would, False, "inline:injection", retry, ("injection",))))
    assert (status, body) == ("HTTP/1.1 200 OK", b"")
    assert (headers["x-kubeward-decision"], headers["x-kubeward-would"], headers["x-kubeward-reason"]) == ("allow", would, "inline:injection")
    assert "retry-after" not in headers


def test_render_of_an_allow_equal_to_allow_but_not_the_constant() -> None:
    status, headers, _ = _parse(_render(Decision(200, "allow", False, "kubeward-unsynced")))
    assert status == "HTTP/1.1 200 OK" and headers["x-kubeward-decision"] == "allow"
    assert headers["x-kubeward-reason"] == "kubeward-unsynced"


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
    blocked = shim.handle("GET", "/authz/orders/1", {b"x-forwarded-for": b"203.0.113.7"}, "10.0.0.7")
    allowed = shim.handle("GET", "/authz/orders/1", {}, "10.0.0.7")
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
