"""Envoy ext_proc for inline redaction (``envoy.service.ext_proc.v3.ExternalProcessor/Process``).

Envoy opens one ``Process`` stream per HTTP exchange (``deploy/dataplanes/envoy/ext_proc-redact.yaml``:
BUFFERED bodies, ``allow_mode_override``, ``failure_mode_allow``). ``ExchangeRedactor``
(no I/O) answers each message:

* **request headers**: builds the ``RequestView`` (identity and destination from
  ``ingest.identity``, as the ext_authz adapters do, so the verdict-cache keys
  match; forwarded identity headers count only when the stream's gRPC peer is a
  trusted data plane, else that peer is the client, so a redact verdict cannot be
  stepped around by writing another address or destination), asks ``lookup``
  for a ``redact`` verdict, and decides what this exchange needs: the request
  body when ``:authority`` is an external LLM host (``llm_hosts``), the response
  when ``responses`` is ``all``, or ``verdict`` and the subject has a redact verdict. The answer overrides the processing mode so
  Envoy sends nothing else (no body round trips for the rest), and removes
  ``accept-encoding`` when the response will be read (upstreams answer uncompressed).
* **response headers**: a content type ``redact_body`` does not read, a
  ``content-encoding`` other than identity, or a ``content-length`` past
  ``max_body_bytes`` (however many digits it has) turns the response body off
  (skipped, counted by reason); a content-length that is not ASCII digits says nothing.
* **bodies** (BUFFERED: the whole body, headers still held): ``redact_body``; when
  something changed, ``body_mutation`` carries the new body, ``content-length`` is
  set to its length (when the original had one; Envoy rejects a mismatch) and the
  response gets ``x-kubeward-redacted: <n>``. An observe-mode redact verdict
  only counts.

Everything else is an empty ``CONTINUE``. When the exchange ends, one
``Decision(200, "redact", ..., redacted=((type, n), ...))`` per exchange that
redacted or skipped something goes to ``report`` (the shim's report queue), and
``RedactionStats`` counts values by type and skipped bodies by reason
(``RedactionCollector`` exposes them on ``/metrics``). An error in our own code
answers ``CONTINUE`` (the body passes untouched) and is counted: redaction fails
open, as ``failure_mode_allow`` does for an unreachable server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, Metric

from enforcement.adapters.envoy_grpc import caller_of
from enforcement.cache import VerdictCache
from enforcement.decision import Decision, RequestView
from enforcement.redaction import Redacted, RedactionSettings, redact_body, redactable
from ingest.destination import destination_from
from ingest.identity import IdentityResolver, without_forwarded
from ingest.proto import envoy_core_pb2 as core
from ingest.proto import envoy_ext_proc_mode_pb2 as mode
from ingest.proto import envoy_ext_proc_pb2 as ext_proc
from ingest.proto.extproc import CONTINUE, SERVICE_NAME
from ingest.proto.headermap import header_dict
from ingest.proto.hosting import HostedService

__all__ = ["ExchangeRedactor", "ExtProcRedactionServer", "Lookup", "RedactionCollector", "RedactionStats", "Report",
           "SERVICE_NAME", "cache_lookup", "host_matches"]

log = logging.getLogger("kubeward.envoy_extproc")

Lookup = Callable[[RequestView], Decision | None]
Report = Callable[[float, RequestView, Decision], None]

_PM = mode.ProcessingMode
_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_EMPTY = CONTINUE
#: digits of a content-length (leading zeros aside) past which a body is too large whatever ``max_body_bytes`` says (1e18 B is an exabyte)
_LENGTH_DIGITS = 18


def host_matches(authority: str | None, hosts: tuple[str, ...]) -> bool:
    """Whether ``authority`` (port stripped) is one of ``hosts``; ``*.example.com`` matches its subdomains."""
    if not authority:
        return False
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    host = host.lower().rstrip(".")
    return any(host == h or (h.startswith("*.") and host.endswith(h[1:])) for h in hosts)


def cache_lookup(cache: VerdictCache, clock: Callable[[], float] = time.time) -> Lookup:
    """A ``Lookup`` reading the shim's verdict cache: the subject's live ``redact`` verdict, else None.

    Read only: it counts and reports nothing and runs no inspection (the ext_authz
    check already decided and reported this request).
    """

    def lookup(view: RequestView) -> Decision | None:
        if not cache.entries:
            return None
        found = cache.find(view.subject_keys(), view.service, clock(), view.path)
        if found is None or found[1].action != "redact":
            return None
        hit = found[1]
        return Decision(200, "redact", hit.mode == "enforce", hit.reason, None, (), hit.verdict_id)

    return lookup


@dataclass(slots=True)
class RedactionStats:
    """Counters of one redaction server (updated on its loop thread only)."""

    streams: int = 0
    bodies: dict[str, int] = field(default_factory=dict)
    redacted: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    errors: int = 0

    def add(self, direction: str, result: Redacted) -> None:
        """Count one body read in ``direction`` (request | response)."""
        self.bodies[direction] = self.bodies.get(direction, 0) + 1
        for kind, n in result.counts.items():
            self.redacted[kind] = self.redacted.get(kind, 0) + n
        if result.skipped:
            self.skip(result.skipped)

    def skip(self, reason: str) -> None:
        """Count one body left untouched for ``reason``."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class RedactionCollector:
    """Prometheus collector: ``kubeward_redacted_values{type}``, ``kubeward_redaction_skipped_bodies{reason}``,
    ``kubeward_redaction_bodies{direction}``, ``kubeward_redaction_errors``. Register with ``REGISTRY.register``."""

    def __init__(self, stats: RedactionStats):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        """The counters at scrape time."""
        for name, doc, label, values in (
            ("kubeward_redacted_values", "Sensitive values redacted, by type", "type", self.stats.redacted),
            ("kubeward_redaction_skipped_bodies", "Bodies passed untouched, by reason", "reason", self.stats.skipped),
            ("kubeward_redaction_bodies", "Bodies read for redaction, by direction", "direction", self.stats.bodies),
        ):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, count in sorted(values.items()):
                family.add_metric([key], count)
            yield family
        yield CounterMetricFamily("kubeward_redaction_errors", "ext_proc messages answered CONTINUE after an error", value=self.stats.errors)


