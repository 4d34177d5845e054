"""nginx ``auth_request`` (and ingress-nginx ``auth-url``, which compiles to it).

nginx asks with a ``GET`` subrequest whose headers the shipped snippet sets:
``X-Original-Method``, ``X-Original-URI`` (``$request_uri``), ``X-Request-Id``,
``X-Forwarded-For`` (the client address nginx trusts), ``Authorization``,
``Cookie``, ``X-Api-Key`` and ``X-Kubeward-Destination``. nginx understands only
2xx (allow), 401 and 403 (deny); any other status becomes a 500 for the client.
So a throttle is answered **403 + ``x-kubeward-action: throttle`` +
``retry-after``**, a deny 403 + ``x-kubeward-action: deny``, and the snippet's
``error_page 403 = @kubeward_denied`` turns the first back into 429 with
``Retry-After``. A check without the original method or URI is unparsed.
Shipped configuration: ``deploy/dataplanes/nginx/``.
"""

from __future__ import annotations

from enforcement.adapters.httpcheck import HttpAdapter
from enforcement.decision import Decision

__all__ = ["NginxAdapter"]


class NginxAdapter(HttpAdapter):
    """nginx auth_request: original request from ``X-Original-*``; every refusal is a 403 with an action header.

    >>> from enforcement.adapters.httpcheck import HeaderIdentity
    >>> from ingest.identity import IdentityResolver
    >>> adapter = NginxAdapter(HeaderIdentity(IdentityResolver()))
    >>> adapter.respond(Decision(429, "throttle", True, "r", 3), adapter.view_of("GET", "/", {b"x-original-method": b"GET", b"x-original-uri": b"/a"}, None))[:22]
    b'HTTP/1.1 403 Forbidden'
    """

    name = "nginx"
    authority_header = "host"
    method_header = b"x-original-method"
    uri_header = b"x-original-uri"

    def _headers(self, decision: Decision) -> list[tuple[str, str]]:
        lines = super()._headers(decision)
        if decision.status != 200:
            lines.append(("x-kubeward-action", "throttle" if decision.status == 429 else "deny"))
        return lines

    def _status(self, decision: Decision) -> int:
        return 403 if decision.status == 429 else decision.status
