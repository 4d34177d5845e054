"""A stand-in for the data plane in the demo: asks the shim about each call as Envoy would.

``CheckClient`` keeps a pool of keep-alive HTTP/1.1 connections to the shim and
sends one ext_authz-style check per simulated call (method, path, identity
headers, Host = destination service), returning the status and the decision
headers. It is a client only: the shim under test is the real server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httptools

__all__ = ["CheckClient", "CheckResult"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The shim's answer to one check."""

    status: int
    decision: str
    reason: str | None


class _Response:
    __slots__ = ("status", "headers", "done")

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self.done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer

    async def check(self, request: bytes) -> CheckResult:
        self.writer.write(request)
        resp = _Response()
        parser = httptools.HttpResponseParser(resp)
        while not resp.done:
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("shim closed the connection")
            parser.feed_data(data)
        h = resp.headers
        reason = h.get(b"x-kubeward-reason")
        return CheckResult(parser.get_status_code(), h.get(b"x-kubeward-decision", b"allow").decode(), reason.decode() if reason else None)


def check_request(method: str, path: str, service: str, namespace: str | None, workload: str | None, principal: str | None, ip: str | None) -> bytes:
    """The HTTP request bytes a data plane sends to the shim for one call."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {service}"]
    if workload:
        lines.append(f"x-kubeward-source-workload: {workload}")
    if principal:
        lines.append(f"x-kubeward-principal: {principal}")
    if ip:
        lines.append(f"x-forwarded-for: {ip}")
    if namespace:
        lines.append(f"x-kubeward-namespace: {namespace}")
    return ("\r\n".join(lines) + "\r\ncontent-length: 0\r\n\r\n").encode("latin-1")


class CheckClient:
    """A pool of connections to the shim; ``check`` borrows one per request."""

    def __init__(self, host: str, port: int, connections: int = 32):
        self.host, self.port, self.size = host, port, connections
        self._idle: asyncio.Queue[_Connection] = asyncio.Queue()

    async def open(self) -> None:
        """Open every connection of the pool."""
        for _ in range(self.size):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            self._idle.put_nowait(_Connection(reader, writer))

    async def check(self, request: bytes) -> CheckResult:
        """Send one check and wait for the answer (reconnects once if the connection died)."""
        conn = await self._idle.get()
        try:
            result = await conn.check(request)
        except (ConnectionError, OSError):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            conn = _Connection(reader, writer)
            result = await conn.check(request)
        self._idle.put_nowait(conn)
        return result

    async def close(self) -> None:
        """Close every idle connection."""
        while not self._idle.empty():
            self._idle.get_nowait().writer.close()