def _set(name: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(header=core.HeaderValue(key=name, raw_value=value.encode("ascii")), append_action=_OVERWRITE)


def _mode(request_body: bool, response: bool) -> mode.ProcessingMode:
    """The whole mode for the rest of the exchange (Envoy reads an override as a whole)."""
    return _PM(request_header_mode=_PM.SEND, response_header_mode=_PM.SEND if response else _PM.SKIP,
               request_body_mode=_PM.BUFFERED if request_body else _PM.NONE,
               response_body_mode=_PM.BUFFERED if response else _PM.NONE,
               request_trailer_mode=_PM.SKIP, response_trailer_mode=_PM.SKIP)


class ExchangeRedactor:
    """One exchange (one ``Process`` stream): answers each ``ProcessingRequest`` (see the module docstring).

    ``redact`` is called as ``redact(body, content_type)`` for each body read; the
    server may await it on a worker thread (``body_to_redact``/``body_answer``).
    ``caller`` is the stream's gRPC peer address (None: not known, trusted).
    """

    def __init__(self, settings: RedactionSettings, resolver: IdentityResolver, lookup: Lookup | None, stats: RedactionStats,
                 caller: str | None = None):
        self.settings = settings
        self.resolver = resolver
        self.caller = caller
        self.lookup = lookup
        self.stats = stats
        self.view: RequestView | None = None
        self.verdict: Decision | None = None
        self.request_headers: dict[str, str] = {}
        self.response_headers: dict[str, str] = {}
        self.read_request = False
        self.read_response = False
        self.counts: dict[str, int] = {}
        self.skipped: list[str] = []
        self.reason = "redaction:policy"

    def view_of(self, headers: dict[str, str]) -> RequestView:
        """The ``RequestView`` of the request headers (identity, ``external`` included, as the ext_authz adapters derive it:
        the exchange's report names the caller as theirs do)."""
        config = self.resolver.config
        if self.resolver.trusts(self.caller):
            identity, named = self.resolver.resolve(headers, None), headers.get(config.destination_header)
        else:  # someone streaming to the shim directly: its own address is the client, its headers forward nothing
            identity, named = self.resolver.resolve(without_forwarded(headers), self.caller), None
        authority = headers.get(":authority") or headers.get("host") or None
        target = destination_from(None, named, authority, config)
        return RequestView(method=headers.get(":method", ""), path=headers.get(":path", ""), source_workload=identity.workload,
                           principal=identity.principal, ip=identity.ip, service=target.service, namespace=target.namespace,
                           request_id=headers.get("x-request-id") or None, auth_type=identity.auth_type, authority=authority, headers=headers,
                           external=identity.external)

    def on_request_headers(self, message: ext_proc.HttpHeaders) -> ext_proc.ProcessingResponse:
        """Decide which bodies of this exchange are read; tell Envoy through a mode override."""
        headers = self.request_headers = header_dict(message.headers)
        view = self.view = self.view_of(headers)
        self.verdict = self.lookup(view) if self.lookup is not None else None
        wanted = self.settings.responses
        self.read_response = wanted == "all" or (wanted == "verdict" and self.verdict is not None)
        self.read_request = not message.end_of_stream and host_matches(view.authority, self.settings.llm_hosts)
        if self.verdict is not None:
            self.reason = self.verdict.reason or "redaction:verdict"
        elif self.read_request:
            self.reason = "redaction:llm"
        common = ext_proc.CommonResponse()
        if self.read_response and self.settings.strip_accept_encoding and "accept-encoding" in headers:
            common.header_mutation.remove_headers.append("accept-encoding")
        return ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse(response=common),
                                           mode_override=_mode(self.read_request, self.read_response))

    def on_response_headers(self, message: ext_proc.HttpHeaders) -> ext_proc.ProcessingResponse:
        """Turn the response body off when it cannot be redacted (type, encoding, size)."""
        headers = self.response_headers = header_dict(message.headers)
        if not self.read_response or message.end_of_stream:
            return _EMPTY["response_headers"]
        reason = self._unreadable(headers)
        if reason is None:
            return _EMPTY["response_headers"]
        self.read_response = False
        self._skip(reason)
        return ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse(), mode_override=_mode(False, False))

    def _unreadable(self, headers: Mapping[str, str]) -> str | None:
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            return "encoded"
        if not redactable(headers.get("content-type")):
            return "unsupported_type"
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit():  # isdigit alone also takes '²', which int() refuses
            digits = length.lstrip("0")
            # past _LENGTH_DIGITS it is too large whatever the limit, and int() refuses 4,300 digits and more
            if len(digits) > _LENGTH_DIGITS or int(digits or "0") > self.settings.max_body_bytes:
                return "too_large"
        return None

    def _skip(self, reason: str) -> None:
        self.skipped.append(reason)
        self.stats.skip(reason)

    def body_to_redact(self, kind: str) -> str | None:
        """The content type to redact a ``request_body``/``response_body`` message with, or None to pass it."""
        if kind == "request_body" and self.read_request:
            headers = self.request_headers
        elif kind == "response_body" and self.read_response:
            headers = self.response_headers
        else:
            return None
        if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            self._skip("encoded")
            return None
        return headers.get("content-type") or ""

    def body_answer(self, kind: str, result: Redacted) -> ext_proc.ProcessingResponse:
        """The answer to a body message once ``redact_body`` ran: the new body and headers, or CONTINUE."""
        direction = "request" if kind == "request_body" else "response"
        self.stats.add(direction, result)
        if result.skipped:
            self.skipped.append(result.skipped)
        for k, n in result.counts.items():
            self.counts[k] = self.counts.get(k, 0) + n
        observe = self.verdict is not None and not self.verdict.enforced and not (direction == "response" and self.settings.responses == "all")
        if not result.changed or observe:
            return _EMPTY[kind]
        common = ext_proc.CommonResponse(body_mutation=ext_proc.BodyMutation(body=result.body))
        headers = self.request_headers if direction == "request" else self.response_headers
        if "content-length" in headers:
            common.header_mutation.set_headers.append(_set("content-length", str(len(result.body))))
        if direction == "response":
            common.header_mutation.set_headers.append(_set("x-kubeward-redacted", str(sum(result.counts.values()))))
        body = ext_proc.BodyResponse(response=common)
        return ext_proc.ProcessingResponse(request_body=body) if direction == "request" else ext_proc.ProcessingResponse(response_body=body)

    def decision(self) -> Decision | None:
        """What to report for this exchange: a ``redact`` decision with the counts, or None when nothing happened."""
        if not self.counts and not self.skipped:
            return None
        enforced = self.verdict.enforced if self.verdict is not None else True
        return Decision(200, "redact", enforced, self.reason, None, tuple(f"redaction-skipped:{r}" for r in self.skipped),
                        self.verdict.verdict_id if self.verdict is not None else None, tuple(sorted(self.counts.items())))


