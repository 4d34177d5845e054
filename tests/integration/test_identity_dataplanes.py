"""Identity nobody can forge, behind the real data planes (issue 9, item 2).

Each shipped configuration (Envoy ext_authz HTTP, nginx auth_request, Traefik
ForwardAuth from ``deploy/dataplanes/``; Envoy ext_authz gRPC) on 127.0.0.1
asks a real shim; the client writes every identity header it can think of:
``x-forwarded-for``, ``x-real-ip``, ``forwarded``, ``x-forwarded-client-cert``,
``x-kubeward-principal``/``-source-workload``/``-namespace``/``-destination``.

* the shim names the real client (the address the data plane saw), its JWT
  principal and the configured destination, never the forged ones;
* rotating the forged address makes no new identity, and a block verdict on the
  client's real address is not escaped by it;
* a caller that reaches the shim's gRPC port itself (no data plane) is the
  client: with ``trusted_data_planes`` naming another address, what its
  ``CheckRequest`` forwards counts for nothing (the HTTP port's case is a unit
  test, ``tests/enforcement/test_adapters.py``: two shims' servers cannot share
  this process's metrics registry).
"""

from __future__ import annotations

import http.client
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from deploy.runtime import proxies
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port
from enforcement.adapters.envoy_grpc import EnvoyGrpcAdapter, GrpcAuthzServer
from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.settings import ShimSettings
from enforcement.shim import Shim
from ingest import Subject, Verdict
from ingest.identity import IdentityConfig, IdentityResolver
from tests.integration.envoy_util import Envoy, Upstream, free_ports, request, retarget
from tests.integration.test_dataplanes import JWT_SECRET, ShimThread, call, principal, token

pytestmark = pytest.mark.integration

NAMES = ["envoy", "nginx", "traefik"]
START = {"envoy": proxies.start_envoy, "nginx": proxies.start_nginx, "traefik": proxies.start_traefik}
VICTIM_IP = "203.0.113.66"
FORGED = {
    "x-forwarded-for": VICTIM_IP,
    "x-real-ip": VICTIM_IP,
    "forwarded": f"for={VICTIM_IP}",
    "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/kube-system/sa/admin",
    "x-kubeward-principal": "victim",
    "x-kubeward-source-workload": "kube-system/admin",
    "x-kubeward-namespace": "kube-system",
    "x-kubeward-destination": "billing/payments",
}


@dataclass
class Plane:
    name: str
    proxy: proxies.Proxy
    shim: Shim


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        yield up


@pytest.fixture(scope="module", params=NAMES)
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[Plane]:
    name = request.param
    settings = ShimSettings(
        bootstrap=None, port=free_port(), admin_port=free_port(), adapter=name, report="all",
        identity={"jwt_hs256_secret": JWT_SECRET.decode()}, policy={"default_mode": "enforce"},
    )  # fmt: skip  (shipped identity defaults: trusted_hops 1, loopback data planes)
    with ShimThread(settings) as running, START[name](tmp_path_factory.mktemp(f"identity-{name}"), settings.port, upstream.port) as proxy:
        yield Plane(name, proxy, running.shim)


def _reported(shim: Shim, path: str) -> RequestView:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = [view for _, view, _ in shim.take_pending() if view.path.startswith(path)]
        if found:
            return found[-1]
        time.sleep(0.02)
    raise AssertionError(f"no report for {path}")


def test_forged_identity_headers_name_nobody_but_the_real_client(plane: Plane) -> None:
    plane.shim.take_pending()
    answer = call(plane.proxy, "/orders/forged", {"authorization": token("mallory"), **FORGED})
    assert answer.status == 200, answer
    view = _reported(plane.shim, "/orders/forged")
    assert (view.ip, view.source_workload, view.principal) == ("127.0.0.1", None, principal("mallory"))
    assert (view.service, view.namespace) == ("orders", "shop")  # what each configuration names, not billing/payments
    assert not {f"ip:{VICTIM_IP}", "principal:victim", "workload:kube-system/admin"} & set(view.subject_keys())


