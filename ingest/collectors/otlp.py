"""OTLP/HTTP trace receiver: SERVER spans with HTTP semantic conventions as ``HttpObservation``.

``OtlpHttpSource`` serves ``POST /v1/traces`` (aiohttp, on a private event loop
in a daemon thread) and answers as the OTLP/HTTP spec says: ``200`` with an
empty ``ExportTraceServiceResponse`` (binary for ``application/x-protobuf``,
``{}`` for ``application/json``), ``400`` with a ``google.rpc.Status`` when the
body does not decode, ``415`` for another content type, ``413`` past
``max_body_bytes``. A gzip ``Content-Encoding`` is undone by the server.

Spans become observations (``reporter="otlp"``) when their kind is SERVER and
they carry an HTTP method; client, internal, producer and consumer spans and
non-HTTP server spans are skipped and counted (``OtlpStats``). Both the current
and the older conventions are read, newer first:

==========================  ===========================================================  ==================
observation field           span attributes                                              
==========================  ===========================================================  ==================
``method``                  ``http.request.method`` (``_OTHER``: ``http.request.method_original``), ``http.method``
``path``                    ``url.path`` + ``?`` + ``url.query``, ``http.target``, the path of ``url.full`` / ``http.url``, ``http.route``
``status``                  ``http.response.status_code``, ``http.status_code``
``authority``               ``server.address[:server.port]``, ``http.host``, ``net.host.name[:net.host.port]``
``peer_ip``                 ``network.peer.address``, ``net.sock.peer.addr``, ``net.peer.ip`` (never ``client.address``)
``headers``                 ``http.request.header.<name>``; ``user_agent.original`` / ``http.user_agent``
``request_bytes``           ``http.request.body.size``, ``http.request_content_length``
``response_bytes``          ``http.response.body.size``, ``http.response_content_length``
``route`` (destination)     resource ``k8s.namespace.name`` / ``service.name``
``request_id``              the ``x-request-id`` request header attribute
==========================  ===========================================================  ==================

``time`` is the span start, ``duration_ms`` its length, ``trace_id`` its trace id (hex).
``client.address`` and ``http.client_ip`` are not read: instrumentations fill them from
``X-Forwarded-For`` or ``Forwarded``, which the client writes; the socket peer is the
address, and a forwarded chain counts only through the ``x-forwarded-for`` header attribute
and the collector's ``trusted_hops``.
``http.route`` (a template) is used only as a last-resort path: the observation has no field for it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest, ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from ingest.collectors.base import Emit, int64
from ingest.observation import HttpObservation
from ingest.proto.google_rpc_pb2 import Status

__all__ = ["OtlpHttpSource", "OtlpStats", "observation_from_span", "observations_from_json", "observations_from_proto"]

log = logging.getLogger("kubeward.collectors.otlp")

SPAN_KIND_SERVER = 2
_KIND_NAMES = {"SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_PRODUCER": 4,
               "SPAN_KIND_CONSUMER": 5, "SPAN_KIND_UNSPECIFIED": 0}
_HEADER_PREFIX = "http.request.header."
_PROTOBUF, _JSON = "application/x-protobuf", "application/json"


@dataclass
class OtlpStats:
    """Counters of one receiver: requests, spans seen, observations made, spans skipped by reason."""

    requests: int = 0
    bad_requests: int = 0
    spans: int = 0
    observations: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def _first(attrs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def _int(value: Any) -> int | None:
    try:
        return int64(int(value)) if value is not None else None
    except (TypeError, ValueError, OverflowError):  # not a number, more than 4,300 digits, an infinity
        return None


def _text(value: Any) -> str | None:
    """A string attribute (an address, an id), else None: JSON and ``AnyValue`` may hold any type."""
    return value if isinstance(value, str) and value else None


def _path(attrs: Mapping[str, Any]) -> str | None:
    path = attrs.get("url.path")
    if path:
        query = attrs.get("url.query")
        return f"{path}?{query}" if query else str(path)
    target = attrs.get("http.target")
    if target:
        return str(target)
    full = _first(attrs, "url.full", "http.url")
    if full:
        parts = urlsplit(str(full))
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    route = attrs.get("http.route")
    return str(route) if route else None


def _authority(attrs: Mapping[str, Any]) -> str | None:
    host, port = attrs.get("server.address"), attrs.get("server.port")
    if not host:
        host = attrs.get("http.host")
        if host:
            return str(host)
        host, port = attrs.get("net.host.name"), attrs.get("net.host.port")
    if not host:
        full = _first(attrs, "url.full", "http.url")
        return urlsplit(str(full)).netloc or None if full else None
    return f"{host}:{port}" if port else str(host)


def _headers(attrs: Mapping[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in attrs.items():
        if key.startswith(_HEADER_PREFIX):
            text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
            headers[key[len(_HEADER_PREFIX):].lower().replace("_", "-")] = text
    agent = _first(attrs, "user_agent.original", "http.user_agent")
    if agent and "user-agent" not in headers:
        headers["user-agent"] = str(agent)
    return headers


def _destination(resource: Mapping[str, Any]) -> str | None:
    service, namespace = resource.get("service.name"), resource.get("k8s.namespace.name")
    if not service or str(service).startswith("unknown_service"):
        return None
    return f"{namespace}/{service}" if namespace else str(service)


def observation_from_span(kind: int, start_ns: int, end_ns: int, trace_id: str | None, attrs: Mapping[str, Any],
                          resource: Mapping[str, Any]) -> HttpObservation | str:
    """The observation of one span, or the reason it is skipped (``not_server``, ``not_http``, ``no_path``)."""
    if kind != SPAN_KIND_SERVER:
        return "not_server"
    method = _first(attrs, "http.request.method", "http.method")
    if method == "_OTHER":
        method = attrs.get("http.request.method_original") or method
    if not method:
        return "not_http"
    path = _path(attrs)
    if not path:
        return "no_path"
    headers = _headers(attrs)
    return HttpObservation(
        time=start_ns / 1e9, method=str(method).upper(), path=path, reporter="otlp",
        request_id=headers.get("x-request-id"), authority=_authority(attrs), headers=headers,
        peer_ip=_text(_first(attrs, "network.peer.address", "net.sock.peer.addr", "net.peer.ip")),
        route=_destination(resource), status=_int(_first(attrs, "http.response.status_code", "http.status_code")),
        duration_ms=(end_ns - start_ns) / 1e6 if end_ns >= start_ns > 0 else None,
        request_bytes=_int(_first(attrs, "http.request.body.size", "http.request_content_length")) or 0,
        response_bytes=_int(_first(attrs, "http.response.body.size", "http.response_content_length")) or 0,
        trace_id=trace_id or None,
    )


# ---------------------------------------------------------------------- protobuf


def _proto_value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_proto_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _proto_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def _proto_attrs(attributes: Iterable[Any]) -> dict[str, Any]:
    return {kv.key: _proto_value(kv.value) for kv in attributes}


def observations_from_proto(request: ExportTraceServiceRequest, stats: OtlpStats) -> list[HttpObservation]:
    """Observations of a decoded ``ExportTraceServiceRequest``; skipped spans are counted in ``stats``."""
    out: list[HttpObservation] = []
    for resource_spans in request.resource_spans:
        resource = _proto_attrs(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _collect(observation_from_span(span.kind, span.start_time_unix_nano, span.end_time_unix_nano,
                                               span.trace_id.hex(), _proto_attrs(span.attributes), resource), out, stats)
    return out


# ---------------------------------------------------------------------- JSON (OTLP/JSON: hex ids, enums as integers)


def _json_value(value: Any) -> Any:
    if not isinstance(value, dict) or not value:
        return None
    kind, inner = next(iter(value.items()))
    if kind == "arrayValue":
        return [_json_value(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlistValue":
        return {kv.get("key"): _json_value(kv.get("value")) for kv in (inner or {}).get("values", [])}
    if kind == "intValue":
        return _int(inner)
    return inner


def _json_attrs(attributes: Any) -> dict[str, Any]:
    if not isinstance(attributes, list):
        return {}
    return {kv["key"]: _json_value(kv.get("value")) for kv in attributes if isinstance(kv, dict) and "key" in kv}


def _json_kind(kind: Any) -> int:
    if isinstance(kind, str):
        return _KIND_NAMES.get(kind, _int(kind) or 0)
    return _int(kind) or 0


def observations_from_json(doc: Any, stats: OtlpStats) -> list[HttpObservation]:
    """Observations of an OTLP/JSON export body; ``ValueError`` when its shape is not OTLP."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans", []), list):
        raise ValueError("not an ExportTraceServiceRequest: expected an object with a resourceSpans list")
    out: list[HttpObservation] = []
    for resource_spans in doc.get("resourceSpans", []):
        resource = _json_attrs((resource_spans.get("resource") or {}).get("attributes"))
        for scope_spans in resource_spans.get("scopeSpans", []) or []:
            for span in scope_spans.get("spans", []) or []:
                found = observation_from_span(_json_kind(span.get("kind")), _int(span.get("startTimeUnixNano")) or 0,
                                              _int(span.get("endTimeUnixNano")) or 0, _text(span.get("traceId")),
                                              _json_attrs(span.get("attributes")), resource)
                _collect(found, out, stats)
    return out


