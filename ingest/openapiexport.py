"""OpenAPI 3.1 documents of what traffic revealed, one per (namespace, service), from the endpoint inventory.

``openapi_for(service, records, namespace=...)`` writes what the workers learned about one service's endpoints
(``EndpointRecord`` of ``api.inventory.v1``) as an OpenAPI 3.1 document: each template becomes a path
with its parameters (``{id}`` and the other placeholders the templater learned), each method an operation
with the status codes observed, the security schemes its callers used (bearer JWT, opaque bearer token,
basic, API key, session cookie, mutual TLS), and what the spec cannot say natively under ``x-kubeward``:
calls, distinct callers, the sensitive-data types seen in answers, first and last seen, and the endpoint's
standing against the declared specs (``shadow``, ``deprecated``, ``dormant``: marked ``deprecated: true`` for
the last two). Request and response bodies are not described: the inventory does not carry their schemas.
Probed paths (``EndpointRecord.probed``: traversal probes and paths that never got an answer showing they exist)
and answered traversals (``EndpointRecord.traversal_answered``: a traversal that worked is an attack, not an
operation) are no endpoints of the service and are left out, counted in the document's
``x-kubeward.probed_left_out`` and ``x-kubeward.traversals_left_out``; a service with nothing else gets no
document.

A service is a (namespace, service) pair: ``api`` in ``shop`` and ``api`` in ``billing`` are two documents,
each with its own ``servers`` (``http://<service>.<namespace>.svc.cluster.local``; ``https://<host>`` for a
destination with no namespace, an external host). What traffic can hold and OpenAPI cannot is made valid,
never dropped silently:

* **Methods OpenAPI 3.1 has no field for** (``PROPFIND``, ``CONNECT``, custom verbs): the operation goes under
  the path item's ``x-kubeward-methods`` extension, keyed by the method as observed, and is counted in the
  document's ``x-kubeward.nonstandard_methods``. Tools that read only standard operations skip it; nothing
  is lost.
* **Templates that differ only in parameter names** (``/x/{id}`` and ``/x/{name}``): one path in OpenAPI's
  eyes, so they become one path named after the first template in sort order; the path item's
  ``x-kubeward.merged_templates`` lists every template folded in, and the document's
  ``x-kubeward.merged_templates`` counts the paths folded into another. One method on two such templates is one operation whose
  ``x-kubeward`` adds the figures up (``callers`` is then a sum: a caller of both counts twice), keeps the
  worst standing and lists each template's own under ``templates``; it is ``deprecated`` only when all are.
* **operationId collisions** (``GET /a-b`` and ``GET /a_b`` both give ``get_a_b``): ids are taken in path
  order, within a path the standard methods in OpenAPI's field order and then the others; a repeated one gets
  ``_2``, ``_3``, ... (never an id another operation has), so the same records always give the same ids.
* **An opaque bearer token** (auth type ``bearer``: not a JWT): ``http`` scheme ``bearer`` with no
  ``bearerFormat``, apart from ``bearerJwt``.

Pure: records in, a dict out (``json.dumps`` it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ingest.schema import EndpointRecord

__all__ = ["openapi_documents", "openapi_for"]

_PARAM = re.compile(r"\{([^{}/]+)\}")
#: the operations a Path Item Object has fields for in OpenAPI 3.1
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_JWT = ("bearerJwt", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "jwt": _JWT,
    "jwt-unverified": _JWT,
    "jwt-anonymous": _JWT,
    "bearer": ("bearer", {"type": "http", "scheme": "bearer"}),  # opaque: no bearerFormat to claim
    "basic": ("basic", {"type": "http", "scheme": "basic"}),
    "api_key": ("apiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"}),
    "session": ("session", {"type": "apiKey", "in": "cookie", "name": "session"}),
    "mtls": ("mutualTls", {"type": "mutualTLS"}),
}
_REASONS = {"200": "OK", "201": "Created", "202": "Accepted", "204": "No Content", "301": "Moved Permanently", "302": "Found",
            "304": "Not Modified", "400": "Bad Request", "401": "Unauthorized", "403": "Forbidden", "404": "Not Found",
            "409": "Conflict", "422": "Unprocessable Content", "429": "Too Many Requests", "500": "Internal Server Error",
            "502": "Bad Gateway", "503": "Service Unavailable", "504": "Gateway Timeout"}
#: worst first: the standing a merged operation shows
_STANDING = ("dormant", "deprecated", "shadow", "undeclared", "declared")


def _is_endpoint(record: EndpointRecord) -> bool:
    """Neither a probed path nor an answered traversal (see the module docstring)."""
    return not record.probed and not record.traversal_answered


def _parameters(path: str) -> list[dict[str, Any]]:
    seen: list[str] = []
    for name in _PARAM.findall(path):
        if name not in seen:
            seen.append(name)
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in seen]


def _path(template: str) -> str:
    """A template as an OpenAPI path: placeholders repeated in one path get distinct names (``{id}``, ``{id2}``)."""
    counts: dict[str, int] = {}

    def rename(match: re.Match[str]) -> str:
        counts[match.group(1)] = counts.get(match.group(1), 0) + 1
        n = counts[match.group(1)]
        return "{" + match.group(1) + (str(n) if n > 1 else "") + "}"

    return _PARAM.sub(rename, template if template.startswith("/") else "/" + template)


def _shape(path: str) -> str:
    """What OpenAPI compares paths by: the path with every parameter name left out (``/x/{}``)."""
    return _PARAM.sub("{}", path)


def _figures(records: Sequence[EndpointRecord]) -> dict[str, Any]:
    """The ``x-kubeward`` of an operation: one record's figures, or several records' added up (see the module docstring)."""
    out: dict[str, Any] = {
        "calls": sum(r.calls for r in records), "callers": sum(r.callers for r in records),
        "data_types": sorted({d for r in records for d in r.data_types}), "auth_types": sorted({a for r in records for a in r.auth_types}),
        "first_seen": min(r.first_seen for r in records), "last_seen": max(r.last_seen for r in records),
        "spec_status": min((r.spec_status for r in records), key=_STANDING.index),
    }
    if len(records) > 1:
        out["templates"] = [{"template": r.path_template, "method": r.method, "calls": r.calls, "callers": r.callers,
                             "spec_status": r.spec_status} for r in records]
    return out


def _operation(records: Sequence[EndpointRecord], path: str, method: str) -> dict[str, Any]:
    statuses: dict[str, int] = defaultdict(int)
    for r in records:
        for code, n in r.statuses.items():
            statuses[code] += n
    responses = {code: {"description": _REASONS.get(code, "Observed")} for code in sorted(statuses) if re.fullmatch(r"[1-5]\d\d", code)}
    auth = {a for r in records for a in r.auth_types}
    security = sorted({_SCHEMES[a][0] for a in auth if a in _SCHEMES})
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{method.lower()}{path}").strip("_") or "operation",
        "responses": responses or {"default": {"description": "No status observed"}},
        "x-kubeward": _figures(records),
    }
    if security:
        op["security"] = [{name: []} for name in security] + ([{}] if auth & {"none", "-"} else [])
    if all(r.spec_status in ("deprecated", "dormant") for r in records):
        op["deprecated"] = True
    return op


def _unique_ids(operations: list[dict[str, Any]]) -> None:
    """Make operationIds unique in order: a repeat gets the first free ``_2``, ``_3``, ... no other operation has."""
    natural = {op["operationId"] for op in operations}
    used: set[str] = set()
    for op in operations:
        base, n, name = op["operationId"], 1, op["operationId"]
        while name in used or (n > 1 and name in natural):
            n += 1
            name = f"{base}_{n}"
        op["operationId"] = name
        used.add(name)


def _path_item(records: list[EndpointRecord]) -> tuple[str, dict[str, Any]]:
    """(the path, its Path Item) of the records of one path shape."""
    path = min(_path(r.path_template) for r in records)
    by_method: dict[str, list[EndpointRecord]] = defaultdict(list)
    for r in records:
        by_method[r.method.upper()].append(r)
    item: dict[str, Any] = {}
    if _parameters(path):
        item["parameters"] = _parameters(path)
    extra: dict[str, Any] = {}
    for method in sorted(by_method):
        op = _operation(by_method[method], path, method)
        if method.lower() in _METHODS:
            item[method.lower()] = op
        else:
            extra[by_method[method][0].method] = op
    if extra:
        item["x-kubeward-methods"] = extra
    templates = sorted({r.path_template for r in records})
    if len({_path(t) for t in templates}) > 1:
        item["x-kubeward"] = {"merged_templates": templates, "note": (
            "these templates differ only in parameter names, which OpenAPI counts as one path: merged, the parameters "
            f"named as in {path}")}
    return path, item


def openapi_for(service: str, records: Iterable[EndpointRecord], *, namespace: str | None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one service's observed endpoints: the records of ``service`` in ``namespace``
    (``None``: the records with no namespace, an external host)."""
    namespace = namespace or None
    theirs = [r for r in records if isinstance(r, EndpointRecord) and r.service == service and (r.namespace or None) == namespace]
    mine = sorted((r for r in theirs if _is_endpoint(r)), key=lambda r: (r.path_template, r.method))
    shapes: dict[str, list[EndpointRecord]] = defaultdict(list)
    for record in mine:
        shapes[_shape(_path(record.path_template))].append(record)
    paths = dict(sorted(_path_item(group) for group in shapes.values()))
    _unique_ids([op for item in paths.values() for op in _operations_of(item)])
    schemes = dict(_SCHEMES[a] for r in mine for a in r.auth_types if a in _SCHEMES)
    name = f"{namespace}/{service}" if namespace else service
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": name, "version": "observed",
                 "description": f"Endpoints of {name} as Kubeward observed them in traffic (not a declared specification)."},
        "servers": [{"url": f"http://{service}.{namespace}.svc.cluster.local" if namespace else f"https://{service}"}],
        "paths": paths,
        "x-kubeward": {"namespace": namespace, "service": service, "endpoints": len(mine), "probed_left_out": sum(r.probed for r in theirs),
                       "traversals_left_out": sum(r.traversal_answered and not r.probed for r in theirs),
                       "nonstandard_methods": sum(1 for r in mine if r.method.lower() not in _METHODS),
                       "merged_templates": sum(len({_path(t) for t in item["x-kubeward"]["merged_templates"]}) - 1
                                               for item in paths.values() if "x-kubeward" in item)},
    }
    if schemes:
        doc["components"] = {"securitySchemes": dict(sorted(schemes.items()))}
    return doc


def _operations_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    """A Path Item's operations, standard ones in field order, then the ``x-kubeward-methods`` ones by method."""
    extra = item.get("x-kubeward-methods", {})
    return [item[m] for m in _METHODS if m in item] + [extra[m] for m in sorted(extra)]


def openapi_documents(records: Iterable[EndpointRecord]) -> dict[tuple[str | None, str], dict[str, Any]]:
    """(namespace, service) -> its OpenAPI 3.1 document, for every service in the records with an endpoint that is neither
    probed nor an answered traversal (namespace ``None``: an external host); the external ones first, then by namespace and service."""
    endpoints = [r for r in records if isinstance(r, EndpointRecord)]
    keys = sorted({(r.namespace or None, r.service) for r in endpoints if _is_endpoint(r)}, key=lambda k: (k[0] is not None, k[0] or "", k[1]))
    return {(ns, service): openapi_for(service, endpoints, namespace=ns) for ns, service in keys}
