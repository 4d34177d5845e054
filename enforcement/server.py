"""The shim's network edge: the HTTP check server, the admin port and the reporter thread.

* **Check port** (``port``): HTTP/1.1 on uvloop + httptools. Each request goes
  to ``Shim.handle`` (``enforcement.shim``) and its answer is written back; the
  adapter setting decides how the request is read (Envoy ext_authz HTTP, nginx
  ``auth_request``, Traefik ForwardAuth). Only the headers the adapter reads are
  kept. A request httptools cannot parse is answered per ``failure_mode`` with
  ``x-kubeward-decision: unparsed`` and the connection is closed.
* **Admin port** (``admin_host``:``admin_port``, loopback unless ``admin_token``
  is set): ``/metrics`` (Prometheus) and ``/stats`` (JSON), both behind the
  bearer token when one is set; ``/healthz`` (liveness: 200 while the shim
  answers, its body the state below) and ``/readyz`` (200 once warmed up and
  synced, else 503 naming why; with ``unready_when_stale`` also 503 while the
  cache is stale). Both bodies are JSON:
  ``warm``, ``synced``, ``cache_age_s`` (since the broker last confirmed the
  cache current), ``stale``, ``reports_queued``, ``reports_dropped``. A stale
  cache never fails liveness (a restart would rebuild the cache from a broker
  that is away) and fails readiness only when asked to: every replica loses
  the broker at once, and dropping them all would hand every request to the
  data plane's failure mode; the cache keeps answering meanwhile.
* **Start order**: the admin port, then ``Shim.warm_up`` (a thread: the
  control consumer syncs meanwhile), then the check ports.
* **Allow-list reload**: with ``allow_list.file`` set, a daemon thread calls
  ``Shim.reload_allowlist`` every ``allow_list.reload_s`` (a changed file is
  read and swapped in off the request path).
* **Reporter**: a daemon thread that publishes the decisions the shim queued
  as ``RequestSummary`` rows (setting ``report``), off the request path. It
  connects on its own, retrying every ``REPORTER_RETRY_S``: a shim starts and
  decides with Kafka away; what cannot be queued is dropped and counted.

Metrics cost almost nothing per request: counters are plain integers on
``Shim`` read at scrape time, and ``kubeward_authz_decision_duration_seconds{adapter}``
times one check in ``timing_sample`` (default 16). Measured here (process
time): prometheus_client's ``Histogram.observe`` costs about 1 us, a fifth of a
whole check, so it is not used; ``DecisionTimer.observe`` costs 0.15 us and a
clock read 0.06 us. Timing every check adds about 0.45 us (10%); one in 16 about
0.09 us (2%), most of it the sampling counter.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httptools
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from enforcement.adapters.httpcheck import UnparsedRequest
from enforcement.settings import ShimSettings
from enforcement.shim import Shim, identity_config, summary_row

__all__ = ["DecisionTimer", "HttpConnection", "admin_handler", "run", "serve"]

log = logging.getLogger("kubeward.shim")
CACHE_SIZE = Gauge("kubeward_shim_verdict_cache_entries", "Verdicts in the local cache")
REPORTER_RETRY_S = 5.0

Handler = Callable[[str, str, dict[bytes, bytes], "str | None", "bytes | None"], bytes]
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")}
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_BUCKETS = (10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3)


class DecisionTimer:
    """A histogram of check durations fed by one check in ``every`` per connection (a power of two; 0 = off)."""

    __slots__ = ("mask", "counts", "total")

    def __init__(self, every: int):
        if every and every & (every - 1):
            raise ValueError(f"timing_sample must be 0 or a power of two, got {every}")
        self.mask = every - 1 if every else -1
        self.counts = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        """Count one timed check."""
        self.counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self.total += seconds

    def family(self, adapter: str) -> HistogramMetricFamily:
        """The histogram as a Prometheus metric family (cumulative buckets)."""
        family = HistogramMetricFamily("kubeward_authz_decision_duration_seconds", f"Time to answer one check, sampled: one check in {self.mask + 1}", labels=["adapter"])
        running, buckets = 0, []
        for bound, count in zip((*map(str, _BUCKETS), "+Inf"), self.counts):
            running += count
            buckets.append((bound, running))
        family.add_metric([adapter], buckets, self.total)
        return family


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; httptools calls back into it.

    ``wanted`` limits the headers kept (None keeps all), ``wanted_prefixes`` keeps
    headers whose name starts with one of them too; ``on_garbage`` answers a
    request httptools rejects (default: 400); ``timer`` samples handler time.
    The request body is kept up to ``body_limit`` bytes (0: bodies are ignored
    and the handler gets None); a longer body reaches the handler cut to the
    limit plus one byte, so it can tell a cut body from one that fits. A
    handler that raises is logged and its request answered as garbage; an
    upgrade request is answered, then the connection is closed.
    """

    __slots__ = ("handler", "wanted", "prefixes", "body_limit", "body", "on_garbage", "timer", "mask", "seen", "parser", "transport", "url", "headers", "peer")

    def __init__(self, handler: Handler, wanted: frozenset[bytes] | None = None, on_garbage: Callable[[str | None], bytes] | None = None,
                 timer: DecisionTimer | None = None, *, wanted_prefixes: tuple[bytes, ...] = (), body_limit: int = 0):
        self.handler = handler
        self.wanted = wanted
        self.prefixes = wanted_prefixes
        self.body_limit = body_limit
        self.body: bytes | None = None
        self.on_garbage = on_garbage
        self.timer = timer
        # One check in mask+1 on this connection is timed; -1 never matches (seen & -1 == seen > 0).
        self.mask = timer.mask if timer is not None else -1
        self.seen = 0
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
        except httptools.HttpParserUpgrade:
            # An upgrade (``Connection: upgrade``, ``CONNECT``) ends HTTP/1.1 on this connection once its request
            # was answered; what follows is no check. Uncaught, it left the protocol (uvloop then aborts the
            # connection, dropping answers not yet flushed).
            self.transport.close()
        except httptools.HttpParserError as exc:
            if isinstance(exc, httptools.HttpParserCallbackError):  # our handler raised: a bug, answered as garbage
                log.error("check handler failed; answered as an unparsed request", exc_info=exc.__context__ or exc)
            self.transport.write(self.on_garbage(self.peer) if self.on_garbage is not None else _BAD_REQUEST)
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.body = None

    def on_body(self, chunk: bytes) -> None:
        if self.body_limit:
            kept = self.body or b""
            if len(kept) <= self.body_limit:
                self.body = kept + chunk[: self.body_limit + 1 - len(kept)]

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if self.wanted is None or name in self.wanted or (self.prefixes and name.startswith(self.prefixes)):
            self.headers[name] = value

    def on_message_complete(self) -> None:
        raw_method = self.parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("latin-1")
        self.seen += 1
        if self.seen & self.mask:
            self.transport.write(self.handler(method, self.url.decode("latin-1"), self.headers, self.peer, self.body))
        else:
            self._timed(method)
        if not self.parser.should_keep_alive():
            self.transport.close()

    def _timed(self, method: str) -> None:
        started = time.perf_counter()
        answer = self.handler(method, self.url.decode("latin-1"), self.headers, self.peer, self.body)
        if self.timer is not None:
            self.timer.observe(time.perf_counter() - started)
        self.transport.write(answer)


