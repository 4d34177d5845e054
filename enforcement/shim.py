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
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily

from enforcement.cache import VerdictCache
from enforcement.decision import ALLOW, Decision, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from enforcement.signatures import load_signatures
from ingest import RequestSummary, hash_object_id, row_to_summary, template_path
from ingest import summary_row as envelope_row

__all__ = ["Shim", "run"]

log = logging.getLogger("kubeward.shim")
CACHE_SIZE = Gauge("kubeward_shim_verdict_cache_entries", "Verdicts in the local cache")

_WANTED = {b"x-kubeward-source-workload", b"x-kubeward-principal", b"x-forwarded-for", b"x-kubeward-destination", b"host", b"x-forwarded-client-cert", b"x-kubeward-namespace"}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
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
    """``ns/serviceaccount`` from the SPIFFE URI of the nearest hop in x-forwarded-client-cert.

    Envoy appends one comma-separated element per proxy; the last is the peer that connected to us.
    """
    for element in reversed(xfcc.split(",")):
        for part in element.split(";"):
            part = part.strip()
            if part.startswith("URI=spiffe://"):
                bits = part[len("URI=spiffe://") :].strip('"').split("/")
                if len(bits) >= 5 and bits[1] == "ns" and bits[3] == "sa":
                    return f"{bits[2]}/{bits[4]}"
    return None


_IDENTITY_HEADERS = (b"x-kubeward-source-workload", b"x-forwarded-client-cert", b"x-forwarded-for", b"x-kubeward-destination", b"host", b"x-kubeward-principal", b"x-kubeward-namespace")
_IDENTITY_CACHE_MAX = 65536
_identities: dict[tuple[bytes | str | None, ...], tuple[str | None, str | None, str | None, str | None, str | None, tuple[str, ...]]] = {}


def _text(value: bytes | str | None) -> str | None:
    """Decoded header value; empty counts as absent."""
    return value.decode("latin-1").strip() or None if isinstance(value, bytes) else None


def _identity(raw: tuple[bytes | str | None, ...]) -> tuple[str | None, str | None, str | None, str | None, str | None, tuple[str, ...]]:
    workload_b, xfcc, xff, dest, host, principal_b, ns, peer_ip = raw
    workload = _text(workload_b)
    if workload is None and isinstance(xfcc, bytes):
        workload = _workload_from_xfcc(xfcc.decode("latin-1"))
    ip = _text(xff.split(b",", 1)[0]) if isinstance(xff, bytes) else None
    ip = ip or (peer_ip if isinstance(peer_ip, str) else None)
    target = _text(dest) or _text(host)
    service = (target.split(".", 1)[0].split(":", 1)[0] or None) if target else None
    principal, namespace = _text(principal_b), _text(ns)
    view = RequestView("", "", workload, principal, ip, service, namespace)
    return workload, principal, ip, service, namespace, view.subject_keys()


