"""The HTTP check adapters (Envoy ext_authz HTTP, nginx auth_request, Traefik ForwardAuth) on hand-built checks.

No sockets: each test builds the check request a data plane would send (as
checked against the real proxies in tests/integration/test_dataplanes.py) and
reads the adapter's ``RequestView`` or the raw HTTP answer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from enforcement.adapters.envoy_http import EnvoyHttpAdapter
from enforcement.adapters.httpcheck import HeaderIdentity, HttpAdapter, HttpCheck, UnparsedRequest, render, unparsed_decision
from enforcement.adapters.nginx import NginxAdapter
from enforcement.adapters.traefik import TraefikAdapter
from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.settings import ShimSettings
from enforcement.shim import ADAPTERS, Shim, build_adapter, summarize
from ingest.identity import IdentityConfig, IdentityResolver
from ingest.principal import hash_principal

KEY = b"kubeward-dev-principal-key"
SPIFFE = 'By=spiffe://cluster.local/ns/shop/sa/orders;Hash=abc;Subject="";URI=spiffe://cluster.local/ns/shop/sa/web'


_IDENTITY_KEYS = {"jwt_hs256_secret", "principal_key", "trusted_hops", "trusted_proxies", "pods_file", "jwks_path", "destination_header",
                  "trusted_data_planes"}
#: the data planes of these tests: every check comes from 10.0.0.9 (``_check``) unless a test says otherwise
PLANES = ("10.0.0.0/24",)


def _adapter(name: str = "envoy", **settings: Any) -> HttpAdapter:
    identity = {"trusted_hops": 1, "trusted_data_planes": list(PLANES), **{k: settings.pop(k) for k in list(settings) if k in _IDENTITY_KEYS}}
    return build_adapter(ShimSettings(bootstrap=None, adapter=name, identity=identity, **settings))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, Any], secret: bytes = b"s3cret") -> str:
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(hmac.new(secret, head.encode(), hashlib.sha256).digest())


def _check(name: str, method: str, path: str, headers: dict[str, str], peer: str | None = "10.0.0.9") -> HttpCheck:
    """The check request ``name``'s data plane sends for an original ``method path`` with ``headers``."""
    raw = {k.lower().encode(): v.encode("latin-1") for k, v in headers.items()}
    if name == "envoy":
        return HttpCheck(method, path, raw, peer)
    if name == "nginx":
        return HttpCheck("GET", "/_kubeward/check", {b"x-original-method": method.encode(), b"x-original-uri": path.encode(), **raw}, peer)
    host = raw.pop(b"host", b"orders")
    return HttpCheck("GET", "/", {b"x-forwarded-method": method.encode(), b"x-forwarded-uri": path.encode(), b"x-forwarded-host": host, **raw}, peer)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    assert int(headers["content-length"]) == len(body)
    return int(status.split()[1]), headers, body


ALL = sorted(ADAPTERS)


# ------------------------------------------------------------------ reading the check


@pytest.mark.parametrize("name", ALL)
def test_each_adapter_reads_the_original_method_and_path(name: str) -> None:
    view = _adapter(name).view(_check(name, "DELETE", "/orders/7?expand=1", {"host": "orders.shop.svc.cluster.local"}))
    assert (view.method, view.path, view.service, view.namespace) == ("DELETE", "/orders/7?expand=1", "orders", "shop")


@pytest.mark.parametrize("name", ALL)
def test_view_of_and_view_agree(name: str) -> None:
    adapter = _adapter(name)
    check = _check(name, "GET", "/a", {"authorization": "Bearer " + _jwt({"sub": "alice"}), "x-forwarded-for": "203.0.113.7"})
    assert adapter.view(check) == adapter.view_of(check.method, check.url, check.headers, check.peer)


@pytest.mark.parametrize("name", ALL)
def test_the_principal_is_a_keyed_hash_of_the_jwt_subject(name: str) -> None:
    view = _adapter(name).view(_check(name, "GET", "/a", {"authorization": "Bearer " + _jwt({"sub": "alice"})}))
    assert view.principal == hash_principal("jwt", "alice", KEY) and view.auth_type == "jwt-unverified"
    assert "alice" not in view.principal


