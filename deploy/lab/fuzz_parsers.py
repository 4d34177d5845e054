"""Fuzz targets of what the shim reads (``deploy.lab.fuzz`` runs them, after those of ``deploy.lab.fuzz_shim``).

* ``request_parts``: ``enforcement.requestparts.request_parts``, ``body_parts`` and ``json_document``, what inline
  inspection reads, under each ``oversize`` setting.
* ``identity_headers``: ``ingest.identity``, ``ingest.principal`` and ``ingest.destination`` (XFCC/SPIFFE, JWT with
  and without signature checks, API keys, cookies, forwarded-for, destinations) through three resolvers: no checks,
  HS256 with one trusted hop, a JWKS (RS256/ES256) with two hops and trusted proxies.

These call pure functions only: no shim under test, no report path. Their tokens and the JWTs of their seeds are the
shim's (``deploy.lab.fuzz_shim``).
"""

from __future__ import annotations

import base64
import functools
import json
import random
import zlib
from typing import Any

from deploy.lab.fuzz import Target
from deploy.lab.fuzz_collectors import body_seeds
from deploy.lab.fuzz_inputs import as_bytes, as_headers, as_text, record, valid
from deploy.lab.fuzz_shim import HS256_SECRET, TOKENS, jwt_token

__all__ = ["TARGETS"]


@functools.cache
def _inspection(oversize: str) -> Any:
    from enforcement.settings import InspectionSettings

    return InspectionSettings(oversize=oversize)


def _parts(data: bytes) -> None:
    from enforcement.decision import RequestView
    from enforcement.requestparts import body_parts, json_document, request_parts

    fields = record(data) or {"body": data.decode("latin-1"), "path": "/?" + data[:200].decode("latin-1")}
    headers = {valid(k).lower(): valid(v) for k, v in as_headers(fields.get("headers")).items()}
    if fields.get("content_type") is not None:
        headers["content-type"] = valid(as_text(fields["content_type"]))
    view = RequestView(valid(as_text(fields.get("method"), "POST")), valid(as_text(fields.get("path"), "/")), headers=headers,
                       body=as_bytes(fields.get("body")), body_truncated=bool(fields.get("truncated")))
    settings = _inspection(("inspect_prefix", "deny", "allow")[zlib.crc32(data) % 3])
    parts = request_parts(view, settings)
    json_document(view)
    if parts.body is not None:
        body_parts(parts.body, parts.content_type, settings.max_values, view)


def _parts_seeds() -> list[bytes]:
    out = []
    for seed in body_seeds():
        fields = json.loads(seed)
        if "body" in fields:
            out.append(json.dumps({"method": "POST", "path": "/a/1' OR '1'='1/b?__proto__[x]=1&q=%3Cscript%3E", "body": fields["body"],
                                   "content_type": fields.get("content_type"), "headers": {"user-agent": "sqlmap", "cookie": "a=1; $b=<x>"},
                                   "truncated": False}).encode())
    return out


@functools.cache
def _resolvers() -> tuple[Any, ...]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ingest.identity import IdentityConfig, IdentityResolver

    def b64(number: int, size: int) -> str:
        return base64.urlsafe_b64encode(number.to_bytes(size, "big")).decode().rstrip("=")

    point = ec.derive_private_key(0x5EED, ec.SECP256R1()).public_key().public_numbers()
    modulus = (1 << 2047) | random.Random(7).getrandbits(2046) << 1 | 1  # an odd 2048-bit number: verification runs, never succeeds
    jwks = {"keys": [{"kty": "RSA", "kid": "rsa", "e": "AQAB", "n": b64(modulus, 256)},
                     {"kty": "EC", "kid": "ec", "crv": "P-256", "x": b64(point.x, 32), "y": b64(point.y, 32)}]}
    return (IdentityResolver(),
            IdentityResolver(IdentityConfig(jwt_hs256_secret=HS256_SECRET.encode(), trusted_hops=1)),
            IdentityResolver(IdentityConfig(jwks=jwks, trusted_hops=2, trusted_proxies=("10.244.0.0/16", "fd00::/8"))))


