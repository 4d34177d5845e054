"""deploy.runtime.manifestcheck on small hand-written manifests, and helmtools' pure parts (no helm, go or cluster)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from deploy.runtime import helmtools
from deploy.runtime.manifestcheck import (
    KUBERNETES_VERSIONS,
    CoreSchemas,
    CrdSchemas,
    load_documents,
    strict_crd_schema,
    validate_objects,
)

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  labels: {app.kubernetes.io/component: collector}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: web
          image: example/web:1
          ports: [{containerPort: 8080}]
          resources: {limits: {cpu: 500m, memory: 64Mi}}
          securityContext: {readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
"""

# A CRD shaped like the real ones: a closed spec, an open status, an int-or-string, a nullable field, a oneOf
# that only constrains values, and an embedded resource.
WIDGET_CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              oneOf:
                - required: [size]
                - required: [port]
              properties:
                size: {type: integer, minimum: 0, exclusiveMinimum: true}
                port: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
                note: {type: string, nullable: true}
                labels: {type: object, additionalProperties: {type: string}}
                template: {type: object, x-kubernetes-embedded-resource: true, x-kubernetes-preserve-unknown-fields: true}
                rules:
                  type: array
                  items:
                    type: object
                    properties:
                      from: {type: string}
            status: {type: object, x-kubernetes-preserve-unknown-fields: true}
    - name: v0
      served: false
      storage: false
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"""

WIDGET: dict[str, Any] = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "shop"},
          "spec": {"size": 3, "note": None, "labels": {"a": "b"}, "rules": [{"from": "x"}],
                   "template": {"apiVersion": "v1", "kind": "Pod", "anything": {"goes": 1}}},
          "status": {"whatever": [1, 2]}}

VERSION = KUBERNETES_VERSIONS[-1]


@pytest.fixture(scope="module")
def core() -> CoreSchemas:
    return CoreSchemas()


@pytest.fixture(scope="module")
def crds() -> CrdSchemas:
    return CrdSchemas([yaml.safe_load(WIDGET_CRD)])


def deployment() -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load(DEPLOYMENT)
    return obj


def messages(errors: list[Any]) -> list[str]:
    return [f"{e.object} {e.path}: {e.message}" for e in errors]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_valid_deployment_passes_every_version(core: CoreSchemas, version: str) -> None:
    assert validate_objects([deployment()], version, core) == []


def test_an_unknown_field_fails_strict_with_its_path(core: CoreSchemas) -> None:
    obj = deployment()
    obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    errors = validate_objects([obj], VERSION, core, values="ci/x.yaml")
    assert len(errors) == 1
    error = errors[0]
    assert (error.values, error.version, error.object) == ("ci/x.yaml", VERSION, "Deployment/shop/web")
    assert error.path == "spec.template.spec.containers[0]" and "imagePullPolicyy" in error.message


def test_errors_are_collected_across_objects_not_raised(core: CoreSchemas) -> None:
    bad_field, bad_type, fine = deployment(), deployment(), deployment()
    bad_field["spec"]["bogus"] = 1
    bad_type["metadata"]["name"] = "api"
    bad_type["spec"]["replicas"] = "two"
    bad_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    fine["metadata"]["name"] = "third"
    errors = validate_objects([bad_field, bad_type, fine], VERSION, core)
    assert sorted({e.object for e in errors}) == ["Deployment/shop/api", "Deployment/shop/web"]
    assert {e.path for e in errors if e.object == "Deployment/shop/api"} == {
        "spec.replicas", "spec.template.spec.containers[0].ports[0].containerPort"}


def test_our_core_validator_agrees_with_kubernetes_validate(core: CoreSchemas) -> None:
    """We compile kubernetes-validate's packaged schema files ourselves (once, every error): same verdicts."""
    good, bad = deployment(), deployment()
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = True
    for obj in (good, bad):
        try:
            kubernetes_validate.validate(copy.deepcopy(obj), VERSION, strict=True)
            theirs = True
        except kubernetes_validate.ValidationError:
            theirs = False
        assert theirs == (validate_objects([obj], VERSION, core) == [])


