"""Envoy / Istio JSON access-log entries as ``HttpObservation`` records, and CRI log lines (pure).

The format Kubeward ships (``deploy/dataplanes/envoy/access-log-file.yaml``) is
an Envoy ``json_format`` whose keys extend Istio's default JSON access log, so
both are read by the same code. One entry per line:

===========================  ==========================================  ==========================
key                          Envoy command operator                      HttpObservation field
===========================  ==========================================  ==========================
``start_time``               ``%START_TIME%`` (RFC 3339)                 ``time``
``method`` *(required)*      ``%REQ(:METHOD)%``                          ``method``
``path`` *(required)*        ``%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%``      ``path``
``authority``                ``%REQ(:AUTHORITY)%``                       ``authority``
``request_id``               ``%REQ(X-REQUEST-ID)%``                     ``request_id``
``response_code``            ``%RESPONSE_CODE%`` (0: no response)        ``status``
``bytes_received``           ``%BYTES_RECEIVED%``                        ``request_bytes``
``bytes_sent``               ``%BYTES_SENT%``                            ``response_bytes``
``duration``                 ``%DURATION%`` (ms)                         ``duration_ms``
``upstream_cluster``         ``%UPSTREAM_CLUSTER%``                      ``route``
``downstream_peer_address``  ``%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%``      ``peer_ip``
``downstream_remote_address``  ``%DOWNSTREAM_REMOTE_ADDRESS%``           ``peer_ip`` (if no peer)
``trace_id``                 ``%TRACE_ID%``                              ``trace_id``
``response_content_type``    ``%RESP(CONTENT-TYPE)%``                    ``response_headers``
``kubeward_decision``        ``%RESP(X-KUBEWARD-DECISION)%``             ``decision`` (see below)
``kubeward_forwarded_decision``  ``%REQ(X-KUBEWARD-DECISION)%``          ``decision``
``kubeward_would``           ``%REQ(X-KUBEWARD-WOULD)%``                 ``decision`` (observe mode)
header keys (below)          ``%REQ(<HEADER>)%``                         ``headers``
===========================  ==========================================  ==========================

The three ``kubeward_*`` keys carry the shim's decision: on a call the shim refused, Envoy's
ext_authz answers locally with the shim's status and ``x-kubeward-decision`` (a response header);
on a call it let through, the shim's ``x-kubeward-decision`` (and in observe mode
``x-kubeward-would``) are on the request Envoy forwards. ``ingest.observation.logged_decision``
turns them into ``decision`` (``deny``, ``throttle``, ``allow``, ``observe:deny``...), taking a
refusal only from the answer with a refusing status and never ``deny``/``throttle`` from the
request, so a client's own ``x-kubeward-decision`` cannot mark a call. The nginx format shipped in
``deploy/dataplanes/nginx/kubeward-http.conf`` writes the same keys (its ``kubeward_decision`` is
the shim's answer to the ``auth_request`` for every call).

Header keys: ``authorization``, ``cookie``, ``x_api_key``, ``user_agent``,
``x_forwarded_for``, ``x_forwarded_client_cert``, ``content_type``,
``referer``, ``traceparent``, ``x_kubeward_destination``. Envoy Gateway's
default keys (``:authority``, ``x-envoy-origin-path``, ``x-request-id``,
``user-agent``, ``x-forwarded-for``) are accepted as aliases. Missing values
may be absent, ``null``, ``""`` or ``"-"``. Numbers may be JSON numbers or
strings. Without ``start_time`` the time is the CRI line's time minus the
duration, else the time the line was read.

Traefik's JSON access log (``accessLog.format: json``, shipped in
``deploy/dataplanes/traefik/static.yaml``) is read too: an entry without ``method``
but with ``RequestMethod`` is translated key by key (``StartUTC``, ``RequestPath``,
``RequestHost``, ``DownstreamStatus``, ``RequestContentSize``,
``DownstreamContentSize``, ``Duration`` in ns, ``ClientHost``, ``ServiceName``, kept
request headers as ``request_<Canonical-Name>``); the decision comes from
``downstream_X-Kubeward-Decision`` (answered) and ``request_X-Kubeward-Decision`` /
``request_X-Kubeward-Would`` (forwarded). Traefik makes no request id: without
``request_X-Request-Id`` the id is the one the shim answered,
``X-Kubeward-Request-Id`` (``downstream_`` on a call the shim refused, ``request_``
on one it let through), the id of the shim's own report of the call.

A CRI line is ``<RFC 3339 time> <stdout|stderr> <F|P> <message>``; ``P``
marks a partial line continued by the next line of the same stream.
"""

from __future__ import annotations

import calendar
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.collectors.base import INT64_MAX, INT64_MIN
from ingest.observation import REFUSAL_DECISIONS, HttpObservation, logged_decision

