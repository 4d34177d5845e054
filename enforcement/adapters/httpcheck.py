"""What the three HTTP check adapters share: the check request, identity, and HTTP/1.1 answers.

Envoy ext_authz (HTTP service), nginx ``auth_request`` and Traefik ForwardAuth
all ask the shim with an ordinary HTTP request; they differ only in where the
original method, path and host travel and in which statuses they understand.
This module holds the common part:

* ``HttpCheck``: one check request as the server parsed it (method, target,
  lower-case header names to raw values, the peer's address).
* ``HeaderIdentity``: principal, workload, client address (and whether it is
  external: ``Identity.external``, false once a workload is known) and
  destination from the forwarded headers through
  ``ingest.identity.IdentityResolver``. The
  adapter memoises its answer per distinct identity headers (they repeat from
  request to request; a JWT check and keyed hash cost tens of microseconds).
  Forwarded identity (``x-forwarded-for``, ``x-forwarded-client-cert``, every
  ``x-kubeward-*`` header and the destination header) counts only when the
  check's peer is a trusted data plane (``identity.trusted_data_planes``,
  loopback by default): from any other peer, someone talking to the shim
  directly, those headers are dropped and the peer is the client, so nobody
  can write a victim's address, workload or principal into a report. Headers
  named ``x-kubeward-source-workload``, ``x-kubeward-principal`` and
  ``x-kubeward-namespace`` are obeyed only with ``trust_kubeward_headers`` as
  well: the shipped data-plane configurations strip every client
  ``x-kubeward-*`` header before the check, so any such header a trusted data
  plane forwards was set by the data plane.
* ``HttpAdapter``: the base the three adapters extend, mostly as data (which
  headers carry the original method, target and host). ``view`` raises
  ``UnparsedRequest`` for a check it cannot read; ``respond`` renders a
  ``Decision``, once per distinct decision.
* ``render``: one HTTP/1.1 response as bytes.

Pure: no sockets, no clock, no environment.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.errors import EnforcementError
from ingest.identity import IdentityResolver, without_forwarded

__all__ = ["HeaderIdentity", "HttpAdapter", "HttpCheck", "PodLookup", "UnparsedRequest", "check_method", "check_target", "render", "unparsed_decision"]

log = logging.getLogger("kubeward.adapters")

_MEMO_MAX = 65536
#: peers named in the log for forwarding identity without being trusted (once each, at most this many)
_WARNED_MAX = 64
_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}
_METHOD_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")
_KNOWN_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE")}
_FIXED = (
    b"authorization", b"x-forwarded-client-cert", b"x-forwarded-for", b"cookie", b"x-api-key", b"api-key",
    b"x-kubeward-source-workload", b"x-kubeward-principal", b"x-kubeward-namespace",
)  # fmt: skip
_ASSERTED = ("x-kubeward-source-workload", "x-kubeward-principal", "x-kubeward-namespace")
_PARTIAL_BODY = b"x-envoy-auth-partial-body"  # Envoy with_request_body + allow_partial_message: the body was cut
Ident = tuple[str | None, str | None, str | None, str | None, str | None, tuple[str, ...], str, str | None, bool]
PodLookup = Callable[[str], "tuple[str, str, str] | None"]


class UnparsedRequest(EnforcementError):
    """A check request the adapter cannot turn into a ``RequestView``.

    ``part`` names what was missing or malformed (a header name, ``path``,
    ``http``); it is a constant of ours, so it may go into a response header.
    The message adds the bad value for logs.
    """

    def __init__(self, part: str, detail: str):
        super().__init__(f"{part}: {detail}")
        self.part = part


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """One check request: method and target as sent to the shim, headers (lower-case names), peer address."""

    method: str
    url: str
    headers: Mapping[bytes, bytes]
    peer: str | None = None
    body: bytes | None = None


def _header_text(value: bytes) -> str:
    """A header value as text for inspection: UTF-8 (what clients send beyond ASCII), else Latin-1 (every byte kept)."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def render(status: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """A complete HTTP/1.1 response with ``content-length``.

    >>> render(200, [("x-kubeward-decision", "allow")])
    b'HTTP/1.1 200 OK\\r\\ncontent-length: 0\\r\\nx-kubeward-decision: allow\\r\\n\\r\\n'
    """
    lines = "".join(f"{name}: {_clean(value)}\r\n" for name, value in headers)
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\ncontent-length: {len(body)}\r\n{lines}\r\n"
    return head.encode("latin-1") + body


def _clean(value: str) -> str:
    """A header value that cannot break the response: printable ASCII, anything else as ``?``."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if " " <= c <= "~" else "?" for c in value)


