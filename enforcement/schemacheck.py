"""The pure checks behind ``enforcement.propertyschema``: request leaves, privileged names, declared schemas.

Contract: ``request_values(req)`` reads a request's body (JSON, NDJSON, form,
multipart; the content type from the inspected ``content-type`` header, else
sniffed) and query into ``Value`` leaves (property path as sent, path as
learned with id-like map keys folded to ``*``, a type bit, text length). A
JSON body's leaves are aggregated while walking: one ``Value`` per distinct
(path, type) of the first ``max_leaves`` (512) leaves, with the longest string
length, so the checks cost per distinct property, not per array record.
``is_privileged(path, context)`` says whether a property name grants
something (role, is_admin, price...; ``status`` on a sign-up, ``owner_id`` on an
update). ``declared_leaf`` and ``declared_query`` compare one leaf with a
declared schema (``ingest.bodyschema``) and return the first ``Violation``.
Pure; no state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from itertools import repeat
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import unquote_plus

import orjson

from enforcement.decision import RequestView
from enforcement.requestparts import json_document
from ingest.bodies import BodyLimits, is_json_media, media_type, walk_body
from ingest.bodyschema import BodySchema
from ingest.openapi import DeclaredEndpoint
from ingest.summarize import property_path

__all__ = ["ANY", "BOOL", "CRITICAL", "NOTICE", "NULL", "NUM", "STR", "WARNING", "Value", "Violation", "accepts", "context_of",
           "declared_leaf", "declared_query", "is_commercial", "is_privileged", "path_steps", "request_values"]

CRITICAL, WARNING, NOTICE = 5, 3, 2
#: learned type bits (integer and number are one: amounts are sent as 10 and as 10.5)
NULL, BOOL, NUM, STR = 1, 2, 4, 8
ANY = NULL | BOOL | NUM | STR
_LIMITS = BodyLimits(max_bytes=1 << 20, max_leaves=512, max_depth=16)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_FORM = re.compile(rb"[\w.\-\[\]%]+=[^\s]*")
_SAFE_QUERY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})  # their query names filter, they do not assign
_SIGNUP = re.compile(r"(?:sign-?up|register|registration|join|users|accounts|members|customers|tenants)/?$", re.I)

_ALWAYS = frozenset("""role roles userrole usertype accounttype admin isadmin administrator superuser issuperuser isstaff isroot
    permission permissions privilege privileges scope scopes grants acl verified isverified emailverified phoneverified
    emailconfirmed isconfirmed approved isapproved trusted istrusted tenant tenantid plan tier subscription quota""".split())
# Commercial fields are privileged too, but many APIs take them from clients (an order line's price, a payment's
# amount): they are flagged only once an endpoint has learned it never receives them (``is_commercial``).
_COMMERCIAL = frozenset("price unitprice amount balance credit credits discount".split())
_ON_SIGNUP = frozenset("status state accountstatus active isactive enabled locked banned suspended".split())
_ON_UPDATE = frozenset("owner ownerid userid accountid createdby creatorid authorid orgid organizationid organisationid customerid".split())


@dataclass(frozen=True, slots=True)
class Violation:
    """One finding of the validator: rule id, category, score, the property path (never its value) and why."""

    rule: str
    category: str
    score: int
    path: str
    detail: str

    @property
    def learned(self) -> bool:
        """Whether this is learned, non-privileged evidence (capped at ``LEARNED_CAP`` per request)."""
        return self.rule.startswith("schema:learned")


class Value(NamedTuple):
    """Leaves of one path and type: path as sent, as learned (``key``: ids folded), type bit, longest text length, whether text.

    A JSON body gives one ``Value`` per distinct (path, type) (``raw``: the first leaf's value,
    ``first``: its length); a form, multipart or NDJSON body and a query give one per leaf
    (``first == length``).
    """

    path: str
    key: str
    bit: int
    length: int
    text: bool
    raw: object
    first: int


_PRIVILEGED: dict[tuple[str, str], bool] = {}


def _names(path: str) -> Iterator[str]:
    for seg in path.lstrip("?").split("."):
        name = seg.split("[", 1)[0]
        if name:
            yield re.sub(r"[^a-z0-9]", "", name.lower())


def is_privileged(path: str, context: str = "other") -> bool:
    """Whether any name on a property path is privileged in this context (``signup``, ``update`` or ``other``).

    >>> is_privileged("user.is_admin"), is_privileged("status", "signup"), is_privileged("status"), is_privileged("items[].price")
    (True, True, False, True)
    """
    found = _PRIVILEGED.get((path, context))
    if found is None:
        extra = _ON_SIGNUP if context == "signup" else _ON_UPDATE if context == "update" else frozenset()
        found = any(n in _ALWAYS or n in _COMMERCIAL or n in extra for n in _names(path))
        if len(_PRIVILEGED) >= 8192:  # paths repeat per endpoint; the memo stays small unless attacked
            _PRIVILEGED.clear()
        _PRIVILEGED[(path, context)] = found
    return found


def is_commercial(path: str, context: str = "other") -> bool:
    """Whether a privileged path is privileged only for its commercial names (price, amount...), never an authorization one.

    >>> is_commercial("items[].price"), is_commercial("user.role"), is_commercial("order.price.role")
    (True, False, False)
    """
    extra = _ON_SIGNUP if context == "signup" else _ON_UPDATE if context == "update" else frozenset()
    names = list(_names(path))
    return any(n in _COMMERCIAL for n in names) and not any(n in _ALWAYS or n in extra for n in names)


def context_of(method: str, template: str) -> str:
    """``update`` (PUT, PATCH, POST on ``.../{id}``), ``signup`` (POST on a sign-up or collection of accounts) or ``other``."""
    if method in ("PUT", "PATCH") or (method == "POST" and template.endswith("}")):
        return "update"
    return "signup" if method == "POST" and _SIGNUP.search(template) else "other"


def _text_bit(value: str) -> int:
    if not value:
        return NULL
    if value in ("true", "false"):
        return BOOL
    return NUM if _NUMBER.fullmatch(value) else STR


def _value(path: str, raw: object, text: bool) -> Value:
    key = property_path(path)
    if raw.__class__ is str:
        assert isinstance(raw, str)
        return Value(path, key, _text_bit(raw) if text else STR, len(raw), text, raw, len(raw))
    bit = NULL if raw is None else BOOL if raw.__class__ is bool else NUM
    return Value(path, key, bit, 0, False, raw, 0)


_KEYS: dict[str, str] = {}  # path as sent -> path as learned (``property_path``), for the JSON walk


def _key(path: str) -> str:
    key = _KEYS.get(path)
    if key is None:
        if len(_KEYS) >= 8192:  # paths repeat per endpoint; the memo stays small unless attacked
            _KEYS.clear()
        key = _KEYS[path] = property_path(path)
    return key


_new_tuple = tuple.__new__  # a NamedTuple's own constructor parses keyword arguments in Python
_Slot = list[Any]  # per request, one per distinct (path, type): the fields of a ``Value``, updated in place
_Item = list[Any]  # per request, one per path: [path, key, its string slot or None, other type code -> slot]
_NONES = repeat(None)  # a list's items have no name: zip(_NONES, items) pairs them like a dict's items, in C
_Named = dict[str, dict[str | None, _Item]]  # per request: parent path -> child name (None: array item) -> item


def _item(prefix: str, name: str | None) -> _Item:
    path = prefix + "[]" if name is None else f"{prefix}.{name}" if prefix else str(name)
    return [path, _KEYS.get(path) or _key(path), None, {}]


def _json_values(node: Any, prefix: str, out: list[_Slot], depth: int, named: _Named, left: int) -> int:
    """Distinct ``(path, type)`` slots of a parsed JSON document's leaves, within ``_LIMITS``; -1 once ``max_leaves`` is reached.

    ``left`` is how many leaves may still be read; the answer is what is left after ``node``. Records
    of an array share their children's paths, so each path is named once per request (``named``) and
    a leaf only updates its slot: a string's longest length (``Value.length``), the first leaf's
    length (``Value.first``), an example (``Value.raw``). Type codes: the value's class, and for a
    float whether it is integral (a declared ``integer`` accepts 10.0, not 10.5).
    """
    if depth >= _LIMITS.max_depth:
        return left
    children = named.get(prefix)
    if children is None:
        children = named[prefix] = {}
    if node.__class__ is dict:
        pairs: Any = node.items()
    else:
        pairs = zip(_NONES, node)
        item = children.get(None) or children.setdefault(None, _item(prefix, None))
    for name, child in pairs:
        if name is not None:
            item = children.get(name) or children.setdefault(name, _item(prefix, name))
        cls = child.__class__
        if cls is str:
            if not left:
                return -1
            left -= 1
            slot = item[2]
            if slot is None:
                slot = item[2] = [item[0], item[1], STR, len(child), False, child, len(child)]
                out.append(slot)
            elif len(child) > slot[3]:
                slot[3] = len(child)
        elif cls is dict or cls is list:
            left = _json_values(child, item[0], out, depth + 1, named, left)
            if left < 0:
                return left
        elif not left:
            return -1
        else:
            left -= 1
            code = child.is_integer() if cls is float else cls
            if code not in item[3]:
                item[3][code] = slot = [item[0], item[1], NULL if child is None else BOOL if cls is bool else NUM, 0, False, child, 0]
                out.append(slot)
    return left


def _body_values(req: RequestView, body: bytes) -> list[Value]:
    ctype = _content_type(req, body)
    media = media_type(ctype)[0]
    if is_json_media(media):
        parsed, doc = json_document(req) if body is req.body else _parse(body)
        if not parsed:
            return []
        slots: list[_Slot] = []
        if doc.__class__ is dict or doc.__class__ is list:
            _json_values(doc, "", slots, 0, {}, _LIMITS.max_leaves)
        return [_new_tuple(Value, slot) for slot in slots]
    walk = walk_body(body, ctype, limits=_LIMITS)
    if walk.kind not in ("ndjson", "form", "multipart") or walk.parse_error is not None:
        return []
    text = walk.kind != "ndjson"
    return [_value(p, v, text) for p, v in walk.leaves if p]


def _parse(body: bytes) -> tuple[bool, Any]:
    try:
        return True, orjson.loads(body)
    except orjson.JSONDecodeError:
        return False, None


def accepts(bit: int, text: bool) -> int:
    """Learned types an observed type is compatible with (null with all; text may be read as a string)."""
    if bit == NULL:
        return NULL | BOOL | NUM | STR
    return bit | STR if text else bit


def _content_type(req: RequestView, body: bytes) -> str | None:
    found = (req.headers or {}).get("content-type")
    if found:
        return found
    head = body.lstrip()[:1]
    if head in (b"{", b"["):
        return "application/json"
    return "application/x-www-form-urlencoded" if _FORM.fullmatch(body[:4096]) else None


def request_values(req: RequestView) -> tuple[list[Value], list[Value]]:
    """The body leaves (JSON: one per distinct path and type) and the query leaves (paths ``?name``); a body that does not parse gives none."""
    body = _body_values(req, req.body) if req.body else []
    path, sep, qs = req.path.partition("?")
    return body, (_query_values(qs) if sep and qs else [])


def _query_values(qs: str) -> list[Value]:
    """Query leaves named ``?name`` (``a[b]`` -> ``?a.b``, ``a[]`` -> ``?a[]``), values percent-decoded."""
    out: list[Value] = []
    for pair in qs.split("&", _LIMITS.max_leaves)[: _LIMITS.max_leaves]:
        name, _, raw = pair.partition("=")
        if "%" in name or "+" in name:
            name = unquote_plus(name)
        if "[" in name:
            name = _BRACKET.sub(lambda m: "." + m.group(1) if m.group(1) else "[]", name)
        if name:
            out.append(_value("?" + name, unquote_plus(raw) if "%" in raw or "+" in raw else raw, True))
    return out


# ---------------------------------------------------------------- declared checks


def path_steps(path: str) -> list[tuple[str, str, str]]:
    """``(parent, child, name)`` for each step of a path; ``name`` is ``""`` for an array item step."""
    out, parent = [], ""
    for seg in path.split("."):
        name = seg.split("[", 1)[0]
        if name:
            child = f"{parent}.{name}" if parent else name
            out.append((parent, child, name))
            parent = child
        for _ in range(seg.count("[]")):
            out.append((parent, parent + "[]", ""))
            parent += "[]"
    return out


def _declared_type_ok(types: frozenset[str], value: Value) -> bool:
    if not types or value.bit == NULL:  # null is accepted: optional properties are sent as null far too often
        return True
    raw = value.raw
    if value.text and isinstance(raw, str):
        return "string" in types or any(_TEXT_PARSES[t](raw) for t in types if t in _TEXT_PARSES)
    if isinstance(raw, bool):
        return "boolean" in types
    if isinstance(raw, int):
        return "integer" in types or "number" in types
    if isinstance(raw, float):
        return "number" in types or ("integer" in types and raw.is_integer())
    return "string" in types


_TEXT_PARSES: dict[str, Callable[[str], bool]] = {
    "integer": lambda s: s.lstrip("-").isdigit(),
    "number": lambda s: bool(_NUMBER.fullmatch(s)),
    "boolean": lambda s: s in ("true", "false"),
}


def _kind(value: Value) -> str:
    raw = value.raw
    return "text" if value.text else "null" if raw is None else "boolean" if isinstance(raw, bool) else "number" if value.bit == NUM else "string"


def _undeclared(schema: BodySchema, parent: str, name: str, path: str, context: str) -> Violation | None:
    if parent in schema.closed:
        category = "mass-assignment" if is_privileged(name, context) else "schema-violation"
        return Violation("schema:declared-unknown", category, CRITICAL, path, "property not declared (additionalProperties: false)")
    if is_privileged(name, context):
        return Violation("mass-assignment:undeclared", "mass-assignment", CRITICAL, path, "privileged property not declared")
    return None


def declared_leaf(schema: BodySchema, value: Value, context: str) -> Violation | None:
    """The first thing a declared body schema says against one leaf (or the leaves of one ``Value``), walking its path from the root."""
    rule = schema.properties.get(value.path)
    if rule is not None:  # declared as is: its parents are declared containers by construction
        return _declared_rule(rule.types, rule.max_length, rule.read_only, value, context)
    steps = path_steps(value.path)
    for i, (parent, child, name) in enumerate(steps):
        rule, above = schema.properties.get(child), schema.properties.get(parent)
        if rule is None:
            if above is None or above.free_form or not name:
                return None
            return _undeclared(schema, parent, name, value.path, context)
        if i + 1 < len(steps):
            want = "array" if not steps[i + 1][2] else "object"
            if rule.free_form:
                return None
            if rule.types and want not in rule.types:
                return Violation("schema:declared-type", "schema-violation", CRITICAL, child, f"{want} where {'/'.join(sorted(rule.types))} is declared")
            continue
        return _declared_rule(rule.types, rule.max_length, rule.read_only, value, context)
    return None


def _declared_rule(types: frozenset[str], max_length: int | None, read_only: bool, value: Value, context: str) -> Violation | None:
    if not _declared_type_ok(types, value):
        return Violation("schema:declared-type", "schema-violation", CRITICAL, value.path, f"{_kind(value)} where {'/'.join(sorted(types))} is declared")
    if max_length is not None and value.length > max_length:
        return Violation("schema:declared-max-length", "schema-violation", CRITICAL, value.path, f"{value.length} characters, maxLength {max_length}")
    if read_only:
        if is_privileged(value.path, context):
            return Violation("mass-assignment:read-only", "mass-assignment", CRITICAL, value.path, "readOnly privileged property sent")
        return Violation("schema:declared-read-only", "schema-violation", WARNING, value.path, "readOnly property sent")
    return None


def declared_query(ep: DeclaredEndpoint, method: str, value: Value, context: str) -> Violation | None:
    """What a declared endpoint's query parameters say against one query leaf (extra names are allowed unless privileged)."""
    name = value.path[1:]
    param = ep.params.get(name) or ep.params.get(name.removesuffix("[]"))
    if param is None or param.location != "query":
        privileged = method not in _SAFE_QUERY and is_privileged(name, context)
        return Violation("mass-assignment:undeclared", "mass-assignment", CRITICAL, value.path, "privileged query parameter not declared") if privileged else None
    types = frozenset({param.type}) if param.type else frozenset()
    return _declared_rule(types, param.max_length, False, value, context)
