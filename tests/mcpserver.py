"""A real MCP server for tests (the official SDK's ``MCPServer``, streamable HTTP under uvicorn on 127.0.0.1), and a
raw HTTP client that keeps each exchange as a data plane sees it."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ingest.mcp import McpCall, parse_exchange

ACCEPT = "application/json, text/event-stream"


@contextmanager
def serving(server: Any) -> Iterator[str]:
    """Serve ``server`` (an ``MCPServer``) on a free port; yields its endpoint URL. It accepts any 127.0.0.1 Host
    (the SDK's DNS-rebinding protection refuses others), so a local proxy in front keeps working."""
    import uvicorn
    from mcp.server.transport_security import TransportSecuritySettings

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    security = TransportSecuritySettings(allowed_hosts=["127.0.0.1:*"])
    web = uvicorn.Server(uvicorn.Config(server.streamable_http_app(transport_security=security), log_level="warning"))
    thread = threading.Thread(target=web.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not web.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert web.started, "the MCP server did not start"
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        web.should_exit = True
        thread.join(timeout=10)


class Exchange:
    """Raw HTTP exchanges with a streamable-HTTP MCP endpoint, as a data plane would see them."""

    def __init__(self, url: str) -> None:
        self.url, self.session, self.seen = url, None, 0
        self.status = 0  # of the last answer

    def post(self, message: Any) -> tuple[dict[str, str], bytes, dict[str, str], bytes]:
        """POST one JSON-RPC message (or batch); (request headers, body, answer headers, answer body)."""
        self.seen += 1
        headers = {"content-type": "application/json", "accept": ACCEPT, "mcp-protocol-version": "2025-06-18"}
        if self.session:
            headers["mcp-session-id"] = self.session
        body = json.dumps(message).encode()
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                self.status, answer_headers, answer = r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            self.status, answer_headers, answer = e.code, dict(e.headers), e.read()
        self.session = self.session or answer_headers.get("mcp-session-id")
        return headers, body, {k.lower(): v for k, v in answer_headers.items()}, answer

    def message(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self.seen + 1, "method": method}
        if params is not None:
            message["params"] = params
        return message

    def call(self, method: str, params: dict[str, Any] | None = None) -> McpCall | None:
        """One request, parsed as the collector parses it."""
        return parse_exchange(*self.post(self.message(method, params)))

    def initialize(self) -> McpCall | None:
        return self.call("initialize", {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "agent", "version": "1"}})