def check_connection(shim: Shim, timer: DecisionTimer | None = None) -> HttpConnection:
    """A check-port connection for ``shim``: its adapter's headers, unparsed answers for garbage."""
    garbage = UnparsedRequest("http", "the request is not valid HTTP/1.1")
    adapter = shim.adapter
    return HttpConnection(shim.handle, adapter.wanted, lambda peer: shim.handle_unparsed("-", "/", peer, garbage), timer,
                          wanted_prefixes=adapter.wanted_prefixes, body_limit=adapter.body_limit)


class _ShimCollector:
    """Exposes the shim's plain-int counters (and the sampled timer) at scrape time."""

    def __init__(self, shim: Shim, timer: DecisionTimer, control: Any = None):
        self.shim, self.timer, self.control = shim, timer, control

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("kubeward_shim_decisions", "Decisions taken by outcome and mode", labels=["decision"])
        for label, count in self.shim.decision_counts().items():
            family.add_metric([label], count)
        yield family
        yield CounterMetricFamily("kubeward_shim_reports_dropped", "Decisions not reported because the report queue was full (report_queue_max)",
                                  value=self.shim.reports_dropped)
        failed = self.shim.report_failures + (self.shim.report_publisher.stats()["rows_failed"] if self.shim.report_publisher is not None else 0)
        yield CounterMetricFamily("kubeward_shim_reports_failed", "Reports that could not be published (a batch that failed, or the broker refused)", value=failed)
        yield GaugeMetricFamily("kubeward_shim_reports_queued", "Decisions waiting for the reporter", value=len(self.shim.pending))
        if self.control is not None:
            yield GaugeMetricFamily("kubeward_shim_verdict_cache_age_seconds", "Seconds since the broker last confirmed the verdict cache current",
                                    value=self.control.cache_age_s(time.time()))
        unparsed = CounterMetricFamily("kubeward_shim_unparsed", "Check requests the shim could not read, answered per failure_mode", labels=["adapter"])
        unparsed.add_metric([self.shim.adapter.name], self.shim.unparsed)
        yield unparsed
        over = CounterMetricFamily("kubeward_inspection_over_budget", "Requests whose inline RE2 scan ran past inspection.budget_ms (cut off, then per over_budget)")
        over.add_metric([], getattr(self.shim.waf, "over_budget", 0))
        yield over
        if self.shim.schema is not None:
            stats = self.shim.schema.stats()
            held = GaugeMetricFamily("kubeward_schema_validation_held", "Endpoints and properties request-schema validation holds", labels=["kind"])
            counted = CounterMetricFamily("kubeward_schema_validation", "Request-schema validation: requests checked and learned, endpoints and properties that did not fit", labels=["counter"])
            for name, value in stats.items():
                (held if name in ("endpoints", "properties") else counted).add_metric([name], value)
            yield held
            yield counted
        fast = self.shim.fast
        if fast is not None:
            stats = fast.stats()
            yield GaugeMetricFamily("kubeward_shim_fast_tier_actors", "Actors the fast tier is counting", value=stats["actors_tracked"])
            yield GaugeMetricFamily("kubeward_shim_fast_tier_local_verdicts", "Local verdicts of the fast tier standing", value=stats["local_verdicts"])
            tripped = CounterMetricFamily("kubeward_shim_fast_tier_tripped", "Local verdicts the fast tier issued, by signal", labels=["signal"])
            for name, value in stats.items():
                if name.startswith("tripped_"):
                    tripped.add_metric([name.removeprefix("tripped_")], value)
            yield tripped
            yield CounterMetricFamily("kubeward_shim_fast_tier_evicted", "Actor windows dropped to stay within fast_tier.max_actors", value=stats["evicted"])
            yield CounterMetricFamily("kubeward_shim_fast_tier_lifted", "Local verdicts lifted by a signed lift before they expired", value=stats["lifted"])
        if self.shim.allowlist is not None:
            refused = CounterMetricFamily("kubeward_shim_allowlist_refusals",
                                          "Calls the learned allow-list refused (enforce) or would have refused (observe), by reason and mode",
                                          labels=["reason", "mode"])
            for (reason, mode), count in sorted(self.shim.allowlist_refusals.items()):
                refused.add_metric([reason, mode], count)
            yield refused
            yield GaugeMetricFamily("kubeward_shim_allowlist_endpoints", "Endpoints in the allow-list in force", value=len(self.shim.allowlist))
            yield CounterMetricFamily("kubeward_shim_allowlist_reload_errors", "Changed allow-list files that did not load (the list in force stayed)",
                                      value=self.shim.allowlist_reload_errors)
        if self.timer.mask >= 0:
            yield self.timer.family(self.shim.adapter.name)


