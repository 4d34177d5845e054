"""Envoy ext_proc tap: ``envoy.service.ext_proc.v3.ExternalProcessor/Process``, read-only.

Envoy opens one ``Process`` stream per HTTP exchange and sends the request
headers, bodies and response headers its ``processing_mode`` asks for. The tap
never changes anything: in ``observability_mode`` (Envoy 1.40; the shipped
``deploy/dataplanes/envoy/ext_proc-tap.yaml``) Envoy expects no answers and does
not wait, so it adds no latency; bodies then arrive ``STREAMED`` in chunks.
Without ``observability_mode`` (``BUFFERED``/``BUFFERED_PARTIAL`` bodies) the tap
answers every message with an empty ``CONTINUE`` response, and
``failure_mode_allow: true`` with a short ``message_timeout`` keeps Envoy serving
if the tap is slow or down.

``ExchangeTap`` (pure) assembles one exchange from the stream's messages:
request headers (``:method``, ``:path``, ``:authority``, ``x-request-id`` go to
their own fields, the rest stay in ``headers``), response headers (``:status``),
and the request and response bodies, each capped at ``max_body_bytes``
(``*_body_truncated`` when more existed, ``*_bytes`` count every byte seen).
``ExtProcTapSource`` (a ``Source``) runs the grpc.aio server; when the final
message of the exchange arrives (the response body's ``end_of_stream``, or
response headers with ``end_of_stream``, or response trailers) it closes the
stream itself, which ends the exchange for Envoy too (without it Envoy keeps an
observability stream open for ``deferred_close_timeout``), and emits one
``HttpObservation(reporter="ext_proc")`` on the server's loop thread; an
exchange cut short (client gone, timeout) is emitted with what was seen, and
one without request headers is only counted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from ingest.collectors.base import Emit
from ingest.observation import HttpObservation
from ingest.proto import envoy_core_pb2 as core
from ingest.proto import envoy_ext_proc_pb2 as ext_proc
from ingest.proto.extproc import CONTINUE as _CONTINUE
from ingest.proto.extproc import SERVICE_NAME
from ingest.proto.headermap import header_dict
from ingest.proto.hosting import BackgroundServer, ServedSource

__all__ = ["ExchangeTap", "ExtProcTapSource", "SERVICE_NAME", "TapStats"]

log = logging.getLogger("kubeward.collectors.extproc")



class _Body:
    """The first ``cap`` bytes of a body and how many bytes it had."""

    __slots__ = ("cap", "data", "seen", "finished")

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()
        self.seen = 0
        self.finished = False

    def add(self, chunk: bytes, end_of_stream: bool) -> None:
        self.seen += len(chunk)
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.finished = self.finished or end_of_stream

    def result(self) -> tuple[bytes | None, bool]:
        """(captured bytes or None when no byte was seen, truncated?)."""
        if not self.seen:
            return None, False
        return bytes(self.data), self.seen > len(self.data) or not self.finished


class ExchangeTap:
    """One HTTP exchange assembled from the messages of one ext_proc stream (pure; no I/O).

    ``feed`` takes each ``ProcessingRequest`` and returns the answer Envoy
    expects (an empty ``CONTINUE``), or None in observability mode. ``complete``
    turns true with the exchange's final message; ``observation`` builds the record.
    """

    def __init__(self, max_body_bytes: int, started: float):
        self.started = started
        self.request: dict[str, str] | None = None
        self.response: dict[str, str] | None = None
        self.request_body = _Body(max_body_bytes)
        self.response_body = _Body(max_body_bytes)
        self.complete = False

    def feed(self, message: ext_proc.ProcessingRequest) -> ext_proc.ProcessingResponse | None:
        """Record one message; the answer to send back, or None when none is expected."""
        kind = message.WhichOneof("request")
        if kind == "request_headers":
            self.request = header_dict(message.request_headers.headers)
        elif kind == "request_body":
            self.request_body.add(message.request_body.body, message.request_body.end_of_stream)
        elif kind == "response_headers":
            self.response = header_dict(message.response_headers.headers)
            self.complete = message.response_headers.end_of_stream
        elif kind == "response_body":
            self.response_body.add(message.response_body.body, message.response_body.end_of_stream)
            self.complete = message.response_body.end_of_stream
        elif kind == "response_trailers":
            self.complete = True
        if kind is None or message.observability_mode:
            return None
        return _CONTINUE[kind]

    def observation(self, finished: float) -> HttpObservation | None:
        """The exchange as an observation, or None when the request headers never arrived."""
        request = self.request
        if request is None:
            return None
        response = self.response or {}
        status = response.get(":status", "")
        request_body, request_truncated = self.request_body.result()
        response_body, response_truncated = self.response_body.result()
        return HttpObservation(
            time=self.started,
            method=request.get(":method", ""),
            path=request.get(":path", ""),
            reporter="ext_proc",
            request_id=request.get("x-request-id") or None,
            authority=request.get(":authority") or request.get("host") or None,
            headers={k: v for k, v in request.items() if not k.startswith(":")},
            status=int(status) if status.isascii() and status.isdigit() and len(status) <= 3 else None,  # not "²", not 2**64
            duration_ms=(finished - self.started) * 1e3,
            request_bytes=self.request_body.seen,
            response_bytes=self.response_body.seen,
            response_headers={k: v for k, v in response.items() if not k.startswith(":")},
            request_body=request_body,
            response_body=response_body,
            request_body_truncated=request_truncated,
            response_body_truncated=response_truncated,
        )


@dataclass(slots=True)
class TapStats:
    """Counters of one tap (updated on the server's loop thread only)."""

    streams: int = 0
    observations: int = 0
    incomplete: int = 0
    without_request: int = 0


class ExtProcTapSource(ServedSource):
    """A ``Source``: the ext_proc tap server on ``host:port``; each exchange becomes one ``emit([obs])``.

    ``max_body_bytes`` caps each captured body. ``run(emit, stop)`` serves until
    ``stop`` is set; ``start(emit)`` returns the bound port and ``stop()`` ends it.
    """

    name = "envoy-ext-proc-tap"

    def __init__(self, host: str = "127.0.0.1", port: int = 9302, max_body_bytes: int = 65536, options: Sequence[tuple[str, Any]] = ()):
        if max_body_bytes < 0:
            raise ValueError(f"max_body_bytes must be >= 0, got {max_body_bytes!r}")
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.options = tuple(options)
        self.stats = TapStats()
        self.thread_name = "kubeward-ext-proc-tap"
        self._server: BackgroundServer | None = None

    async def process(self, requests: AsyncIterator[ext_proc.ProcessingRequest], emit: Emit) -> AsyncIterator[ext_proc.ProcessingResponse]:
        """Serve one ``Process`` stream: answer (unless observing), then emit the exchange once."""
        self.stats.streams += 1
        tap = ExchangeTap(self.max_body_bytes, time.time())
        try:
            async for message in requests:
                reply = tap.feed(message)
                if reply is not None:
                    yield reply
                if tap.complete:
                    break
        finally:
            self._finish(tap, emit)

    def _finish(self, tap: ExchangeTap, emit: Emit) -> None:
        obs = tap.observation(time.time())
        if obs is None:
            self.stats.without_request += 1
            return
        if not tap.complete:
            self.stats.incomplete += 1
        self.stats.observations += 1
        try:
            emit([obs])
        except Exception:
            log.exception("emit failed; one ext_proc observation dropped")

    def register(self, server: Any, emit: Emit) -> None:
        """Add the ``Process`` handler to a ``grpc.aio.Server``."""

        async def handle(requests: AsyncIterator[ext_proc.ProcessingRequest], context: Any) -> AsyncIterator[ext_proc.ProcessingResponse]:
            async for reply in self.process(requests, emit):  # grpc.aio wants an async generator function here
                yield reply

        method = grpc.stream_stream_rpc_method_handler(
            handle, request_deserializer=ext_proc.ProcessingRequest.FromString, response_serializer=ext_proc.ProcessingResponse.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": method}),))