def unparsed_decision(failure_mode: str, part: str) -> Decision:
    """The decision for a check the shim could not read: the failure mode answers, never a silent deny.

    >>> unparsed_decision("allow", "x-original-uri").reason
    'unparsed:x-original-uri'
    """
    deny = failure_mode == "deny"
    return Decision(403 if deny else 200, "unparsed", deny, f"unparsed:{part}")


def _text(value: bytes | None) -> str | None:
    """A header value as text; empty counts as absent."""
    return (value.decode("latin-1").strip() or None) if value is not None else None


def check_method(value: bytes | str | None, header: str) -> str:
    """An HTTP method forwarded in a header, upper case; ``UnparsedRequest`` when absent or not a token.

    >>> check_method(b"get", "x-original-method")
    'GET'
    """
    known = _KNOWN_METHODS.get(value) if isinstance(value, bytes) else None
    if known is not None:
        return known
    method = (value.decode("latin-1") if isinstance(value, bytes) else value or "").strip().upper()
    if not method or len(method) > 24 or not _METHOD_CHARS.issuperset(method):
        raise UnparsedRequest(header, f"{method[:64]!r} is not an HTTP method")
    return method


def check_target(value: bytes | None, header: str) -> str:
    """A request target forwarded in a header (origin form, starting with ``/``); ``UnparsedRequest`` otherwise.

    >>> check_target(b"/orders/1?x=1", "x-forwarded-uri")
    '/orders/1?x=1'
    """
    if value is None or value[:1] != b"/":
        shown = value.decode("latin-1")[:64] if value is not None else None
        raise UnparsedRequest(header, f"{shown!r} is not a path starting with '/'")
    return value.decode("latin-1")


class HeaderIdentity:
    """Identity and destination of a check from its headers and peer, through ``IdentityResolver``.

    ``authority`` names the header carrying the original host (``host`` for
    Envoy and nginx, ``x-forwarded-host`` for Traefik). ``HttpAdapter`` keeps
    the memo; ``derive`` is the slow path it calls once per distinct input.
    ``pods`` maps a client address to ``(workload, namespace, pod)``
    (``ingest.podsource.pod_lookup``); it is asked per check, not memoised,
    because pod addresses are reused (see ``with_pod``). ``untrusted`` counts
    distinct identities derived from a peer outside ``trusted_data_planes``
    that sent forwarded identity headers (ignored); each such peer is logged once.
    """

    def __init__(self, resolver: IdentityResolver, authority: str = "host", trust_kubeward_headers: bool = True, pods: PodLookup | None = None):
        if resolver.pods is not None:
            raise ValueError("give the pod lookup to HeaderIdentity(pods=...), not to the resolver: the resolver's answers are memoised")
        self.resolver = resolver
        self.pods = pods
        self.trust_kubeward_headers = trust_kubeward_headers
        config = resolver.config
        self.authority = authority.lower().encode("latin-1")
        self.destination = config.destination_header.lower().encode("latin-1")
        #: API-key header names beyond the two every check key reads
        self.extra = tuple(n.lower().encode("latin-1") for n in config.api_key_headers if n.lower() not in ("x-api-key", "api-key"))
        self.names: tuple[bytes, ...] = tuple(dict.fromkeys((*_FIXED, self.destination, self.authority, *self.extra)))
        self.untrusted = 0
        self._warned: set[str] = set()

    def derive(self, headers: Mapping[bytes, bytes], peer: str | None) -> Ident:
        """(workload, principal, ip, service, namespace, verdict-cache keys, auth type, authority, external) of one check.

        ``external`` is the resolver's (no workload, an address outside ``internal_networks``); a workload the data plane
        asserts (``x-kubeward-source-workload``) makes the caller that workload, so not external.
        """
        text = {name.decode("latin-1"): value for name in self.names if (value := _text(headers.get(name))) is not None}
        if not self.resolver.trusts(peer):
            text = self._untrusted(text, peer)
        if not self.trust_kubeward_headers:
            for name in _ASSERTED:
                text.pop(name, None)
        who = self.resolver.resolve(text, peer)
        authority = text.get(self.authority.decode("latin-1"))
        target = self.resolver.destination(text, None, authority)
        workload = text.get("x-kubeward-source-workload") or who.workload
        asserted = text.get("x-kubeward-principal")
        principal, auth_type = (asserted, "data_plane") if asserted else (who.principal, who.auth_type)
        namespace = text.get("x-kubeward-namespace") or target.namespace
        keys = RequestView("", "", workload, principal, who.ip, target.service, namespace).subject_keys()
        return workload, principal, who.ip, target.service, namespace, keys, auth_type, authority, who.external and not workload

    def _untrusted(self, text: dict[str, str], peer: str | None) -> dict[str, str]:
        """``text`` without forwarded identity: the peer is no trusted data plane, so it is the client."""
        kept = without_forwarded(text)
        kept.pop(self.destination.decode("latin-1"), None)
        if len(kept) != len(text):
            self.untrusted += 1
            if peer is not None and peer not in self._warned and len(self._warned) < _WARNED_MAX:
                self._warned.add(peer)
                log.warning("forwarded identity headers from %s ignored: the peer is not in identity.trusted_data_planes", peer)
        return kept

    def with_pod(self, ident: Ident, pod: tuple[str, str, str]) -> Ident:
        """``ident`` with the workload of the pod behind its client address (only for idents without a workload): a pod
        is in the cluster, so the caller is not external."""
        _, principal, ip, service, namespace, _, auth_type, authority, _ = ident
        keys = RequestView("", "", pod[0], principal, ip, service, namespace).subject_keys()
        return pod[0], principal, ip, service, namespace, keys, auth_type, authority, False