def _ok(body: bytes, ctype: str) -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


def health(shim: Shim, control: Any, now: float | None = None) -> dict[str, Any]:
    """The shim's state as ``/healthz`` and ``/readyz`` report it; ``ready`` is what ``/readyz`` answers."""
    now = time.time() if now is None else now
    age = control.cache_age_s(now) if control is not None else 0.0
    stale = age > shim.settings.stale_after_s
    warm, synced = shim.warm.is_set(), shim.synced.is_set()
    why = [name for name, bad in (("warming up", not warm), ("syncing", not synced), ("stale", synced and stale and shim.settings.unready_when_stale)) if bad]
    return {"ready": not why, "why": why, "warm": warm, "synced": synced, "cache_age_s": round(age, 3), "stale": stale,
            "cache_entries": len(shim.cache), "reports_queued": len(shim.pending), "reports_dropped": shim.reports_dropped,
            "reports_failed": shim.report_failures + (shim.report_publisher.stats()["rows_failed"] if shim.report_publisher is not None else 0)}


def _json_response(status: str, value: object) -> bytes:
    body = json.dumps(value).encode()
    return f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body


_UNAUTHORIZED = b"HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer\r\ncontent-length: 0\r\n\r\n"


def admin_handler(shim: Shim, control: Any) -> Handler:
    """The admin port's handler: ``/healthz``, ``/readyz`` open; ``/metrics``, ``/stats`` behind ``admin_token`` if set."""
    token = shim.settings.admin_token
    expected = b"Bearer " + token.get_secret_value().encode() if token is not None else None

    def handle(method: str, url: str, headers: dict[bytes, bytes], peer: str | None, body: bytes | None = None) -> bytes:
        if url.startswith("/healthz"):
            return _json_response("200 OK", health(shim, control))
        if url.startswith("/readyz"):
            state = health(shim, control)
            return _json_response("200 OK" if state["ready"] else "503 Service Unavailable", state)
        if expected is not None and not hmac.compare_digest(headers.get(b"authorization", b""), expected):
            return _UNAUTHORIZED
        if url.startswith("/metrics"):
            CACHE_SIZE.set(len(shim.cache))
            return _ok(generate_latest(), CONTENT_TYPE_LATEST)
        if url.startswith("/stats"):
            lat = sorted(control.latencies_ms) if control is not None else []
            delivery = sorted(control.delivery_ms) if control is not None else []
            stats = {
                "adapter": shim.adapter.name,
                "decisions": shim.decision_counts(),
                "unparsed": shim.unparsed,
                **health(shim, control),
                "latency_ms": lat,
                "verdict_delivery_ms": delivery,
                "fast_tier": shim.fast.stats() if shim.fast is not None else None,
                "allowlist": None if shim.allowlist is None else {
                    "endpoints": len(shim.allowlist), "destinations": len(shim.allowlist.destinations), "reloads": shim.allowlist_reloads,
                    "reload_errors": shim.allowlist_reload_errors,
                    "refusals": {f"{reason}:{mode}": n for (reason, mode), n in sorted(shim.allowlist_refusals.items())}},
            }
            return _ok(json.dumps(stats).encode(), "application/json")
        return b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"

    return handle