def test_a_jwt_with_a_bad_signature_gives_no_principal_when_a_secret_is_set() -> None:
    adapter = _adapter(jwt_hs256_secret="s3cret")
    good = adapter.view(_check("envoy", "GET", "/", {"authorization": "Bearer " + _jwt({"sub": "alice"})}))
    forged = adapter.view(_check("envoy", "GET", "/", {"authorization": "Bearer " + _jwt({"sub": "alice"}, b"guess")}))
    assert (good.principal, good.auth_type) == (hash_principal("jwt", "alice", KEY), "jwt")
    assert (forged.principal, forged.auth_type) == (None, "jwt-invalid")


@pytest.mark.parametrize(
    ("headers", "kind", "auth_type"),
    [({"x-api-key": "k-123"}, "apikey", "api_key"), ({"cookie": "theme=dark; session=s-9"}, "session", "session")],
    ids=["api-key", "session-cookie"],
)
def test_api_keys_and_session_cookies_are_principals(headers: dict[str, str], kind: str, auth_type: str) -> None:
    view = _adapter().view(_check("envoy", "GET", "/", headers))
    assert view.principal is not None and view.principal.startswith(f"{kind}:") and view.auth_type == auth_type


def test_the_principal_key_setting_keys_the_hash() -> None:
    check = _check("envoy", "GET", "/", {"x-api-key": "k-123"})
    assert _adapter(principal_key="a").view(check).principal != _adapter(principal_key="b").view(check).principal


def test_the_workload_comes_from_the_spiffe_id_in_xfcc() -> None:
    view = _adapter().view(_check("envoy", "GET", "/", {"x-forwarded-client-cert": SPIFFE}))
    assert (view.source_workload, view.auth_type) == ("shop/web", "mtls")
    assert view.subject_keys()[0] == "actor:shop/web|-"


@pytest.mark.parametrize(
    ("hops", "xff", "ip"),
    [(1, "6.6.6.6, 203.0.113.7", "203.0.113.7"), (2, "6.6.6.6, 203.0.113.7, 10.0.0.1", "203.0.113.7"), (0, "6.6.6.6", "10.0.0.9"), (1, None, "10.0.0.9")],
    ids=["one-hop-rightmost", "two-hops", "zero-hops-peer", "no-xff-peer"],
)
def test_the_client_address_is_never_the_leftmost_forwarded_entry(hops: int, xff: str | None, ip: str) -> None:
    headers = {"x-forwarded-for": xff} if xff else {}
    view = _adapter(trusted_hops=hops).view(_check("envoy", "GET", "/", headers))
    assert view.ip == ip and view.peer_ip == "10.0.0.9"


@pytest.mark.parametrize(
    ("headers", "service", "namespace"),
    [
        ({"x-kubeward-destination": "shop/orders", "host": "evil.example"}, "orders", "shop"),
        ({"host": "orders.shop.svc.cluster.local:8080"}, "orders", "shop"),
        ({"host": "orders"}, "orders", None),
        ({"host": "10.1.2.3:8080"}, None, None),
    ],
    ids=["data-plane-header-wins", "service-host", "bare-name", "ip-is-never-a-service"],
)
def test_destination(headers: dict[str, str], service: str | None, namespace: str | None) -> None:
    view = _adapter().view(_check("envoy", "GET", "/", headers))
    assert (view.service, view.namespace) == (service, namespace)


def test_traefik_reads_the_host_from_x_forwarded_host() -> None:
    check = HttpCheck("GET", "/", {b"x-forwarded-method": b"GET", b"x-forwarded-uri": b"/", b"host": b"kubeward.shim", b"x-forwarded-host": b"orders.shop.svc"})
    view = _adapter("traefik").view(check)
    assert (view.service, view.namespace, view.authority) == ("orders", "shop", "orders.shop.svc")


@pytest.mark.parametrize("trust", [True, False])
def test_kubeward_identity_headers_count_only_when_trusted(trust: bool) -> None:
    headers = {"x-kubeward-source-workload": "lab/tool", "x-kubeward-principal": "alice", "x-kubeward-namespace": "lab"}
    view = _adapter(trust_kubeward_headers=trust).view(_check("envoy", "GET", "/", headers))
    expected = ("lab/tool", "alice", "lab", "data_plane") if trust else (None, None, None, "none")
    assert (view.source_workload, view.principal, view.namespace, view.auth_type) == expected