__all__ = [
    "AccessLogError",
    "HEADER_KEYS",
    "RejectFn",
    "Rejected",
    "from_traefik",
    "observation_from_envoy",
    "parse_rfc3339",
    "split_address",
]

#: JSON key -> request header name.
HEADER_KEYS: tuple[tuple[str, str], ...] = (
    ("authorization", "authorization"),
    ("cookie", "cookie"),
    ("x_api_key", "x-api-key"),
    ("user_agent", "user-agent"),
    ("x_forwarded_for", "x-forwarded-for"),
    ("x_forwarded_client_cert", "x-forwarded-client-cert"),
    ("content_type", "content-type"),
    ("referer", "referer"),
    ("traceparent", "traceparent"),
    ("x_kubeward_destination", "x-kubeward-destination"),
)
_HEADER_ALIASES: tuple[tuple[str, str], ...] = (("user-agent", "user-agent"), ("x-forwarded-for", "x-forwarded-for"))
_MISSING = (None, "", "-")
#: the shim's ``x-kubeward-decision`` on an answer it had Traefik return to the client (``unparsed``: failure_mode deny)
_REFUSED = REFUSAL_DECISIONS | {"unparsed"}
_SECOND_CACHE_MAX = 4096
_SCALE = tuple(10.0 ** n for n in range(13))
_MILLIS = {f"{n:03d}": n / 1000 for n in range(1000)}  # a dict lookup costs a seventh of int() on this path


@dataclass(frozen=True, slots=True)
class Rejected:
    """An input a source could not use: a short ``reason`` code (a metric label), details, the raw bytes, where."""

    reason: str
    detail: str
    raw: bytes
    origin: str
    offset: int | None = None


RejectFn = Callable[[Rejected], None]


class AccessLogError(ValueError):
    """An access-log entry lacks a required field or holds a bad value; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_seconds: dict[str, int] = {}


def parse_rfc3339(text: str) -> float:
    """Unix seconds of an RFC 3339 time (``2024-05-01T10:00:00.123Z``, any fraction, ``Z`` or offset).

    Whole seconds of UTC times are cached by their text, since log times repeat them.

    >>> parse_rfc3339("2024-05-01T10:00:00.25Z")
    1714557600.25
    >>> parse_rfc3339("2024-05-01T12:00:00+02:00")
    1714557600.0
    """
    base = _seconds.get(text[:19])
    if base is not None:
        size = len(text)
        if size == 24 and text[19] == "." and text[23] == "Z":  # Envoy's %START_TIME%: milliseconds
            millis = _MILLIS.get(text[20:23])
            if millis is not None:
                return base + millis
        if size == 20 and text[19] == "Z":
            return base
        if size > 21 and text[19] == "." and text[-1] == "Z":
            fraction = text[20:-1]
            if fraction.isdigit():
                try:
                    return base + int(fraction) / _SCALE[size - 21]
                except (ValueError, IndexError):  # digits int() refuses, or an absurd precision
                    pass
    return _parse_slow(text)


def _parse_slow(text: str) -> float:
    try:
        stamp = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError as exc:
        raise AccessLogError("bad_time", f"{text!r} is not an RFC 3339 time") from exc
    if stamp.tzinfo is None:
        raise AccessLogError("bad_time", f"{text!r} has no time zone")
    whole = text[:19]
    if len(whole) == 19 and whole[10] == "T" and text.endswith("Z"):
        if len(_seconds) >= _SECOND_CACHE_MAX:
            _seconds.clear()
        _seconds[whole] = calendar.timegm(stamp.replace(microsecond=0).utctimetuple())
    return stamp.timestamp()


def split_address(address: str) -> str:
    """The host of ``host:port`` / ``[v6]:port`` / bare address text.

    Not memoised: peers repeat but their ports do not, so a memo keyed by the address missed nearly
    always and cost twice the split.

    >>> split_address("10.0.0.7:5432"), split_address("[fd00::1]:80"), split_address("fd00::1")
    ('10.0.0.7', 'fd00::1', 'fd00::1')
    """
    if address[:1] == "[":
        return address[1:address.find("]")]
    host, colon, port = address.partition(":")
    return host if colon and ":" not in port else address  # exactly one colon: host:port


def _int(doc: dict[str, Any], key: str, default: int | None) -> int | None:
    value = doc.get(key)
    if type(value) is int:
        return value
    if value is None or value == "-" or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise AccessLogError("bad_number", f"{key}={value!r} is not an integer") from None


def _duration(doc: dict[str, Any]) -> float | None:
    value = doc.get("duration")
    if value is None or value == "-" or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise AccessLogError("bad_number", f"duration={value!r} is not a number") from None


def _text(doc: dict[str, Any], key: str, alias: str | None = None) -> str | None:
    value = doc.get(key)
    if value is None and alias is not None:
        value = doc.get(alias)
    if value is None or value == "" or value == "-":
        return None
    if type(value) is not str:
        raise AccessLogError("bad_type", f"{key}={value!r} is not a string")
    return value


def _canonical(name: str) -> str:
    """Go's canonical header name, as Traefik logs it: ``x-api-key`` -> ``X-Api-Key``."""
    return "-".join(part.capitalize() for part in name.split("-"))


