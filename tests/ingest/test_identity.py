"""Identity derived from forwarded headers: principals, workloads, client address, destination."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.destination import destination_from
from ingest.identity import IdentityConfig, IdentityResolver, client_ip, workload_from_xfcc
from ingest.principal import hash_principal, jwt_claims, principal_from_headers


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt(claims: dict[str, object], secret: bytes = b"s3cret", alg: str = "HS256") -> str:
    head = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = _b64(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


KEY = b"k"


def test_jwt_sub_becomes_a_keyed_hash_never_the_token() -> None:
    token = _jwt({"sub": "user-1"})
    principal, auth = principal_from_headers({"authorization": f"Bearer {token}"}, IdentityConfig(principal_key=KEY))
    assert principal == hash_principal("jwt", "user-1", KEY)
    assert auth == "jwt-unverified"
    assert "user-1" not in principal and token not in principal


@pytest.mark.parametrize("claim", ["client_id", "azp"])
def test_jwt_falls_back_to_client_id_and_azp(claim: str) -> None:
    principal, _ = principal_from_headers({"authorization": f"Bearer {_jwt({claim: 'svc-a'})}"}, IdentityConfig(principal_key=KEY))
    assert principal == hash_principal("jwt", "svc-a", KEY)


def test_checked_jwt_with_bad_signature_yields_no_principal() -> None:
    config = IdentityConfig(principal_key=KEY, jwt_hs256_secret=b"s3cret")
    good, auth = principal_from_headers({"authorization": f"Bearer {_jwt({'sub': 'u'})}"}, config)
    assert good == hash_principal("jwt", "u", KEY) and auth == "jwt"
    forged, auth = principal_from_headers({"authorization": f"Bearer {_jwt({'sub': 'victim'}, secret=b'other')}"}, config)
    assert forged is None and auth == "jwt-invalid"


def test_rs256_jwt_checked_against_jwks() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()
    jwk = {"kty": "RSA", "kid": "k1", "n": _b64(nums.n.to_bytes(256, "big")), "e": _b64(nums.e.to_bytes(3, "big"))}
    head = _b64(json.dumps({"alg": "RS256", "kid": "k1"}).encode())
    body = _b64(json.dumps({"sub": "alice"}).encode())
    sig = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
    config = IdentityConfig(principal_key=KEY, jwks={"keys": [jwk]})
    assert principal_from_headers({"authorization": f"Bearer {head}.{body}.{_b64(sig)}"}, config) == (hash_principal("jwt", "alice", KEY), "jwt")
    tampered = _b64(json.dumps({"sub": "mallory"}).encode())
    assert principal_from_headers({"authorization": f"Bearer {head}.{tampered}.{_b64(sig)}"}, config) == (None, "jwt-invalid")


def _unsigned(header: str, claims: str) -> str:
    """A compact JWS of these texts as written (unpaired surrogates kept as their bytes)."""
    return ".".join(_b64(part.encode("utf-8", "surrogatepass")) for part in (header, claims, "sig"))


@pytest.mark.parametrize(("header", "claims"), [
    ("[" * 5000 + "]" * 5000, "{}"),  # deeper than json.loads reads (RecursionError, found by the fuzz campaign)
    ('{"alg": "none"}', '{"sub": "\\udfff"}'),  # a lone low surrogate escape (found by the fuzz campaign)
    ('{"alg": "none"}', '{"sub": "\\ud800"}'),  # a lone high one
    ('{"alg": "none"}', '{"sub": "\\ude00\\ud83d"}'),  # both halves of a pair, in the wrong order
    ('{"alg": "none"}', '{"sub": "u", "client_id": "\\ud800"}'),  # in a claim the principal does not read
    ('{"alg": "none", "kid": "\\udfff"}', '{"sub": "u"}'),  # in the header
    ('{"alg": "none"}', '{"sub": "\udfff"}'),  # as raw bytes (ED BF BF), which json.loads of bytes lets through too
])
def test_a_malformed_jwt_is_an_opaque_bearer_token_never_an_error(header: str, claims: str) -> None:
    token = _unsigned(header, claims)
    assert jwt_claims(token) is None
    for config in (IdentityConfig(principal_key=KEY), IdentityConfig(principal_key=KEY, jwt_hs256_secret=b"s3cret")):
        principal, auth = principal_from_headers({"authorization": f"Bearer {token}"}, config)
        assert (principal, auth) == (hash_principal("bearer", token, KEY), "bearer")  # the token is ASCII: it hashes


@pytest.mark.parametrize(("escaped", "subject"), [("\\ud83d\\ude00", "\U0001f600"), ("a\\\\udfff", "a\\udfff")])
def test_a_surrogate_pair_or_an_escaped_backslash_is_still_a_subject(escaped: str, subject: str) -> None:
    token = _unsigned('{"alg": "none"}', f'{{"sub": "{escaped}"}}')
    assert principal_from_headers({"authorization": f"Bearer {token}"}, IdentityConfig(principal_key=KEY)) == \
        (hash_principal("jwt", subject, KEY), "jwt-unverified")


def test_api_key_and_session_cookie_are_hashed() -> None:
    config = IdentityConfig(principal_key=KEY)
    assert principal_from_headers({"x-api-key": "abc"}, config) == (hash_principal("apikey", "abc", KEY), "api_key")
    assert principal_from_headers({"cookie": "theme=dark; sessionid=xyz"}, config) == (hash_principal("session", "xyz", KEY), "session")
    assert principal_from_headers({"cookie": "theme=dark"}, config) == (None, "none")


def test_xfcc_takes_the_nearest_hop() -> None:
    xfcc = 'By=spiffe://td/ns/a/sa/b;URI=spiffe://td/ns/evil/sa/x,By=spiffe://td/ns/a/sa/b;URI=spiffe://td/ns/shop/sa/frontend'
    assert workload_from_xfcc(xfcc) == "shop/frontend"
    assert workload_from_xfcc("URI=https://example.com") is None


def test_client_address_never_from_the_leftmost_forwarded_entry() -> None:
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 0) == "10.0.0.1"
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 1) == "5.6.7.8"
    assert client_ip("10.0.0.1", "1.2.3.4, 5.6.7.8", 2) == "1.2.3.4"
    assert client_ip("10.0.0.1", None, 1) == "10.0.0.1"


@given(st.lists(st.ip_addresses(v=4).map(str), min_size=1, max_size=5))
def test_spoofed_prefix_never_changes_the_trusted_answer(real: list[str]) -> None:
    honest = ", ".join(real)
    spoofed = "6.6.6.6, " + honest
    assert client_ip("10.9.9.9", spoofed, 1) == client_ip("10.9.9.9", honest, 1)


def test_destination_sources_in_order() -> None:
    c = IdentityConfig()
    assert destination_from("shop/orders", "x", None, c).service == "orders"
    istio = destination_from(None, "outbound|8080||orders.shop.svc.cluster.local", None, c)
    assert (istio.service, istio.namespace) == ("orders", "shop")
    host = destination_from(None, None, "carts.shop.svc.cluster.local:80", c)
    assert (host.service, host.namespace, host.external) == ("carts", "shop", False)
    ext = destination_from(None, None, "api.psp.example.com", c)
    assert (ext.service, ext.host, ext.external) == ("api.psp.example.com", "api.psp.example.com", True)
    assert destination_from(None, None, "10.1.2.3:8080", c).service is None
    assert destination_from(None, None, "[::1]:80", c).service is None


def test_route_naming_an_outside_host_is_external() -> None:
    """Istio's egress cluster names its host; a plain dotted route name and the passthrough clusters defer to the
    authority (review F14-F15: ``orders.shop`` or ``default.route`` as a route name is no outside host)."""
    c = IdentityConfig()
    istio = destination_from(None, "outbound|443||api.model-provider.example", "x", c)
    assert (istio.service, istio.host, istio.external) == ("api.model-provider.example", "api.model-provider.example", True)
    egress = destination_from(None, "api.model-provider.example", "api.model-provider.example", c)
    assert (egress.service, egress.external) == ("api.model-provider.example", True)
    for route in ("orders.shop", "default.route"):
        inside = destination_from(None, route, "orders.shop.svc.cluster.local", c)
        assert (inside.service, inside.namespace, inside.external) == ("orders", "shop", False)
    passthrough = destination_from(None, "PassthroughCluster", "api.openai.com", c)
    assert (passthrough.service, passthrough.external) == ("api.openai.com", True)
    for host in ("Orders.Shop.SVC.cluster.local", "orders.shop.svc.clusterset.local"):
        assert destination_from(None, f"outbound|80||{host}", None, c) == destination_from(None, None, "orders.shop.svc", c)
    assert destination_from(None, "orders", None, c).external is False


def test_resolver_uses_pod_directory_and_marks_external_clients() -> None:
    pods = {"10.244.1.5": ("shop/orders", "shop", "orders-7d9f-abc")}
    r = IdentityResolver(IdentityConfig(principal_key=KEY), pods=pods.get)
    who = r.resolve({}, "10.244.1.5")
    assert (who.workload, who.namespace, who.pod, who.external) == ("shop/orders", "shop", "orders-7d9f-abc", False)
    stranger = r.resolve({}, "203.0.113.9")
    assert stranger.workload is None and stranger.external
    pods["10.244.1.5"] = ("shop/carts", "shop", "carts-1")  # the address is reused by another pod
    assert r.resolve({}, "10.244.1.5").workload == "shop/carts"


# ------------------------------------------------------------------ identity nobody can forge (issue 9, item 2)


SPIFFE_ADMIN = "URI=spiffe://cluster.local/ns/kube-system/sa/admin"


def test_xfcc_reads_only_the_element_the_nearest_proxy_wrote() -> None:
    """With APPEND_FORWARD the client's own XFCC precedes Envoy's element: a nearest hop without a SPIFFE id has no workload."""
    assert workload_from_xfcc(f"{SPIFFE_ADMIN},Hash=ab12;DNS=partner.example") is None
    assert workload_from_xfcc(f"{SPIFFE_ADMIN},Hash=ab12;URI=spiffe://cluster.local/ns/shop/sa/web") == "shop/web"


def test_a_quoted_subject_cannot_smuggle_a_spiffe_id() -> None:
    """A certificate subject is quoted; its commas and semicolons split nothing, so a subject naming a URI is no URI."""
    forged = f'By=spiffe://cluster.local/ns/shop/sa/orders;Hash=ab;Subject="CN=x,{SPIFFE_ADMIN};O=\\"y\\"";URI=spiffe://cluster.local/ns/shop/sa/web'
    assert workload_from_xfcc(forged) == "shop/web"
    assert workload_from_xfcc(f'Hash=ab;Subject="CN=x,{SPIFFE_ADMIN}"') is None


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [("127.0.0.1", True), ("::1", True), ("10.0.0.9", False), ("::ffff:127.0.0.1", True), ("not-an-ip", False), (None, True)],
    ids=["loopback", "loopback-v6", "pod", "v4-mapped-loopback", "garbage", "unix-socket"],
)
def test_only_loopback_data_planes_are_trusted_by_default(peer: str | None, trusted: bool) -> None:
    assert IdentityResolver().trusts(peer) is trusted


def test_configured_data_planes_are_trusted_and_mapped_addresses_count_as_ipv4() -> None:
    r = IdentityResolver(IdentityConfig(trusted_data_planes=("10.244.0.0/16",)))
    assert r.trusts("10.244.3.7") and r.trusts("::ffff:10.244.3.7") and not r.trusts("10.245.0.1") and not r.trusts("127.0.0.1")


def test_without_forwarded_drops_what_only_a_data_plane_may_say() -> None:
    headers = {"x-forwarded-for": "1.2.3.4", "x-forwarded-client-cert": SPIFFE_ADMIN, "forwarded": "for=1.2.3.4", "x-real-ip": "1.2.3.4",
               "x-kubeward-principal": "victim", "x-kubeward-destination": "kube-system/api", "authorization": "Bearer t", "cookie": "a=b"}
    from ingest.identity import without_forwarded

    assert without_forwarded(headers) == {"authorization": "Bearer t", "cookie": "a=b"}


@pytest.mark.parametrize("user", ["Alice", "ALICE", "ａｌｉｃｅ", "Ａｌｉｃｅ"])
def test_basic_users_differing_in_case_or_width_are_one_principal(user: str) -> None:
    """Rotating the case (or width) of a Basic user name must not make a fresh actor per request."""
    config = IdentityConfig(principal_key=KEY)

    def basic(name: str) -> str | None:
        return principal_from_headers({"authorization": "Basic " + base64.b64encode(f"{name}:pw".encode()).decode()}, config)[0]

    assert basic(user) == basic("alice") == hash_principal("basic", "alice", KEY)


@pytest.mark.parametrize(
    ("peer", "address"),
    [("ipv4:10.0.0.7:51234", "10.0.0.7"), ("ipv6:[::1]:1", "::1"), ("ipv6:%5Bfd00::7%5D:1", "fd00::7"), ("unix:/run/x.sock", None), ("", None)],
)
def test_grpc_peer_address(peer: str, address: str | None) -> None:
    from ingest.identity import grpc_peer_address

    assert grpc_peer_address(peer) == address


def test_identity_settings_carry_the_data_planes_and_refuse_bad_cidrs() -> None:
    from ingest.identitysettings import IdentitySettings, identity_config

    assert IdentitySettings().trusted_data_planes == ["127.0.0.0/8", "::1/128"]
    assert identity_config(IdentitySettings(trusted_data_planes=["10.244.0.0/16"])).trusted_data_planes == ("10.244.0.0/16",)
    for field in ("trusted_data_planes", "trusted_proxies", "internal_networks"):
        with pytest.raises(ValueError, match="is not a CIDR"):
            IdentitySettings(**{field: ["10.0.0.1/8"]})
