"""Strict, offline validation of rendered Kubernetes manifests; pure (reads only packaged schema files).

Contract
--------
* :func:`load_documents` splits multi-document YAML (as ``helm template`` prints it) into objects,
  skipping empty documents and flattening ``kind: List``; a document that is not YAML or not a
  mapping is an error, not an exception.
* :class:`CoreSchemas` validates built-in kinds against the strict JSON schemas that the
  ``kubernetes-validate`` package ships per Kubernetes version (unknown fields are errors), the
  same files and the same Draft 2020-12 validator as ``kubernetes_validate.validate(strict=True)``,
  but compiled once per kind and version and reporting every error rather than the first.
* :class:`CrdSchemas` validates custom resources against the ``openAPIV3Schema`` of their CRD made
  strict the way the API server treats it (:func:`strict_crd_schema`): an object field the schema does
  not list is an error unless the node says ``x-kubernetes-preserve-unknown-fields``; ``metadata`` is
  checked as a strict ObjectMeta. CEL rules (``x-kubernetes-validations``) are not evaluated here;
  the real API server does that in the install test.
* :func:`validate_objects` checks a list of objects for one Kubernetes version and returns every
  :class:`ManifestError` (also: no schema for a kind, a missing name, the same object twice).

Nothing here raises for a bad manifest; :class:`ValueError` only for a Kubernetes version the
installed ``kubernetes-validate`` has no schemas for.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

__all__ = ["KUBERNETES_VERSIONS", "CoreSchemas", "CrdSchemas", "ManifestError", "describe", "load_documents",
           "strict_crd_schema", "validate_objects"]

#: the three newest minor versions kubernetes-validate 1.37.0 ships strict schemas for
KUBERNETES_VERSIONS = ("1.35.0", "1.36.0", "1.37.0")
_OBJECT_META = "https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_MAX_MESSAGE = 400


@dataclass(frozen=True)
class ManifestError:
    """One problem with one rendered object: which values file and version, which object, where, what."""

    values: str
    version: str
    object: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def describe(obj: dict[str, Any]) -> str:
    """``Kind/namespace/name`` (``Kind/name`` without a namespace) for messages."""
    meta = _meta(obj)
    parts = [str(obj.get("kind", "?")), str(meta.get("namespace", "")), str(meta.get("name") or meta.get("generateName") or "?")]
    return "/".join(part for part in parts if part)


def load_documents(text: str, values: str = "", version: str = "") -> tuple[list[dict[str, Any]], list[ManifestError]]:
    """The objects in a multi-document YAML text, and an error for each document that is not an object."""
    objects: list[dict[str, Any]] = []
    errors: list[ManifestError] = []
    chunks = re.split(r"^---[ \t]*(?:#.*)?$", text, flags=re.MULTILINE)
    for number, chunk in enumerate(chunks, start=1):
        source = re.search(r"^# Source: (.+)$", chunk, flags=re.MULTILINE)
        where = source.group(1).strip() if source else f"document {number}"
        try:
            doc = yaml.safe_load(chunk)
        except yaml.YAMLError as exc:
            errors.append(ManifestError(values, version, where, "", f"not YAML: {exc}"[:_MAX_MESSAGE]))
            continue
        if doc is None:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or not isinstance(doc.get("apiVersion"), str):
            errors.append(ManifestError(values, version, where, "", "not a Kubernetes object (needs apiVersion and kind)"))
            continue
        items = doc.get("items") if doc["kind"] == "List" else [doc]
        objects += [item for item in items or [] if isinstance(item, dict)]
    return objects, errors


def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _errors(validator: jsonschema.protocols.Validator, obj: dict[str, Any], values: str, version: str) -> list[ManifestError]:
    name = describe(obj)
    found = sorted(validator.iter_errors(obj), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    return [ManifestError(values, version, name, _path(e), e.message[:_MAX_MESSAGE]) for e in found]


def _api_file_part(api_version: str) -> str:
    """``rbac.authorization.k8s.io/v1`` -> ``rbac-v1``, ``v1`` -> ``v1``: kubernetes-validate's file naming."""
    return re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)


class CoreSchemas:
    """Strict validators for built-in kinds, per Kubernetes version, from the ``kubernetes-validate`` package."""

    def __init__(self) -> None:
        self._registries: dict[str, Registry[Any]] = {}
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator | None] = {}

    def _dir(self, version: str) -> Any:
        folder = resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
        if not folder.is_dir():
            raise ValueError(f"kubernetes-validate has no strict schemas for Kubernetes {version!r}")
        return folder

    def registry(self, version: str) -> Registry[Any]:
        """A registry holding the version's ``_definitions.json`` (ObjectMeta and every core type)."""
        if version not in self._registries:
            definitions = json.loads((self._dir(version) / "_definitions.json").read_text())
            self._registries[version] = Resource.from_contents(definitions) @ Registry()
        return self._registries[version]

    def validator(self, version: str, api_version: str, kind: str) -> jsonschema.protocols.Validator | None:
        """The strict validator for ``kind`` in ``api_version``, or None when the package has no schema for it."""
        key = (version, api_version, kind)
        if key not in self._validators:
            schema_file = self._dir(version) / f"{kind.lower()}-{_api_file_part(api_version)}.json"
            if not schema_file.is_file():
                self._validators[key] = None
            else:
                schema = json.loads(schema_file.read_text())
                self._validators[key] = jsonschema.Draft202012Validator(schema, registry=self.registry(version))
        return self._validators[key]


