"""helm and the CRDs the chart's custom resources need, from the Go module proxy, once, into the user's cache;
and the chart check that ``make test`` runs: lint, render, validate every manifest, report.

Contract
--------
* :func:`ensure_helm` builds ``helm`` v4 (``go install helm.sh/helm/v4/cmd/helm@<pin>``) into
  ``$XDG_CACHE_HOME/kubeward/helm/v<pin>/bin/helm`` unless it is there, and returns its path. Like
  :mod:`deploy.runtime.kubebuild`: a file lock so two callers never build at once, the binary built
  under a temporary name and renamed, progress on stderr, :class:`HelmError` (a :class:`KubeError`)
  naming what to install when ``go`` is missing. About 80 s on 2 cores.
* :func:`ensure_crds` takes the CustomResourceDefinitions of the custom resources the chart renders
  (Istio, Envoy Gateway, Traefik, prometheus-operator, Gateway API) from those projects' own Go modules at pinned
  versions (:data:`CRD_SOURCES`; ``go mod download``, no other download), writes one YAML file per CRD
  plus ``sources.json`` (module, version, path, sha256) under ``$XDG_CACHE_HOME/kubeward/crds/<pins>``
  and returns that dir. :func:`load_crds` reads it back.
* :func:`validate_chart` runs ``helm lint --strict`` and ``helm template`` per values file (the chart's
  ``ci/*.yaml``, as chart-testing does: the defaults alone leave out a value the chart requires) and
  Kubernetes version, validates every rendered object with :mod:`deploy.runtime.manifestcheck`
  (strict core schemas from ``kubernetes-validate``, strict CRD schemas for custom resources),
  collects every error and writes the report (``build/helm-validate.json`` by default).

Errors: :class:`HelmError` (cannot build helm, fetch a CRD, or run helm at all). Lint and render
failures of the chart are not raised: they are errors in the report.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from deploy.runtime.kubebuild import INSTALL_HINT, KubeError, _locked, _run_logged
from deploy.runtime.manifestcheck import (
    KUBERNETES_VERSIONS,
    CoreSchemas,
    CrdSchemas,
    ManifestError,
    load_documents,
    validate_objects,
)

__all__ = [
    "CRD_SOURCES", "DEFAULT_VALUES", "HELM_VERSION", "KUBERNETES_VERSIONS", "CrdSource", "HelmError",
    "api_versions", "crd_cache_dir", "default_values_files", "ensure_crds", "ensure_helm", "helm_cache_dir",
    "helm_version", "lint", "load_crds", "main", "render", "run_helm",
    "validate_chart",
]

HELM_VERSION = "4.3.2"
HELM_PACKAGE = "helm.sh/helm/v4/cmd/helm"
DEFAULT_VALUES = "values.yaml"
RELEASE = "kubeward"
NAMESPACE = "kubeward"


class HelmError(KubeError):
    """helm cannot be built or run, or a CRD cannot be fetched from its module."""


@dataclass(frozen=True)
class CrdSource:
    """CRDs taken from one file of one Go module at a pinned version (``names``: the CRDs' metadata.name)."""

    module: str
    version: str
    path: str
    names: tuple[str, ...]


# Newest versions the module proxy serves here (prometheus-operator's root module: v0.85.0 is the newest
# served; its pkg/apis/monitoring submodule, which carries no CRD YAML, goes further).
CRD_SOURCES: tuple[CrdSource, ...] = (
    CrdSource("istio.io/api", "v1.32.0", "kubernetes/customresourcedefinitions.gen.yaml",
              ("authorizationpolicies.security.istio.io", "envoyfilters.networking.istio.io")),
    CrdSource("github.com/envoyproxy/gateway", "v1.9.1",
              "charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml",
              ("securitypolicies.gateway.envoyproxy.io",)),
    CrdSource("github.com/traefik/traefik/v3", "v3.7.13",
              "docs/content/reference/dynamic-configuration/traefik.io_middlewares.yaml", ("middlewares.traefik.io",)),
    CrdSource("github.com/prometheus-operator/prometheus-operator", "v0.85.0",
              "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml",
              ("servicemonitors.monitoring.coreos.com",)),
    # Gateway API (standard channel): the ReferenceGrant that lets Envoy Gateway reach the shim's Service.
    # v1.7.0 is served too but needs a newer Go than the machine's 1.26.
    CrdSource("sigs.k8s.io/gateway-api", "v1.6.3", "config/crd/standard/gateway.networking.k8s.io_referencegrants.yaml",
              ("referencegrants.gateway.networking.k8s.io",)),
    # Cilium's L7 network policy, which ``kubeward policy suggest`` writes (v1.15.6, v1.15.19 and v1.20.2 are served).
    CrdSource("github.com/cilium/cilium", "v1.20.2", "pkg/k8s/apis/cilium.io/client/crds/v2/ciliumnetworkpolicies.yaml",
              ("ciliumnetworkpolicies.cilium.io",)),
)


# -------------------------------------------------------------------------- cache and building


def _cache_base() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "kubeward"


def helm_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kubeward/helm/v<HELM_VERSION>`` (``~/.cache`` when the variable is unset)."""
    return _cache_base() / "helm" / f"v{HELM_VERSION}"


def crd_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kubeward/crds/<hash of the pins>``: a new pin lands in a new dir."""
    pins = json.dumps([[s.module, s.version, s.path, list(s.names)] for s in CRD_SOURCES])
    return _cache_base() / "crds" / hashlib.sha256(pins.encode()).hexdigest()[:12]


def _say(message: str) -> None:
    print(f"[kubeward helm] {message}", file=sys.stderr, flush=True)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise HelmError(f"`go` not found on PATH; building helm and fetching CRDs needs it: {INSTALL_HINT}")
    return go


def ensure_helm(root: Path | None = None) -> Path:
    """Build helm v:data:`HELM_VERSION` into ``<root>/bin/helm`` unless it exists; return the binary's path."""
    root = helm_cache_dir() if root is None else Path(root)
    binary = root / "bin" / "helm"
    if binary.is_file():
        return binary
    go = _go()
    with _locked(root / ".build.lock"):
        if binary.is_file():
            return binary
        staging = root / "build" / "bin"  # go install writes here; the rename below is the commit
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        binary.parent.mkdir(parents=True, exist_ok=True)
        log = root / "build" / "helm.log"
        log.write_text("")
        _say(f"building helm from {HELM_PACKAGE}@v{HELM_VERSION} (log: {log})")
        stamp = f"-X helm.sh/helm/v4/internal/version.version=v{HELM_VERSION}"  # as helm's Makefile does
        env_cmd = ["env", f"GOBIN={staging}", go, "install", "-ldflags", stamp, f"{HELM_PACKAGE}@v{HELM_VERSION}"]
        _run_logged(env_cmd, root / "build", log, "helm: go install")
        (staging / "helm").rename(binary)
    return binary


def _module_dir(go: str, module: str, version: str, cwd: Path) -> Path:
    done = subprocess.run([go, "mod", "download", "-json", f"{module}@{version}"], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    info: dict[str, Any] = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "Dir" not in info:
        raise HelmError(f"go mod download {module}@{version} failed: {info.get('Error') or done.stderr.strip()}")
    return Path(info["Dir"])


def _extract(source: CrdSource, text: str) -> dict[str, dict[str, Any]]:
    found = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(text)
             if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"}
    missing = [name for name in source.names if name not in found]
    if missing:
        raise HelmError(f"{source.module}@{source.version}/{source.path} has no CRD named {missing}")
    return {name: found[name] for name in source.names}


def ensure_crds(root: Path | None = None) -> Path:
    """Fetch the pinned CRDs (:data:`CRD_SOURCES`) into ``root`` (default :func:`crd_cache_dir`) unless there."""
    root = crd_cache_dir() if root is None else Path(root)
    if (root / "sources.json").is_file():
        return root
    go = _go()
    with _locked(root / ".fetch.lock"):
        if (root / "sources.json").is_file():
            return root
        sources: dict[str, dict[str, str]] = {}
        for source in CRD_SOURCES:
            _say(f"fetching CRDs {', '.join(source.names)} from {source.module}@{source.version}")
            raw = (_module_dir(go, source.module, source.version, root) / source.path).read_bytes()
            for name, crd in _extract(source, raw.decode()).items():
                (root / f"{name}.yaml").write_text(yaml.safe_dump(crd, sort_keys=False))
                sources[name] = {"module": source.module, "version": source.version, "path": source.path,
                                 "sha256": hashlib.sha256(raw).hexdigest()}
        partial = root / "sources.json.partial"  # written last: its presence means every CRD is there
        partial.write_text(json.dumps(sources, indent=2) + "\n")
        partial.rename(root / "sources.json")
    return root


def load_crds(root: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """The CRD objects in ``root`` and its ``sources.json`` (name -> module, version, path, sha256)."""
    sources: dict[str, dict[str, str]] = json.loads((root / "sources.json").read_text())
    return [yaml.safe_load((root / f"{name}.yaml").read_text()) for name in sources], sources


# -------------------------------------------------------------------------- running helm


def run_helm(helm: Path, args: list[str], timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    """Run ``helm`` with ``args`` and its own empty config, cache and data dirs (no user repos or plugins leak in)."""
    with tempfile.TemporaryDirectory(prefix="kubeward-helm-") as home:
        env = {**os.environ, **{name: str(Path(home) / name.lower())
                                for name in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")}}
        try:
            return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=timeout, env=env)
        except OSError as exc:
            raise HelmError(f"cannot run {helm}: {exc}") from exc


def _values_args(chart: Path, values: str) -> list[str]:
    return [] if values == DEFAULT_VALUES else ["-f", str(chart / values)]


def api_versions(crds: list[dict[str, Any]]) -> list[str]:
    """``group/version/Kind`` for each served CRD version: what ``.Capabilities.APIVersions.Has`` sees."""
    out = []
    for crd in crds:
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served", True):
                out += [f"{spec['group']}/{version['name']}", f"{spec['group']}/{version['name']}/{spec['names']['kind']}"]
    return out


def render(helm: Path, chart: Path, values: str, version: str, apis: list[str],
           release: str = RELEASE, namespace: str = NAMESPACE) -> tuple[str, str]:
    """``helm template`` of ``chart`` with ``values`` (a path inside the chart, or ``values.yaml``) for ``version``.

    ``apis`` are extra ``--api-versions`` (:func:`api_versions` of the CRDs). Returns (manifest text, error
    text); the error text is empty when helm succeeded.
    """
    args = ["template", release, str(chart), "--namespace", namespace, "--kube-version", version,
            *_values_args(chart, values)]
    for api in apis:
        args += ["--api-versions", api]
    done = run_helm(helm, args)
    return (done.stdout, "") if done.returncode == 0 else ("", done.stderr.strip() or done.stdout.strip())


def lint(helm: Path, chart: Path, values: str, version: str) -> list[str]:
    """``helm lint --strict``; the [ERROR]/[WARNING] lines (or the whole output when it failed without any)."""
    done = run_helm(helm, ["lint", "--strict", str(chart), "--namespace", NAMESPACE, "--kube-version", version,
                        *_values_args(chart, values)])
    lines = [line.strip() for line in (done.stdout + done.stderr).splitlines()]
    flagged = [line for line in lines if line.startswith(("[ERROR]", "[WARNING]"))]
    if done.returncode != 0 and not flagged:
        flagged = [line for line in lines if line] or [f"helm lint exited {done.returncode}"]
    return flagged


def helm_version(helm: Path) -> str:
    """What ``helm version --short`` prints (``v4.3.2``: ensure_helm stamps the version as helm's Makefile does)."""
    return run_helm(helm, ["version", "--short"]).stdout.strip()


# -------------------------------------------------------------------------- the chart check


def default_values_files(chart: Path) -> list[str]:
    """Every ``ci/*.yaml`` of the chart as paths relative to it; the defaults alone when there is none.

    As chart-testing does: a chart whose defaults leave out a required value (Kubeward's
    ``identity.trustedDataPlanes``) is checked through ci files that give it (``ci/defaults.yaml``: the
    defaults plus that value), and its tests check that the bare defaults fail naming it.
    """
    found = sorted(str(p.relative_to(chart)) for p in (chart / "ci").glob("*.yaml"))
    return found or [DEFAULT_VALUES]


def _check(helm: Path, chart: Path, values: str, version: str, schemas: CoreSchemas, crds: CrdSchemas,
           apis: list[str]) -> dict[str, Any]:
    started = time.monotonic()
    text, failure = render(helm, chart, values, version, apis)
    errors: list[ManifestError] = []
    objects: list[dict[str, Any]] = []
    if failure:
        errors.append(ManifestError(values, version, "<helm template>", "", failure[:2000]))
    else:
        objects, errors = load_documents(text, values, version)
        errors += validate_objects(objects, version, schemas, crds, values)
    return {"values": values, "version": version, "objects": len(objects),
            "seconds": round(time.monotonic() - started, 3), "errors": [e.as_dict() for e in errors]}


def validate_chart(chart_dir: Path | str, values_files: list[str] | None = None,
                   versions: tuple[str, ...] | list[str] = KUBERNETES_VERSIONS,
                   report: Path | str | None = Path("build/helm-validate.json"),
                   helm: Path | None = None, crd_dir: Path | None = None) -> dict[str, Any]:
    """Lint, render and validate ``chart_dir`` for each values file x Kubernetes version; write ``report``.

    ``values_files`` are paths relative to the chart (``values.yaml`` means the defaults alone, other
    files are given with ``-f``); default: :func:`default_values_files`. ``report=None`` writes nothing.
    Returns the report: ``{"helm", "kubernetes_versions", "crds", "lint", "checks", "errors"}``, where
    ``errors`` counts every lint message and manifest error.
    """
    chart = Path(chart_dir).resolve()
    helm = helm or ensure_helm()
    crd_objects, sources = load_crds(crd_dir or ensure_crds())
    crds = CrdSchemas(crd_objects)
    schemas = CoreSchemas()
    apis = api_versions(crd_objects)
    files = default_values_files(chart) if values_files is None else list(values_files)
    lints = [{"values": values, "errors": lint(helm, chart, values, versions[-1])} for values in files]
    checks = [_check(helm, chart, values, version, schemas, crds, apis)
              for values in files for version in versions]
    result: dict[str, Any] = {
        "helm": helm_version(helm), "chart": str(chart), "kubernetes_versions": list(versions),
        "crds": sources, "lint": lints, "checks": checks,
        "errors": sum(len(item["errors"]) for item in lints) + sum(len(c["errors"]) for c in checks),
    }
    if report is not None:
        path = Path(report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.runtime.helmtools [CHART] [REPORT]``: validate the chart, print a summary, exit 1 on errors."""
    args = sys.argv[1:] if argv is None else argv
    chart = Path(args[0]) if args else Path("deploy/helm/kubeward")
    result = validate_chart(chart, report=Path(args[1]) if len(args) > 1 else Path("build/helm-validate.json"))
    for check in result["checks"]:
        print(f"{check['values']:<40} {check['version']:<8} {check['objects']:>3} objects "
              f"{len(check['errors']):>3} errors {check['seconds']:.2f} s")
    for item in result["lint"] + [e for c in result["checks"] for e in c["errors"]]:
        print(json.dumps(item))
    print(f"{result['errors']} errors ({result['helm']})")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
