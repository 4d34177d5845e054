"""The values of one request that inline inspection reads, each with its location.

Contract: pure and bounded. ``request_parts(req, settings)`` lists
``(location, name, raw value)`` triples, raw meaning still encoded as sent
(``enforcement.normalize`` decodes them):

- ``path``: the whole path (before ``?``), and each segment when the path holds
  anything but ``[A-Za-z0-9/_.~-]`` (so a segment such as ``1' OR 1=1`` is one
  value for libinjection);
- ``query``: each argument's name and value (``?__proto__[x]=1`` attacks by name);
- ``header``: the inspected headers (setting ``headers``: exact names and
  ``x-*`` prefixes), except credentials and headers the data plane itself
  writes (``_SKIPPED_HEADERS``: the identity reads those, and their values are
  tokens, not input);
- ``cookie``: each cookie value (and its name when not a plain word);
- ``body`` / ``body_key``: the request body by content type through
  ``ingest.bodies.walk_body``: JSON string leaves and every object key (read
  from the raw text, so ``{"__proto__": {}}`` and ``$where`` are seen even
  without a leaf under them), form fields, multipart text parts, and XML or
  other text as one value (the DOCTYPE is where XXE lives). A body that does
  not parse is one text value.

At most ``settings.max_values`` values are listed; ``skipped`` counts the rest.
A body past ``max_body_bytes`` (``RequestView.body_truncated``) is handled by
``settings.oversize``: ``inspect_prefix`` reads the prefix the data plane sent,
``allow`` skips the body, ``deny`` sets ``oversize`` (the inspector turns it
into the finding category ``oversize``, see ``enforcement.inspection``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from enforcement.decision import RequestView
from ingest.bodies import BodyLimits, is_json_media, media_type, walk_body

if TYPE_CHECKING:  # settings import the schema validator, which reads bodies through this module
    from enforcement.settings import InspectionSettings

__all__ = ["LOCATIONS", "Part", "RequestParts", "body_parts", "json_document", "request_parts"]

#: where a value sits; rule ``targets`` name a subset
LOCATIONS = ("path", "query", "header", "cookie", "body", "body_key")
#: one inspected value: (location, name, raw value)
Part = tuple[str, str, str]

_SKIPPED_HEADERS = frozenset({
    "authorization", "proxy-authorization", "x-api-key", "api-key", "x-forwarded-client-cert", "x-request-id",
    "content-length", "host", ":authority", ":path", ":method", ":scheme", "traceparent", "tracestate",
})  # fmt: skip
_SKIPPED_PREFIXES = ("x-kubeward-", "x-envoy-", "x-b3-", "x-amzn-trace", "x-datadog-")
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/_.~-]*")
_WORD = re.compile(r"[A-Za-z0-9_.\[\]-]*")
_MAX_DEPTH = 32
_FORM_LIKE = re.compile(r"[\w.\[\]%-]{1,256}=[^\n]*\Z")


@dataclass(frozen=True, slots=True)
class RequestParts:
    """What ``request_parts`` found: the values, how many were left out, the body to inspect (text) and whether it was over the limit."""

    parts: list[Part]
    skipped: int = 0
    oversize: bool = False
    body: str | None = None
    content_type: str | None = None


class _Collector:
    """Appends parts up to a cap and counts the rest."""

    __slots__ = ("parts", "cap", "skipped")

    def __init__(self, cap: int) -> None:
        self.parts: list[Part] = []
        self.cap = cap
        self.skipped = 0

    def add(self, location: str, name: str, value: str) -> None:
        if not value:
            return
        if len(self.parts) < self.cap:
            self.parts.append((location, name, value))
        else:
            self.skipped += 1


def request_parts(req: RequestView, settings: InspectionSettings) -> RequestParts:
    """The values of ``req`` to inspect, the body kept whole as text (``body_parts`` splits it)."""
    out = _Collector(settings.max_values)
    path, _, query = req.path.partition("?")
    _path(out, path)
    if query:
        _pairs(out, "query", query.split("&"), "=")
    headers = req.headers
    if headers:
        _headers(out, headers, settings.headers)
    body, oversize = req.body, False
    if not body or settings.max_body_bytes <= 0:
        return RequestParts(out.parts, out.skipped)
    if req.body_truncated and settings.oversize != "inspect_prefix":
        return RequestParts(out.parts, out.skipped, settings.oversize == "deny")
    content_type = headers.get("content-type") if headers else None
    return RequestParts(out.parts, out.skipped, oversize, body.decode("utf-8", "replace"), content_type)


def _path(out: _Collector, path: str) -> None:
    out.add("path", "", path)
    if _PLAIN_PATH.fullmatch(path) is None:
        for segment in path.split("/"):
            if segment and segment != path:
                out.add("path", "", segment)


def _pairs(out: _Collector, location: str, pairs: list[str], sep: str) -> None:
    for pair in pairs:
        name, _, value = pair.strip().partition(sep)
        if name and (location == "query" or _WORD.fullmatch(name) is None):
            out.add(location, "", name)
        out.add(location, name, value)


_WANTED: dict[tuple[str, tuple[str, ...]], bool] = {}


def _wanted(name: str, wanted: tuple[str, ...]) -> bool:
    key = (name, wanted)
    found = _WANTED.get(key)
    if found is None:
        if len(_WANTED) >= 4096:
            _WANTED.clear()
        skipped = name in _SKIPPED_HEADERS or name.startswith(_SKIPPED_PREFIXES)
        found = _WANTED[key] = not skipped and any(name == w or (w.endswith("*") and name.startswith(w[:-1])) for w in wanted)
    return found


def _headers(out: _Collector, headers: dict[str, str], wanted: tuple[str, ...]) -> None:
    for name, value in headers.items():
        if not _wanted(name, wanted):
            continue
        if name == "cookie":
            _pairs(out, "cookie", value.split(";"), "=")
        else:
            out.add("header", name, value)


def json_document(req: RequestView) -> tuple[bool, Any]:
    """``(True, document)`` of the request body parsed as JSON, or ``(False, None)``; parsed once per request.

    The answer is kept on ``req.body_json``, so the rule engines and the schema
    validator share one parse of a body (``orjson``, bytes in: invalid UTF-8 does not parse).
    """
    found = req.body_json
    if found is None:
        try:
            found = (True, orjson.loads(req.body or b""))
        except orjson.JSONDecodeError:
            found = (False, None)
        req.body_json = found
    return found


_BINARY = re.compile("[\x00-\x08\x0e-\x1f\ufffd]")


def body_parts(body: str, content_type: str | None, max_values: int, req: RequestView | None = None) -> tuple[list[Part], bool]:
    """The values of a body by content type, and whether it was read as one text (XML, text, unparsable).

    ``req``, when ``body`` is its body as text, lends its parsed JSON (``json_document``) instead of a second parse.
    """
    out = _Collector(max_values)
    media = media_type(content_type)[0]
    declared_json = is_json_media(media)
    # Frameworks parse JSON whatever the declared type (Express type '*/*', Flask force=True, Go's decoder): a body
    # that parses as JSON is read as JSON, so a declared octet-stream or text type cannot hide its leaves.
    if declared_json or (body.lstrip()[:1] in ("{", "[") and not media.startswith("multipart/")):
        parsed, doc = json_document(req) if req is not None else (False, None)
        if not parsed:  # text decoded with replacement characters may still parse where the bytes did not
            try:
                doc, parsed = orjson.loads(body), True
            except orjson.JSONDecodeError:
                if declared_json:
                    return [("body", "", body)], True
        if parsed:
            keys: dict[str, None] = {}
            _json(out, doc, keys, 0)
            for key in keys:
                out.add("body_key", key, key)
            return out.parts, False
    if not media and _FORM_LIKE.match(body):
        content_type = "application/x-www-form-urlencoded"  # no type sent (or kept by the data plane): a form if it looks like one
    data = body.encode("utf-8", "surrogatepass")
    walk = walk_body(data, content_type, limits=BodyLimits(max_bytes=max(len(data), 1), max_leaves=max_values))
    keyed = walk.kind in ("form", "multipart")
    for name, value in walk.leaves:
        if keyed and name:
            out.add("body_key", name, name)
        if value.__class__ is str:
            out.add("body", name, value)
    if not walk.leaves and body.strip() and not _BINARY.search(body, 0, 4096):
        # A type the walker does not read (octet-stream, unknown) carrying text: still scanned, as one value.
        # Binary content (control bytes, undecodable bytes) is not: an application does not read an image as text.
        return [("body", "", body)], True
    return out.parts, walk.kind == "text" or walk.parse_error is not None


def _json(out: _Collector, node: Any, keys: dict[str, None], depth: int) -> None:
    """String leaves of a parsed JSON document (names are not tracked: cheaper, and rules do not need them); keys collected."""
    if depth >= _MAX_DEPTH:
        return
    if node.__class__ is dict:
        keys.update(dict.fromkeys(node))
        values: Any = node.values()
    elif node.__class__ is list:
        values = node
    else:
        if node.__class__ is str:
            out.add("body", "", node)
        return
    for value in values:
        if value.__class__ is str:
            out.add("body", "", value)
        elif value.__class__ is dict or value.__class__ is list:
            _json(out, value, keys, depth + 1)
