"""OpenAPI 3.1 documents of what traffic revealed, one per service, from the endpoint inventory.

``openapi_for(service, records)`` writes what the workers learned about one service's endpoints
(``EndpointRecord`` of ``api.inventory.v1``) as an OpenAPI 3.1 document: each template becomes a path
with its parameters (``{id}`` and the other placeholders the templater learned), each method an operation
with the status codes observed, the security schemes its callers used (bearer JWT, API key, session cookie,
mutual TLS), and what the spec cannot say natively under ``x-kubeward``: calls, distinct callers, the
sensitive-data types seen in answers, first and last seen, and the endpoint's standing against the declared
specs (``shadow``, ``deprecated``, ``dormant``: marked ``deprecated: true`` for the last two). Request and
response bodies are not described: the inventory does not carry their schemas.

Pure: records in, a dict out (``json.dumps`` it).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ingest.schema import EndpointRecord

__all__ = ["openapi_for", "openapi_documents"]

_PARAM = re.compile(r"\{([^{}/]+)\}")
_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "jwt": ("bearerJwt", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
    "jwt-unverified": ("bearerJwt", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}),
    "basic": ("basic", {"type": "http", "scheme": "basic"}),
    "api_key": ("apiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"}),
    "session": ("session", {"type": "apiKey", "in": "cookie", "name": "session"}),
    "mtls": ("mutualTls", {"type": "mutualTLS"}),
}
_REASONS = {"200": "OK", "201": "Created", "202": "Accepted", "204": "No Content", "301": "Moved Permanently", "302": "Found",
            "304": "Not Modified", "400": "Bad Request", "401": "Unauthorized", "403": "Forbidden", "404": "Not Found",
            "409": "Conflict", "422": "Unprocessable Content", "429": "Too Many Requests", "500": "Internal Server Error",
            "502": "Bad Gateway", "503": "Service Unavailable", "504": "Gateway Timeout"}


def _parameters(template: str) -> list[dict[str, Any]]:
    seen: list[str] = []
    for name in _PARAM.findall(template):
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

    path = _PARAM.sub(rename, template if template.startswith("/") else "/" + template)
    return path


def _operation(record: EndpointRecord, path: str) -> dict[str, Any]:
    responses = {code: {"description": _REASONS.get(code, "Observed")} for code in sorted(record.statuses) if re.fullmatch(r"[1-5]\d\d", code)}
    security = sorted({_SCHEMES[a][0] for a in record.auth_types if a in _SCHEMES})
    op: dict[str, Any] = {
        "operationId": re.sub(r"[^A-Za-z0-9]+", "_", f"{record.method.lower()}{path}").strip("_"),
        "responses": responses or {"default": {"description": "No status observed"}},
        "x-kubeward": {"calls": record.calls, "callers": record.callers, "data_types": sorted(record.data_types),
                       "auth_types": sorted(record.auth_types), "first_seen": record.first_seen, "last_seen": record.last_seen,
                       "spec_status": record.spec_status},
    }
    if security:
        op["security"] = [{name: []} for name in security] + ([{}] if any(a in ("none", "-") for a in record.auth_types) else [])
    if record.spec_status in ("deprecated", "dormant"):
        op["deprecated"] = True
    return op


def openapi_for(service: str, records: Iterable[EndpointRecord]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of one service's observed endpoints."""
    mine = sorted((r for r in records if r.service == service), key=lambda r: (r.path_template, r.method))
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, dict[str, Any]] = {}
    for record in mine:
        path = _path(record.path_template)
        item = paths.setdefault(path, {})
        if _parameters(path):
            item["parameters"] = _parameters(path)
        item[record.method.lower()] = _operation(record, path)
        schemes.update(dict(_SCHEMES[a] for a in record.auth_types if a in _SCHEMES))
    namespace = next((r.namespace for r in mine if r.namespace), None)
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": service, "version": "observed",
                 "description": f"Endpoints of {service} as Kubeward observed them in traffic (not a declared specification)."},
        "servers": [{"url": f"http://{service}.{namespace}.svc.cluster.local" if namespace else f"https://{service}"}],
        "paths": paths,
        "x-kubeward": {"namespace": namespace, "endpoints": len(mine)},
    }
    if schemes:
        doc["components"] = {"securitySchemes": dict(sorted(schemes.items()))}
    return doc


def openapi_documents(records: Iterable[EndpointRecord]) -> dict[str, dict[str, Any]]:
    """Service -> its OpenAPI 3.1 document, for every service in the records."""
    endpoints = [r for r in records if isinstance(r, EndpointRecord)]
    return {service: openapi_for(service, endpoints) for service in sorted({r.service for r in endpoints})}
