"""Traefik ForwardAuth.

Traefik asks with a ``GET`` to the middleware's ``address`` and carries the
original request in ``X-Forwarded-Method``, ``X-Forwarded-Uri`` (path and
query), ``X-Forwarded-Host`` and ``X-Forwarded-For``, plus the client headers
listed in ``authRequestHeaders``. A 2xx answer lets the request through and the
answer's headers matching ``authResponseHeadersRegex`` (``^X-Kubeward-``)
replace the client's on the upstream request; any other answer (403, 429 with
``Retry-After``) is returned to the client unchanged. A check without
``X-Forwarded-Method`` or ``X-Forwarded-Uri`` is unparsed.

Traefik makes no request id, so the shim makes one per check (unless the check
carries ``X-Request-Id``) and answers it as ``X-Kubeward-Request-Id``: Traefik
puts it on the request it forwards (an allowed call) or on the answer to the
client (a refused one), and its access log keeps both sides
(``request_``/``downstream_X-Kubeward-Request-Id``, ``static.yaml``), so the
collector's record of the call and the shim's report share one id
(``ingest.collectors.accesslog``, deduplicated in ``streams.repeats``). The id is
16 random bytes as 32 hex digits, like the shim's own ``uuid4().hex`` at a fifth
of its cost (0.6 us); not a counter, since a refused client sees the id and a
counter would tell it how many checks the shim has answered. The shipped
middleware removes a client's ``X-Kubeward-Request-Id`` before ForwardAuth.
Answers carry the id only for views that have one: ``respond`` adds it per call
(the rest of the answer stays rendered once per distinct decision), so a server
must answer every check through ``respond``, the allowed ones included
(``request_id_header`` says so); ids are made only with ``own_request_ids``.
Shipped configuration: ``deploy/dataplanes/traefik/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import urandom

from enforcement.adapters.httpcheck import HttpAdapter, _clean
from enforcement.decision import Decision, RequestView

__all__ = ["REQUEST_ID_HEADER", "TraefikAdapter"]

#: the answer header carrying the id the shim reports the call under
REQUEST_ID_HEADER = "x-kubeward-request-id"
_PREFIX = REQUEST_ID_HEADER.encode() + b": "


class TraefikAdapter(HttpAdapter):
    """Traefik ForwardAuth: method, path and host from ``X-Forwarded-*``; status-coded answers naming the request id.

    >>> from enforcement.adapters.httpcheck import HeaderIdentity
    >>> from ingest.identity import IdentityResolver
    >>> adapter = TraefikAdapter(HeaderIdentity(IdentityResolver(), TraefikAdapter.authority_header))
    >>> adapter.own_request_ids = True
    >>> view = adapter.view_of("GET", "/", {b"x-forwarded-method": b"DELETE", b"x-forwarded-uri": b"/orders/7"}, None)
    >>> (view.method, view.path, len(view.request_id))
    ('DELETE', '/orders/7', 32)
    >>> from enforcement.decision import ALLOW
    >>> adapter.respond(ALLOW, view).count(view.request_id.encode())
    1
    """

    name = "traefik"
    authority_header = "x-forwarded-host"
    method_header = b"x-forwarded-method"
    uri_header = b"x-forwarded-uri"
    request_id_header = REQUEST_ID_HEADER

    def view_of(self, method: str, url: str, headers: Mapping[bytes, bytes], peer: str | None, body: bytes | None = None) -> RequestView:
        """``HttpAdapter.view_of``, with an id of the shim's own when the check carries none."""
        view = super().view_of(method, url, headers, peer, body)
        if view.request_id is None and self.own_request_ids:
            view.request_id = urandom(16).hex()
        return view

    def respond(self, decision: Decision, view: RequestView) -> bytes:
        """The answer of ``HttpAdapter.respond`` plus ``x-kubeward-request-id`` when the view has an id."""
        answer = super().respond(decision, view)
        request_id = view.request_id
        if not request_id:
            return answer
        cut = answer.index(b"\r\n") + 2  # after the status line
        return answer[:cut] + _PREFIX + _clean(request_id).encode("latin-1") + b"\r\n" + answer[cut:]
