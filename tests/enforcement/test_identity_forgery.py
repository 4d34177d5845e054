"""Identity nobody can forge through the gRPC adapters (issue 9, item 2): Envoy ext_authz gRPC and ext_proc.

Everything in a ``CheckRequest`` or a ``ProcessingRequest`` is the caller's word:
``source.address``, ``x-forwarded-for``, ``x-forwarded-client-cert``, the
destination (header or ``context_extensions``). The adapters believe it only
from a trusted data plane (``identity.trusted_data_planes``, loopback by
default); a direct caller is the client. Through a trusted Envoy, the client
address is the one Envoy saw, whether or not Envoy appended it to
``x-forwarded-for``. The HTTP adapters' cases are in ``test_adapters.py``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from enforcement.adapters.envoy_extproc import ExchangeRedactor, ExtProcRedactionServer, RedactionStats
from enforcement.adapters.envoy_grpc import AuthorizationServicer, EnvoyGrpcAdapter, caller_of
from enforcement.decision import ALLOW, RequestView
from enforcement.redaction import RedactionSettings
from ingest.identity import IdentityConfig, IdentityResolver
from ingest.proto import envoy_auth_pb2 as auth

SPIFFE_ADMIN = "By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/kube-system/sa/admin"
ENVOY = "127.0.0.1"
#: a pod that reaches the shim's gRPC port itself, with no data plane in between
ATTACKER = "10.9.9.9"


def _check(source: str = "10.1.2.3", **headers: str) -> auth.CheckRequest:
    req = auth.CheckRequest()
    attrs = req.attributes
    attrs.source.address.socket_address.address = source
    http = attrs.request.http
    http.method, http.path, http.host = "GET", "/orders/1", "orders.shop.svc.cluster.local"
    http.headers.update({"authorization": "Bearer opaque-token", **headers})
    attrs.context_extensions["service"] = "shop/orders"
    return auth.CheckRequest.FromString(req.SerializeToString())


def _adapter(hops: int = 1) -> EnvoyGrpcAdapter:
    return EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=hops)))


@pytest.mark.parametrize(
    ("xff", "hops", "ip"),
    [
        ("198.51.100.4", 1, "10.1.2.3"),  # use_remote_address false: Envoy appended nothing, the entry is the client's writing
        ("6.6.6.6, 10.1.2.3", 1, "10.1.2.3"),  # use_remote_address true: Envoy appended the address it saw
        (None, 1, "10.1.2.3"),
        ("203.0.113.7, 10.1.2.3", 2, "203.0.113.7"),  # a load balancer in front of Envoy appended the client
        ("6.6.6.6, 203.0.113.7", 2, "203.0.113.7"),  # the same, use_remote_address false
    ],
    ids=["envoy-appended-nothing", "envoy-appended", "no-xff", "lb-then-envoy", "lb-envoy-appended-nothing"],
)
def test_the_grpc_client_address_is_the_one_envoy_saw_never_a_client_entry(xff: str | None, hops: int, ip: str) -> None:
    view = _adapter(hops).view(_check(**({"x-forwarded-for": xff} if xff else {})), ENVOY)
    assert (view.ip, view.peer_ip) == (ip, "10.1.2.3")


def test_a_grpc_caller_that_is_no_data_plane_forwards_no_identity() -> None:
    forged = _check(source="203.0.113.7", **{"x-forwarded-for": "203.0.113.7", "x-forwarded-client-cert": SPIFFE_ADMIN,
                                               "x-kubeward-destination": "billing/payments"})
    view = _adapter().view(forged, ATTACKER)
    assert (view.ip, view.peer_ip, view.source_workload) == (ATTACKER, ATTACKER, None)
    assert (view.service, view.namespace) == ("orders", "shop")  # from :authority; context_extensions are the caller's word too
    assert view.subject_keys()[0] == f"actor:{ATTACKER}|{view.principal}"
    trusted = _adapter().view(forged, ENVOY)
    assert (trusted.ip, trusted.source_workload) == ("203.0.113.7", "kube-system/admin")


class _Context:
    def __init__(self, peer: str) -> None:
        self._peer = peer

    def peer(self) -> str:
        return self._peer

    async def abort(self, code: Any, details: str) -> None:
        raise AssertionError(details)


@pytest.mark.parametrize(("peer", "ip"), [(f"ipv4:{ATTACKER}:40000", ATTACKER), ("ipv4:127.0.0.1:40000", "10.1.2.3"), ("ipv6:[::1]:1", "10.1.2.3")])
def test_the_servicer_judges_each_call_by_its_grpc_peer(peer: str, ip: str) -> None:
    seen: list[RequestView] = []
    servicer = AuthorizationServicer(lambda v: seen.append(v) or ALLOW, _adapter())
    asyncio.run(servicer.Check(_check(source="203.0.113.7" if ip == ATTACKER else "10.1.2.3"), _Context(peer)))
    assert seen[0].ip == ip


def test_caller_of_reads_the_grpc_peer_and_knows_when_it_cannot() -> None:
    assert caller_of(_Context("ipv6:[fd00::9]:1")) == "fd00::9" and caller_of(_Context("unix:/run/s")) is None and caller_of(object()) is None


def test_ext_proc_believes_forwarded_identity_only_from_a_data_plane() -> None:
    headers = {":method": "GET", ":path": "/users/1", ":authority": "orders.shop.svc.cluster.local",
               "x-forwarded-for": "6.6.6.6, 203.0.113.7", "x-forwarded-client-cert": SPIFFE_ADMIN, "x-kubeward-destination": "billing/payments"}
    resolver = IdentityResolver(IdentityConfig(trusted_hops=1))

    def view(caller: str | None) -> RequestView:
        return ExchangeRedactor(RedactionSettings(), resolver, None, RedactionStats(), caller).view_of(dict(headers))

    direct, envoy = view(ATTACKER), view(ENVOY)
    assert (direct.ip, direct.source_workload, direct.service) == (ATTACKER, None, "orders")
    assert (envoy.ip, envoy.source_workload, envoy.service) == ("203.0.113.7", "kube-system/admin", "payments")


def test_an_ext_proc_stream_is_judged_by_its_peer() -> None:
    from ingest.proto import envoy_core_pb2 as core
    from ingest.proto import envoy_ext_proc_pb2 as ext_proc

    reports: list[Any] = []
    server = ExtProcRedactionServer(RedactionSettings(responses="all"), IdentityResolver(IdentityConfig(trusted_hops=1)),
                                    lookup=lambda v: None, report=lambda *r: reports.append(r))
    seen: list[RequestView] = []
    server.lookup = lambda v: seen.append(v)  # type: ignore[assignment,func-returns-value]
    sent = {":method": "GET", ":path": "/", ":authority": "orders", "x-forwarded-for": "203.0.113.7"}
    message = ext_proc.ProcessingRequest(request_headers=ext_proc.HttpHeaders(headers=core.HeaderMap(headers=[
        core.HeaderValue(key=k, raw_value=v.encode()) for k, v in sent.items()])))

    async def run() -> None:
        async def feed() -> Any:
            yield message

        async for _ in server.process(feed(), ATTACKER):
            pass

    asyncio.run(run())
    assert seen[0].ip == ATTACKER