def test_rotating_the_forwarded_address_neither_makes_identities_nor_escapes_a_block(plane: Plane) -> None:
    plane.shim.take_pending()
    for i in range(20):
        assert call(plane.proxy, f"/orders/rot{i}", {"x-forwarded-for": f"198.18.0.{i}"}).status == 200
    time.sleep(0.2)
    keys = {view.subject_keys() for _, view, _ in plane.shim.take_pending() if view.path.startswith("/orders/rot")}
    assert keys == {("actor:127.0.0.1|-", "ip:127.0.0.1")}
    now = time.time()
    plane.shim.cache.apply(Verdict(id="identity-block-ip", subject=Subject(kind="ip", value="127.0.0.1"), action="block", mode="enforce",
                                   expires_at=now + 600, issued_at=now, evidence_time=now))
    try:
        statuses = {call(plane.proxy, f"/orders/esc{i}", {"x-forwarded-for": f"198.18.1.{i}", **FORGED}).status for i in range(10)}
        assert statuses == {403}
    finally:
        plane.shim.cache.entries.pop("ip:127.0.0.1", None)


# ------------------------------------------------------------------ Envoy ext_authz gRPC (shipped ext_authz-grpc.yaml)


class Recorder:
    def __init__(self) -> None:
        self.views: list[RequestView] = []

    def decide(self, view: RequestView) -> Decision:
        self.views.append(view)
        return ALLOW


@pytest.fixture(scope="module")
def grpc_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Recorder, Upstream]]:
    recorder = Recorder()
    server = GrpcAuthzServer(recorder.decide, EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=1))))
    app = Upstream().start()
    try:
        port = server.start("127.0.0.1", 0)
        listener, admin = free_ports(2)
        config = retarget("ext_authz-grpc.yaml", listener, admin, {"app": app.port, "kubeward_authz": port})
        envoy = Envoy(config, tmp_path_factory.mktemp("identity-grpc"), admin).start()
        try:
            yield listener, recorder, app
        finally:
            envoy.stop()
    finally:
        server.stop()
        app.stop()


def _client_on(address: str, port: int, path: str, headers: dict[str, str]) -> int:
    """A request from a chosen loopback address (127.0.0.0/8 is all this machine's)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(address, 0))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.sock = sock
    try:
        conn.request("GET", path, headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_grpc_checks_name_the_address_envoy_saw(grpc_plane: Any) -> None:
    port, recorder, app = grpc_plane
    assert _client_on("127.0.0.7", port, "/orders/g1", {"authorization": token("mallory"), **FORGED}) == 200
    view = next(v for v in reversed(recorder.views) if v.path == "/orders/g1")
    assert view.peer_ip == "127.0.0.7", "source.address is Envoy's socket peer, not an x-forwarded-for entry"
    assert (view.ip, view.source_workload, view.service) == ("127.0.0.7", None, "orders")
    assert view.headers is not None and "x-kubeward-principal" not in view.headers and "x-kubeward-destination" not in view.headers
    status, _, _ = request(port, "GET", "/orders/g2", {"x-forwarded-for": VICTIM_IP})
    seen = next(r for r in reversed(app.requests) if r["path"] == "/orders/g2")
    entries = [e.strip() for e in seen["headers"]["x-forwarded-for"].split(",")]
    assert status == 200 and len(entries) == 2 and entries[0] == VICTIM_IP  # Envoy appended an entry of its own (use_remote_address)


def test_a_grpc_caller_outside_the_data_planes_is_the_client() -> None:
    """The shim's gRPC port reached directly (the data planes are elsewhere, 127.0.0.2): a hand-made CheckRequest naming
    a victim's address, workload and destination names only its sender."""
    import grpc

    from enforcement.adapters.envoy_grpc import SERVICE_NAME
    from ingest.proto import envoy_auth_pb2 as auth

    recorder = Recorder()
    server = GrpcAuthzServer(recorder.decide, EnvoyGrpcAdapter(IdentityResolver(IdentityConfig(trusted_hops=1, trusted_data_planes=("127.0.0.2/32",)))))
    port = server.start("127.0.0.1", 0)
    try:
        forged = auth.CheckRequest()
        forged.attributes.source.address.socket_address.address = VICTIM_IP
        http_request = forged.attributes.request.http
        http_request.method, http_request.path, http_request.host = "GET", "/orders/direct", "orders.shop.svc.cluster.local"
        http_request.headers.update(FORGED)
        forged.attributes.context_extensions["service"] = "billing/payments"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            check = channel.unary_unary(f"/{SERVICE_NAME}/Check", request_serializer=auth.CheckRequest.SerializeToString,
                                        response_deserializer=auth.CheckResponse.FromString)
            check(forged, timeout=5)
    finally:
        server.stop()
    (view,) = recorder.views
    assert (view.ip, view.peer_ip, view.source_workload, view.service) == ("127.0.0.1", "127.0.0.1", None, "orders")
