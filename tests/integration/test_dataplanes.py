"""The shim behind the real data planes: Envoy (ext_authz HTTP), nginx (auth_request), Traefik (ForwardAuth).

Every proxy runs its shipped configuration from deploy/dataplanes/ (ports changed, see
deploy.runtime.proxies) on 127.0.0.1, in front of an echo upstream, asking a real shim over
real sockets. Per data plane:
(a) a benign request is allowed and reaches the upstream with ``x-kubeward-decision: allow``;
(b) an attacker is denied: an inline signature in enforce mode, and a block verdict on its principal;
(c) a throttled principal gets 429 with ``Retry-After`` (nginx through the shipped error_page mapping);
(d) with the shim down or hanging, the configured failure mode answers (allow and deny variants);
(e) client-sent ``x-kubeward-*`` headers never reach the shim or the upstream.
The per-proxy shim runs in this process (so tests can put verdicts in its cache); one Envoy test
runs the ``kubeward shim`` process on the real broker and feeds it signed verdicts through the
control topic.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvloop
import yaml

from deploy.runtime import proxies
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port, start_shim, stop_process
from enforcement.server import serve
from enforcement.settings import ShimSettings
from enforcement.shim import Shim
from ingest import VERDICTS, Scope, Subject, Verdict, sign_verdict
from ingest.principal import hash_principal

pytestmark = pytest.mark.integration

NAMES = ["envoy", "nginx", "traefik"]
START = {"envoy": proxies.start_envoy, "nginx": proxies.start_nginx, "traefik": proxies.start_traefik}
JWT_SECRET = b"dataplane-test-secret"
PRINCIPAL_KEY = b"kubeward-dev-principal-key"
VERDICT_KEY = b"kubeward-dev-verdict-key"
TRAVERSAL = "/files?name=../../etc/passwd"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(sub: str, secret: bytes = JWT_SECRET) -> str:
    """``Bearer <HS256 JWT>`` for subject ``sub``."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps({"sub": sub}).encode())
    return "Bearer " + head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def principal(sub: str) -> str:
    return hash_principal("jwt", sub, PRINCIPAL_KEY)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def upstream(self) -> dict[str, Any]:
        """What the echo upstream saw (only on a response it produced)."""
        return dict(json.loads(self.body))