class HttpAdapter:
    """Base of the HTTP check adapters; each subclass is mostly data.

    ``method_header``/``uri_header`` name the headers carrying the original
    method and request target (nginx, Traefik); when they are None the check's
    own request line is the original (Envoy), behind ``path_prefix``.
    Answers are status-coded (Envoy, Traefik); nginx overrides ``_status``.
    """

    name = "http"
    authority_header = "host"
    method_header: bytes | None = None
    uri_header: bytes | None = None
    #: True when the check repeats the original method (Envoy): a HEAD check then gets no body.
    check_uses_original_method = False
    #: The answer header naming the request id the shim reports the call under (Traefik: ``x-kubeward-request-id``);
    #: such an adapter's answers differ per call, so the precomputed ``allow_response`` is no answer of a real check.
    request_id_header: str | None = None
    #: Make an id for a check that names none (an adapter with ``request_id_header``); the shim turns it on once it
    #: answers every check of such an adapter through ``respond``.
    own_request_ids = False

    def __init__(self, identity: HeaderIdentity, path_prefix: str = "", *, inspected_headers: tuple[str, ...] = (), body_limit: int = 0):
        self.identity = identity
        self.path_prefix = path_prefix
        own = tuple(h for h in (b"x-request-id", self.method_header, self.uri_header) if h is not None)
        exact = tuple(h.encode() for h in inspected_headers if not h.endswith("*"))
        partial = (_PARTIAL_BODY, b"content-type") if body_limit else ()
        self.wanted: frozenset[bytes] = frozenset((*identity.names, *own, *exact, *partial))
        #: header-name prefixes kept for inline inspection (``x-*`` -> ``x-``)
        self.wanted_prefixes: tuple[bytes, ...] = tuple(h[:-1].encode() for h in inspected_headers if h.endswith("*"))
        #: request body bytes the server keeps for inline inspection (0 = none)
        self.body_limit = body_limit
        self._keep_headers = bool(inspected_headers)
        self.allow_response = render(200, [("x-kubeward-decision", "allow")])
        self._rendered: dict[tuple[Decision, bool], bytes] = {(ALLOW, False): self.allow_response}
        self._memo: dict[tuple[bytes | str | None, ...], Ident] = {}
        self._destination, self._authority, self._extra = identity.destination, identity.authority, identity.extra
        self._pods = identity.pods
        self._pod_memo: dict[tuple[Ident, tuple[str, str, str]], Ident] = {}
        self._method_h, self._uri_h = self.method_header or b"", self.uri_header or b""

    def view(self, request: HttpCheck) -> RequestView:
        """The decision input of one check (the ``Adapter`` protocol); see ``view_of``."""
        return self.view_of(request.method, request.url, request.headers, request.peer, request.body)

    def view_of(self, method: str, url: str, headers: Mapping[bytes, bytes], peer: str | None, body: bytes | None = None) -> RequestView:
        """The decision input of one check; ``UnparsedRequest`` when the original method or path cannot be read.

        This is the hot path: one literal tuple of header gets is the memo key
        of the identity (0.25 us cheaper than a loop over the names), and there
        is no further Python call on a memo hit.
        """
        get = headers.get
        if self._method_h:
            raw = get(self._method_h)
            method = _KNOWN_METHODS.get(raw or b"") or check_method(raw, self._method_h.decode())
            url = check_target(get(self._uri_h), self._uri_h.decode())
        elif self.path_prefix or url[:1] != "/":
            url = self._strip_prefix(url)
        key: tuple[bytes | str | None, ...] = (
            get(b"authorization"), get(b"x-forwarded-client-cert"), get(b"x-forwarded-for"), get(b"cookie"),
            get(b"x-api-key"), get(b"api-key"), get(b"x-kubeward-source-workload"), get(b"x-kubeward-principal"),
            get(b"x-kubeward-namespace"), get(self._destination), get(self._authority), peer,
        )  # fmt: skip
        if self._extra:
            key += tuple(map(get, self._extra))
        ident = self._memo.get(key)
        if ident is None:
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            ident = self._memo[key] = self.identity.derive(headers, peer)
        if self._pods is not None and ident[0] is None and ident[2]:
            ident = self._pod_identity(ident, ident[2])
        workload, principal, ip, service, namespace, keys, auth_type, authority, external = ident
        rid = get(b"x-request-id")
        request_id = rid.decode("latin-1") if rid else None
        # All positional: ``external=`` as a keyword cost 0.1 us more per view, the three extra positionals 0.02 us.
        view = RequestView(method, url, workload, principal, ip, service, namespace, keys, request_id, auth_type, authority, None, peer,
                           None, False, external)
        if self._keep_headers:
            view.headers = {k.decode("latin-1"): _header_text(v) for k, v in headers.items()}
        if body:
            limit = self.body_limit
            view.body_truncated = len(body) > limit or get(_PARTIAL_BODY) == b"true"
            view.body = body[:limit]
        return view

    def _pod_identity(self, ident: Ident, ip: str) -> Ident:
        pod = self._pods(ip) if self._pods is not None else None
        if pod is None:
            return ident
        found = self._pod_memo.get((ident, pod))
        if found is None:
            if len(self._pod_memo) >= _MEMO_MAX:
                self._pod_memo.clear()
            found = self._pod_memo[(ident, pod)] = self.identity.with_pod(ident, pod)
        return found

    def _strip_prefix(self, url: str) -> str:
        prefix = self.path_prefix
        if prefix:
            if not url.startswith(prefix):
                raise UnparsedRequest("path", f"{url[:64]!r} does not start with the path_prefix {prefix!r}")
            url = url[len(prefix) :] or "/"
        if not url.startswith("/"):
            raise UnparsedRequest("path", f"{url[:64]!r} is not a path starting with '/'")
        return url

    def respond(self, decision: Decision, view: RequestView) -> bytes:
        """The answer for a decision; rendered once per distinct decision and reused."""
        key = (decision, self.check_uses_original_method and view.method == "HEAD")
        found = self._rendered.get(key)
        if found is None:
            if len(self._rendered) >= 4096:
                self._rendered.clear()
            found = self._rendered[key] = self._render(decision, key[1])
        return found

    def _headers(self, decision: Decision) -> list[tuple[str, str]]:
        if decision.would == "unparsed":
            shown = "unparsed"
        else:
            shown = decision.would if decision.enforced else "allow"
        lines = [("x-kubeward-decision", shown)]
        if decision.reason:
            lines.append(("x-kubeward-reason", decision.reason))
        if not decision.enforced and decision.would not in ("allow", "unparsed"):
            lines.append(("x-kubeward-would", decision.would))
        if decision.status == 429 and decision.retry_after is not None:
            lines.append(("retry-after", str(decision.retry_after)))
        return lines

    def _status(self, decision: Decision) -> int:
        return decision.status

    def _render(self, decision: Decision, head_only: bool) -> bytes:
        # The body never names the reason: data planes may hand it to the client as is.
        body = b"" if decision.status == 200 or head_only else f"kubeward: {decision.would}\n".encode()
        return render(self._status(decision), self._headers(decision), body)