#: Traefik JSON access-log key -> the key of the Envoy format read here
_TRAEFIK_KEYS: tuple[tuple[str, str], ...] = (
    ("StartUTC", "start_time"), ("RequestMethod", "method"), ("RequestPath", "path"), ("RequestHost", "authority"),
    ("DownstreamStatus", "response_code"), ("RequestContentSize", "bytes_received"), ("DownstreamContentSize", "bytes_sent"),
    ("ClientHost", "downstream_peer_address"), ("ServiceName", "upstream_cluster"),
    ("downstream_X-Kubeward-Decision", "kubeward_decision"), ("request_X-Kubeward-Decision", "kubeward_forwarded_decision"),
    ("request_X-Kubeward-Would", "kubeward_would"), ("request_X-Request-Id", "request_id"),
    *((f"request_{_canonical(name)}", key) for key, name in HEADER_KEYS),
)


def from_traefik(doc: dict[str, Any]) -> dict[str, Any]:
    """A Traefik JSON access-log entry as an entry of the Envoy format (``Duration`` ns -> ``duration`` ms).

    >>> from_traefik({"RequestMethod": "GET", "RequestPath": "/a", "DownstreamStatus": 403, "Duration": 1500000,
    ...               "downstream_X-Kubeward-Decision": "deny", "request_User-Agent": "curl/8"})
    {'method': 'GET', 'path': '/a', 'response_code': 403, 'kubeward_decision': 'deny', 'user_agent': 'curl/8', 'duration': 1.5}
    """
    out = {key: doc[name] for name, key in _TRAEFIK_KEYS if name in doc}
    service = out.get("upstream_cluster")
    if type(service) is str and "@" in service:
        out["upstream_cluster"] = service.partition("@")[0]  # orders@file: the provider is not part of the name
    took = doc.get("Duration")
    if type(took) is int or type(took) is float:
        out["duration"] = took / 1e6
    if out.get("request_id") in _MISSING:
        shims = _traefik_request_id(doc)
        if shims is not None:
            out["request_id"] = shims
    return out


def _traefik_request_id(doc: dict[str, Any]) -> str | None:
    """The id the shim reported a Traefik call under (``X-Kubeward-Request-Id``, answered by the shim).

    On a call the shim refused (its ``downstream_X-Kubeward-Decision`` with a 4xx/5xx status) ForwardAuth returned the
    shim's answer to the client, so the id is the answer's; the request side is then the client's own and never read.
    On a call let through ForwardAuth replaced the client's ``X-Kubeward-*`` with the shim's on the forwarded request
    (an upstream's own error answer, whatever headers it echoes, is no refusal).

    >>> _traefik_request_id({"DownstreamStatus": 403, "downstream_X-Kubeward-Decision": "deny",
    ...                      "downstream_X-Kubeward-Request-Id": "a1", "request_X-Kubeward-Request-Id": "forged"})
    'a1'
    >>> _traefik_request_id({"DownstreamStatus": 403, "downstream_X-Kubeward-Decision": "deny", "request_X-Kubeward-Request-Id": "forged"})
    >>> _traefik_request_id({"DownstreamStatus": 200, "request_X-Kubeward-Request-Id": "b2"})
    'b2'
    """
    status, answered = doc.get("DownstreamStatus"), doc.get("downstream_X-Kubeward-Decision")
    refused = type(answered) is str and answered.strip().lower() in _REFUSED and type(status) is int and status >= 400
    value = doc.get("downstream_X-Kubeward-Request-Id" if refused else "request_X-Kubeward-Request-Id")
    return value if type(value) is str and value not in _MISSING else None


def _required(doc: dict[str, Any]) -> tuple[str, str]:
    method, path = _text(doc, "method"), _text(doc, "path", "x-envoy-origin-path")
    if method is None:
        raise AccessLogError("missing_field", "method")
    if path is None:
        raise AccessLogError("missing_field", "path")
    return method, path


def _headers(doc: dict[str, Any]) -> dict[str, str]:
    headers = {}
    get = doc.get
    for key, name in HEADER_KEYS:
        value = get(key)
        if value and value != "-":
            headers[name] = value if type(value) is str else str(value)
    if "user_agent" in doc:  # our format or Istio's: Envoy Gateway's dashed names are not expected
        return headers
    for key, name in _HEADER_ALIASES:
        if name not in headers:
            value = get(key)
            if value and value != "-":
                headers[name] = str(value)
    return headers


