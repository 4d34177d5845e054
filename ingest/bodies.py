"""HTTP bodies to features: sensitive-data counts by type, object ids and record counts, never the values.

Contract: pure and bounded. ``walk_body`` reads a body by its content type into
``(field path, scalar)`` leaves: JSON (nested objects and arrays; paths such as
``data[].user.email``), NDJSON, ``application/x-www-form-urlencoded``,
``multipart/form-data`` (text and JSON parts; file uploads are skipped) and
text/HTML/XML (one leaf, path ``""``). Binary types yield nothing.
``body_features`` adds sensitive counts (``ingest.sensitive.count_sensitive``),
object ids and the number of records returned. ``BodyLimits`` bounds bytes
read, leaves, nesting depth and ids kept. A malformed, truncated or oversized
body never raises: the features hold what was read, ``truncated`` says a limit
cut it, and ``parse_error`` says why structured parsing failed (the body is then
scanned as text, and ids are taken from ``"x_id": value`` pairs in it).

Object ids come from id-named fields (``id``, ``*_id``, ``*Id``, ``uuid``,
``*_uuid``, ``ids``/``*_ids`` arrays), so every record of a returned array
contributes its id. ``records`` is the length of a top-level array, or of the
first array of objects under ``data``/``items``/``results``/... (one level down
inside ``data`` too, as GraphQL nests it), 1 for a single object with an id,
otherwise 0. ``query_object_ids`` does the same for query strings
(``?id=7``, ``?user_id=u1``, ``?ids=1,2,3``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeGuard
from urllib.parse import unquote_plus

import orjson

from ingest.errors import SettingsError
from ingest.sensitive import count_sensitive, is_id_name, leaf_info

__all__ = ["BodyFeatures", "BodyLimits", "BodyWalk", "Leaf", "body_features", "is_json_media", "media_type", "query_object_ids", "walk_body"]

Scalar = str | int | float | bool | None
RECORD_KEYS = ("data", "items", "results", "records", "rows", "entries", "hits", "objects", "values", "list",
               "content", "elements", "nodes", "edges", "resources", "users", "orders")
_BINARY_PREFIXES = ("image/", "audio/", "video/", "font/", "application/octet-stream", "application/pdf",
                    "application/zip", "application/gzip", "application/grpc", "application/protobuf",
                    "application/x-protobuf", "application/wasm")
_TEXT_TYPES = frozenset({"application/xml", "application/javascript", "application/graphql", "application/yaml",
                         "application/x-yaml", "application/soap+xml"})
_NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl",
                           "application/x-jsonlines", "application/json-seq"})
_ID_PAIR = re.compile(r"\"([\w\-.]{1,64})\"\s*:\s*(?:\"([^\"\\\s]{1,128})\"|(-?\d{1,20})(?![\d.]))")
_BOUNDARY = re.compile(r"boundary=(?:\"([^\"]{1,200})\"|([^;\s]{1,200}))", re.I)
_CHARSET = re.compile(r"charset=\"?([\w\-]{1,40})", re.I)
_DISPOSITION = re.compile(r"\b(name|filename)=\"([^\"]*)\"", re.I)


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Bounds on the work done per body; every field must be positive."""

    max_bytes: int = 256 * 1024
    max_leaves: int = 5000
    max_depth: int = 32
    max_ids: int = 1000
    max_id_chars: int = 128

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_leaves", "max_depth", "max_ids", "max_id_chars"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SettingsError(f"BodyLimits.{name}={value!r}: must be a positive integer")


#: one scalar of a body and where it sits: ``("data[].user.email", "a@example.org")``; ``""`` for a whole text body
Leaf = tuple[str, Scalar]


@dataclass(frozen=True, slots=True)
class BodyWalk:
    """What ``walk_body`` read: leaves, record count, and whether limits or syntax stopped it."""

    kind: str  # json | ndjson | form | multipart | text | binary | empty
    leaves: list[Leaf]
    records: int = 0
    truncated: bool = False
    parse_error: str | None = None
    text_ids: list[str] = field(default_factory=list)  # ids read from a body that did not parse


@dataclass(frozen=True, slots=True)
class BodyFeatures:
    """Derived from one body: sensitive counts by type, raw object ids (deduplicated, capped), records."""

    sensitive: dict[str, int]
    object_ids: list[str]
    records: int
    truncated: bool
    parse_error: str | None
    kind: str = "empty"