def call(proxy: proxies.Proxy, path: str, headers: dict[str, str] | None = None, method: str = "GET", timeout: float = 5) -> Answer:
    """One request sent as is (no path normalisation by the client)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def verdict(sub: str, action: str, **extra: Any) -> Verdict:
    now = time.time()
    return Verdict(id=f"test-{action}-{sub}", subject=Subject(kind="principal", value=principal(sub)), action=action, mode="enforce", expires_at=now + 600, issued_at=now, evidence_time=now, **extra)


class ShimThread:
    """``enforcement.server.serve`` on its own uvloop in a thread: real sockets, and the cache reachable from tests."""

    def __init__(self, settings: ShimSettings):
        self.settings = settings
        self.shim = Shim(settings)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="shim-under-test")

    def _main(self) -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop, self._stop = loop, asyncio.Event()
        loop.run_until_complete(serve(self.settings, self._ready, self._stop, shim=self.shim))

    def __enter__(self) -> ShimThread:
        self._thread.start()
        assert self._ready.wait(60), "shim did not start (warm-up included)"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        yield up


@dataclass
class Plane:
    """One data plane in front of the echo upstream, asking an in-process shim."""

    proxy: proxies.Proxy
    shim: Shim


@pytest.fixture(scope="module", params=NAMES)
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[Plane]:
    name = request.param
    settings = ShimSettings(
        bootstrap=None, port=free_port(), admin_port=free_port(), adapter=name, report="none",
        identity={"jwt_hs256_secret": JWT_SECRET.decode(), "trusted_hops": 1}, policy={"default_mode": "enforce"},
    )  # fmt: skip
    with ShimThread(settings) as running, START[name](tmp_path_factory.mktemp(name), settings.port, upstream.port) as proxy:
        yield Plane(proxy, running.shim)


@pytest.fixture(scope="module", params=NAMES)
def shim_down(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[dict[str, proxies.Proxy]]:
    """Per data plane, fail-open in front of a closed port and fail-closed in front of a shim that never answers."""
    name = request.param
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(64)  # connections complete in the kernel, nothing ever answers
    work = tmp_path_factory.mktemp(f"{name}-down")
    try:
        with START[name](work / "open", free_port(), upstream.port, "allow") as fail_open, START[name](work / "closed", hanging.getsockname()[1], upstream.port, "deny") as fail_closed:
            yield {"allow": fail_open, "deny": fail_closed}
    finally:
        hanging.close()


# ------------------------------------------------------------------ (a) benign traffic


def test_a_benign_request_reaches_the_upstream_with_the_decision(plane: Plane, upstream: EchoUpstream) -> None:
    answer = call(plane.proxy, "/orders/81231?expand=lines", {"authorization": token("alice")})
    assert answer.status == 200, answer
    seen = answer.upstream
    assert (seen["path"], seen["headers"]["x-kubeward-decision"]) == ("/orders/81231?expand=lines", "allow")
    assert plane.shim.allowed >= 1


def test_the_data_plane_names_the_destination(plane: Plane) -> None:
    """Each shipped config tells the shim the destination (shop/orders): a verdict scoped to it applies, one scoped elsewhere does not."""
    plane.shim.cache.apply(verdict("carol", "block", scope=Scope(service="orders")))
    plane.shim.cache.apply(verdict("dave", "block", scope=Scope(service="payments")))
    assert call(plane.proxy, "/orders/1", {"authorization": token("carol")}).status == 403
    assert call(plane.proxy, "/orders/1", {"authorization": token("dave")}).status == 200


def test_a_post_with_a_body_is_checked_and_passed_on(plane: Plane) -> None:
    answer = call(plane.proxy, "/orders", {"authorization": token("alice"), "content-type": "application/json"}, method="POST")
    assert answer.status == 200 and answer.upstream["method"] == "POST"


# ------------------------------------------------------------------ (b) attackers


def test_an_inline_signature_denies_in_enforce_mode_and_the_upstream_never_sees_it(plane: Plane, upstream: EchoUpstream) -> None:
    before = len(upstream.seen)
    answer = call(plane.proxy, TRAVERSAL, {"authorization": token("mallory")})
    assert (answer.status, answer.headers.get("x-kubeward-decision")) == (403, "deny")
    assert b"traversal" not in answer.body and "x-kubeward-reason" not in answer.headers
    assert len(upstream.seen) == before
    assert plane.shim.decision_counts().get("deny:enforce", 0) >= 1


def test_a_block_verdict_on_the_principal_denies_it_and_only_it(plane: Plane) -> None:
    plane.shim.cache.apply(verdict("eve", "block"))
    assert call(plane.proxy, "/orders/2", {"authorization": token("eve")}).status == 403
    assert call(plane.proxy, "/orders/2", {"authorization": token("frank")}).status == 200


def test_a_forged_jwt_does_not_carry_the_victims_principal(plane: Plane) -> None:
    plane.shim.cache.apply(verdict("grace", "block"))
    # A token for grace signed with the wrong key yields no principal: not grace's verdict, not grace's identity.
    assert call(plane.proxy, "/orders/3", {"authorization": token("grace", b"wrong")}).status == 200
    assert call(plane.proxy, "/orders/3", {"authorization": token("grace")}).status == 403


# ------------------------------------------------------------------ (c) throttling


def test_a_throttled_principal_gets_429_with_retry_after(plane: Plane, upstream: EchoUpstream) -> None:
    plane.shim.cache.apply(verdict("heidi", "throttle", rate_per_s=0.01, burst=1))
    first = call(plane.proxy, "/orders/4", {"authorization": token("heidi")})
    second = call(plane.proxy, "/orders/4", {"authorization": token("heidi")})
    assert first.status == 200
    assert (second.status, second.headers.get("x-kubeward-decision")) == (429, "throttle")
    assert 1 <= int(second.headers["retry-after"]) <= 100


# ------------------------------------------------------------------ (d) shim down


def test_shim_down_fail_open_lets_requests_through(shim_down: dict[str, proxies.Proxy]) -> None:
    proxy = shim_down["allow"]
    answer = call(proxy, "/orders/5", {"authorization": token("ivan")})
    assert answer.status == 200, (proxy.name, answer)
    assert "x-kubeward-decision" not in answer.upstream["headers"]
    if proxy.name == "envoy":
        assert answer.upstream["headers"]["x-envoy-auth-failure-mode-allowed"] == "true"


def test_shim_hanging_fail_closed_refuses_within_the_timeout(shim_down: dict[str, proxies.Proxy], upstream: EchoUpstream) -> None:
    proxy = shim_down["deny"]
    before = len(upstream.seen)
    started = time.monotonic()
    answer = call(proxy, "/orders/6", {"authorization": token("judy")})
    elapsed = time.monotonic() - started
    expected = {"envoy": 503, "nginx": 503, "traefik": 504}[proxy.name]
    assert answer.status == expected, (proxy.name, answer)
    assert 0.2 <= elapsed < 2.0 and len(upstream.seen) == before
    if proxy.name == "nginx":
        assert answer.headers["x-kubeward-decision"] == "unavailable"


# ------------------------------------------------------------------ (e) header hygiene


FORGED = {
    "x-kubeward-decision": "forged",
    "x-kubeward-reason": "forged",
    "x-kubeward-would": "forged",
    "x-kubeward-source-workload": "kube-system/admin",
    "x-kubeward-namespace": "kube-system",
}


def test_client_kubeward_headers_cannot_assume_another_identity(plane: Plane) -> None:
    plane.shim.cache.apply(verdict("oscar", "block"))
    # oscar is blocked; claiming another principal through a kubeward header must not get him through.
    answer = call(plane.proxy, "/orders/7", {"authorization": token("oscar"), "x-kubeward-principal": "innocent", **FORGED})
    assert answer.status == 403


def test_client_kubeward_headers_never_reach_the_upstream(plane: Plane) -> None:
    answer = call(plane.proxy, "/orders/8", {"authorization": token("peggy"), "x-kubeward-principal": "innocent", **FORGED})
    assert answer.status == 200, answer
    seen = answer.upstream["headers"]
    assert seen["x-kubeward-decision"] == "allow"
    leaked = {k: v for k, v in seen.items() if k.startswith("x-kubeward-") and v in ("forged", "innocent", "kube-system/admin", "kube-system")}
    assert leaked == {}


# ------------------------------------------------------------------ the control topic, end to end (Envoy + Kafka)


def _publish(bootstrap: str, records: list[tuple[str, bytes]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in records:
        producer.send(VERDICTS.name, key=key.encode(), value=value)
    producer.flush()
    producer.close()


def _until(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.time() + timeout
    while True:
        got = check()
        if got or time.time() > deadline:
            return got
        time.sleep(0.1)


def test_envoy_obeys_signed_verdicts_from_the_control_topic(kafka_bootstrap: str, tmp_path: Path, upstream: EchoUpstream) -> None:
    port, admin = free_port(), free_port()
    settings = {"bootstrap": kafka_bootstrap, "port": port, "admin_port": admin, "adapter": "envoy", "report": "none", "identity": {"jwt_hs256_secret": JWT_SECRET.decode(), "trusted_hops": 1}}
    shim = start_shim(tmp_path / "shim.log", settings)
    try:
        with proxies.start_envoy(tmp_path / "envoy", port, upstream.port) as envoy:
            users = {who: token(f"{who}-{tmp_path.name}") for who in ("blocked", "throttled", "forged", "bystander")}
            assert all(call(envoy, "/orders/9", {"authorization": t}).status == 200 for t in users.values())
            block = sign_verdict(verdict(f"blocked-{tmp_path.name}", "block"), VERDICT_KEY)
            throttle = sign_verdict(verdict(f"throttled-{tmp_path.name}", "throttle", rate_per_s=0.01, burst=1), VERDICT_KEY)
            forged = sign_verdict(verdict(f"forged-{tmp_path.name}", "block"), b"not-the-key")
            _publish(kafka_bootstrap, [(v.subject.cache_key, v.model_dump_json().encode()) for v in (forged, block, throttle)])
            denied = _until(lambda: call(envoy, "/orders/9", {"authorization": users["blocked"]}).status == 403)
            assert denied, "the signed block verdict was not obeyed within 15 s"
            answers = [call(envoy, "/orders/9", {"authorization": users["throttled"]}) for _ in range(3)]
            assert [a.status for a in answers][-2:] == [429, 429] and "retry-after" in answers[-1].headers
            assert call(envoy, "/orders/9", {"authorization": users["forged"]}).status == 200
            assert call(envoy, "/orders/9", {"authorization": users["bystander"]}).status == 200
    finally:
        stop_process(shim)


# ------------------------------------------------------------------ shipped configuration and versions


def test_the_shipped_envoy_bootstrap_validates(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run([str(proxies.envoy_binary()), "--mode", "validate", "-c", str(proxies.DATAPLANES / "envoy" / "ext_authz-http.yaml")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "OK" in out.stdout + out.stderr, out.stderr[-2000:]
    assert "Deprecated field" not in out.stdout + out.stderr


def test_the_istio_manifests_name_one_provider_and_strip_before_ext_authz() -> None:
    docs = {p.name: list(yaml.safe_load_all(p.read_text())) for p in (proxies.DATAPLANES / "istio").glob("*.yaml")}
    [provider] = docs["extension-provider.yaml"][0]["spec"]["meshConfig"]["extensionProviders"]
    [policy] = docs["authorization-policy.yaml"]
    [strip] = docs["envoyfilter-strip.yaml"]
    assert (policy["spec"]["action"], policy["spec"]["provider"]["name"]) == ("CUSTOM", provider["name"])
    http = provider["envoyExtAuthzHttp"]
    assert {"authorization", "x-forwarded-client-cert"} & set(http["includeRequestHeadersInCheck"]) == {"x-forwarded-client-cert"}
    assert "timeout" in http and "failOpen" in http and "x-kubeward-reason" not in http["headersToDownstreamOnDeny"]
    patch = strip["spec"]["configPatches"][0]
    assert (patch["patch"]["operation"], patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"]) == ("INSERT_BEFORE", "envoy.filters.http.ext_authz")
    mutations = patch["patch"]["value"]["typed_config"]["mutations"]["request_mutations"]
    assert mutations[0] == {"remove_on_match": {"key_matcher": {"prefix": "x-kubeward-"}}}  # the client's first, then ours
    assert mutations[1]["append"]["header"]["key"] == "x-kubeward-destination" and "x-kubeward-destination" in http["includeRequestHeadersInCheck"]


def test_the_traefik_crd_matches_the_file_provider_middlewares() -> None:
    file_mw = yaml.safe_load((proxies.DATAPLANES / "traefik" / "middleware.yaml").read_text())["http"]["middlewares"]
    crds = {d["metadata"]["name"]: d for d in yaml.safe_load_all((proxies.DATAPLANES / "traefik" / "middleware-crd.yaml").read_text())}
    assert {d["apiVersion"] for d in crds.values()} == {"traefik.io/v1alpha1"} and set(crds) == set(file_mw)
    assert crds["kubeward-prepare"]["spec"] == file_mw["kubeward-prepare"]
    shared = {k: v for k, v in file_mw["kubeward"]["forwardAuth"].items() if k != "address"}
    assert {k: v for k, v in crds["kubeward"]["spec"]["forwardAuth"].items() if k != "address"} == shared


def test_data_plane_versions() -> None:
    versions = proxies.data_plane_versions()
    assert set(versions) == set(NAMES)
    for name, text in versions.items():
        assert text.split(" ")[0] == name and len(text.split(" ")[1].split(".")) == 3