# -------------------------------------------------------------------------- CRD schemas made strict

_JUNCTORS = ("allOf", "anyOf", "oneOf")


def _nullable(node: dict[str, Any]) -> None:
    """OpenAPI 3.0 ``nullable``/boolean exclusive bounds/int-or-string, in JSON Schema terms."""
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(exclusive), bool):
            if node.pop(exclusive) and bound in node:
                node[exclusive] = node.pop(bound)
    if node.get("x-kubernetes-int-or-string") and "type" not in node and "anyOf" not in node:
        node["type"] = ["integer", "string"]


def _strict(node: dict[str, Any], structural: bool) -> None:
    """Rewrite ``node`` in place; ``structural`` is False under allOf/anyOf/oneOf/not (value checks only)."""
    _nullable(node)
    preserve = bool(node.get("x-kubernetes-preserve-unknown-fields"))
    if node.get("x-kubernetes-embedded-resource"):
        props = node.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    is_object = node.get("type") == "object" or "properties" in node
    if structural and is_object and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False  # the API server prunes (or, strictly, rejects) unknown fields
    for child in (node.get("properties") or {}).values():
        _strict(child, structural)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _strict(node[key], structural)
    for key in _JUNCTORS:
        for child in node.get(key) or []:
            _strict(child, False)
    if isinstance(node.get("not"), dict):
        _strict(node["not"], False)


def strict_crd_schema(open_api_v3_schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a CRD version's ``openAPIV3Schema`` that rejects what the API server would not keep.

    Objects without ``x-kubernetes-preserve-unknown-fields`` get ``additionalProperties: false``;
    ``nullable`` and OpenAPI 3.0 boolean ``exclusiveMinimum``/``exclusiveMaximum`` become JSON Schema;
    the root admits ``apiVersion``, ``kind`` and a strict ``metadata`` (ObjectMeta).
    """
    schema = copy.deepcopy(open_api_v3_schema)
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"type": "string"}
    props["kind"] = {"type": "string"}
    props["metadata"] = {"$ref": _OBJECT_META}
    schema.setdefault("type", "object")
    _strict(schema, True)
    return schema


class CrdSchemas:
    """Strict validators for custom resources, built from CRD objects (``apiextensions.k8s.io/v1``)."""

    def __init__(self, crds: list[dict[str, Any]]) -> None:
        self._schemas: dict[tuple[str, str], dict[str, Any]] = {}
        self._validators: dict[tuple[str, str, str], jsonschema.protocols.Validator] = {}
        for crd in crds:
            spec = crd["spec"]
            for served in spec["versions"]:
                if served.get("served", True):
                    api_version = f"{spec['group']}/{served['name']}"
                    self._schemas[(api_version, spec["names"]["kind"])] = served["schema"]["openAPIV3Schema"]

    def kinds(self) -> list[tuple[str, str]]:
        """Every (apiVersion, kind) known."""
        return sorted(self._schemas)

    def validator(self, core: CoreSchemas, version: str, api_version: str,
                  kind: str) -> jsonschema.protocols.Validator | None:
        """The strict validator for this custom resource (ObjectMeta from ``version``), or None if unknown."""
        key = (version, api_version, kind)
        if key not in self._validators:
            if (api_version, kind) not in self._schemas:
                return None
            schema = strict_crd_schema(self._schemas[(api_version, kind)])
            self._validators[key] = jsonschema.Draft202012Validator(schema, registry=core.registry(version))
        return self._validators[key]


def _identity(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = _meta(obj)
    group = str(obj.get("apiVersion", "")).rpartition("/")[0]
    return group, str(obj.get("kind")), str(meta.get("namespace", "")), str(meta.get("name", ""))


def validate_objects(objects: list[dict[str, Any]], version: str, core: CoreSchemas, crds: CrdSchemas | None = None,
                     values: str = "") -> list[ManifestError]:
    """Every error in ``objects`` for Kubernetes ``version``: schema, missing name, duplicates, unknown kinds."""
    errors: list[ManifestError] = []
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        api_version, kind = str(obj.get("apiVersion", "")), str(obj.get("kind", ""))
        validator = core.validator(version, api_version, kind)
        if validator is None and crds is not None:
            validator = crds.validator(core, version, api_version, kind)
        if validator is None:
            errors.append(ManifestError(values, version, describe(obj), "",
                                        f"no schema for {kind} in {api_version} (Kubernetes {version} or the known CRDs)"))
        else:
            errors += _errors(validator, obj, values, version)
        meta = _meta(obj)
        if not meta.get("name"):
            errors.append(ManifestError(values, version, describe(obj), "metadata.name", "missing: helm install needs a name"))
        identity = _identity(obj)
        if identity in seen:
            errors.append(ManifestError(values, version, describe(obj), "", "rendered twice (same group, kind, namespace, name)"))
        seen.add(identity)
    return errors
