"""The enforcement shim: an Envoy ext_authz HTTP decision service on uvloop + httptools.

The data plane forwards each request's method, path and identity headers; the
shim answers 200 (allow, ``x-kubeward-*`` headers for the upstream), 403 (deny,
``x-kubeward-reason``) or 429 (throttle, ``Retry-After``), from ``decide``. The
same contract serves Istio ``CUSTOM`` providers, Envoy Gateway and Traefik
ForwardAuth. Identity comes from ``x-kubeward-source-workload`` or the SPIFFE
URI in ``x-forwarded-client-cert``, ``x-kubeward-principal``, ``x-forwarded-for``
and ``x-kubeward-destination`` (else the Host header's first label).

A second port serves ``/metrics`` (Prometheus), ``/healthz`` and ``/stats``
(JSON). Decisions are reported as ``RequestSummary`` records (setting
``report``) by a background thread, off the request path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
import uuid
from typing import Any

import httptools
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from enforcement.cache import VerdictCache
from enforcement.decision import ALLOW, Decision, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from enforcement.signatures import load_signatures
from ingest import Destination, RequestSummary, Source
from ingest.templating import hash_object_id, template_path

__all__ = ["Shim", "run"]

log = logging.getLogger("kubeward.shim")
DECISIONS = Counter("kubeward_shim_decisions_total", "Decisions taken", ["would", "mode"])
CACHE_SIZE = Gauge("kubeward_shim_verdict_cache_entries", "Verdicts in the local cache")

_WANTED = {b"x-kubeward-source-workload", b"x-kubeward-principal", b"x-forwarded-for", b"x-kubeward-destination", b"host", b"x-forwarded-client-cert", b"x-kubeward-namespace"}
_ALLOW_RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-kubeward-decision: allow\r\n\r\n"


def _render(decision: Decision) -> bytes:
    if decision is ALLOW:
        return _ALLOW_RESPONSE
    lines = [f"x-kubeward-decision: {decision.would if decision.enforced else 'allow'}"]
    if decision.reason:
        lines.append(f"x-kubeward-reason: {decision.reason}")
    if not decision.enforced:
        lines.append(f"x-kubeward-would: {decision.would}")
    if decision.status == 429:
        lines.append(f"retry-after: {decision.retry_after}")
    body = b"" if decision.status == 200 else f"kubeward: {decision.would} ({decision.reason})\n".encode()
    reason = {200: "OK", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}[decision.status]
    head = f"HTTP/1.1 {decision.status} {reason}\r\ncontent-length: {len(body)}\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    return head.encode() + body


def _workload_from_xfcc(xfcc: str) -> str | None:
    """``ns/serviceaccount`` from a SPIFFE URI (``URI=spiffe://td/ns/<ns>/sa/<sa>``) in x-forwarded-client-cert."""
    for part in xfcc.split(";"):
        if part.startswith("URI=spiffe://"):
            bits = part[len("URI=spiffe://") :].split("/")
            if len(bits) >= 5 and bits[1] == "ns" and bits[3] == "sa":
                return f"{bits[2]}/{bits[4]}"
    return None


def request_view(method: str, path: str, headers: dict[bytes, bytes], peer_ip: str | None) -> RequestView:
    """Build the decision input from the forwarded request line and headers (keys lower-case bytes)."""
    get = headers.get
    raw = get(b"x-kubeward-source-workload")
    workload = raw.decode("latin-1") if raw else None
    if workload is None and b"x-forwarded-client-cert" in headers:
        workload = _workload_from_xfcc(headers[b"x-forwarded-client-cert"].decode("latin-1"))
    raw = get(b"x-forwarded-for")
    ip = raw.split(b",", 1)[0].strip().decode("latin-1") if raw else peer_ip
    raw = get(b"x-kubeward-destination") or get(b"host")
    service = raw.split(b".", 1)[0].split(b":", 1)[0].decode("latin-1") if raw else None
    raw = get(b"x-kubeward-principal")
    principal = raw.decode("latin-1") if raw else None
    raw = get(b"x-kubeward-namespace")
    return RequestView(method, path, workload, principal, ip, service, raw.decode("latin-1") if raw else None)


class Shim:
    """Decision state shared by all connections: cache, buckets, signatures, counters, reports."""

    def __init__(self, settings: ShimSettings):
        self.settings = settings
        self.cache = VerdictCache()
        self.buckets = TokenBuckets()
        self.signatures = load_signatures(settings.rules_path)
        self.policy = settings.policy
        self.counts: dict[str, int] = {}
        self.pending: list[tuple[float, RequestView, Decision]] = []
        self.synced = threading.Event()
        self._unsynced = Decision(403 if settings.failure_mode == "deny" else 200, "deny" if settings.failure_mode == "deny" else "allow", settings.failure_mode == "deny", "kubeward-unsynced")
        self._report = settings.report

    def handle(self, method: str, url: str, headers: dict[bytes, bytes], peer_ip: str | None) -> bytes:
        """Decide one forwarded request and return the full HTTP response bytes."""
        prefix = self.settings.path_prefix
        path = url[len(prefix) :] if prefix and url.startswith(prefix) else url
        req = request_view(method, path, headers, peer_ip)
        now = time.time()
        decision = decide(req, self.cache, self.buckets, self.signatures, self.policy, now) if self.synced.is_set() else self._unsynced
        label = decision.would if decision is ALLOW else f"{decision.would}:{'enforce' if decision.enforced else 'observe'}"
        self.counts[label] = self.counts.get(label, 0) + 1
        if self._report == "all" or (self._report == "denied" and decision.status != 200):
            self.pending.append((now, req, decision))
        return _render(decision)

    def take_pending(self) -> list[tuple[float, RequestView, Decision]]:
        """Swap out the decisions waiting to be reported."""
        pending, self.pending = self.pending, []
        return pending


def summarize(now: float, req: RequestView, decision: Decision, object_key: bytes) -> RequestSummary:
    """The ``RequestSummary`` a shim reports for one decision (request side only: no status)."""
    template, ids = template_path(req.path)
    return RequestSummary(
        id=uuid.uuid4().hex,
        time=now,
        reporter="shim",
        source=Source(workload=req.source_workload, ip=req.ip, namespace=(req.source_workload or "").split("/", 1)[0] or None),
        principal=req.principal,
        destination=Destination(service=req.service or "-", namespace=req.namespace),
        method=req.method,
        path_template=template,
        status=decision.status if decision.status != 200 else None,
        object_ids=[hash_object_id(i, object_key) for i in ids],
        inline_findings=list(decision.findings),
        decision=decision.would if decision.enforced or decision.would == "allow" else f"observe:{decision.would}",
    )


class _HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools calls back into it."""

    __slots__ = ("handler", "parser", "transport", "url", "headers", "peer")

    def __init__(self, handler: Any):
        self.handler = handler
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.peer: str | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _WANTED:
            self.headers[name] = value

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.transport.write(self.handler(method, self.url.decode("latin-1"), self.headers, self.peer))
        if not self.parser.should_keep_alive():
            self.transport.close()


def _admin_handler(shim: Shim, control: Any) -> Any:
    def handle(method: str, url: str, headers: dict[bytes, bytes], peer: str | None) -> bytes:
        if url.startswith("/metrics"):
            CACHE_SIZE.set(len(shim.cache))
            body, ctype = generate_latest(), CONTENT_TYPE_LATEST
        elif url.startswith("/healthz"):
            ok = shim.synced.is_set()
            body, ctype = (b"ok\n" if ok else b"syncing\n"), "text/plain"
            if not ok:
                return b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 8\r\ncontent-type: text/plain\r\n\r\nsyncing\n"
        elif url.startswith("/stats"):
            lat = sorted(control.latencies_ms) if control is not None else []
            stats = {"decisions": shim.counts, "cache_entries": len(shim.cache), "synced": shim.synced.is_set(), "latency_ms": lat}
            body, ctype = json.dumps(stats).encode(), "application/json"
        else:
            return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"
        return f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body

    return handle


def _reporter(shim: Shim, publisher: Any, stop: threading.Event) -> None:
    key = shim.settings.object_id_key.get_secret_value().encode()
    while not stop.wait(0.02):
        pending = shim.take_pending()
        if pending:
            publisher.publish([summarize(t, r, d, key) for t, r, d in pending])
        publisher.flush_due()
    publisher.flush(timeout=10)


async def serve(settings: ShimSettings, ready: threading.Event | None = None, stop_event: asyncio.Event | None = None) -> None:
    """Run the shim until ``stop_event`` is set (or forever)."""
    shim = Shim(settings)
    control = publisher = None
    stop_threads = threading.Event()
    if settings.bootstrap:
        from enforcement.control import ControlConsumer
        from ingest.publish import SummaryPublisher

        control = ControlConsumer(settings.bootstrap, shim.cache, settings.verdict_key.get_secret_value().encode())
        control.synced = shim.synced
        control.start()
        if settings.report != "none":
            publisher = SummaryPublisher(settings.bootstrap, client_id="kubeward-shim", linger_ms=5.0)
            threading.Thread(target=_reporter, args=(shim, publisher, stop_threads), daemon=True, name="kubeward-report").start()
    else:
        shim.synced.set()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _HttpConnection(shim.handle), settings.host, settings.port, reuse_port=True, backlog=1024)
    admin = await loop.create_server(lambda: _HttpConnection(_admin_handler(shim, control)), settings.host, settings.admin_port)
    log.info("shim listening", extra={"port": settings.port, "admin_port": settings.admin_port})
    if ready is not None:
        ready.set()
    stop_event = stop_event or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop_event.set)
        except (RuntimeError, ValueError):
            pass
    await stop_event.wait()
    server.close()
    admin.close()
    stop_threads.set()
    if control is not None:
        control.stop()


def run(settings: ShimSettings) -> None:
    """Run the shim on uvloop in this process."""
    import uvloop

    uvloop.run(serve(settings))
