"""What a data plane saw of one HTTP exchange, before Kubeward derives anything from it.

Every way traffic reaches Kubeward produces ``HttpObservation`` records: the
shim's adapters (request side only), the Envoy access-log service and JSON
access-log files (response side: status, sizes, duration), the ext_proc tap
(bodies), OTLP server spans and HAR/JSONL replay. Each source fills what it saw
and leaves the rest empty; ``ingest.summarize.Summarizer`` derives the
``RequestSummary`` (identity, template, object ids, sensitive counts, outcome,
destination) from it, in one place for every source. Observations from two
sources about one call share ``request_id`` (Envoy's ``x-request-id``) and are
merged with ``merge`` before summarising.

Header names are lower case. Bodies are the first bytes the source captured
(sources cap them); ``*_body_truncated`` says whether more existed.

``logged_decision`` reads the shim's decision back out of what a data plane's
access log recorded of its ``x-kubeward-decision`` header (the shipped
configurations log it: ``deploy/dataplanes/``), so a call the shim refused is
published as Kubeward's refusal (``decision`` ``deny``/``throttle``), not as the
API's own 403/429.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["FORWARDED_DECISIONS", "REFUSAL_DECISIONS", "HttpObservation", "logged_decision", "merge"]


@dataclass(slots=True)
class HttpObservation:
    """One HTTP exchange as one source saw it; ``None`` / empty means "not seen by this source"."""

    time: float
    method: str
    path: str  # as sent on the wire: path and query, not decoded
    reporter: str  # "shim", "access_log", "ext_proc", "otlp", "har", ...
    request_id: str | None = None
    authority: str | None = None  # Host / :authority
    headers: dict[str, str] = field(default_factory=dict)  # request headers, lower-case names
    peer_ip: str | None = None  # the downstream address the data plane itself saw (never a header)
    route: str | None = None  # route or upstream cluster name the data plane reports
    status: int | None = None
    duration_ms: float | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    request_body: bytes | None = None
    response_body: bytes | None = None
    request_body_truncated: bool = False
    response_body_truncated: bool = False
    decision: str | None = None  # what the shim decided ("allow", "deny", "throttle", "observe:deny")
    inline_findings: tuple[str, ...] = ()
    trace_id: str | None = None


_EMPTY: tuple[object, ...] = (None, 0, "", (), {}, False)

#: what the shim answers when it refuses a call itself (the data plane returns that status and header to the client)
REFUSAL_DECISIONS = frozenset({"deny", "throttle"})
#: what the shim puts on a request it lets through to the upstream (observe mode: ``allow`` and ``x-kubeward-would``)
FORWARDED_DECISIONS = frozenset({"allow", "redact", "unparsed"})
_WOULD = frozenset({"deny", "throttle", "redact"})


def logged_decision(status: int | None, answered: str | None, forwarded: str | None = None, would: str | None = None) -> str | None:
    """The shim's decision as the summary's ``decision`` (the shim's own report vocabulary), from an access-log entry.

    ``answered`` is the ``x-kubeward-decision`` the data plane answered with (Envoy ``%RESP()%``, the local reply of a
    refusal; nginx ``$kubeward_decision``, the shim's answer to the ``auth_request`` itself; Traefik
    ``downstream_X-Kubeward-Decision``); ``forwarded`` the one the shim set on the request it let through (Envoy
    ``%REQ()%``, Traefik ``request_X-Kubeward-Decision``); ``would`` that request's ``x-kubeward-would`` (observe mode).

    Neither header is taken at its word, since a client can send one on its request and an upstream can answer
    one: a refusal counts only from the answer and only with a refusing status (4xx/5xx), so neither a client's
    ``x-kubeward-decision: deny`` nor a header the upstream wrote on a success can mark a call the API answered;
    what the request carried counts only as a value the shim sets on requests it forwards (never ``deny`` or
    ``throttle``). The shipped configurations strip client ``x-kubeward-*`` headers as well. Anything else: None.

    >>> logged_decision(403, "deny"), logged_decision(429, "throttle", "allow"), logged_decision(200, None, "allow", "deny")
    ('deny', 'throttle', 'observe:deny')
    >>> logged_decision(200, None, "deny"), logged_decision(200, "deny"), logged_decision(200, "allow"), logged_decision(None, None)
    (None, None, 'allow', None)
    >>> logged_decision(200, "deny", "allow")  # the upstream answered the header on a call the shim allowed
    'allow'
    """
    if answered:
        answered = answered.strip().lower()
        if answered in REFUSAL_DECISIONS:
            if status is not None and status >= 400:
                return answered
            answered = None  # a success that says "deny": not the shim's answer
    value = forwarded.strip().lower() if forwarded else answered
    if value not in FORWARDED_DECISIONS:
        return None
    if value == "allow" and would:
        would = would.strip().lower()
        if would in _WOULD:
            return f"observe:{would}"
    return value


def merge(first: HttpObservation, second: HttpObservation) -> HttpObservation:
    """One observation of a call from two sources' views: ``first`` wins where both saw a value.

    Headers are united (``first`` wins per name); the reporter names both, in order.

    >>> a = HttpObservation(1.0, "GET", "/a", "shim", request_id="r1", decision="allow")
    >>> b = HttpObservation(1.1, "GET", "/a", "access_log", request_id="r1", status=200, response_bytes=10)
    >>> m = merge(a, b)
    >>> (m.reporter, m.status, m.decision, m.response_bytes, m.time)
    ('shim+access_log', 200, 'allow', 10, 1.0)
    """
    values: dict[str, Any] = {}
    for f in fields(HttpObservation):
        mine, theirs = getattr(first, f.name), getattr(second, f.name)
        if f.name in ("headers", "response_headers"):
            values[f.name] = {**theirs, **mine}
        elif f.name == "reporter":
            values[f.name] = mine if theirs in mine.split("+") else f"{mine}+{theirs}"
        elif f.name == "time":
            values[f.name] = min(mine, theirs)
        else:
            values[f.name] = theirs if _is_empty(mine) else mine
    return replace(first, **values)


def _is_empty(value: object) -> bool:
    return any(value is e or (type(value) is type(e) and value == e) for e in _EMPTY)