def _identity(data: bytes) -> None:
    from ingest.destination import destination_from
    from ingest.identity import client_ip, workload_from_xfcc
    from ingest.principal import jwt_claims

    fields = record(data) or {"headers": {"authorization": data.decode("latin-1"), "x-forwarded-client-cert": data.decode("latin-1")}}
    headers = {valid(k).lower(): valid(v) for k, v in as_headers(fields.get("headers")).items()}
    jwt = fields.get("jwt")
    if isinstance(jwt, list) and len(jwt) == 3:
        token = ".".join(base64.urlsafe_b64encode(as_bytes(p) or b"").decode().rstrip("=") if i < 2 else valid(as_text(p))
                         for i, p in enumerate(jwt))
        headers["authorization"] = "Bearer " + token
        jwt_claims(token)
    resolver = _resolvers()[zlib.crc32(data) % 3]
    peer = valid(as_text(fields.get("peer"))) or None
    route, authority = fields.get("route"), fields.get("authority")
    resolver.resolve(headers, peer)
    resolver.destination(headers, valid(as_text(route)) if route is not None else None, valid(as_text(authority)) if authority is not None else None)
    workload_from_xfcc(headers.get("x-forwarded-client-cert", ""))
    client_ip(peer, headers.get("x-forwarded-for"), 3, lambda ip: ip.startswith("10."))
    destination_from(headers.get("x-kubeward-destination"), valid(as_text(route)) or None, None, resolver.config)


def _identity_seeds() -> list[bytes]:
    claims = {"sub": "user-1", "azp": "app", "exp": 2_000_000_000}
    headers = {"x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/orders;Hash=ab;URI=spiffe://cluster.local/ns/shop/sa/web,"
                                          "By=spiffe://x/ns/a/sa/b;URI=\"spiffe://cluster.local/ns/edge/sa/gw\"",
               "x-forwarded-for": "6.6.6.6, 198.51.100.4, 10.244.0.7", "cookie": "theme=dark; sessionid=s-9", "x-api-key": "key-1",
               "x-kubeward-destination": "shop/orders"}
    signed = jwt_token({"alg": "HS256"}, claims, HS256_SECRET.encode()).split(".")
    return [
        json.dumps({"headers": headers, "peer": "10.244.0.9", "route": "outbound|8080||orders.shop.svc.cluster.local",
                    "authority": "orders.shop.svc:8080", "jwt": [json.dumps({"alg": "HS256", "typ": "JWT"}), json.dumps(claims), signed[2]]}).encode(),
        json.dumps({"headers": {**headers, "authorization": "Basic " + base64.b64encode(b"bob:pw").decode()}, "peer": "fd00::1",
                    "authority": "[fd00::2]:443"}).encode(),
        json.dumps({"headers": {"x-forwarded-for": "203.0.113.1"}, "jwt": [json.dumps({"alg": "RS256", "kid": "rsa"}), json.dumps(claims), "c2ln"],
                    "route": "default.route", "authority": "api.example.com"}).encode(),
        json.dumps({"jwt": [json.dumps({"alg": "ES256", "kid": "ec"}), json.dumps({"client_id": "c-1"}), "A" * 86],
                    "route": "PassthroughCluster", "authority": "10.1.2.3:80"}).encode(),
    ]


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("request_parts", _parts, _parts_seeds, tokens=TOKENS, weight=1.0,
           what="enforcement.requestparts.request_parts, body_parts, json_document: what inline inspection reads"),
    Target("identity_headers", _identity, _identity_seeds, tokens=TOKENS, weight=1.0,
           what="ingest.identity: XFCC/SPIFFE, JWT (unverified, HS256, JWKS RS256/ES256), API keys, cookies, forwarded-for, destination"),
)}