def _reporter(shim: Shim, connect: Callable[[], Any], stop: threading.Event) -> None:
    """Publish what the shim queued; connect (and reconnect after a failed start) on this thread, never on the loop."""
    key = shim.settings.object_id_key.get_secret_value().encode()
    publisher: Any = None
    retry_at = 0.0
    while not stop.wait(0.02):
        if publisher is None:
            if time.monotonic() < retry_at:
                continue
            try:
                publisher = connect()
            except Exception as exc:  # noqa: BLE001 - Kafka away: decisions queue (bounded) meanwhile
                log.warning("reporter cannot reach Kafka; retrying", extra={"error": repr(exc), "retry_s": REPORTER_RETRY_S,
                                                                           "queued": len(shim.pending), "dropped": shim.reports_dropped})
                retry_at = time.monotonic() + REPORTER_RETRY_S
                continue
        shim.report_publisher = publisher
        _publish_pending(shim, publisher, key)
    if publisher is not None:
        _publish_pending(shim, publisher, key)  # what was queued until the stop
        publisher.flush(timeout=10)
    else:
        shim.report_failures += len(shim.take_pending())


def _publish_pending(shim: Shim, publisher: Any, key: bytes) -> None:
    pending = shim.take_pending()
    try:
        if pending:
            publisher.publish_rows([summary_row(t, r, d, key) for t, r, d in pending])
        publisher.flush_due()
    except Exception:  # noqa: BLE001 - the thread must outlive one bad batch; the rows are counted lost
        shim.report_failures += len(pending)  # this thread's own counter: reports_dropped is the loop's
        log.exception("reports could not be published", extra={"rows": len(pending)})


def _start_kafka(shim: Shim, settings: ShimSettings, stop_threads: threading.Event) -> tuple[Any, asyncio.Future[None] | None]:
    """Control consumer on the loop and reporter thread, when a broker is configured; else mark synced."""
    if not settings.bootstrap:
        shim.synced.set()
        return None, None
    from enforcement.control import ControlConsumer
    from ingest.publish import SummaryPublisher
    from ingest.signing import verdict_keys

    keys = verdict_keys(settings.verdict_key, settings.verdict_key_id, settings.verdict_keys_accepted)
    control = ControlConsumer(settings.bootstrap, shim.cache, keys, synced=shim.synced, policy=shim.policy, on_policy=shim.set_policy, security=settings.kafka)
    task = asyncio.ensure_future(control.run())
    if settings.report != "none":
        bootstrap = settings.bootstrap

        def connect() -> SummaryPublisher:
            return SummaryPublisher(bootstrap, client_id="kubeward-shim", linger_ms=5.0, security=settings.kafka)

        threading.Thread(target=_reporter, args=(shim, connect, stop_threads), daemon=True, name="kubeward-report").start()
    return control, task