def test_unknown_kind_missing_name_and_duplicates_are_errors(core: CoreSchemas) -> None:
    nameless = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "shop"}, "data": {"a": "b"}}
    stranger = {"apiVersion": "example.com/v9", "kind": "Gadget", "metadata": {"name": "g"}}
    errors = messages(validate_objects([deployment(), deployment(), nameless, stranger], VERSION, core))
    assert any("rendered twice" in m for m in errors)
    assert any("metadata.name: missing" in m for m in errors)
    assert any(m.startswith("Gadget/g") and "no schema for Gadget in example.com/v9" in m for m in errors)


def test_an_unsupported_kubernetes_version_is_a_usage_error(core: CoreSchemas) -> None:
    with pytest.raises(ValueError, match="1.2.0"):
        validate_objects([deployment()], "1.2.0", core)


def test_a_valid_custom_resource_passes_its_crd(core: CoreSchemas, crds: CrdSchemas) -> None:
    assert crds.kinds() == [("example.com/v1", "Widget")]  # v0 is not served
    assert validate_objects([WIDGET], VERSION, core, crds) == []
    by_string = copy.deepcopy(WIDGET)
    by_string["spec"] = {"port": "http"}
    assert validate_objects([by_string], VERSION, core, crds) == []


@pytest.mark.parametrize(("change", "path", "needle"), [
    (lambda s: s.update(colour="red"), "spec", "'colour' was unexpected"),
    (lambda s: s["rules"][0].update(to="y"), "spec.rules[0]", "'to' was unexpected"),
    (lambda s: s.update(size=0), "spec.size", "less than or equal to the minimum"),
    (lambda s: s.update(labels={"a": 1}), "spec.labels.a", "is not of type 'string'"),
    (lambda s: s.update(port=1), "spec", "valid under each of"),
])
def test_a_bad_custom_resource_field_fails_against_its_crd(core: CoreSchemas, crds: CrdSchemas, change: Any,
                                                          path: str, needle: str) -> None:
    obj = copy.deepcopy(WIDGET)
    change(obj["spec"])
    errors = validate_objects([obj], VERSION, core, crds)
    assert [(e.object, e.path) for e in errors] == [("Widget/shop/w", path)], messages(errors)
    assert needle in errors[0].message


def test_custom_resource_metadata_is_a_strict_object_meta(core: CoreSchemas, crds: CrdSchemas) -> None:
    obj = copy.deepcopy(WIDGET)
    obj["metadata"]["labelz"] = {"a": "b"}
    assert [e.path for e in validate_objects([obj], VERSION, core, crds)] == ["metadata"]


