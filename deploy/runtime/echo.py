"""The protected service of the data-plane tests: a tiny threaded HTTP server that echoes what it got.

``EchoUpstream`` binds 127.0.0.1, answers every request 200 with JSON
``{"method", "path", "headers", "body_bytes"}`` (header names lower case) and
keeps the same records in ``seen``, so a test can tell what a proxy let
through and with which headers.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EchoUpstream"]


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the second waits for the peer's delayed
    # ACK, about 40 ms on every keep-alive answer (seen as a 44 ms p50 in the WAF bench).
    disable_nagle_algorithm = True
    server: _EchoServer

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {"method": self.command, "path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body_bytes": len(body)}
        self.server.seen.append(seen)
        out = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _answer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[dict[str, Any]]


@dataclass
class EchoUpstream:
    """The protected service: answers 200 with ``{"method", "path", "headers", "body_bytes"}`` of what it got.

    ``seen`` lists every request in arrival order. Start and stop with ``with``.
    """

    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    _server: _EchoServer | None = None

    def start(self) -> EchoUpstream:
        """Bind 127.0.0.1 (``port`` 0 picks one) and serve from a daemon thread."""
        self._server = _EchoServer(("127.0.0.1", self.port), _EchoHandler)
        self._server.seen = self.seen
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True, name="echo-upstream").start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EchoUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
