"""The Helm chart (deploy/helm/kubeward) checked for real: offline, then installed into a real API server.

1. :func:`deploy.runtime.helmtools.validate_chart` runs ``helm lint --strict`` and ``helm template`` (helm v4
   built from the Go module proxy) for every ``ci/*.yaml`` (``ci/defaults.yaml``: the defaults plus the data-plane
   CIDRs they leave out on purpose), validates every
   rendered object strictly for Kubernetes 1.35, 1.36 and 1.37 (custom resources against their projects'
   CRDs) and writes ``build/helm-validate.json``; zero errors expected. A second test proves the check
   bites: an unknown field added to any rendered object is caught.
2. ``helm install`` of each values file into etcd + kube-apiserver (:class:`LocalKube`, RBAC on) with
   the CRDs installed first: every object helm applied is stored, and the collector's ServiceAccount
   (found by its ``app.kubernetes.io/component: collector`` label) may list and watch pods where the
   chart binds it, and may not read secrets or write pods. ``helm uninstall`` removes everything.
3. What needs a cluster to read: the generated keys survive ``helm upgrade`` and the pods' ``checksum/keys`` is
   the live Secret's (an ``existingSecret`` too, and it changes when that Secret does); a release namespace that
   enforces Pod Security baseline or restricted is refused (the collector needs privileged).

Nothing runs the pods (no kubelet or controllers): these tests are about objects and permissions.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.runtime import helmtools
from deploy.runtime.kube import KubeApiError, LocalKube, ensure_binaries
from deploy.runtime.kubebuild import KUBE_VERSION
from deploy.runtime.manifestcheck import KUBERNETES_VERSIONS, CoreSchemas, CrdSchemas, load_documents, validate_objects

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "kubeward"
REPORT = ROOT / "build" / "helm-validate.json"
COMPONENT = "app.kubernetes.io/component"
DEFAULTS = "ci/defaults.yaml"  # the defaults plus identity.trustedDataPlanes, which has no default
VALUES = helmtools.default_values_files(CHART) if CHART.is_dir() else [helmtools.DEFAULT_VALUES]


@pytest.fixture(scope="module")
def tools(pytestconfig: pytest.Config) -> tuple[Path, Path]:
    """helm and the CRD dir, built / fetched once into the user cache (progress shown the first time)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        return helmtools.ensure_helm(), helmtools.ensure_crds()


@pytest.fixture(scope="module")
def crd_objects(tools: tuple[Path, Path]) -> list[dict[str, Any]]:
    return helmtools.load_crds(tools[1])[0]


def test_chart_validates_for_every_values_file_and_kubernetes_version(tools: tuple[Path, Path]) -> None:
    started = time.monotonic()
    result = helmtools.validate_chart(CHART, report=REPORT, helm=tools[0], crd_dir=tools[1])
    assert json.loads(REPORT.read_text()) == result
    assert result["helm"].startswith(f"v{helmtools.HELM_VERSION}")
    assert result["kubernetes_versions"] == list(KUBERNETES_VERSIONS)
    assert len(VALUES) >= 2 and DEFAULTS in VALUES, f"expected ci/defaults.yaml and more ci/*.yaml files, found {VALUES}"
    assert sorted((c["values"], c["version"]) for c in result["checks"]) == sorted(
        (v, k) for v in VALUES for k in KUBERNETES_VERSIONS)
    assert all(check["objects"] > 0 for check in result["checks"]), result["checks"]
    problems = [item for item in result["lint"] if item["errors"]] + [e for c in result["checks"] for e in c["errors"]]
    assert result["errors"] == 0, "\n".join(json.dumps(p) for p in problems[:40])
    print(f"\nchart check: {len(result['checks'])} renders in {time.monotonic() - started:.1f} s -> {REPORT}")


