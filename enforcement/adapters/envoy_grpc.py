"""Envoy ext_authz over gRPC (``envoy.service.auth.v3.Authorization/Check``): adapter and server.

The same contract serves Envoy's ext_authz filter with ``grpc_service``, Istio
``CUSTOM`` providers declared as ``envoyExtAuthzGrpc`` and Envoy Gateway's
``SecurityPolicy`` ext auth.

``EnvoyGrpcAdapter.view`` turns a ``CheckRequest`` into a ``RequestView``:
method and path (with query) from ``attributes.request.http``; the request id
from the ``x-request-id`` header (the id observations are joined by; Envoy 1.40
fills ``attributes.request.http.id`` with its internal stream id, a different
number, used only when the header is missing); headers lower-case (from ``headers``, or
``header_map`` when the filter sets ``encode_raw_headers``); the peer from
``attributes.source.address``; identity from ``ingest.identity`` (with ``external``, so the
shim's report names an outside client as ``policy suggest`` must); the
destination from the ``context_extensions`` key ``service`` (per-route
``check_settings``, set by the operator, so it wins) else the destination
header, else ``:authority``; the body from ``raw_body`` (``pack_as_bytes``) or
``body`` when the filter sets ``with_request_body``.

The client address follows the shim's ``trusted_hops`` as over HTTP, where the
data plane's own ``x-forwarded-for`` entry is the first hop: ``source.address``
is the address Envoy saw (its socket peer), so when ``x-forwarded-for`` does
not already end with it (``use_remote_address: false``: Envoy appended nothing
and the rightmost entry is the client's own writing) it is appended before the
hops are counted. Everything in a ``CheckRequest`` is the caller's word, so
``view(request, caller)`` believes the forwarded parts (``source.address``,
``x-forwarded-for``, ``x-forwarded-client-cert``, ``x-kubeward-*``, the
destination header and ``context_extensions``) only when ``caller``, the gRPC
peer, is a trusted data plane (``identity.trusted_data_planes``); otherwise the
caller is the client. The servicer passes the peer of every call.

``EnvoyGrpcAdapter.respond`` answers 200 with an ``OkHttpResponse`` that sets
``x-kubeward-decision`` (and ``x-kubeward-would``/``-reason`` in observe mode)
on the upstream request, overwriting whatever the client sent; any other status
is a ``DeniedHttpResponse`` with that status (403, 429, 503), the
``x-kubeward-decision`` and ``x-kubeward-reason`` headers, ``retry-after`` for
429, and ``kubeward: <decision>`` as the body (never the reason). Headers are
the HTTP adapters' (``enforcement.adapters.httpcheck``); values are reduced to
printable ASCII. Responses are built once per distinct decision and reused.

``GrpcAuthzServer`` serves ``Check`` with a ``decide_view`` callable on
grpc.aio: ``await server.start_async(host, port)`` on the shim's running loop
(uvloop works with grpcio 1.85), so decisions run on the loop thread like the
HTTP path and share its state without locks; ``server.start(host, port)`` runs it
on a loop of its own (tests, standalone). A ``decide_view`` that raises makes
``Check`` fail with ``INTERNAL``, and Envoy then applies its own
``failure_mode_allow``/``status_on_error``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import grpc

from enforcement.decision import ALLOW, Decision, RequestView
from ingest.destination import destination_from
from ingest.identity import IdentityResolver, grpc_peer_address, without_forwarded
from ingest.proto import envoy_auth_pb2 as auth
from ingest.proto import envoy_core_pb2 as core
from ingest.proto import envoy_type_pb2 as http_status
from ingest.proto import google_rpc_pb2 as rpc
from ingest.proto.headermap import header_dict
from ingest.proto.hosting import HostedService

__all__ = ["AuthorizationServicer", "EnvoyGrpcAdapter", "GrpcAuthzServer", "SERVICE_NAME", "caller_of"]

log = logging.getLogger("kubeward.envoy_grpc")

SERVICE_NAME: str = auth.DESCRIPTOR.services_by_name["Authorization"].full_name

_OK, _PERMISSION_DENIED, _RESOURCE_EXHAUSTED, _UNAVAILABLE = 0, 7, 8, 14
_RPC_CODE = {429: _RESOURCE_EXHAUSTED, 503: _UNAVAILABLE}
_OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_PRINTABLE = frozenset(range(0x20, 0x7F))
_BUILT_MAX = 4096


def _clean(value: str) -> str:
    """A header value Envoy accepts: printable ASCII, anything else as ``?``."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if ord(c) in _PRINTABLE else "?" for c in value)