def test_identities_are_memoised_without_mixing_requests() -> None:
    adapter = _adapter()
    tokens = {who: "Bearer " + _jwt({"sub": who}) for who in ("alice", "bob")}
    order = ["alice", "bob", "alice", "alice", "bob"]
    views = [adapter.view(_check("envoy", "GET", f"/{i}", {"authorization": tokens[who]})) for i, who in enumerate(order)]
    assert [v.principal for v in views] == [hash_principal("jwt", who, KEY) for who in order]
    assert [v.path for v in views] == [f"/{i}" for i in range(5)]
    fresh = [RequestView(v.method, v.path, v.source_workload, v.principal, v.ip, v.service, v.namespace).subject_keys() for v in views]
    assert [v.subject_keys() for v in views] == fresh


def test_the_pod_behind_the_client_address_is_asked_per_check_not_memoised() -> None:
    pods = {"10.244.1.5": ("shop/web", "shop", "web-0")}
    adapter = EnvoyHttpAdapter(HeaderIdentity(IdentityResolver(IdentityConfig(trusted_hops=1, trusted_data_planes=PLANES)), pods=pods.get))
    check = _check("envoy", "GET", "/", {"x-forwarded-for": "10.244.1.5", "x-api-key": "k"})
    first = adapter.view(check)
    pods["10.244.1.5"] = ("shop/batch", "shop", "batch-7")  # the address went to another pod
    second = adapter.view(check)
    del pods["10.244.1.5"]
    third = adapter.view(check)
    assert [v.source_workload for v in (first, second, third)] == ["shop/web", "shop/batch", None]
    assert second.subject_keys()[0] == f"actor:shop/batch|{second.principal}" and third.subject_keys()[0] == f"actor:10.244.1.5|{third.principal}"


def test_a_spiffe_workload_beats_the_pod_table() -> None:
    adapter = EnvoyHttpAdapter(HeaderIdentity(IdentityResolver(IdentityConfig(trusted_data_planes=PLANES)), pods=lambda ip: ("lab/other", "lab", "x")))
    assert adapter.view(_check("envoy", "GET", "/", {"x-forwarded-client-cert": SPIFFE})).source_workload == "shop/web"


def test_the_pods_file_setting_names_workloads(tmp_path: Path) -> None:
    table = tmp_path / "pods.json"
    table.write_text(json.dumps({"203.0.113.7": "shop/web"}))
    shim = Shim(ShimSettings(bootstrap=None, identity={"pods_file": table, "trusted_hops": 1, "trusted_data_planes": list(PLANES)}))
    assert shim.adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": "203.0.113.7"})).source_workload == "shop/web"


def test_a_resolver_with_its_own_pod_lookup_is_refused() -> None:
    with pytest.raises(ValueError, match="HeaderIdentity"):
        HeaderIdentity(IdentityResolver(pods=lambda ip: None))


@pytest.mark.parametrize("name", ALL)
def test_the_request_id_is_carried(name: str) -> None:
    view = _adapter(name).view(_check(name, "GET", "/", {"x-request-id": "rid-42"}))
    assert view.request_id == "rid-42"


@pytest.mark.parametrize("name", ALL)
def test_the_adapter_keeps_exactly_the_headers_it_reads(name: str) -> None:
    adapter = _adapter(name, inspection={"enabled": False})
    wanted = adapter.wanted
    assert {b"authorization", b"x-forwarded-for", b"x-forwarded-client-cert", b"cookie", b"x-api-key", b"x-request-id", b"x-kubeward-destination"} <= wanted
    own = {"envoy": {b"host"}, "nginx": {b"host", b"x-original-uri", b"x-original-method"}, "traefik": {b"x-forwarded-host", b"x-forwarded-uri", b"x-forwarded-method"}}[name]
    assert own <= wanted and b"user-agent" not in wanted and adapter.wanted_prefixes == () and adapter.body_limit == 0