def test_strict_crd_schema_leaves_the_crd_alone_and_keeps_open_nodes_open() -> None:
    raw = yaml.safe_load(WIDGET_CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    before = json.dumps(raw, sort_keys=True)
    strict = strict_crd_schema(raw)
    assert json.dumps(raw, sort_keys=True) == before
    spec = strict["properties"]["spec"]
    assert strict["additionalProperties"] is False and spec["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["status"]
    assert spec["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert spec["properties"]["note"]["type"] == ["string", "null"]
    assert spec["properties"]["size"] == {"type": "integer", "exclusiveMinimum": 0}
    assert spec["oneOf"] == [{"required": ["size"]}, {"required": ["port"]}]  # value checks stay open


def test_load_documents_splits_names_sources_and_collects_bad_documents() -> None:
    text = ("---\n# Source: kubeward/templates/a.yaml\n" + DEPLOYMENT + "---\n\n---\n# Source: kubeward/templates/b.yaml\n"
            "just a string\n---\napiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: ConfigMap, metadata: {name: c}}\n"
            "--- # Source: comment on the separator\nkey: [unclosed\n")
    objects, errors = load_documents(text, "values.yaml", VERSION)
    assert [o["kind"] for o in objects] == ["Deployment", "ConfigMap"]
    assert [(e.object, e.message.split(":")[0]) for e in errors] == [
        ("kubeward/templates/b.yaml", "not a Kubernetes object (needs apiVersion and kind)"), ("document 6", "not YAML")]


# -------------------------------------------------------------------------- helmtools without helm or go


def test_helm_and_crd_caches_follow_xdg_and_name_their_pins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert helmtools.helm_cache_dir() == tmp_path / "kubeward" / "helm" / f"v{helmtools.HELM_VERSION}"
    assert helmtools.crd_cache_dir().parent == tmp_path / "kubeward" / "crds"


def test_without_go_building_helm_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(helmtools.HelmError, match="`go` not found on PATH"):
        helmtools.ensure_helm(tmp_path / "helm")
    with pytest.raises(helmtools.HelmError, match="`go` not found on PATH"):
        helmtools.ensure_crds(tmp_path / "crds")
    assert not (tmp_path / "helm" / "bin" / "helm").exists()


def test_crd_sources_cover_the_custom_resources_the_chart_renders() -> None:
    names = {name for source in helmtools.CRD_SOURCES for name in source.names}
    assert names == {"authorizationpolicies.security.istio.io", "securitypolicies.gateway.envoyproxy.io",
                     "middlewares.traefik.io", "servicemonitors.monitoring.coreos.com",
                     "envoyfilters.networking.istio.io", "referencegrants.gateway.networking.k8s.io",
                     "ciliumnetworkpolicies.cilium.io"}
    assert all(source.version.startswith("v") for source in helmtools.CRD_SOURCES)


def test_extract_picks_the_named_crds_and_names_what_is_missing() -> None:
    source = helmtools.CrdSource("example.com/m", "v1.0.0", "crds.yaml", ("widgets.example.com",))
    text = "---\n" + WIDGET_CRD + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    assert list(helmtools._extract(source, text)) == ["widgets.example.com"]
    with pytest.raises(helmtools.HelmError, match="gadgets.example.com"):
        helmtools._extract(helmtools.CrdSource("example.com/m", "v1.0.0", "crds.yaml", ("gadgets.example.com",)), text)


def test_the_chart_is_checked_through_its_ci_values_and_the_defaults_only_without_any(tmp_path: Path) -> None:
    """As chart-testing does: Kubeward's defaults leave out a required value, so ``ci/defaults.yaml`` gives it."""
    (tmp_path / "ci").mkdir()
    assert helmtools.default_values_files(tmp_path) == [helmtools.DEFAULT_VALUES]
    for name in ("b.yaml", "a.yaml", "notes.txt"):
        (tmp_path / "ci" / name).write_text("{}\n")
    assert helmtools.default_values_files(tmp_path) == ["ci/a.yaml", "ci/b.yaml"]
    chart = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubeward"
    assert "ci/defaults.yaml" in helmtools.default_values_files(chart)
    assert yaml.safe_load((chart / "ci" / "defaults.yaml").read_text()) == {"identity": {"trustedDataPlanes": ["10.244.0.0/16"]}}


def test_api_versions_are_what_capabilities_sees_for_served_versions() -> None:
    assert helmtools.api_versions([yaml.safe_load(WIDGET_CRD)]) == ["example.com/v1", "example.com/v1/Widget"]


def test_local_kube_takes_only_the_authorization_modes_it_supports() -> None:
    from deploy.runtime.kube import LocalKube

    assert LocalKube().authorization_mode == "AlwaysAllow"  # unchanged default; nothing is started here
    assert LocalKube(authorization_mode="RBAC").authorization_mode == "RBAC"
    with pytest.raises(ValueError, match="Webhook"):
        LocalKube(authorization_mode="Webhook")