class _Walker:
    """Depth-first JSON walk with leaf and depth limits (recursion is bounded by ``max_depth``)."""

    def __init__(self, limits: BodyLimits) -> None:
        self.max_depth, self.max_leaves = limits.max_depth, limits.max_leaves
        self.leaves: list[Leaf] = []
        self.truncated = False

    def walk(self, root: Any, prefix: str = "") -> None:
        if isinstance(root, (dict, list)):
            self._node(root, prefix, 0)
        elif len(self.leaves) < self.max_leaves:
            self.leaves.append((prefix, root))
        else:
            self.truncated = True

    def _node(self, node: dict[str, Any] | list[Any], path: str, depth: int) -> None:
        if depth >= self.max_depth:
            self.truncated = True
            return
        if isinstance(node, dict):
            prefix = path + "." if path else ""
            children: Iterator[tuple[str, Any]] = ((prefix + str(k), v) for k, v in node.items())
        else:
            item = path + "[]"
            children = ((item, v) for v in node)
        leaves, limit = self.leaves, self.max_leaves
        for child, value in children:
            if isinstance(value, (dict, list)):
                self._node(value, child, depth + 1)
                if len(leaves) >= limit and self.truncated:
                    return
            elif len(leaves) < limit:
                leaves.append((child, value))
            else:
                self.truncated = True
                return


def media_type(content_type: str | None) -> tuple[str, str]:
    """``(type/subtype lower-cased, the parameters after ';')`` of a Content-Type; ``("", "")`` when there is none.

    >>> media_type("Application/JSON; charset=utf-8")
    ('application/json', ' charset=utf-8')
    """
    if not content_type:
        return "", ""
    main, _, params = content_type.partition(";")
    return main.strip().lower(), params


def is_json_media(media: str) -> bool:
    """Whether a media type (as ``media_type`` gives it) is JSON: ``application/json``, ``*+json``, ``text/json``."""
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def _decode(data: bytes, params: str) -> str:
    """Text in the declared charset; UTF-8 when it is absent, unknown or not a text encoding (``rot13``)."""
    m = _CHARSET.search(params)
    if m and m.group(1).lower() not in ("utf-8", "utf8"):
        try:
            return data.decode(m.group(1), errors="replace")
        except (LookupError, UnicodeError, ValueError):
            pass
    return data.decode("utf-8", errors="replace")


def _classify(media: str, data: bytes) -> str:
    if media.startswith(_BINARY_PREFIXES):
        return "binary"
    if is_json_media(media):
        return "json"
    if media in _NDJSON_TYPES:
        return "ndjson"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("multipart/"):
        return "multipart"
    if media.startswith("text/") or media in _TEXT_TYPES or media.endswith("+xml"):
        return "text"
    if b"\x00" in data[:512]:
        return "binary"
    return "json" if data.lstrip()[:1] in (b"{", b"[") else "text"


def walk_body(body: bytes, content_type: str | None, *, limits: BodyLimits | None = None) -> BodyWalk:
    """Leaves of ``body`` read according to ``content_type`` (sniffed when absent), within ``limits``."""
    limits = limits or BodyLimits()
    data, cut = body[: limits.max_bytes], len(body) > limits.max_bytes
    if not data.strip():
        return BodyWalk("empty", [], truncated=cut)
    media, params = media_type(content_type)
    kind = _classify(media, data)
    if kind == "binary":
        return BodyWalk(kind, [], truncated=cut)
    if kind == "form":
        leaves, more = _form_leaves(_decode(data, params), limits)
        return BodyWalk(kind, leaves, truncated=cut or more)
    if kind == "multipart":
        return _multipart(data, params, limits, cut)
    text = _decode(data, params)
    if kind == "text":
        return BodyWalk(kind, [("", text)], truncated=cut)
    if kind == "ndjson":
        return _ndjson(data, limits, cut)
    return _json(data, text, limits, cut)


def _json(data: bytes, text: str, limits: BodyLimits, cut: bool) -> BodyWalk:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        error = "truncated" if cut else f"invalid JSON: {str(exc)[:120]}"
        return BodyWalk("json", [("", text)], truncated=cut, parse_error=error, text_ids=_text_ids(text, limits))
    walker = _Walker(limits)
    walker.walk(doc)
    return BodyWalk("json", walker.leaves, records=_records(doc), truncated=cut or walker.truncated)


def _ndjson(data: bytes, limits: BodyLimits, cut: bool) -> BodyWalk:
    walker, records, error = _Walker(limits), 0, None
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            error = error or f"invalid JSON line: {str(exc)[:120]}"
            continue
        records += isinstance(doc, dict)
        walker.walk(doc)
        if walker.truncated:
            break
    return BodyWalk("ndjson", walker.leaves, records=records, truncated=cut or walker.truncated, parse_error=error)


def _records(doc: Any) -> int:
    if isinstance(doc, list):
        return len(doc)
    if not isinstance(doc, dict):
        return 0
    for key in RECORD_KEYS:
        value = doc.get(key)
        if _is_record_list(value):
            return len(value)
        if key == "data" and isinstance(value, dict):
            nested = next((v for v in value.values() if _is_record_list(v)), None)
            if nested is not None:
                return len(nested)
    return int(any(is_id_name(str(k)) for k in doc))