@pytest.mark.parametrize("name", ALL)
def test_inspection_keeps_the_inspected_headers_and_the_body(name: str) -> None:
    adapter = _adapter(name, inspection={"headers": ["user-agent", "x-*"], "max_body_bytes": 8})
    assert {b"user-agent", b"x-envoy-auth-partial-body", b"content-type"} <= adapter.wanted and adapter.wanted_prefixes == (b"x-",) and adapter.body_limit == 8
    check = _check(name, "POST", "/a", {"user-agent": "curl", "x-trace": "t"}, None)
    view = adapter.view(HttpCheck(check.method, check.url, check.headers, check.peer, b"0123456789"))
    assert view.headers is not None and view.headers["user-agent"] == "curl" and view.headers["x-trace"] == "t"
    assert (view.body, view.body_truncated) == (b"01234567", True)
    whole = adapter.view(HttpCheck(check.method, check.url, check.headers, check.peer, b"{}"))
    assert (whole.body, whole.body_truncated) == (b"{}", False)


# ------------------------------------------------------------------ identity nobody can forge (issue 9, item 2)

VICTIM_IP = "203.0.113.7"
#: a pod that reaches the shim's check port itself, with no data plane in between
ATTACKER = "10.9.9.9"
FORGERY = {"x-forwarded-for": VICTIM_IP, "x-forwarded-client-cert": SPIFFE, "x-kubeward-principal": "victim",
           "x-kubeward-source-workload": "shop/web", "x-kubeward-namespace": "kube-system", "x-kubeward-destination": "billing/payments",
           "host": "orders.shop.svc.cluster.local"}


@pytest.mark.parametrize("name", ALL)
def test_a_caller_that_is_no_data_plane_forwards_no_identity(name: str) -> None:
    """Address, workload, principal, namespace and destination written by a direct caller are all ignored: it is the client."""
    view = _adapter(name).view(_check(name, "GET", "/", FORGERY, peer=ATTACKER))
    assert (view.ip, view.source_workload, view.principal, view.auth_type) == (ATTACKER, None, None, "none")
    assert (view.service, view.namespace) == ("orders", "shop")
    assert view.subject_keys() == (f"actor:{ATTACKER}|-", f"ip:{ATTACKER}")
    trusted = _adapter(name).view(_check(name, "GET", "/", FORGERY))  # the same headers from the data plane 10.0.0.9
    assert (trusted.ip, trusted.source_workload, trusted.principal, trusted.service) == (VICTIM_IP, "shop/web", "victim", "payments")


@pytest.mark.parametrize("name", ALL)
def test_rotating_the_leftmost_forwarded_entry_makes_no_new_identity(name: str) -> None:
    """The review's evasion: a client rotating the leftmost x-forwarded-for entry behind a data plane stays one actor."""
    adapter = _adapter(name)
    keys = {adapter.view(_check(name, "GET", "/", {"x-forwarded-for": f"198.18.{i // 250}.{i % 250}, {VICTIM_IP}"})).subject_keys()
            for i in range(1000)}
    assert keys == {(f"actor:{VICTIM_IP}|-", f"ip:{VICTIM_IP}")}


def test_a_forged_principal_and_an_injection_never_report_the_victim() -> None:
    """The review's framing: a forged x-kubeward-principal and victim address plus one injection payload. The shim
    denies the payload and reports the call as the caller's own; nothing in the report names the victim."""
    shim = Shim(ShimSettings(bootstrap=None, identity={"trusted_hops": 1, "trusted_data_planes": list(PLANES)}, policy={"default_mode": "enforce"}))
    shim.synced.set()
    headers = {k.encode(): v.encode() for k, v in FORGERY.items()}
    answer = shim.handle("GET", "/files/../../etc/passwd", headers, ATTACKER)
    assert answer.startswith(b"HTTP/1.1 403 ")
    ((_, view, decision),) = shim.take_pending()
    victim = RequestView("GET", "/", "shop/web", "victim", VICTIM_IP, "orders", "shop").subject_keys()
    assert decision.findings and not set(view.subject_keys()) & set(victim)
    report = summarize(0.0, view, decision, b"k")
    assert (report.source.ip, report.source.workload, report.principal) == (ATTACKER, None, None)


def test_a_dual_stack_listener_reports_a_data_plane_as_a_mapped_address() -> None:
    view = _adapter().view(_check("envoy", "GET", "/", {"x-forwarded-for": VICTIM_IP}, peer="::ffff:10.0.0.9"))
    assert view.ip == VICTIM_IP