def _reload_allowlist(shim: Shim, every_s: float, stop: threading.Event) -> None:
    """Re-read a changed allow-list file every ``every_s`` seconds, off the request path, until ``stop`` is set."""
    while not stop.wait(every_s):
        try:
            shim.reload_allowlist()
        except Exception:  # noqa: BLE001 - a reload must never stop reloading; the list in force stays
            log.exception("allow-list reload failed")


async def _start_grpc(shim: Shim, settings: ShimSettings) -> Any:
    """The Envoy ext_authz gRPC check service on ``grpc_port``, on this loop (same state, no locks), or None."""
    if settings.grpc_port is None:
        return None
    from enforcement.adapters.envoy_grpc import EnvoyGrpcAdapter, GrpcAuthzServer
    from ingest.identity import IdentityResolver

    server = GrpcAuthzServer(shim.decide_view, EnvoyGrpcAdapter(IdentityResolver(identity_config(settings), shim.pods)))
    await server.start_async(settings.host, settings.grpc_port)
    return server


async def _start_extproc(shim: Shim, settings: ShimSettings) -> Any:
    """The Envoy ext_proc redaction service on ``redaction.extproc_port``, on this loop, or None."""
    if settings.redaction.extproc_port is None:
        return None
    from enforcement.adapters.envoy_extproc import ExtProcRedactionServer, RedactionCollector, cache_lookup
    from ingest.identity import IdentityResolver

    report = None if settings.report == "none" else shim.queue_report
    server = ExtProcRedactionServer(settings.redaction, IdentityResolver(identity_config(settings), shim.pods), cache_lookup(shim.cache), report)
    await server.start_async(settings.host, settings.redaction.extproc_port)
    server.collector = RedactionCollector(server.stats)
    REGISTRY.register(server.collector)
    return server


async def serve(settings: ShimSettings, ready: threading.Event | None = None, stop_event: asyncio.Event | None = None, shim: Shim | None = None) -> None:
    """Run the shim until ``stop_event`` is set (or SIGTERM/SIGINT)."""
    shim = shim or Shim(settings)
    stop_threads = threading.Event()
    control, control_task = _start_kafka(shim, settings, stop_threads)
    if settings.allow_list.file is not None and settings.allow_list.reload_s > 0:
        threading.Thread(target=_reload_allowlist, args=(shim, settings.allow_list.reload_s, stop_threads), daemon=True,
                         name="kubeward-allowlist").start()
    timer = DecisionTimer(settings.timing_sample)
    collector = _ShimCollector(shim, timer, control)
    REGISTRY.register(collector)
    loop = asyncio.get_running_loop()
    admin = await loop.create_server(lambda: HttpConnection(admin_handler(shim, control)), settings.admin_host, settings.admin_port)
    # Bound and listening before warm-up ends, served after it: /readyz says ready once warm, and a check sent then
    # must find the port open (it waits in the backlog until serving starts), not be refused.
    server = await loop.create_server(lambda: check_connection(shim, timer if settings.timing_sample else None), settings.host, settings.port,
                                      reuse_port=True, backlog=1024, start_serving=False)
    took = await asyncio.to_thread(shim.warm_up, settings.warm_up_timeout_s)
    log.info("shim warmed up", extra={"seconds": round(took, 3)})
    await server.start_serving()
    grpc_server = await _start_grpc(shim, settings)
    extproc = await _start_extproc(shim, settings)
    log.info("shim listening", extra={"port": settings.port, "admin_port": settings.admin_port, "grpc_port": settings.grpc_port,
                                      "extproc_port": settings.redaction.extproc_port, "adapter": shim.adapter.name})
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
    if grpc_server is not None:
        await grpc_server.stop_async()
    if extproc is not None:
        REGISTRY.unregister(extproc.collector)
        await extproc.stop_async()
    REGISTRY.unregister(collector)
    stop_threads.set()
    if shim.pod_watcher is not None:
        shim.pod_watcher.stop()
    if control is not None and control_task is not None:
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
