"""The chart's environment is what each component accepts: every variable a rendered container sets is a setting.

The components reject a variable with their prefix that names no setting (``ingest.config.build_settings``),
so a template typo would stop the pod at start in a cluster; here it fails the test instead. Rendered with the
real helm (``deploy.runtime.helmtools.ensure_helm``) for every file in ``ci/`` (``ci/defaults.yaml``: the defaults
plus the one value they leave out). Then what the review asked of the chart, each rendered offline: fail-closed data
planes are named, the NetworkPolicies' DNS and host-network peers, the required data-plane CIDRs, the keys
checksum, the Pod Security note.
"""

from __future__ import annotations

import copy
import hashlib
import json
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
VALUES = sorted((CHART / "ci").glob("*.yaml"))
DEFAULTS = CHART / "ci" / "defaults.yaml"
SETTINGS: dict[str, Any] = {"collector": CollectorSettings, "worker": WorkerSettings, "shim": ShimSettings}


def _helm() -> str:
    from deploy.runtime.helmtools import ensure_helm

    return str(ensure_helm())


def helm(*args: str, values: Path | None = DEFAULTS, sets: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """``helm <args> kw CHART -n kubeward [-f values] [--set ...]`` without a cluster."""
    cmd = [_helm(), *args, "kw", str(CHART), "--namespace", "kubeward"] + (["-f", str(values)] if values else [])
    for assignment in sets:
        cmd += ["--set", assignment]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def render(values: Path | None, *sets: str) -> list[dict[str, Any]]:
    done = helm("template", values=values, sets=sets)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refused(values: Path | None, *sets: str) -> str:
    """helm's error for a render that must fail."""
    done = helm("template", values=values, sets=sets)
    assert done.returncode != 0, "rendered, expected a refusal"
    return done.stderr


def notes(values: Path | None, *sets: str) -> str:
    """NOTES.txt as ``helm install --dry-run=client`` prints it (no cluster)."""
    done = helm("install", "--dry-run=client", values=values, sets=sets)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\nNOTES:\n", 1)[1]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


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


@pytest.mark.parametrize("values", VALUES, ids=lambda v: v.stem)
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


# -------------------------------------------------------------------------- fail-closed data planes


def test_ingress_nginx_and_traefik_say_that_failure_mode_allow_is_not_theirs() -> None:
    nginx = notes(CHART / "ci" / "ingress-nginx.yaml")  # authTimeout 1s
    assert "WARNING: policy.failureMode=allow is not honoured by ingress-nginx" in nginx
    assert "times out after 1s" in nginx
    bare = notes(DEFAULTS, "shim.adapter=nginx", "integrations.ingressNginx.enabled=true")
    assert "60 s to connect, 60 s to read" in bare and "integrations.ingressNginx.authTimeout" in bare
    traefik = notes(DEFAULTS, "shim.adapter=traefik", "integrations.traefik.enabled=true", "integrations.traefik.namespaces={shop}")
    assert "WARNING: policy.failureMode=allow is not honoured by Traefik" in traefik and "30 s" in traefik
    for text in (notes(DEFAULTS), notes(CHART / "ci" / "ingress-nginx.yaml", "policy.failureMode=deny"),
                 notes(CHART / "ci" / "integrations.yaml", "integrations.traefik.enabled=false", "shim.adapter=envoy")):
        assert "WARNING" not in text  # Istio and Envoy Gateway fail open themselves (failOpen)
    assert "failOpen: true" in notes(CHART / "ci" / "integrations.yaml")


def test_ingress_nginx_auth_timeout_is_an_auth_snippet_only_when_asked() -> None:
    ingress = find(render(CHART / "ci" / "ingress-nginx.yaml"), "Ingress", "orders")[0]
    snippet = ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-snippet"]
    assert snippet.split("\n")[:3] == ["proxy_connect_timeout 1s;", "proxy_send_timeout 1s;", "proxy_read_timeout 1s;"]
    plain = find(render(CHART / "ci" / "ingress-nginx.yaml", "integrations.ingressNginx.authTimeout="), "Ingress", "orders")[0]
    assert "nginx.ingress.kubernetes.io/auth-snippet" not in plain["metadata"]["annotations"]
    assert "authTimeout" in refused(CHART / "ci" / "ingress-nginx.yaml", "integrations.ingressNginx.authTimeout=1 s")


# -------------------------------------------------------------------------- NetworkPolicies


def _policy(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "NetworkPolicy", f"kw-kubeward-{component}")[0]["spec"]
    return spec


def _peers_on(spec: dict[str, Any], port: int) -> list[dict[str, Any]]:
    return [peer for rule in spec["ingress"] if any(p["port"] == port for p in rule["ports"]) for peer in rule["from"]]


def test_dns_egress_defaults_to_kube_dns_and_follows_the_values() -> None:
    default = _policy(render(DEFAULTS), "shim")["egress"][0]
    assert default["to"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                              "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert {p["port"] for p in default["ports"]} == {53}
    docs = render(DEFAULTS, "networkPolicy.dns.namespaceLabels.kubernetes\\.io/metadata\\.name=dns",
                  "networkPolicy.dns.podLabels.k8s-app=null", "networkPolicy.dns.podLabels.app=coredns",
                  "networkPolicy.dns.cidrs={169.254.20.10/32}")
    for component in ("collector", "worker", "shim"):
        assert _policy(docs, component)["egress"][0]["to"] == [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}}, "podSelector": {"matchLabels": {"app": "coredns"}}},
            {"ipBlock": {"cidr": "169.254.20.10/32"}}]