def test_forwarding_from_an_untrusted_peer_is_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    adapter = _adapter()
    for i in range(3):
        adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": f"198.18.0.{i}"}, peer=ATTACKER))
    adapter.view(_check("envoy", "GET", "/", {"x-api-key": "k"}, peer=ATTACKER))  # nothing forwarded: nothing to count
    assert adapter.identity.untrusted == 3
    assert [r.getMessage() for r in caplog.records].count(
        f"forwarded identity headers from {ATTACKER} ignored: the peer is not in identity.trusted_data_planes") == 1


def test_the_shim_trusts_only_loopback_data_planes_unless_told() -> None:
    """Shipped default: a data plane on the same host; a cluster names its gateways' CIDRs."""
    adapter = build_adapter(ShimSettings(bootstrap=None))
    assert adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": VICTIM_IP}, peer="127.0.0.1")).ip == VICTIM_IP
    assert adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": VICTIM_IP}, peer="10.0.0.9")).ip == "10.0.0.9"


# ------------------------------------------------------------------ unreadable checks


@pytest.mark.parametrize(
    ("prefix", "url", "part"),
    [("/check", "/orders/1", "path"), ("", "http://orders/1", "path"), ("", "*", "path")],
    ids=["missing-prefix", "absolute-form", "asterisk"],
)
def test_envoy_paths_it_cannot_read(prefix: str, url: str, part: str) -> None:
    with pytest.raises(UnparsedRequest) as info:
        _adapter(path_prefix=prefix).view(HttpCheck("GET", url, {}))
    assert info.value.part == part and repr(url) in str(info.value)


def test_envoy_strips_the_path_prefix() -> None:
    adapter = _adapter(path_prefix="/check")
    assert [adapter.view(HttpCheck("GET", u, {})).path for u in ("/check/orders/1?x=1", "/check")] == ["/orders/1?x=1", "/"]


@pytest.mark.parametrize(
    ("name", "headers", "part"),
    [
        ("nginx", {b"x-original-uri": b"/a"}, "x-original-method"),
        ("nginx", {b"x-original-method": b"GET"}, "x-original-uri"),
        ("nginx", {b"x-original-method": b"GET", b"x-original-uri": b"a/b"}, "x-original-uri"),
        ("nginx", {b"x-original-method": b"G E\r\nT", b"x-original-uri": b"/a"}, "x-original-method"),
        ("traefik", {b"x-forwarded-uri": b"/a"}, "x-forwarded-method"),
        ("traefik", {b"x-forwarded-method": b"GET"}, "x-forwarded-uri"),
    ],
    ids=["nginx-no-method", "nginx-no-uri", "nginx-relative-uri", "nginx-method-not-a-token", "traefik-no-method", "traefik-no-uri"],
)
def test_forwarded_checks_without_the_original_request_are_unparsed(name: str, headers: dict[bytes, bytes], part: str) -> None:
    with pytest.raises(UnparsedRequest) as info:
        _adapter(name).view(HttpCheck("GET", "/", headers))
    assert info.value.part == part


def test_forwarded_methods_are_normalised() -> None:
    view = _adapter("nginx").view(HttpCheck("GET", "/", {b"x-original-method": b" patch ", b"x-original-uri": b"/a"}))
    assert view.method == "PATCH"


# ------------------------------------------------------------------ answers


DENY = Decision(403, "deny", True, "bola_breadth", verdict_id="v1")
THROTTLE = Decision(429, "throttle", True, "auth_failures", retry_after=7)


@pytest.mark.parametrize("name", ALL)
def test_allow_is_the_precomputed_answer(name: str) -> None:
    adapter = _adapter(name)
    answer = adapter.respond(ALLOW, RequestView("GET", "/"))
    assert answer is adapter.allow_response
    assert _parse(answer) == (200, {"content-length": "0", "x-kubeward-decision": "allow"}, b"")


@pytest.mark.parametrize("name", ALL)
def test_deny_is_a_403_with_the_reason_in_a_header_only(name: str) -> None:
    status, headers, body = _parse(_adapter(name).respond(DENY, RequestView("GET", "/")))
    assert (status, headers["x-kubeward-decision"], headers["x-kubeward-reason"]) == (403, "deny", "bola_breadth")
    assert body == b"kubeward: deny\n" and b"bola" not in body
    assert headers.get("x-kubeward-action") == ("deny" if name == "nginx" else None)