def _start_time(doc: dict[str, Any], line_time: str | None, now: float | None) -> float:
    start = doc.get("start_time")
    if start is not None and start != "-" and start != "":
        if type(start) is not str:
            raise AccessLogError("bad_type", f"start_time={start!r} is not a string")
        return parse_rfc3339(start)
    if line_time:
        return parse_rfc3339(line_time) - (_duration(doc) or 0.0) / 1000.0
    return _time.time() if now is None else now


def observation_from_envoy(doc: dict[str, Any], reporter: str = "access_log", line_time: str | None = None,
                           now: float | None = None) -> HttpObservation:
    """The observation of one decoded JSON access-log entry; ``AccessLogError`` when it is unusable.

    ``line_time`` is the CRI line's time (used when the entry has no ``start_time``). This is the
    collector's hot path (one call per log line): common shapes are checked inline, the rest in helpers.

    >>> o = observation_from_envoy({"start_time": "2024-05-01T10:00:00Z", "method": "GET", "path": "/a?b=1",
    ...     "response_code": 200, "downstream_remote_address": "10.0.0.7:5000", "user_agent": "curl/8"})
    >>> (o.time, o.method, o.path, o.status, o.peer_ip, o.headers)
    (1714557600.0, 'GET', '/a?b=1', 200, '10.0.0.7', {'user-agent': 'curl/8'})
    """
    get = doc.get
    method, path = get("method"), get("path")
    if type(method) is not str or type(path) is not str or method in _MISSING or path in _MISSING:
        if method is None and "RequestMethod" in doc:  # Traefik's format
            return observation_from_envoy(from_traefik(doc), reporter, line_time, now)
        method, path = _required(doc)
    start = get("start_time")
    when = parse_rfc3339(start) if type(start) is str and start != "-" and start != "" else _start_time(doc, line_time, now)
    status = get("response_code")
    if type(status) is not int:
        status = _int(doc, "response_code", None)
    received, sent, duration = get("bytes_received"), get("bytes_sent"), get("duration")
    if type(received) is not int:
        received = _int(doc, "bytes_received", 0)
    if type(sent) is not int:
        sent = _int(doc, "bytes_sent", 0)
    if type(duration) is not int and type(duration) is not float:
        duration = _duration(doc)
    if not (INT64_MIN <= (status or 0) <= INT64_MAX and INT64_MIN <= (received or 0) <= INT64_MAX
            and INT64_MIN <= (sent or 0) <= INT64_MAX):  # one row past int64 would fail its whole envelope
        raise AccessLogError("bad_number", f"response_code={status!r}, bytes_received={received!r} or bytes_sent={sent!r} is past 64 bits")
    peer = get("downstream_peer_address") or get("downstream_remote_address")
    if peer is not None and (type(peer) is not str or peer == "-"):
        peer = _text(doc, "downstream_peer_address") or _text(doc, "downstream_remote_address")
    request_id, authority, route = get("request_id"), get("authority"), get("upstream_cluster")
    if type(request_id) is not str or request_id == "-":
        request_id = _text(doc, "request_id", "x-request-id")
    if type(authority) is not str or authority == "-":
        authority = _text(doc, "authority", ":authority")
    if route is not None and (type(route) is not str or route == "-"):
        route = _text(doc, "upstream_cluster")
    answered, forwarded = get("kubeward_decision"), get("kubeward_forwarded_decision")
    if answered is None and forwarded == "allow" and get("kubeward_would") is None:
        decision: str | None = "allow"  # most calls: what logged_decision answers, without the call
    else:
        decision = _decision(doc, status, answered, forwarded) if answered or forwarded else None
    content_type, trace_id = get("response_content_type"), get("trace_id")
    if type(trace_id) is str:
        trace_id = trace_id if trace_id and trace_id != "-" else None
    elif trace_id is not None:
        trace_id = _text(doc, "trace_id")  # raises: not a string
    return HttpObservation(
        when, method, path, reporter, request_id or None, authority or None, _headers(doc),
        split_address(peer) if peer else None, route or None, status or None,
        float(duration) if duration is not None else None, received or 0, sent or 0,
        {"content-type": content_type} if content_type and content_type != "-" else {},
        None, None, False, False, decision, (), trace_id,
    )


def _decision(doc: dict[str, Any], status: int | None, answered: Any, forwarded: Any) -> str | None:
    """``decision`` of an entry that logged the shim's header (a value that is not a string counts as absent)."""
    would = doc.get("kubeward_would")
    return logged_decision(status, answered if type(answered) is str else None, forwarded if type(forwarded) is str else None,
                           would if type(would) is str else None)