def test_host_network_data_planes_reach_the_shim_and_collector_ports_by_cidr() -> None:
    docs = render(CHART / "ci" / "integrations.yaml")  # dataPlaneCidrs: the nodes
    node = {"ipBlock": {"cidr": "192.168.10.0/24"}}
    shim, collector = _policy(docs, "shim"), _policy(docs, "collector")
    for port in (9191, 9193):
        assert node in _peers_on(shim, port)
    for port in (9301, 9302, 4318):
        assert node in _peers_on(collector, port)
    assert node not in _peers_on(shim, 9192) and node not in _peers_on(collector, 9466)  # metrics: monitoring only
    assert all("ipBlock" not in peer for rule in _policy(docs, "worker")["ingress"] for peer in rule["from"])
    assert all("ipBlock" not in peer for peer in _peers_on(_policy(render(DEFAULTS), "shim"), 9191))


# -------------------------------------------------------------------------- trusted data planes


def _env(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return {v["name"]: v.get("value") for c, container in containers(docs) if c == component for v in container["env"]}


def test_trusted_data_planes_have_no_default_and_the_shim_refuses_to_render_without() -> None:
    error = refused(None)
    assert "identity.trustedDataPlanes is required with the shim" in error
    assert "pattern" in refused(None, "identity.trustedDataPlanes={10.0.0.0}")  # the schema wants CIDRs
    env = _env(render(DEFAULTS), "shim")
    assert json.loads(env["KUBEWARD_SHIM_IDENTITY__TRUSTED_DATA_PLANES"]) == ["10.244.0.0/16"]
    without_shim = render(None, "shim.enabled=false")  # the collector ignores the setting: nothing to require
    assert "KUBEWARD_COLLECTOR_IDENTITY__TRUSTED_DATA_PLANES" not in _env(without_shim, "collector")
    assert not find(without_shim, "Deployment", "kw-kubeward-shim")


# -------------------------------------------------------------------------- keys


def _checksums(docs: list[dict[str, Any]]) -> dict[str, str | None]:
    return {d["metadata"]["labels"]["app.kubernetes.io/component"]: (d["spec"]["template"]["metadata"].get("annotations") or {}).get("checksum/keys")
            for d in docs if d["kind"] in ("Deployment", "DaemonSet")}


def _keys_digest(secret: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(dict(sorted(secret["data"].items())), separators=(",", ":")).encode()).hexdigest()


def test_pods_carry_the_checksum_of_the_generated_keys_they_read() -> None:
    docs = render(DEFAULTS)
    secret = find(docs, "Secret", "kw-kubeward-keys")[0]
    assert sorted(secret["data"]) == ["admin-token", "object-id-key", "principal-key", "verdict-key"]
    assert _checksums(docs) == dict.fromkeys(("collector", "worker", "shim"), _keys_digest(secret))
    # Without a cluster every render draws new keys (the GitOps hazard NOTES.txt names): the pods roll with them.
    again = render(DEFAULTS)
    assert find(again, "Secret", "kw-kubeward-keys")[0]["data"] != secret["data"]
    assert set(_checksums(again).values()) == {_keys_digest(find(again, "Secret", "kw-kubeward-keys")[0])}


def test_an_existing_secret_unread_gives_no_checksum_and_the_notes_name_the_gitops_path() -> None:
    docs = render(CHART / "ci" / "kafka-sasl.yaml")  # keys.existingSecret; helm cannot read it offline
    assert not find(docs, "Secret") and _checksums(docs) == dict.fromkeys(("collector", "worker", "shim"))
    assert "for GitOps create\nthe Secret yourself and set keys.existingSecret" in notes(DEFAULTS)
    assert "rollout restart" in notes(CHART / "ci" / "kafka-sasl.yaml")


# -------------------------------------------------------------------------- Pod Security


def test_the_notes_say_the_collector_needs_a_privileged_namespace() -> None:
    text = notes(DEFAULTS)
    assert "kubectl label namespace kubeward pod-security.kubernetes.io/enforce=privileged" in text
    assert "pod-security" not in notes(DEFAULTS, "collector.enabled=false")


def test_traefik_chains_name_the_destination_and_drop_the_clients() -> None:
    docs = render(CHART / "ci" / "integrations.yaml")
    middlewares = {(m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"] for m in find(docs, "Middleware")}
    prepare = middlewares[("billing", "kubeward-prepare-invoices")]["headers"]["customRequestHeaders"]
    assert prepare == {"X-Kubeward-Destination": "billing/invoices", "X-Request-Id": "", "X-Kubeward-Request-Id": ""}
    assert middlewares[("billing", "kubeward-svc-invoices")]["chain"]["middlewares"] == [{"name": "kubeward-prepare-invoices"}, {"name": "kubeward-auth"}]
    # a namespace-wide chain removes a client's destination before the ForwardAuth that forwards the header
    assert middlewares[("edge", "kubeward")]["chain"]["middlewares"] == [{"name": "kubeward-strip"}, {"name": "kubeward-auth"}]
    assert middlewares[("edge", "kubeward-strip")]["headers"]["customRequestHeaders"]["X-Kubeward-Destination"] == ""
    assert "X-Kubeward-Destination" in middlewares[("shop", "kubeward-auth")]["forwardAuth"]["authRequestHeaders"]
    assert {ns for ns, name in middlewares if name == "kubeward-auth"} == {"shop", "edge", "billing"}


def test_envoy_gateway_sends_the_routes_backend_as_the_destination() -> None:
    policies = {p["metadata"]["name"]: p["spec"]["extAuth"] for p in find(render(CHART / "ci" / "integrations.yaml"), "SecurityPolicy")}
    assert policies["kubeward-orders"]["contextExtensions"] == [{"name": "service", "type": "Value", "value": "shop/orders"}]
    assert "contextExtensions" not in policies["kubeward-public"]  # a Gateway-wide policy names no one backend
    assert "service" in refused(CHART / "ci" / "integrations.yaml", "integrations.envoyGateway.targets[0].service=Not_A_Name")


def test_the_charts_traefik_middlewares_are_the_shipped_ones_run_against_real_traefik() -> None:
    """tests/integration/test_dataplanes.py runs deploy/dataplanes/traefik/middleware.yaml in a real Traefik; the
    chart's objects must say the same (but the address, and the destination each target names)."""
    shipped = yaml.safe_load((CHART.parents[1] / "dataplanes" / "traefik" / "middleware.yaml").read_text())["http"]["middlewares"]
    middlewares = {(m["metadata"]["namespace"], m["metadata"]["name"]): m["spec"] for m in find(render(CHART / "ci" / "integrations.yaml"), "Middleware")}
    auth = dict(middlewares[("shop", "kubeward-auth")]["forwardAuth"])
    assert auth.pop("address").startswith("http://kw-kubeward-shim.kubeward.svc.cluster.local:")
    assert auth == {k: v for k, v in shipped["kubeward"]["forwardAuth"].items() if k != "address"}
    expected = copy.deepcopy(shipped["kubeward-prepare"])
    expected["headers"]["customRequestHeaders"]["X-Kubeward-Destination"] = "shop/orders"
    assert middlewares[("shop", "kubeward-prepare-orders")] == expected


def test_the_allow_list_is_mounted_from_its_config_map_only_when_named(tmp_path: Path) -> None:
    docs = render(CHART / "ci" / "integrations.yaml")
    shim = find(docs, "DaemonSet", "kw-kubeward-shim")[0]["spec"]["template"]["spec"]
    env = {v["name"]: v.get("value") for v in shim["containers"][0]["env"]}
    assert env["KUBEWARD_SHIM_ALLOW_LIST__FILE"] == "/etc/kubeward/allowlist/allowlist.yaml" and env["KUBEWARD_SHIM_ALLOW_LIST__RELOAD_S"] == "30"
    assert {"name": "allowlist", "configMap": {"name": "kubeward-allowlist"}} in shim["volumes"]
    assert {"name": "allowlist", "mountPath": "/etc/kubeward/allowlist", "readOnly": True} in shim["containers"][0]["volumeMounts"]
    plain = find(render(DEFAULTS), "Deployment", "kw-kubeward-shim")[0]["spec"]["template"]["spec"]
    assert not any(v["name"].startswith("KUBEWARD_SHIM_ALLOW_LIST") for v in plain["containers"][0]["env"])
    assert all(v["name"] != "allowlist" for v in plain["volumes"])
    assert "allowList" in refused(DEFAULTS, "shim.allowList.configMapp=x")


def test_istio_targets_with_a_service_name_the_destination_after_stripping_the_clients() -> None:
    filters = {f["metadata"]["name"]: f for f in find(render(CHART / "ci" / "integrations.yaml"), "EnvoyFilter")}
    named = filters["kubeward-strip-headers-0"]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["mutations"]["request_mutations"]
    assert named[0] == {"remove_on_match": {"key_matcher": {"prefix": "x-kubeward-"}}}
    assert named[1]["append"]["header"] == {"key": "x-kubeward-destination", "value": "shop/orders"}
    assert named[1]["append"]["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD"
    unnamed = filters["kubeward-strip-headers-1"]["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["mutations"]["request_mutations"]
    assert len(unnamed) == 1  # a namespace-wide target names no one service
    assert "selector" in refused(CHART / "ci" / "integrations.yaml", "integrations.istio.targets[1].service=payments")


def test_target_names_cannot_clash_or_stretch_one_service_over_a_gateway() -> None:
    docs = render(CHART / "ci" / "integrations.yaml", "integrations.traefik.targets[0].service=auth")
    names = [(m["metadata"]["namespace"], m["metadata"]["name"]) for m in find(docs, "Middleware")]
    assert len(names) == len(set(names)) and ("shop", "kubeward-svc-auth") in names
    assert refused(CHART / "ci" / "integrations.yaml", "integrations.envoyGateway.targets[1].service=public")


def test_the_charts_istio_filter_is_the_shipped_one() -> None:
    """The chart's per-target EnvoyFilter makes the same patches as deploy/dataplanes/istio/envoyfilter-strip.yaml
    (strip, destination, the sidecar appending its peer to x-forwarded-for), but its names and selector."""
    shipped = yaml.safe_load((CHART.parents[1] / "dataplanes" / "istio" / "envoyfilter-strip.yaml").read_text())["spec"]
    [chart] = [f["spec"] for f in find(render(CHART / "ci" / "integrations.yaml"), "EnvoyFilter") if f["metadata"]["name"] == "kubeward-strip-headers-0"]
    assert chart == shipped  # both select app: orders in shop and name shop/orders