def _is_record_list(value: Any) -> TypeGuard[list[Any]]:
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def _form_path(key: str) -> str:
    return re.sub(r"\[([^\]]*)\]", lambda m: "." + m.group(1) if m.group(1) else "[]", key)


def _form_leaves(text: str, limits: BodyLimits) -> tuple[list[Leaf], bool]:
    leaves: list[Leaf] = []
    for pair in text.split("&", limits.max_leaves)[: limits.max_leaves]:
        key, _, value = pair.partition("=")
        if key:
            leaves.append((_form_path(unquote_plus(key)), unquote_plus(value)))
    return leaves, text.count("&", 0, len(text)) >= limits.max_leaves


def _multipart(data: bytes, params: str, limits: BodyLimits, cut: bool) -> BodyWalk:
    m = _BOUNDARY.search(params)
    if not m:
        text = data.decode("utf-8", errors="replace")
        return BodyWalk("multipart", [("", text)], truncated=cut, parse_error="multipart without boundary")
    walker = _Walker(limits)
    for name, ctype, payload in _parts(data, (m.group(1) or m.group(2)).encode("latin-1", "replace")):
        media, part_params = media_type(ctype)
        if is_json_media(media):
            try:
                walker.walk(orjson.loads(payload), _form_path(name))
                continue
            except orjson.JSONDecodeError:
                pass
        if len(walker.leaves) >= limits.max_leaves:
            walker.truncated = True
            break
        walker.leaves.append((_form_path(name), _decode(payload, part_params)))
    return BodyWalk("multipart", walker.leaves, truncated=cut or walker.truncated)


def _parts(data: bytes, boundary: bytes) -> Iterator[tuple[str, str, bytes]]:
    """``(field name, content type, payload)`` of each text part; file uploads that are not text are skipped."""
    for chunk in data.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, sep, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = chunk.lstrip(b"\r\n").partition(b"\n\n")
        headers = head.decode("latin-1")
        found = {k.lower(): v for k, v in _DISPOSITION.findall(headers)}
        ctype = next((ln.split(":", 1)[1].strip() for ln in headers.splitlines() if ln.lower().startswith("content-type:")), "")
        is_text = not ctype or ctype.lower().startswith("text/") or "json" in ctype.lower()
        if "filename" in found and not is_text:
            continue
        yield found.get("name", ""), ctype, payload.removesuffix(b"\r\n").removesuffix(b"\n")


def _text_ids(text: str, limits: BodyLimits) -> list[str]:
    ids = [m.group(2) or m.group(3) for m in _ID_PAIR.finditer(text) if is_id_name(m.group(1))]
    return _dedupe(ids, limits)


def _dedupe(ids: list[str], limits: BodyLimits) -> list[str]:
    seen: dict[str, None] = {}
    for raw in ids:
        value = raw.strip()
        if value and len(value) <= limits.max_id_chars:
            seen.setdefault(value, None)
            if len(seen) >= limits.max_ids:
                break
    return list(seen)


def _leaf_ids(leaves: list[Leaf]) -> Iterator[str]:
    for path, value in leaves:
        if (value.__class__ is str or value.__class__ is int) and leaf_info(path).is_id:
            yield str(value)


def body_features(body: bytes, content_type: str | None, *, limits: BodyLimits | None = None) -> BodyFeatures:
    """Sensitive counts by type, object ids and record count of one HTTP body; never raises on bad input.

    >>> f = body_features(b'{"data": [{"id": 7, "email": "a@example.org"}]}', "application/json")
    >>> (f.sensitive, f.object_ids, f.records)
    ({'email': 1}, ['7'], 1)
    """
    limits = limits or BodyLimits()
    walk = walk_body(body, content_type, limits=limits)
    ids = _dedupe(list(_leaf_ids(walk.leaves)) + walk.text_ids, limits)
    return BodyFeatures(
        sensitive=count_sensitive(walk.leaves), object_ids=ids, records=walk.records,
        truncated=walk.truncated, parse_error=walk.parse_error, kind=walk.kind,
    )


def query_object_ids(query: str, *, limits: BodyLimits | None = None) -> list[str]:
    """Ids in id-named query parameters: ``?id=7``, ``user_id=u1``, ``ids=1,2,3``, ``ids[]=4``; also takes a full path."""
    limits = limits or BodyLimits()
    query = query.split("?", 1)[1] if "?" in query else query
    ids: list[str] = []
    for pair in query.split("&", limits.max_leaves)[: limits.max_leaves]:
        key, _, value = pair.partition("=")
        name = unquote_plus(key).removesuffix("[]")
        if value and is_id_name(name):
            ids.extend(unquote_plus(value).split(","))
    return _dedupe(ids, limits)
