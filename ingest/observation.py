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
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["HttpObservation", "merge"]


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