def _collect(found: HttpObservation | str, out: list[HttpObservation], stats: OtlpStats) -> None:
    stats.spans += 1
    if isinstance(found, str):
        stats.skipped[found] += 1
    else:
        stats.observations += 1
        out.append(found)


# ---------------------------------------------------------------------- server


def _status(code: int, message: str) -> web.Response:
    body = Status(code=3, message=message).SerializeToString()  # 3 = INVALID_ARGUMENT
    return web.Response(status=code, body=body, content_type=_PROTOBUF)


class OtlpHttpSource:
    """A ``Source``: the OTLP/HTTP trace receiver on ``host:port`` (``port=0``: any free port).

    ``start(emit)`` serves in a daemon thread and returns the bound port;
    ``stop()`` ends it; ``run(emit, stop)`` does both around ``stop.wait()``.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 4318, *, name: str = "otlp",
                 max_body_bytes: int = 16 << 20) -> None:
        self.name, self.host, self.port = name, host, port
        self.max_body_bytes = max_body_bytes
        self.stats = OtlpStats()
        self.ready = threading.Event()  # set once the port is bound
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def counters(self) -> dict[str, int]:
        """Monotonic counts for the collector's metrics (skipped spans as ``skipped_<reason>``)."""
        counts = {"requests": self.stats.requests, "bad_requests": self.stats.bad_requests,
                  "spans": self.stats.spans, "observations": self.stats.observations}
        counts.update({f"skipped_{reason}": n for reason, n in self.stats.skipped.items()})
        return counts

    def decode(self, body: bytes, content_type: str) -> list[HttpObservation]:
        """Observations of one request body; ``ValueError`` when it does not decode."""
        if content_type == _PROTOBUF:
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except DecodeError as exc:
                raise ValueError(f"undecodable ExportTraceServiceRequest: {exc}") from exc
            return observations_from_proto(request, self.stats)
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"undecodable OTLP/JSON body: {exc}") from exc
        try:
            return observations_from_json(doc, self.stats)
        except (AttributeError, TypeError, KeyError) as exc:
            raise ValueError(f"not OTLP/JSON: {exc!r}") from exc

    async def _traces(self, request: web.Request, emit: Emit) -> web.Response:
        self.stats.requests += 1
        content_type = request.content_type
        if content_type not in (_PROTOBUF, _JSON):
            self.stats.bad_requests += 1
            return web.Response(status=415, text=f"unsupported content type {content_type!r}; use {_PROTOBUF} or {_JSON}")
        try:
            observations = self.decode(await request.read(), content_type)
        except ValueError as exc:
            self.stats.bad_requests += 1
            return _status(400, str(exc)) if content_type == _PROTOBUF else web.json_response({"code": 3, "message": str(exc)}, status=400)
        if observations:
            try:
                emit(observations)
            except Exception:
                log.exception("emit failed; %d OTLP observations dropped", len(observations))
        if content_type == _PROTOBUF:
            return web.Response(body=ExportTraceServiceResponse().SerializeToString(), content_type=_PROTOBUF)
        return web.Response(body=b"{}", content_type=_JSON)

    def start(self, emit: Emit, timeout: float = 10.0) -> int:
        """Serve on a private event loop in a daemon thread; return the bound port."""
        if self._loop is not None:
            raise RuntimeError(f"{self.name} is already serving on port {self.port}")

        async def traces(request: web.Request) -> web.Response:
            return await self._traces(request, emit)

        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_post("/v1/traces", traces)
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name=f"kubeward-{self.name}", daemon=True)
        self._thread.start()
        self._loop = loop
        self._runner = web.AppRunner(app, access_log=None)
        future = asyncio.run_coroutine_threadsafe(self._bind(self._runner), loop)
        try:
            self.port = future.result(timeout)
        except BaseException:
            self.stop()
            raise
        self.ready.set()
        log.info("OTLP/HTTP receiver listening", extra={"host": self.host, "port": self.port})
        return self.port

    async def _bind(self, runner: web.AppRunner) -> int:
        await runner.setup()
        try:
            sock = socket.create_server((self.host, self.port), family=socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        except OSError as exc:
            raise OSError(f"cannot bind OTLP/HTTP receiver to {self.host}:{self.port}: {exc}") from exc
        await web.SockSite(runner, sock).start()
        return int(sock.getsockname()[1])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and end the loop thread; idempotent."""
        loop, runner, thread = self._loop, self._runner, self._thread
        self._loop = self._runner = self._thread = None
        self.ready.clear()
        if loop is None:
            return
        if runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout)
            except Exception:
                log.exception("OTLP/HTTP receiver did not shut down cleanly")
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
        loop.close()

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (the ``Source`` protocol)."""
        self.start(emit)
        try:
            stop.wait()
        finally:
            self.stop()