@pytest.mark.parametrize("name", ["envoy", "traefik"])
def test_envoy_and_traefik_get_a_real_429_with_retry_after(name: str) -> None:
    status, headers, _ = _parse(_adapter(name).respond(THROTTLE, RequestView("GET", "/")))
    assert (status, headers["retry-after"], headers["x-kubeward-decision"]) == (429, "7", "throttle")
    assert "x-kubeward-action" not in headers


def test_nginx_gets_a_throttle_as_403_with_an_action_header() -> None:
    status, headers, _ = _parse(_adapter("nginx").respond(THROTTLE, RequestView("GET", "/")))
    assert (status, headers["x-kubeward-action"], headers["retry-after"], headers["x-kubeward-decision"]) == (403, "throttle", "7", "throttle")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("would", "retry"), [("deny", None), ("throttle", 3)])
def test_observe_mode_lets_the_request_pass_and_says_what_would_have_happened(name: str, would: str, retry: int | None) -> None:
    status, headers, body = _parse(_adapter(name).respond(Decision(200, would, False, "inline:injection", retry, ("injection",)), RequestView("GET", "/")))
    assert (status, body) == (200, b"")
    assert (headers["x-kubeward-decision"], headers["x-kubeward-would"], headers["x-kubeward-reason"]) == ("allow", would, "inline:injection")
    assert "retry-after" not in headers and "x-kubeward-action" not in headers


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize(("mode", "status"), [("allow", 200), ("deny", 403)])
def test_unparsed_checks_answer_per_failure_mode_and_say_so(name: str, mode: str, status: int) -> None:
    got, headers, _ = _parse(_adapter(name).respond(unparsed_decision(mode, "x-original-uri"), RequestView("-", "/")))
    assert (got, headers["x-kubeward-decision"], headers["x-kubeward-reason"]) == (status, "unparsed", "unparsed:x-original-uri")
    assert "x-kubeward-would" not in headers


def test_envoy_sends_no_body_to_a_head_check() -> None:
    adapter = _adapter()
    head = _parse(adapter.respond(DENY, RequestView("HEAD", "/")))
    get = _parse(adapter.respond(DENY, RequestView("GET", "/")))
    assert head[0] == get[0] == 403 and head[2] == b"" and get[2] != b""


def test_answers_are_rendered_once_per_decision() -> None:
    adapter = _adapter()
    assert adapter.respond(DENY, RequestView("GET", "/a")) is adapter.respond(Decision(403, "deny", True, "bola_breadth", verdict_id="v1"), RequestView("GET", "/b"))


def test_header_values_cannot_break_the_response() -> None:
    status, headers, _ = _parse(render(403, [("x-kubeward-reason", "a\r\nset-cookie: x=1")]))
    assert status == 403 and set(headers) == {"content-length", "x-kubeward-reason"}


@pytest.mark.parametrize("cls", [EnvoyHttpAdapter, NginxAdapter, TraefikAdapter])
def test_every_adapter_is_registered_under_its_name(cls: type[HttpAdapter]) -> None:
    assert ADAPTERS[cls.name] is cls and isinstance(_adapter(cls.name), cls)


# ------------------------------------------------------------------ external callers


@pytest.mark.parametrize("name", sorted(ADAPTERS))
@pytest.mark.parametrize(
    ("headers", "external"),
    [
        ({"x-forwarded-for": "203.0.113.7"}, True),
        ({"x-forwarded-for": "10.1.2.3"}, False),
        ({"x-forwarded-for": "::ffff:203.0.113.7"}, True),
        ({"x-forwarded-for": "203.0.113.7", "x-forwarded-client-cert": SPIFFE}, False),
        ({"x-forwarded-for": "203.0.113.7", "x-kubeward-source-workload": "lab/tool"}, False),
    ],
    ids=["outside", "inside", "mapped-outside", "spiffe-workload", "asserted-workload"],
)
def test_a_client_outside_the_internal_networks_is_external_unless_a_workload_is_known(name: str, headers: dict[str, str], external: bool) -> None:
    view = _adapter(name).view(_check(name, "GET", "/", headers))
    assert view.external is external
    assert summarize(0.0, view, ALLOW, b"k").source.external is external  # and the shim's report says so