def request_view(method: str, path: str, headers: dict[bytes, bytes], peer_ip: str | None) -> RequestView:
    """Build the decision input from the forwarded request line and headers (keys lower-case bytes).

    Identities repeat from request to request, so the parsed identity and its
    verdict-cache keys are memoised per distinct set of identity headers.
    """
    get = headers.get
    raw = (get(b"x-kubeward-source-workload"), get(b"x-forwarded-client-cert"), get(b"x-forwarded-for"), get(b"x-kubeward-destination"), get(b"host"), get(b"x-kubeward-principal"), get(b"x-kubeward-namespace"), peer_ip)
    ident = _identities.get(raw)
    if ident is None:
        if len(_identities) >= _IDENTITY_CACHE_MAX:
            _identities.clear()
        ident = _identities[raw] = _identity(raw)
    return RequestView(method, path, ident[0], ident[1], ident[2], ident[3], ident[4], ident[5])


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
        self._report_all = settings.report == "all"
        self._prefix = settings.path_prefix
        self.allowed = 0

    def handle(self, method: str, url: str, headers: dict[bytes, bytes], peer_ip: str | None) -> bytes:
        """Decide one forwarded request and return the full HTTP response bytes."""
        prefix = self._prefix
        if prefix and url.startswith(prefix):
            url = url[len(prefix) :]
        req = request_view(method, url, headers, peer_ip)
        now = time.time()
        decision = decide(req, self.cache, self.buckets, self.signatures, self.policy, now) if self.synced.is_set() else self._unsynced
        if decision is ALLOW:
            self.allowed += 1
            if self._report_all:
                self.pending.append((now, req, decision))
            return _ALLOW_RESPONSE
        label = f"{decision.would}:{'enforce' if decision.enforced else 'observe'}"
        self.counts[label] = self.counts.get(label, 0) + 1
        if self._report != "none":
            self.pending.append((now, req, decision))
        return _render(decision)

    def decision_counts(self) -> dict[str, int]:
        """Decisions so far by outcome and mode (``allow``, ``deny:enforce``, ``throttle:observe``...)."""
        return {"allow": self.allowed, **self.counts}

    def take_pending(self) -> list[tuple[float, RequestView, Decision]]:
        """Swap out the decisions waiting to be reported."""
        pending, self.pending = self.pending, []
        return pending


def summarize(now: float, req: RequestView, decision: Decision, object_key: bytes) -> RequestSummary:
    """The ``RequestSummary`` a shim reports for one decision (request side only: no upstream status)."""
    return row_to_summary(summary_row(now, req, decision, object_key))


def summary_row(now: float, req: RequestView, decision: Decision, object_key: bytes) -> dict[str, Any]:
    """The same record as an envelope row (the reporter thread's path)."""
    template, ids = template_path(req.path)
    workload = req.source_workload
    return envelope_row(
        id=uuid.uuid4().hex,
        time=now,
        reporter="shim",
        source={"workload": workload, "namespace": workload.split("/", 1)[0] if workload else None, "ip": req.ip},
        principal=req.principal,
        destination={"service": req.service or "-", "namespace": req.namespace},
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
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        self.transport.write(self.handler(method, self.url.decode("latin-1"), self.headers, self.peer))
        if not self.parser.should_keep_alive():
            self.transport.close()


class _DecisionCollector:
    """Exposes the shim's plain-int decision counts as a Prometheus counter at scrape time (no cost per request)."""

    def __init__(self, shim: Shim):
        self.shim = shim

    def collect(self) -> Any:
        family = CounterMetricFamily("kubeward_shim_decisions", "Decisions taken by outcome and mode", labels=["decision"])
        for label, count in self.shim.decision_counts().items():
            family.add_metric([label], count)
        yield family


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
            delivery = sorted(control.delivery_ms) if control is not None else []
            stats = {"decisions": shim.decision_counts(), "cache_entries": len(shim.cache), "synced": shim.synced.is_set(), "latency_ms": lat, "verdict_delivery_ms": delivery}
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
            publisher.publish_rows([summary_row(t, r, d, key) for t, r, d in pending])
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

        control = ControlConsumer(settings.bootstrap, shim.cache, settings.verdict_key.get_secret_value().encode(), synced=shim.synced)
        control_task = asyncio.ensure_future(control.run())
        if settings.report != "none":
            publisher = SummaryPublisher(settings.bootstrap, client_id="kubeward-shim", linger_ms=5.0)
            threading.Thread(target=_reporter, args=(shim, publisher, stop_threads), daemon=True, name="kubeward-report").start()
    else:
        shim.synced.set()
    collector = _DecisionCollector(shim)
    REGISTRY.register(collector)
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
    REGISTRY.unregister(collector)
    stop_threads.set()
    if control is not None:
        control.stop()
        await asyncio.wait([control_task], timeout=2)


def run(settings: ShimSettings) -> None:
    """Run the shim on uvloop in this process."""
    import sys

    import uvloop

    # Hand the GIL to the control and report threads less often than the 5 ms default:
    # the event loop releases it whenever it waits for I/O anyway.
    sys.setswitchinterval(0.02)

    uvloop.run(serve(settings))
