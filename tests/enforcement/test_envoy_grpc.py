"""enforcement.adapters.envoy_grpc without sockets: CheckRequest -> RequestView, Decision -> CheckResponse."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from enforcement.adapters.base import Adapter
from enforcement.adapters.envoy_grpc import SERVICE_NAME, AuthorizationServicer, EnvoyGrpcAdapter
from enforcement.decision import ALLOW, Decision, RequestView
from ingest.identity import IdentityConfig, IdentityResolver
from ingest.proto import envoy_auth_pb2 as auth
from ingest.proto import envoy_core_pb2 as core

TOKEN = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2ln"


def check_request(path: str = "/orders/1?x=1", service: str | None = "shop/orders", raw_headers: bool = False, **http: Any) -> auth.CheckRequest:
    """A CheckRequest as Envoy 1.40 sends it, through a serialize/parse round trip."""
    headers = {":authority": "orders.shop.svc.cluster.local", ":method": "GET", ":path": path, "authorization": TOKEN, "x-request-id": "rid-1", "x-forwarded-for": "198.51.100.4"}
    req = auth.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = "10.1.2.3"
    attrs.source.address.socket_address.port_value = 40000
    h = attrs.request.http
    h.id, h.method, h.path, h.host, h.scheme, h.protocol = "13775956452966204563", "GET", path, "orders.shop.svc.cluster.local", "http", "HTTP/1.1"
    if raw_headers:
        h.header_map.headers.extend(core.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items())
    else:
        h.headers.update(headers)
    for key, value in http.items():
        setattr(h, key, value)
    if service is not None:
        attrs.context_extensions["service"] = service
    return auth.CheckRequest.FromString(req.SerializeToString())


def roundtrip(resp: auth.CheckResponse) -> auth.CheckResponse:
    return auth.CheckResponse.FromString(resp.SerializeToString())


def headers_of(options: Any) -> dict[str, str]:
    return {o.header.key: o.header.value for o in options}


def test_the_adapter_satisfies_the_protocol() -> None:
    adapter: Adapter[auth.CheckRequest, auth.CheckResponse] = EnvoyGrpcAdapter()
    assert adapter.name == "envoy-grpc" and SERVICE_NAME == "envoy.service.auth.v3.Authorization"


def test_view_reads_method_path_headers_peer_and_request_id() -> None:
    view = EnvoyGrpcAdapter().view(check_request())
    assert (view.method, view.path, view.peer_ip, view.ip) == ("GET", "/orders/1?x=1", "10.1.2.3", "10.1.2.3")
    assert view.request_id == "rid-1"  # x-request-id, not attributes.request.http.id (Envoy's stream id)
    assert view.headers is not None and view.headers["authorization"] == TOKEN
    assert view.authority == "orders.shop.svc.cluster.local"
    assert view.principal is not None and view.principal.startswith("jwt:") and view.auth_type == "jwt-unverified"
    assert view.body is None


def test_raw_header_map_gives_the_same_view() -> None:
    adapter = EnvoyGrpcAdapter()
    assert adapter.view(check_request(raw_headers=True)) == adapter.view(check_request())


def test_destination_prefers_the_route_config_then_the_header_then_the_authority() -> None:
    adapter = EnvoyGrpcAdapter()
    assert (adapter.view(check_request()).service, adapter.view(check_request()).namespace) == ("orders", "shop")
    forged = check_request()
    forged.attributes.request.http.headers["x-kubeward-destination"] = "billing/payments"
    assert adapter.view(forged).service == "orders"  # operator's per-route config wins over a header
    forged.attributes.context_extensions.clear()
    assert adapter.view(forged).service == "payments"
    bare = check_request(service=None)
    assert (adapter.view(bare).service, adapter.view(bare).namespace) == ("orders", "shop")


def test_trusted_hops_count_from_the_address_envoy_saw() -> None:
    """source.address is what Envoy saw; an x-forwarded-for not ending with it was written by the client (use_remote_address false)."""
    view = EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=1))).view(check_request())
    assert (view.ip, view.peer_ip) == ("10.1.2.3", "10.1.2.3")
    behind_a_proxy = EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=2))).view(check_request())
    assert behind_a_proxy.ip == "198.51.100.4"


@pytest.mark.parametrize(("fields", "expected"), [({"raw_body": b'{"a":"\xc3\xa9"}'}, b'{"a":"\xc3\xa9"}'), ({"body": '{"a":"é"}'}, '{"a":"é"}'.encode()), ({}, None)])
def test_body_from_raw_body_or_body(fields: dict[str, Any], expected: bytes | None) -> None:
    assert EnvoyGrpcAdapter().view(check_request(**fields)).body == expected


def test_allow_is_ok_and_overwrites_the_decision_header_upstream() -> None:
    resp = roundtrip(EnvoyGrpcAdapter().respond(ALLOW, RequestView("GET", "/")))
    assert resp.status.code == 0 and resp.WhichOneof("http_response") == "ok_response"
    (option,) = resp.ok_response.headers
    assert (option.header.key, option.header.value) == ("x-kubeward-decision", "allow")
    assert option.append_action == core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_observe_mode_allows_and_says_what_would_have_happened() -> None:
    resp = roundtrip(EnvoyGrpcAdapter().respond(Decision(200, "throttle", False, "rate:x", 3), RequestView("GET", "/")))
    assert resp.status.code == 0
    assert headers_of(resp.ok_response.headers) == {"x-kubeward-decision": "allow", "x-kubeward-would": "throttle", "x-kubeward-reason": "rate:x"}


def test_deny_is_403_with_reason_and_body() -> None:
    resp = roundtrip(EnvoyGrpcAdapter().respond(Decision(403, "deny", True, "block:bola"), RequestView("GET", "/")))
    assert resp.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    denied = resp.denied_response
    assert denied.status.code == 403 and denied.body == "kubeward: deny\n"  # the reason travels in a header only
    assert headers_of(denied.headers) == {"x-kubeward-decision": "deny", "x-kubeward-reason": "block:bola", "content-type": "text/plain"}


def test_throttle_is_429_with_retry_after() -> None:
    resp = roundtrip(EnvoyGrpcAdapter().respond(Decision(429, "throttle", True, "rate:x", retry_after=12), RequestView("GET", "/")))
    assert resp.status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert resp.denied_response.status.code == 429
    assert headers_of(resp.denied_response.headers)["retry-after"] == "12"


def test_responses_are_built_once_per_decision() -> None:
    adapter = EnvoyGrpcAdapter()
    deny = Decision(403, "deny", True, "block:x")
    assert adapter.respond(deny, RequestView("GET", "/a")) is adapter.respond(Decision(403, "deny", True, "block:x"), RequestView("POST", "/b"))
    assert adapter.respond(deny, RequestView("GET", "/")) is not adapter.respond(Decision(403, "deny", True, "block:y"), RequestView("GET", "/"))


def test_an_unparsed_check_says_so() -> None:
    resp = EnvoyGrpcAdapter().respond(Decision(200, "unparsed", False, "unparsed:path"), RequestView("GET", "/"))
    assert headers_of(resp.ok_response.headers) == {"x-kubeward-decision": "unparsed", "x-kubeward-reason": "unparsed:path"}


def test_header_values_are_reduced_to_printable_ascii() -> None:
    resp = EnvoyGrpcAdapter().respond(Decision(403, "deny", True, "bad\r\nx-injected: 1 é"), RequestView("GET", "/"))
    assert headers_of(resp.denied_response.headers)["x-kubeward-reason"] == "bad??x-injected: 1 ?"


class FakeContext:
    """The one grpc.aio.ServicerContext call the servicer makes."""

    def __init__(self) -> None:
        self.aborted: tuple[Any, str] | None = None

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise grpc.RpcError(details)


def test_the_servicer_runs_view_decide_respond() -> None:
    seen: list[RequestView] = []

    def decide(view: RequestView) -> Decision:
        seen.append(view)
        return Decision(429, "throttle", True, "rate:x", retry_after=2)

    servicer = AuthorizationServicer(decide, EnvoyGrpcAdapter())
    resp = asyncio.run(servicer.Check(check_request(), FakeContext()))
    assert resp.denied_response.status.code == 429 and seen[0].path == "/orders/1?x=1"
    assert (servicer.checks, servicer.errors) == (1, 0)


def test_a_decision_that_raises_becomes_internal_so_envoy_applies_its_failure_mode() -> None:
    def decide(view: RequestView) -> Decision:
        raise KeyError("bug")

    servicer = AuthorizationServicer(decide, EnvoyGrpcAdapter())
    context = FakeContext()
    with pytest.raises(grpc.RpcError):
        asyncio.run(servicer.Check(check_request(), context))
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.INTERNAL
    assert servicer.errors == 1


def test_the_view_says_whether_the_client_is_outside_the_internal_networks() -> None:
    assert EnvoyGrpcAdapter().view(check_request()).external is False  # source.address 10.1.2.3: in the cluster
    outside = check_request()
    outside.attributes.source.address.socket_address.address = "198.51.100.4"  # the client reached Envoy directly
    assert (EnvoyGrpcAdapter().view(outside).ip, EnvoyGrpcAdapter().view(outside).external) == ("198.51.100.4", True)
    # through one more trusted hop the forwarded client counts, with its own bit
    two_hops = EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=2))).view(check_request())
    assert (two_hops.ip, two_hops.external) == ("198.51.100.4", True)
    # a caller that is no data plane is the client itself
    direct = EnvoyGrpcAdapter().view(check_request(), "203.0.113.9")
    assert (direct.ip, direct.external) == ("203.0.113.9", True)
    inside = EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(internal_networks=("10.0.0.0/8", "198.51.100.0/24")))).view(outside)
    assert inside.external is False