def test_the_internal_networks_setting_decides_and_an_untrusted_peer_is_judged_as_the_client() -> None:
    identity = {"trusted_hops": 1, "trusted_data_planes": list(PLANES), "internal_networks": ["10.0.0.0/8", "203.0.113.0/24"]}
    adapter = build_adapter(ShimSettings(bootstrap=None, identity=identity))
    assert adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": "203.0.113.7"})).external is False
    assert adapter.view(_check("envoy", "GET", "/", {"x-forwarded-for": "198.51.100.7"})).external is True
    # someone talking to the shim directly: its own address is the client, and it is outside
    direct = _adapter().view(_check("envoy", "GET", "/", {"x-forwarded-for": "10.1.2.3"}, peer="198.51.100.9"))
    assert (direct.ip, direct.external) == ("198.51.100.9", True)


def test_a_pod_behind_the_address_is_never_external_and_the_memo_keeps_the_bit_per_check() -> None:
    pods: dict[str, tuple[str, str, str]] = {}
    adapter = EnvoyHttpAdapter(HeaderIdentity(IdentityResolver(IdentityConfig(trusted_hops=1, trusted_data_planes=PLANES)), pods=pods.get))
    check = _check("envoy", "GET", "/", {"x-forwarded-for": "203.0.113.7"})
    before = adapter.view(check)
    pods["203.0.113.7"] = ("shop/web", "shop", "web-0")  # an address plan where pods sit outside internal_networks
    during = adapter.view(check)
    del pods["203.0.113.7"]
    after = adapter.view(check)
    assert [(v.source_workload, v.external) for v in (before, during, after)] == [(None, True), ("shop/web", False), (None, True)]


# ------------------------------------------------------------------ Traefik: the answer names the request id


def _traefik_with_ids() -> TraefikAdapter:
    adapter = _adapter("traefik")
    assert isinstance(adapter, TraefikAdapter)
    adapter.own_request_ids = True
    return adapter


def test_traefik_makes_a_distinct_id_per_check_and_answers_it() -> None:
    adapter = _traefik_with_ids()
    check = _check("traefik", "GET", "/a", {"authorization": "Bearer " + _jwt({"sub": "alice"})})
    first, second = adapter.view(check), adapter.view(check)
    assert first.request_id and second.request_id and first.request_id != second.request_id
    assert len(first.request_id) == 32 and int(first.request_id, 16) >= 0
    for decision in (ALLOW, DENY, THROTTLE):
        status, headers, _ = _parse(adapter.respond(decision, first))
        assert (status, headers["x-kubeward-request-id"]) == (decision.status, first.request_id)
    assert summarize(0.0, first, ALLOW, KEY).id == first.request_id  # the id the shim reports the call under


def test_traefik_answers_the_checks_own_request_id_cleaned() -> None:
    adapter = _traefik_with_ids()
    view = adapter.view(_check("traefik", "GET", "/a", {"x-request-id": "r-1"}))
    assert view.request_id == "r-1" and _parse(adapter.respond(DENY, view))[1]["x-kubeward-request-id"] == "r-1"
    view.request_id = "r-2\r\nset-cookie: x=1"
    status, headers, _ = _parse(adapter.respond(DENY, view))
    assert status == 403 and "set-cookie" not in headers and headers["x-kubeward-request-id"].startswith("r-2")


def test_traefik_per_call_answers_leave_the_shared_ones_alone() -> None:
    adapter = _traefik_with_ids()
    view = adapter.view(_check("traefik", "GET", "/a", {}))
    adapter.respond(DENY, view)
    assert b"x-kubeward-request-id" not in adapter.respond(DENY, RequestView("GET", "/"))
    assert b"x-kubeward-request-id" not in adapter.allow_response and adapter.request_id_header == "x-kubeward-request-id"


def test_traefik_makes_no_id_unless_turned_on() -> None:
    adapter = _adapter("traefik")
    view = adapter.view(_check("traefik", "GET", "/a", {}))
    assert view.request_id is None and adapter.respond(ALLOW, view) is adapter.allow_response


def test_traefik_ids_differ_between_adapters() -> None:
    one, two = _traefik_with_ids(), _traefik_with_ids()
    check = _check("traefik", "GET", "/a", {})
    assert one.view(check).request_id != two.view(check).request_id