class ExtProcRedactionServer(HostedService):
    """The ext_proc redaction endpoint on grpc.aio: one ``ExchangeRedactor`` per ``Process`` stream.

    On the shim's loop: ``port = await server.start_async(host, port)`` and
    ``await server.stop_async()``; on a loop of its own: ``start``/``stop``.
    ``lookup`` finds a subject's redact verdict (``cache_lookup(shim.cache)``);
    ``report`` receives one ``(now, view, decision)`` per exchange that redacted
    or skipped something. ``stats`` holds the counters.
    """

    thread_name = "kubeward-ext-proc-redact"

    def __init__(self, settings: RedactionSettings, resolver: IdentityResolver | None = None, lookup: Lookup | None = None,
                 report: Report | None = None, options: Mapping[str, Any] | None = None):
        super().__init__(tuple((options or {}).items()))
        self.settings = settings
        self.resolver = resolver or IdentityResolver()
        self.lookup = lookup
        self.report = report
        self.stats = RedactionStats()
        self._policy = settings.policy()
        self._limits = settings.limits()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="kubeward-redact")

    async def _answer(self, exchange: ExchangeRedactor, message: ext_proc.ProcessingRequest) -> ext_proc.ProcessingResponse | None:
        kind = message.WhichOneof("request")
        if kind is None or message.observability_mode:
            return None
        try:
            if kind == "request_headers":
                return exchange.on_request_headers(message.request_headers)
            if kind == "response_headers":
                return exchange.on_response_headers(message.response_headers)
            if kind in ("request_body", "response_body"):
                content_type = exchange.body_to_redact(kind)
                if content_type is None:
                    return _EMPTY[kind]
                return exchange.body_answer(kind, await self._redact(getattr(message, kind).body, content_type))
        except Exception:
            self.stats.errors += 1
            log.exception("ext_proc redaction failed; the message passes untouched")
        return _EMPTY[kind]

    async def _redact(self, body: bytes, content_type: str) -> Redacted:
        offload = self.settings.offload_bytes
        if offload and len(body) > offload:
            return await asyncio.get_running_loop().run_in_executor(self._pool, redact_body, body, content_type, self._policy, self._limits)
        return redact_body(body, content_type, self._policy, self._limits)

    async def process(self, requests: AsyncIterator[ext_proc.ProcessingRequest], caller: str | None = None) -> AsyncIterator[ext_proc.ProcessingResponse]:
        """Serve one ``Process`` stream from ``caller`` (the gRPC peer's address); report the exchange when it ends."""
        self.stats.streams += 1
        exchange = ExchangeRedactor(self.settings, self.resolver, self.lookup, self.stats, caller)
        try:
            async for message in requests:
                reply = await self._answer(exchange, message)
                if reply is not None:
                    yield reply
        finally:
            decision = exchange.decision()
            if decision is not None and self.report is not None and exchange.view is not None:
                self.report(time.time(), exchange.view, decision)

    def _register(self, server: Any) -> None:
        async def handle(requests: AsyncIterator[ext_proc.ProcessingRequest], context: Any) -> AsyncIterator[ext_proc.ProcessingResponse]:
            async for reply in self.process(requests, caller_of(context)):
                yield reply

        method = grpc.stream_stream_rpc_method_handler(
            handle, request_deserializer=ext_proc.ProcessingRequest.FromString, response_serializer=ext_proc.ProcessingResponse.SerializeToString)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Process": method}),))

    def _closed(self) -> None:
        self._pool.shutdown(wait=False)
