"""Declared request-body schemas flattened to the property paths ``ingest.bodies.walk_body`` produces.

Contract: ``flatten_schema(schema, resolve)`` turns one JSON Schema (an OpenAPI
3 ``requestBody`` media-type schema or a Swagger 2 ``in: body`` parameter
schema) into a ``BodySchema``: one ``PropertyRule`` per property path, spelled
as ``walk_body`` spells leaves (``email``, ``address.city``, ``tags[]``,
``items[].price``; ``""`` is the root), and the object paths that forbid
undeclared properties (``additionalProperties: false``). ``resolve`` follows a
``$ref`` (``ingest.openapi`` passes its local resolver), so this module reads no
file and imports nothing of ours but the error root.

What is read: ``type`` (a string, or a list as in OpenAPI 3.1), ``nullable``,
``properties``, ``additionalProperties``, ``items``, ``maxLength``, ``readOnly``,
and ``allOf``/``oneOf``/``anyOf`` (their properties merged; only the object's own
``additionalProperties: false`` closes it, since a composed alternative may add
properties). A recursive schema or one deeper than ``MAX_DEPTH`` ends in a
free-form node: anything below it is accepted. An object without ``properties``
is free-form too (a map: its keys are data, not property names); an object
with ``properties`` and ``additionalProperties`` true stays open but not
free-form, so a privileged-looking undeclared name in it can still be flagged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FORM_TYPES", "JSON_TYPES", "MAX_DEPTH", "BodySchema", "PropertyRule", "flatten_schema", "form_rule", "form_schema", "media_schema"]

#: the JSON Schema type names a property may declare
JSON_TYPES = frozenset({"string", "integer", "number", "boolean", "object", "array", "null"})
#: form media types, read when a request body declares no JSON media type
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: nesting depth a declared schema is followed to; deeper nodes are free-form
MAX_DEPTH = 12


@dataclass(frozen=True, slots=True)
class PropertyRule:
    """What a declared schema says about one property path: types (empty = any), size, readOnly, free-form."""

    types: frozenset[str] = frozenset()
    max_length: int | None = None
    read_only: bool = False
    free_form: bool = False


@dataclass(frozen=True, slots=True)
class BodySchema:
    """A request body schema as property paths; ``kind`` is ``json`` or ``form`` (values arrive as text)."""

    properties: Mapping[str, PropertyRule] = field(default_factory=lambda: MappingProxyType({}))
    closed: frozenset[str] = frozenset()
    kind: str = "json"

    def rule(self, path: str) -> PropertyRule | None:
        """The rule of one property path, or None when the schema does not declare it."""
        return self.properties.get(path)


def _types(node: Mapping[str, Any]) -> set[str]:
    raw = node.get("type")
    names = {str(t) for t in raw} if isinstance(raw, list) else {str(raw)} if isinstance(raw, str) else set()
    if not names and isinstance(node.get("properties"), Mapping):
        names = {"object"}
    if not names and "items" in node:
        names = {"array"}
    if names and node.get("nullable") is True:
        names.add("null")
    return names & JSON_TYPES


def _merge(old: PropertyRule | None, new: PropertyRule) -> PropertyRule:
    if old is None:
        return new
    types = frozenset() if not old.types or not new.types else old.types | new.types
    lengths = (old.max_length, new.max_length)
    max_length = None if None in lengths else max(x for x in lengths if x is not None)
    return PropertyRule(types, max_length, old.read_only and new.read_only, old.free_form or new.free_form)


class _Flattener:
    """Depth-first walk of one schema; ``chain`` holds the ``$ref`` names being expanded (cycle guard)."""

    def __init__(self, resolve: Callable[[Any], Any]) -> None:
        self.resolve = resolve
        self.rules: dict[str, PropertyRule] = {}
        self.closed: set[str] = set()

    def add(self, path: str, raw: Any, depth: int, chain: frozenset[str]) -> None:
        ref = raw.get("$ref") if isinstance(raw, Mapping) else None
        if isinstance(ref, str):
            if ref in chain or depth > MAX_DEPTH:
                self._set(path, PropertyRule(free_form=True))
                return
            chain = chain | {ref}
        node = self.resolve(raw)
        if not isinstance(node, Mapping) or depth > MAX_DEPTH:
            self._set(path, PropertyRule(free_form=True))
            return
        self._node(path, node, depth, chain)

    def _node(self, path: str, node: Mapping[str, Any], depth: int, chain: frozenset[str]) -> None:
        types = _types(node)
        props = node.get("properties")
        extra = node.get("additionalProperties")
        # an object without declared properties is a map: its keys are data, not property names
        free = ("object" in types or not types) and not isinstance(props, Mapping) and not _composed(node)
        length = node.get("maxLength")
        self._set(path, PropertyRule(frozenset(types), length if isinstance(length, int) else None, node.get("readOnly") is True, free))
        if extra is False:
            self.closed.add(path)
        for name, sub in (props or {}).items() if isinstance(props, Mapping) else ():
            self.add(f"{path}.{name}" if path else str(name), sub, depth + 1, chain)
        if "items" in node:
            self.add(path + "[]", node["items"], depth + 1, chain)
        for key in ("allOf", "oneOf", "anyOf"):
            for sub in node.get(key) or ():
                self._compose(path, sub, depth + 1, chain)

    def _compose(self, path: str, raw: Any, depth: int, chain: frozenset[str]) -> None:
        """A composed alternative adds its properties at ``path`` without closing it."""
        closed = path in self.closed
        self.add(path, raw, depth, chain)
        if not closed:
            self.closed.discard(path)

    def _set(self, path: str, rule: PropertyRule) -> None:
        self.rules[path] = _merge(self.rules.get(path), rule)


def _composed(node: Mapping[str, Any]) -> bool:
    return any(isinstance(node.get(k), list) for k in ("allOf", "oneOf", "anyOf"))


def media_schema(content: Any) -> tuple[Any, str] | None:
    """The schema of the first JSON media type of a ``content`` map, else of a form type."""
    if not isinstance(content, Mapping):
        return None
    for media, entry in content.items():
        base = str(media).split(";", 1)[0].strip().lower()
        if (base == "application/json" or base.endswith("+json")) and isinstance(entry, Mapping) and "schema" in entry:
            return entry["schema"], "json"
    for media in FORM_TYPES:
        entry = content.get(media)
        if isinstance(entry, Mapping) and "schema" in entry:
            return entry["schema"], "form"
    return None


def form_rule(prm: Mapping[str, Any]) -> PropertyRule:
    """The rule of one Swagger 2 ``in: formData`` parameter (type and maxLength sit on the parameter)."""
    kind, length = prm.get("type"), prm.get("maxLength")
    types = frozenset({kind}) if isinstance(kind, str) and kind != "file" else frozenset()
    return PropertyRule(types, length if isinstance(length, int) else None)


def flatten_schema(schema: Any, resolve: Callable[[Any], Any], *, kind: str = "json") -> BodySchema:
    """The ``BodySchema`` of one declared JSON Schema (``$ref`` followed through ``resolve``).

    >>> s = flatten_schema({"type": "object", "additionalProperties": False,
    ...                     "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 8}}}}, lambda n: n)
    >>> sorted(s.properties), s.properties["tags[]"].max_length, sorted(s.closed)
    (['', 'tags', 'tags[]'], 8, [''])
    """
    walk = _Flattener(resolve)
    walk.add("", schema, 0, frozenset())
    return BodySchema(MappingProxyType(walk.rules), frozenset(walk.closed), kind)


def form_schema(fields: Mapping[str, PropertyRule]) -> BodySchema:
    """A form body declared field by field (Swagger 2 ``in: formData``): an open object of text values."""
    rules = {"": PropertyRule(frozenset({"object"})), **fields}
    return BodySchema(MappingProxyType(rules), frozenset(), "form")