def _header(name: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(header=core.HeaderValue(key=name, value=_clean(value)), append_action=_OVERWRITE)


def _ok(headers: list[core.HeaderValueOption]) -> auth.CheckResponse:
    return auth.CheckResponse(status=rpc.Status(code=_OK), ok_response=auth.OkHttpResponse(headers=headers))


_ALLOW_RESPONSE = _ok([_header("x-kubeward-decision", "allow")])


def _request_headers(http: auth.AttributeContext.HttpRequest) -> dict[str, str]:
    """Lower-case request headers from ``header_map`` (``encode_raw_headers``) or ``headers``."""
    if not http.HasField("header_map"):
        return {k.lower(): v for k, v in http.headers.items()}
    return header_dict(http.header_map)


def _with_peer_appended(headers: dict[str, str], peer: str | None) -> dict[str, str]:
    """``headers`` whose ``x-forwarded-for`` ends with ``peer``, the address Envoy saw (see the module docstring)."""
    forwarded = headers.get("x-forwarded-for")
    if peer is None or (forwarded and forwarded.rsplit(",", 1)[-1].strip() == peer):
        return headers
    return {**headers, "x-forwarded-for": f"{forwarded}, {peer}" if forwarded else peer}


def _body(http: auth.AttributeContext.HttpRequest) -> bytes | None:
    if http.raw_body:
        return http.raw_body
    return http.body.encode("utf-8") if http.body else None


class EnvoyGrpcAdapter:
    """``Adapter[CheckRequest, CheckResponse]`` for Envoy ext_authz over gRPC.

    ``resolver`` derives identity and destination (``ingest.identity``);
    ``service_key`` names the ``context_extensions`` entry that carries the
    destination service (``ns/name``, ``name`` or a service host name).
    """

    name = "envoy-grpc"

    def __init__(self, resolver: IdentityResolver | None = None, service_key: str = "service"):
        self.resolver = resolver or IdentityResolver()
        self.service_key = service_key
        self._built: dict[Decision, auth.CheckResponse] = {ALLOW: _ALLOW_RESPONSE}

    def view(self, request: auth.CheckRequest, caller: str | None = None) -> RequestView:
        """The decision input for one ``CheckRequest`` asked by ``caller`` (the gRPC peer's address; None: not known)."""
        attrs = request.attributes
        http = attrs.request.http
        headers = _request_headers(http)
        config = self.resolver.config
        if self.resolver.trusts(caller):
            peer = attrs.source.address.socket_address.address or None
            service, named = attrs.context_extensions.get(self.service_key), headers.get(config.destination_header)
            identity = self.resolver.resolve(_with_peer_appended(headers, peer), peer)
        else:  # someone asking the shim directly: its own address is the client, its headers forward nothing
            peer, service, named = caller, None, None
            identity = self.resolver.resolve(without_forwarded(headers), peer)
        authority = http.host or headers.get(":authority") or headers.get("host") or None
        target = destination_from(service, named, authority, config)
        return RequestView(
            method=http.method or headers.get(":method", ""),
            path=http.path or headers.get(":path", ""),
            source_workload=identity.workload,
            principal=identity.principal,
            ip=identity.ip,
            service=target.service,
            namespace=target.namespace,
            request_id=headers.get("x-request-id") or http.id or None,
            auth_type=identity.auth_type,
            authority=authority,
            headers=headers,
            peer_ip=peer,
            body=_body(http),
            external=identity.external,
        )

    def respond(self, decision: Decision, view: RequestView) -> auth.CheckResponse:
        """The ``CheckResponse`` for a decision; built once per distinct decision and reused (never mutated)."""
        found = self._built.get(decision)
        if found is None:
            if len(self._built) >= _BUILT_MAX:
                self._built.clear()
            found = self._built[decision] = _response(decision)
        return found


def _response(decision: Decision) -> auth.CheckResponse:
    """OK with headers for the upstream, or a denial with status, headers and body for the client."""
    shown = "unparsed" if decision.would == "unparsed" else decision.would if decision.enforced else "allow"
    headers = [_header("x-kubeward-decision", shown)]
    if decision.reason:
        headers.append(_header("x-kubeward-reason", decision.reason))
    if not decision.enforced and decision.would not in ("allow", "unparsed"):
        headers.append(_header("x-kubeward-would", decision.would))
    if decision.status == 200:
        return _ok(headers)
    if decision.status == 429 and decision.retry_after is not None:
        headers.append(_header("retry-after", str(decision.retry_after)))
    headers.append(_header("content-type", "text/plain"))
    # The body never names the reason: Envoy hands it to the client as is (as the HTTP adapters do).
    denied = auth.DeniedHttpResponse(status=http_status.HttpStatus(code=cast(http_status.StatusCode, decision.status)), headers=headers, body=f"kubeward: {decision.would}\n")
    return auth.CheckResponse(status=rpc.Status(code=_RPC_CODE.get(decision.status, _PERMISSION_DENIED), message=decision.would), denied_response=denied)


DecideView = Callable[[RequestView], Decision]


def caller_of(context: Any) -> str | None:
    """The address of the gRPC peer that called (None for a Unix socket or a context that cannot tell)."""
    peer = getattr(context, "peer", None)
    return grpc_peer_address(peer()) if callable(peer) else None


class AuthorizationServicer:
    """``Authorization.Check`` on grpc.aio (``view`` -> ``decide_view`` -> ``respond``); counts checks and failures."""

    def __init__(self, decide_view: DecideView, adapter: EnvoyGrpcAdapter):
        self.decide_view = decide_view
        self.adapter = adapter
        self.checks = 0
        self.errors = 0

    async def Check(self, request: auth.CheckRequest, context: Any) -> auth.CheckResponse:  # noqa: N802 (gRPC method name)
        self.checks += 1
        try:
            view = self.adapter.view(request, caller_of(context))
            return self.adapter.respond(self.decide_view(view), view)
        except Exception:
            self.errors += 1
            log.exception("ext_authz check failed; Envoy applies its failure mode")
        await context.abort(grpc.StatusCode.INTERNAL, "kubeward: decision failed")
        raise AssertionError("context.abort returns only by raising")


def _register(servicer: AuthorizationServicer) -> Callable[[Any], None]:
    def register(server: Any) -> None:
        handler = grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=auth.CheckRequest.FromString, response_serializer=auth.CheckResponse.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, {"Check": handler}),))

    return register


class GrpcAuthzServer(HostedService):
    """The ext_authz gRPC endpoint: ``Check`` -> ``adapter.view`` -> ``decide_view`` -> ``adapter.respond``.

    On the shim's loop: ``port = await server.start_async(host, port)`` and
    ``await server.stop_async()``. On a loop of its own: ``server.start(host, port)``
    and ``server.stop()``. ``checks`` and ``errors`` count calls.
    """

    thread_name = "kubeward-ext-authz-grpc"

    def __init__(self, decide_view: DecideView, adapter: EnvoyGrpcAdapter | None = None, options: Mapping[str, Any] | None = None):
        super().__init__(tuple((options or {}).items()))
        self._servicer = AuthorizationServicer(decide_view, adapter or EnvoyGrpcAdapter())

    def _register(self, server: Any) -> None:
        _register(self._servicer)(server)

    @property
    def checks(self) -> int:
        """Check calls received."""
        return self._servicer.checks

    @property
    def errors(self) -> int:
        """Check calls that failed with ``INTERNAL`` because the adapter or ``decide_view`` raised."""
        return self._servicer.errors