def test_the_check_bites_on_every_kind_the_chart_renders(tools: tuple[Path, Path], crd_objects: list[dict[str, Any]]) -> None:
    """An unknown field at the root and in ``spec`` of any rendered object is an error: no kind escapes."""
    core, crds, version = CoreSchemas(), CrdSchemas(crd_objects), KUBERNETES_VERSIONS[-1]
    kinds: set[str] = set()
    missed: list[str] = []
    for values in VALUES:
        text, failure = helmtools.render(tools[0], CHART, values, version, helmtools.api_versions(crd_objects))
        assert not failure, failure
        for obj in load_documents(text)[0]:
            kinds.add(obj["kind"])
            for where in ("root", "spec"):
                bad = copy.deepcopy(obj)
                target = bad if where == "root" else bad.get("spec")
                if not isinstance(target, dict):
                    continue
                target["kubewardUnknownField"] = 1
                if not validate_objects([bad], version, core, crds):
                    missed.append(f"{values}: {obj['kind']} {where}")
    assert not missed, missed
    assert {"Deployment", "ServiceAccount", "ClusterRole"} <= kinds


# -------------------------------------------------------------------------- installed into a real API server


@pytest.fixture(scope="module")
def kube(pytestconfig: pytest.Config, crd_objects: list[dict[str, Any]]) -> Iterator[LocalKube]:
    """etcd + kube-apiserver with RBAC, the chart's CRDs installed and established."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        bin_dir = ensure_binaries()
    with LocalKube(bin_dir=bin_dir, authorization_mode="RBAC") as running:
        for crd in crd_objects:
            body = {key: value for key, value in crd.items() if key != "status"}
            running.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body)
        for crd in crd_objects:
            running.wait_established(crd["metadata"]["name"])
        yield running


@pytest.fixture(scope="module")
def installable_chart(kube: LocalKube) -> Path:
    """The chart itself: the local kube-apiserver reports its release version (``kubebuild`` stamps it), so helm
    checks the chart's ``kubeVersion`` constraint against a real server."""
    assert kube.request("GET", "/version").get("gitVersion") == f"v{KUBE_VERSION}"
    return CHART


class Resources:
    """kind -> (plural, namespaced) per apiVersion, from the API server's discovery documents."""

    def __init__(self, kube: LocalKube) -> None:
        self.kube = kube
        self._seen: dict[str, dict[str, tuple[str, bool]]] = {}

    def path(self, obj: dict[str, Any], namespace: str) -> str:
        api_version, kind = obj["apiVersion"], obj["kind"]
        if api_version not in self._seen:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            listed = self.kube.request("GET", base)["resources"]
            self._seen[api_version] = {r["kind"]: (r["name"], r["namespaced"]) for r in listed if "/" not in r["name"]}
        plural, namespaced = self._seen[api_version][kind]
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        where = f"/namespaces/{obj['metadata'].get('namespace', namespace)}" if namespaced else ""
        return f"{base}{where}/{plural}/{obj['metadata']['name']}"


def _helm(tools: tuple[Path, Path], kube: LocalKube, *args: str) -> str:
    done = helmtools.run_helm(tools[0], [*args, "--kubeconfig", str(kube.kubeconfig)], timeout=300)
    assert done.returncode == 0, f"helm {' '.join(args)} failed:\n{done.stderr}\n{done.stdout}"
    return done.stdout


def _identity(obj: dict[str, Any], namespace: str) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", namespace), obj["metadata"]["name"]


