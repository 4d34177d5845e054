"""The chart's environment is what each component accepts: every variable a rendered container sets is a setting.

The components reject a variable with their prefix that names no setting (``ingest.config.build_settings``),
so a template typo would stop the pod at start in a cluster; here it fails the test instead. Rendered with the
real helm (``deploy.runtime.helmtools.ensure_helm``) for the default values and every file in ``ci/``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from enforcement.settings import ShimSettings
from ingest.collectors.settings import CollectorSettings
from ingest.config import build_settings
from streams.settings import WorkerSettings

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubeward"
VALUES = [None, *sorted((CHART / "ci").glob("*.yaml"))]
SETTINGS: dict[str, Any] = {"collector": CollectorSettings, "worker": WorkerSettings, "shim": ShimSettings}


def _helm() -> str:
    from deploy.runtime.helmtools import ensure_helm

    return str(ensure_helm())


def render(values: Path | None) -> list[dict[str, Any]]:
    cmd = [_helm(), "template", "kw", str(CHART), "--namespace", "kubeward"] + (["-f", str(values)] if values else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
            component = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield component, container


def environment(container: dict[str, Any], mounts: Path) -> dict[str, str]:
    """The container's variables, secrets and the downward API filled with stand-ins, mounted files under ``mounts``."""
    env = {}
    for var in container.get("env", []):
        if "value" in var and str(var["value"]).startswith("/etc/kubeward/"):
            assert any(str(var["value"]).startswith(m["mountPath"] + "/") for m in container["volumeMounts"]), var
            stand_in = mounts / str(var["value"]).lstrip("/")
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_text("stand-in\n")
            env[var["name"]] = str(stand_in)
        elif "value" in var:
            env[var["name"]] = str(var["value"])
        elif "secretKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = "s3cr3t-" + var["valueFrom"]["secretKeyRef"]["key"] + "-0123456789abcdef0123456789"
        else:
            env[var["name"]] = "node-1"
    return env


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.stem if v else "default")
def test_every_rendered_variable_is_a_setting_the_component_accepts(values: Path | None, monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    seen = set()
    for component, container in containers(render(values)):
        assert container["args"][0] in ("collect", "worker", "shim"), container["args"]
        with monkeypatch.context() as m:
            for name in [n for n in __import__("os").environ if n.startswith("KUBEWARD_")]:
                m.delenv(name)
            for name, value in environment(container, tmp_path).items():
                m.setenv(name, value)
            settings = build_settings(SETTINGS[component])
        seen.add(component)
        if component == "shim":
            assert settings.host == "0.0.0.0" and settings.admin_token is not None
            assert settings.verdict_key.get_secret_value().startswith("s3cr3t-verdict-key")
        if component == "worker":
            assert settings.web_host == "0.0.0.0"
    assert seen == {"collector", "worker", "shim"}


def test_a_sasl_cluster_gives_each_component_its_own_principal(monkeypatch: pytest.MonkeyPatch) -> None:
    users = {}
    for component, container in containers(render(CHART / "ci" / "kafka-sasl.yaml")):
        refs = {v["name"]: v["valueFrom"]["secretKeyRef"]["name"] for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})}
        users[component] = next(secret for name, secret in refs.items() if name.endswith("KAFKA__USERNAME"))
    assert users == {"collector": "kubeward-kafka-collector", "worker": "kubeward-kafka-worker", "shim": "kubeward-kafka-shim"}
