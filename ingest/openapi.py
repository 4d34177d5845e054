"""Declared API endpoints from OpenAPI 3.x and Swagger 2.0 documents, and matching paths to them.

Contract: ``parse_spec(document)`` takes an already-loaded document (a dict, as
``json.load`` or ``yaml.safe_load`` return it) and returns one
``DeclaredEndpoint`` per operation (method + path). An endpoint's ``template``
is the path as it appears on the wire: the server's base path (OpenAPI 3
``servers[0].url``, the path or operation ``servers`` when present; Swagger 2
``basePath``) joined to the declared path key, with a ``#fragment`` that some
specs use to document several operations on one URL (Box) removed. Local
``$ref`` parameters are resolved; path-level parameters are inherited by each
operation and overridden by an operation parameter of the same name and
location. ``SpecIndex`` matches a concrete path (and method) to the most
specific declared template: a literal segment beats a segment that mixes
literal text with a parameter (``{Sid}.json``), which beats a bare parameter.
``structural(template)`` drops parameter names (``/pets/{petId}`` and
``/pets/{id}`` both become ``/pets/{}``) so templates compare by shape; the
declared names stay on the endpoint for display. An endpoint's ``body`` is its
declared request body as property paths (``ingest.bodyschema.BodySchema``):
OpenAPI 3 ``requestBody`` (``$ref`` resolved) with a JSON media type, else a
form media type; Swagger 2 ``in: body`` (JSON) or ``in: formData`` parameters;
None when the operation declares no body. The module is pure; only
``load_spec`` reads a file.

Errors::

    IngestError
     └── SpecError     the document is not OpenAPI 3 / Swagger 2, or a $ref cannot be resolved
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from ingest.bodyschema import BodySchema, flatten_schema, form_rule, form_schema, media_schema
from ingest.errors import IngestError

__all__ = ["DeclaredEndpoint", "ParamInfo", "PathMatch", "SpecError", "SpecIndex", "declared_endpoints", "load_spec", "load_spec_dir", "parse_spec", "structural"]

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PARAM = re.compile(r"\{([^{}/]*)\}")


class SpecError(IngestError):
    """An API description cannot be read; the message names the key and the bad value."""


@dataclass(frozen=True)
class ParamInfo:
    """One declared parameter: where it goes and what its schema says about its values."""

    name: str
    location: str
    required: bool = False
    type: str | None = None
    format: str | None = None
    enum: tuple[str, ...] | None = None
    pattern: str | None = None
    example: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class DeclaredEndpoint:
    """One declared operation: ``method`` (upper case) on the wire ``template`` (base path included)."""

    method: str
    template: str
    deprecated: bool = False
    params: Mapping[str, ParamInfo] = field(default_factory=lambda: MappingProxyType({}), hash=False, compare=False)
    path: str = ""
    base_path: str = ""
    operation_id: str | None = None
    body: BodySchema | None = field(default=None, hash=False, compare=False)

    @property
    def structure(self) -> str:
        """The template without parameter names, for comparing shapes."""
        return structural(self.template)


@dataclass(frozen=True)
class PathMatch:
    """A concrete path matched to a declared template: the parameter values and every method declared there."""

    template: str
    values: tuple[tuple[str, str], ...]
    endpoints: Mapping[str, DeclaredEndpoint] = field(hash=False, compare=False)

    @property
    def ids(self) -> list[str]:
        """The parameter values in path order."""
        return [v for _, v in self.values]


def structural(template: str) -> str:
    """Replace every ``{name}`` by ``{}`` so that templates compare by shape.

    >>> structural("/pets/{petId}/photos/{photo_id}.json")
    '/pets/{}/photos/{}.json'
    """
    return _PARAM.sub("{}", template)


def load_spec(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML API description (YAML with ``yaml.safe_load``)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        doc = json.loads(text)
    else:
        import yaml

        # the C loader when libyaml is there: the same safe subset, ten times faster on a 5 MB spec
        doc = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    if not isinstance(doc, dict):
        raise SpecError(f"{path}: top level is {type(doc).__name__}, expected a mapping")
    return doc


def _resolve(doc: Mapping[str, Any], node: Any, depth: int = 0) -> Any:
    while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not ref.startswith("#/") or depth > 32:
            raise SpecError(f"$ref={ref!r}: only local references without cycles are supported")
        target: Any = doc
        for part in ref[2:].split("/"):
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(target, Mapping) or key not in target:
                raise SpecError(f"$ref={ref!r}: no key {key!r}")
            target = target[key]
        node, depth = target, depth + 1
    return node


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value).lower() if isinstance(value, bool) else str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _param(doc: Mapping[str, Any], raw: Any) -> ParamInfo | None:
    prm = _resolve(doc, raw)
    if not isinstance(prm, Mapping) or "name" not in prm:
        return None
    schema = _resolve(doc, prm.get("schema", prm))  # Swagger 2 puts the schema keys on the parameter
    schema = schema if isinstance(schema, Mapping) else {}
    enum = schema.get("enum")
    example = prm.get("example", schema.get("example"))
    return ParamInfo(
        name=str(prm["name"]),
        location=str(prm.get("in", "")),
        required=bool(prm.get("required", False)),
        type=_text(schema.get("type")),
        format=_text(schema.get("format")),
        enum=tuple(str(v) for v in enum if v is not None) if isinstance(enum, list) else None,
        pattern=_text(schema.get("pattern")),
        example=_text(example),
        minimum=_number(schema.get("minimum")),
        maximum=_number(schema.get("maximum")),
        min_length=int(schema["minLength"]) if isinstance(schema.get("minLength"), int) else None,
        max_length=int(schema["maxLength"]) if isinstance(schema.get("maxLength"), int) else None,
    )


def _params(doc: Mapping[str, Any], *lists: Any) -> dict[str, ParamInfo]:
    by_key: dict[tuple[str, str], ParamInfo] = {}
    for raw_list in lists:
        for raw in raw_list or ():
            info = _param(doc, raw)
            if info is not None:
                by_key[(info.name, info.location)] = info
    out: dict[str, ParamInfo] = {}
    for info in sorted(by_key.values(), key=lambda p: p.location != "path"):
        out.setdefault(info.name, info)  # a path parameter wins a name shared with a query parameter
    return out


def _body_schema(doc: Mapping[str, Any], op: Mapping[str, Any], params: Iterable[Any]) -> BodySchema | None:
    """The declared request body of one operation (OpenAPI 3 ``requestBody``; Swagger 2 body or formData parameters).

    A ``$ref`` that cannot be followed (another file, a missing key) makes that
    node free-form instead of failing the whole document: endpoints stay declared.
    """

    def resolve(node: Any) -> Any:
        try:
            return _resolve(doc, node)
        except SpecError:
            return None

    request = resolve(op.get("requestBody"))
    found = media_schema(request.get("content")) if isinstance(request, Mapping) else None
    if found is not None:
        return flatten_schema(found[0], resolve, kind=found[1])
    resolved = [p for p in map(resolve, params) if isinstance(p, Mapping)]
    body = next((p for p in resolved if p.get("in") == "body" and "schema" in p), None)
    if body is not None:
        return flatten_schema(body["schema"], resolve)
    form = {str(p["name"]): form_rule(p) for p in resolved if p.get("in") == "formData" and "name" in p}
    return form_schema(form) if form else None


def _server_base(servers: Any) -> str | None:
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], Mapping):
        return None
    url = str(servers[0].get("url", ""))
    for name, var in (servers[0].get("variables") or {}).items():
        default = var.get("default", "") if isinstance(var, Mapping) else ""
        url = url.replace("{" + str(name) + "}", str(default))
    path = urlsplit(url).path if "://" in url or url.startswith("//") else url.split("?", 1)[0]
    return path.rstrip("/")


def _base_path(doc: Mapping[str, Any]) -> str:
    if str(doc.get("swagger", "")).startswith("2"):
        return str(doc.get("basePath") or "").rstrip("/")
    return _server_base(doc.get("servers")) or ""


def _join(base: str, path: str) -> str:
    return base + path if path.startswith("/") else f"{base}/{path}"


def _operations(doc: Mapping[str, Any], bare_paths: str | None) -> Iterator[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    paths = doc.get("paths")
    if not isinstance(paths, Mapping):
        raise SpecError(f"paths={type(paths).__name__}: expected a mapping of path keys")
    for key, raw_item in paths.items():
        item = _resolve(doc, raw_item)
        if not isinstance(key, str) or not key.startswith("/") or not isinstance(item, Mapping):
            continue
        ops = [(m, item[m]) for m in METHODS if isinstance(item.get(m), Mapping)]
        if not ops and bare_paths:
            ops = [(bare_paths.lower(), {})]
        for method, op in ops:
            yield key, method, item, op


def parse_spec(doc: Mapping[str, Any], *, bare_paths: str | None = None) -> list[DeclaredEndpoint]:
    """Every operation of an OpenAPI 3.x or Swagger 2.0 document, in document order.

    A path item that declares no operation is skipped, unless ``bare_paths``
    names a method to assume for it (the Kubernetes client's spec keeps its
    189 ``/watch/`` paths with parameters but strips their operations).
    """
    version = str(doc.get("openapi") or doc.get("swagger") or "")
    if not (version.startswith("3") or version.startswith("2")):
        raise SpecError(f"openapi/swagger={version!r}: not an OpenAPI 3.x or Swagger 2.0 document")
    default_base = _base_path(doc)
    endpoints = []
    for key, method, item, op in _operations(doc, bare_paths):
        base = _server_base(op.get("servers")) or _server_base(item.get("servers")) or default_base
        path = key.split("#", 1)[0]
        params = _params(doc, item.get("parameters"), op.get("parameters"))
        raw_params = [*(item.get("parameters") or ()), *(op.get("parameters") or ())]
        endpoints.append(
            DeclaredEndpoint(
                method=method.upper(),
                template=_join(base, path),
                deprecated=bool(op.get("deprecated", False)),
                params=MappingProxyType(params),
                path=key,
                base_path=base,
                operation_id=_text(op.get("operationId")),
                body=_body_schema(doc, op, raw_params),
            )
        )
    return endpoints


@dataclass
class _Segment:
    """A template segment that mixes text and parameters, compiled to a regular expression."""

    regex: re.Pattern[str]
    names: tuple[str, ...]
    literal_chars: int


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    patterns: list[tuple[_Segment, _Node]] = field(default_factory=list)
    shapes: dict[str, _Node] = field(default_factory=dict)
    endpoints: dict[str, DeclaredEndpoint] = field(default_factory=dict)
    template: str = ""


def _compile_segment(seg: str) -> _Segment:
    parts, names, pos = [], [], 0
    for m in _PARAM.finditer(seg):
        parts.append(re.escape(seg[pos : m.start()]))
        parts.append("(.+?)" if m.end() < len(seg) else "(.+)")
        names.append(m.group(1))
        pos = m.end()
    parts.append(re.escape(seg[pos:]))
    return _Segment(re.compile("".join(parts)), tuple(names), len(_PARAM.sub("", seg)))


def _segments(path: str) -> list[str]:
    return path.split("?", 1)[0].split("#", 1)[0].split("/")[1:]


class SpecIndex:
    """Match concrete paths (and methods) to declared endpoints; the most specific template wins."""

    def __init__(self, endpoints: Iterable[DeclaredEndpoint]) -> None:
        self._root = _Node()
        self._endpoints = tuple(endpoints)
        for ep in self._endpoints:
            self._insert(ep)

    @classmethod
    def from_documents(cls, *docs: Mapping[str, Any]) -> SpecIndex:
        """An index over every operation of the given documents."""
        return cls(ep for doc in docs for ep in parse_spec(doc))

    @property
    def endpoints(self) -> tuple[DeclaredEndpoint, ...]:
        """Every endpoint the index holds, in the order given."""
        return self._endpoints

    def _insert(self, ep: DeclaredEndpoint) -> None:
        node = self._root
        for seg in _segments(ep.template):
            if "{" not in seg:
                node = node.literals.setdefault(seg, _Node())
                continue
            shape = structural(seg)
            if shape not in node.shapes:
                node.shapes[shape] = _Node()
                node.patterns.append((_compile_segment(seg), node.shapes[shape]))
                node.patterns.sort(key=lambda pc: -pc[0].literal_chars)
            node = node.shapes[shape]
        node.endpoints.setdefault(ep.method, ep)
        node.template = node.template or ep.template

    def _walk(self, node: _Node, segs: list[str], i: int, values: list[tuple[str, str]]) -> _Node | None:
        if i == len(segs):
            return node if node.endpoints else None
        child = node.literals.get(segs[i])
        if child is not None and (hit := self._walk(child, segs, i + 1, values)) is not None:
            return hit
        for pat, child in node.patterns:
            m = pat.regex.fullmatch(segs[i])
            if m is None:
                continue
            values.extend(zip(pat.names, m.groups(), strict=True))
            if (hit := self._walk(child, segs, i + 1, values)) is not None:
                return hit
            del values[len(values) - len(pat.names) :]
        return None

    def lookup(self, path: str) -> PathMatch | None:
        """The most specific declared template matching ``path`` (query and fragment ignored), or None."""
        values: list[tuple[str, str]] = []
        node = self._walk(self._root, _segments(path if path.startswith("/") else "/" + path), 0, values)
        if node is None:
            return None
        return PathMatch(node.template, tuple(values), MappingProxyType(node.endpoints))

    def match(self, method: str, path: str) -> DeclaredEndpoint | None:
        """The declared endpoint for ``method`` on ``path``; None when the path or the method is undeclared."""
        found = self.lookup(path)
        return None if found is None else found.endpoints.get(method.upper())


def load_spec_dir(directory: str | Path) -> dict[str, SpecIndex]:
    """Every ``*.json``/``*.yaml`` spec of a directory, indexed per service (``namespace/name``).

    The service is the document's ``x-kubeward-service`` or, failing that, the
    file name ``<namespace>.<name>.<ext>``; several files of one service are merged.
    """
    docs: dict[str, list[Mapping[str, Any]]] = {}
    for path in sorted(Path(directory).iterdir()):
        if path.suffix not in (".json", ".yaml", ".yml"):
            continue
        doc = load_spec(path)
        service = doc.get("x-kubeward-service") or path.stem.replace(".", "/", 1)
        docs.setdefault(str(service), []).append(doc)
    return {service: SpecIndex.from_documents(*found) for service, found in docs.items()}


def declared_endpoints(indexes: Mapping[str, SpecIndex]) -> dict[str, dict[tuple[str, str], bool]]:
    """service -> {(METHOD, template): deprecated}, what the inventory compares traffic with."""
    return {service: {(ep.method, ep.template): ep.deprecated for ep in index.endpoints} for service, index in indexes.items()}