@pytest.mark.parametrize("values", VALUES)
def test_helm_install_stores_every_object_and_rbac_is_least_privilege(
        tools: tuple[Path, Path], kube: LocalKube, installable_chart: Path, crd_objects: list[dict[str, Any]],
        values: str) -> None:
    release = "kw-" + re.sub(r"[^a-z0-9]+", "-", Path(values).stem.lower()).strip("-")
    namespace = release
    values_args = [] if values == helmtools.DEFAULT_VALUES else ["-f", str(CHART / values)]
    offline, failure = helmtools.render(tools[0], CHART, values, KUBERNETES_VERSIONS[-1],
                                        helmtools.api_versions(crd_objects), release=release, namespace=namespace)
    assert not failure, failure
    expected = load_documents(offline)[0]
    for other in {obj["metadata"].get("namespace") for obj in expected} - {None, namespace}:
        kube.ensure_namespace(other)  # objects the chart puts beside the workloads it protects (shop, edge, ...)

    started = time.monotonic()
    _helm(tools, kube, "install", release, str(installable_chart), "--namespace", namespace, "--create-namespace",
          "--timeout", "120s", *values_args)
    install_seconds = time.monotonic() - started
    try:
        applied = load_documents(_helm(tools, kube, "get", "manifest", release, "--namespace", namespace))[0]
        assert sorted(_identity(o, namespace) for o in applied) == sorted(_identity(o, namespace) for o in expected)
        resources = Resources(kube)
        for obj in applied:
            stored = kube.request("GET", resources.path(obj, namespace))
            assert stored["metadata"]["name"] == obj["metadata"]["name"]
            assert stored["metadata"].get("labels", {}).get(COMPONENT) == obj["metadata"].get("labels", {}).get(COMPONENT)
        _check_collector_rbac(kube, applied, namespace, values)
    finally:
        _helm(tools, kube, "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "120s")
    for obj in applied:
        if obj["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep":
            kube.request("GET", resources.path(obj, namespace))  # kept on purpose (the generated keys): still there
            continue
        with pytest.raises(KubeApiError) as gone:
            kube.request("GET", resources.path(obj, namespace))
        assert gone.value.status == 404, _identity(obj, namespace)
    print(f"\n{values}: {len(applied)} objects installed in {install_seconds:.1f} s")


def _check_collector_rbac(kube: LocalKube, applied: list[dict[str, Any]], namespace: str, values: str) -> None:
    accounts = [o for o in applied if o["kind"] == "ServiceAccount"
                and o["metadata"].get("labels", {}).get(COMPONENT) == "collector"]
    if not accounts:
        assert values != DEFAULTS, "the default values must deploy the collector"
        return
    assert len(accounts) == 1, accounts
    name = accounts[0]["metadata"]["name"]
    user = f"system:serviceaccount:{namespace}:{name}"

    def binds(obj: dict[str, Any]) -> bool:
        return any(s.get("kind") == "ServiceAccount" and s.get("name") == name
                   and s.get("namespace", obj["metadata"].get("namespace", namespace)) == namespace
                   for s in obj.get("subjects") or [])

    cluster_wide = any(o["kind"] == "ClusterRoleBinding" and binds(o) for o in applied)
    scopes = [""] if cluster_wide else sorted({o["metadata"].get("namespace", namespace)
                                               for o in applied if o["kind"] == "RoleBinding" and binds(o)})
    if values == DEFAULTS:
        assert scopes, "the default values must let the collector watch pods"
    for scope in scopes:
        for verb in ("list", "watch"):
            assert kube.can(user, verb, "pods", scope), f"{user} may not {verb} pods in {scope or 'all namespaces'}"
        listed = kube.request("GET", f"/api/v1{f'/namespaces/{scope}' if scope else ''}/pods?limit=1", impersonate=user)
        assert listed["kind"] == "PodList"
    for scope in ("", namespace, "kube-system"):
        for verb, resource in (("list", "secrets"), ("get", "secrets"), ("watch", "secrets"), ("create", "pods"),
                               ("delete", "pods"), ("patch", "pods"), ("create", "pods/exec"), ("list", "configmaps")):
            assert not kube.can(user, verb, resource, scope), f"{user} may {verb} {resource} in {scope or 'all namespaces'}"
    with pytest.raises(KubeApiError) as refused:
        kube.request("GET", f"/api/v1/namespaces/{namespace}/secrets", impersonate=user)
    assert refused.value.status == 403


# -------------------------------------------------------------------------- what the chart reads from the cluster


def _install(tools: tuple[Path, Path], kube: LocalKube, chart: Path, verb: str, release: str, *args: str) -> subprocess.CompletedProcess[str]:
    return helmtools.run_helm(tools[0], [verb, release, str(chart), "--namespace", release, "-f", str(CHART / DEFAULTS),
                                         "--kubeconfig", str(kube.kubeconfig), "--timeout", "120s", *args], timeout=300)


def _uninstall(tools: tuple[Path, Path], kube: LocalKube, release: str) -> None:
    helmtools.run_helm(tools[0], ["uninstall", release, "--namespace", release, "--kubeconfig", str(kube.kubeconfig)], timeout=300)


def _pod_checksums(kube: LocalKube, namespace: str) -> dict[str, str | None]:
    found = {}
    for kind in ("deployments", "daemonsets"):
        for obj in kube.request("GET", f"/apis/apps/v1/namespaces/{namespace}/{kind}")["items"]:
            annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
            found[obj["metadata"]["labels"][COMPONENT]] = annotations.get("checksum/keys")
    return found


def _digest(data: dict[str, str]) -> str:
    keys = ("admin-token", "object-id-key", "principal-key", "verdict-key")
    return hashlib.sha256(json.dumps({k: data.get(k, "") for k in keys}, separators=(",", ":")).encode()).hexdigest()


def test_generated_keys_survive_upgrades_and_the_pods_carry_their_checksum(tools: tuple[Path, Path], kube: LocalKube,
                                                                           installable_chart: Path) -> None:
    release = "kw-keys"
    done = _install(tools, kube, installable_chart, "install", release, "--create-namespace")
    assert done.returncode == 0, done.stderr
    try:
        secret = kube.request("GET", f"/api/v1/namespaces/{release}/secrets/{release}-kubeward-keys")["data"]
        assert _pod_checksums(kube, release) == dict.fromkeys(("collector", "worker", "shim"), _digest(secret))
        done = _install(tools, kube, installable_chart, "upgrade", release, "--set", "worker.replicas=2")
        assert done.returncode == 0, done.stderr
        assert kube.request("GET", f"/api/v1/namespaces/{release}/secrets/{release}-kubeward-keys")["data"] == secret
        assert set(_pod_checksums(kube, release).values()) == {_digest(secret)}  # same keys: no roll
    finally:
        _uninstall(tools, kube, release)


def test_an_existing_secret_is_checksummed_when_helm_can_read_it(tools: tuple[Path, Path], kube: LocalKube,
                                                                 installable_chart: Path) -> None:
    release = "kw-own-keys"
    kube.ensure_namespace(release)
    data = {k: base64.b64encode(f"{k}-0123456789abcdef0123456789abcdef".encode()).decode()
            for k in ("verdict-key", "principal-key", "object-id-key", "admin-token")}
    path = f"/api/v1/namespaces/{release}/secrets"
    kube.request("POST", path, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine"}, "data": data})
    done = _install(tools, kube, installable_chart, "install", release, "--set", "keys.existingSecret=mine")
    assert done.returncode == 0, done.stderr
    try:
        assert set(_pod_checksums(kube, release).values()) == {_digest(data)}
        rotated = {**data, "verdict-key": base64.b64encode(b"rotated-0123456789abcdef0123456789abcdef").decode()}
        kube.request("PUT", f"{path}/mine", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "mine"}, "data": rotated})
        done = _install(tools, kube, installable_chart, "upgrade", release, "--set", "keys.existingSecret=mine")
        assert done.returncode == 0, done.stderr
        assert set(_pod_checksums(kube, release).values()) == {_digest(rotated)} != {_digest(data)}
    finally:
        _uninstall(tools, kube, release)


@pytest.mark.parametrize("level", ["restricted", "baseline", "privileged"])
def test_a_namespace_whose_pod_security_rejects_the_collector_is_refused(tools: tuple[Path, Path], kube: LocalKube,
                                                                         installable_chart: Path, level: str) -> None:
    release = f"kw-psa-{level}"
    kube.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": release, "labels": {"pod-security.kubernetes.io/enforce": level}}})
    kube.ensure_service_account(release, "default")
    done = _install(tools, kube, installable_chart, "install", release)
    try:
        if level == "privileged":
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode != 0
            assert f'namespace {release} enforces Pod Security level "{level}"' in done.stderr
            assert "pod-security.kubernetes.io/enforce=privileged" in done.stderr
            unchecked = _install(tools, kube, installable_chart, "install", release, "--set", "collector.podSecurityCheck=false")
            assert unchecked.returncode == 0, unchecked.stderr
            without = _install(tools, kube, installable_chart, "upgrade", release, "--set", "collector.enabled=false")
            assert without.returncode == 0, without.stderr  # no collector, nothing to refuse
    finally:
        _uninstall(tools, kube, release)
