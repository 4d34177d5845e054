"""``kubeward policy suggest`` against the real schemas and a real API server.

1. Every object suggested for several inputs (hand-made edges, a mapping file, IPv6 CIDRs, broadened paths, a
   simulated archive) validates strictly: NetworkPolicy against the Kubernetes 1.35-1.37 schemas, AuthorizationPolicy
   and CiliumNetworkPolicy against Istio's and Cilium's own CRDs (fetched from their Go modules by
   ``helmtools.ensure_crds``), as the chart is checked; and the check bites on a bad object of each kind.
2. etcd + kube-apiserver (``LocalKube``) with those two CRDs installed: the files ``suggest --out`` wrote are created
   as they are (with a default deny per namespace; the server also runs the CRDs' CEL rules), then ``suggest --kubeconfig`` reads the cluster back and
   finds nothing to change; a looser suggestion, an edited object and someone else's policy show up in the diff.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.cli import main
from deploy.policyedges import EdgeFold
from deploy.policymapping import mapping_from_dict
from deploy.policysuggest import judge, namespaces_seen, render, validate
from deploy.runtime import helmtools
from deploy.runtime.kube import LocalKube, ensure_binaries
from tests.conftest import run_cli
from tests.deploy.test_policysuggest import SHOP, edge

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CRDS = ("authorizationpolicies.security.istio.io", "ciliumnetworkpolicies.cilium.io")
PLURAL = {"AuthorizationPolicy": "authorizationpolicies", "CiliumNetworkPolicy": "ciliumnetworkpolicies", "NetworkPolicy": "networkpolicies"}


@pytest.fixture(scope="module")
def crd_objects(pytestconfig: pytest.Config) -> list[dict[str, Any]]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        crds = helmtools.load_crds(helmtools.ensure_crds())[0]
    found = [c for c in crds if c["metadata"]["name"] in CRDS]
    assert sorted(c["metadata"]["name"] for c in found) == sorted(CRDS)
    return found


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 simulated seconds (seed 11, attacks after 15 s) as Parquet."""
    out = tmp_path_factory.mktemp("suggest-kube") / "sim.parquet"
    assert main(["simulate", "--seconds", "40", "--rate", "60", "--users", "300", "--warmup", "15", "--seed", "11", "--out", str(out)]) == 0
    return out


def archive_objects(archive: Path, **thresholds: int) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    from deploy.policysuggest import Thresholds

    fold = EdgeFold()
    fold.update(pq.read_table(archive))
    return render(judge(fold.edges(), Thresholds(**thresholds)))


MAPPING = mapping_from_dict({"trust_domain": "prod.example", "default_port": 8080,
                             "workloads": {"shop/orders": {"labels": {"app": "orders", "tier": "api"}, "ports": [8443, "grpc"]},
                                           "shop/web": {"service_account": "web-sa"}}})


@pytest.mark.parametrize("case", ["shop", "mapping", "ipv6-and-broadened", "archive", "archive-loose"])
def test_every_suggested_object_validates_against_kubernetes_and_the_crds(case: str, crd_objects: list[dict[str, Any]], archive: Path) -> None:
    if case == "shop":
        objects = render(judge(SHOP), deny_namespaces=namespaces_seen(judge(SHOP)))
    elif case == "mapping":
        objects = render(judge(SHOP), MAPPING)
    elif case == "ipv6-and-broadened":
        objects = render(judge([edge("cidr:2001:db8::/64", addresses=3), edge("shop/web", template="/calls/{id}.json"),
                                edge("shop/web", "a.b-c", "DELETE", "/v1/{name}:cancel", ports=(9000,))]))
    else:
        objects = archive_objects(archive, **({"min_calls": 1, "min_callers": 1} if case == "archive-loose" else {}))
    assert {o["kind"] for o in objects} == {"AuthorizationPolicy", "CiliumNetworkPolicy", "NetworkPolicy"}
    assert validate(objects, crd_objects) == []


def test_the_validation_bites_on_each_kind(crd_objects: list[dict[str, Any]]) -> None:
    objects = render(judge(SHOP[:1]))
    for obj in objects:
        bad = yaml.safe_load(yaml.safe_dump(obj))
        (bad["spec"]["rules"][0] if obj["kind"] == "AuthorizationPolicy" else bad["spec"]["ingress"][0])["kubewardUnknown"] = 1
        errors = validate([bad], crd_objects)
        assert errors and all("kubewardUnknown" in e.message for e in errors), (obj["kind"], errors)
    cilium = yaml.safe_load(yaml.safe_dump(next(o for o in objects if o["kind"] == "CiliumNetworkPolicy")))
    cilium["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] = "not a port!"
    assert validate([cilium], crd_objects)


# -------------------------------------------------------------------------- applied to a real API server


@pytest.fixture(scope="module")
def kube(pytestconfig: pytest.Config, crd_objects: list[dict[str, Any]]) -> Iterator[LocalKube]:
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        bin_dir = ensure_binaries()
    with LocalKube(namespaces=("shop", "identity", "payments", "ml", "data"), bin_dir=bin_dir) as running:
        for crd in crd_objects:
            running.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {k: v for k, v in crd.items() if k != "status"})
        for crd in crd_objects:
            running.wait_established(crd["metadata"]["name"])
        yield running


def _path(obj: dict[str, Any], name: bool = False) -> str:
    where = f"/apis/{obj['apiVersion']}/namespaces/{obj['metadata']['namespace']}/{PLURAL[obj['kind']]}"
    return f"{where}/{obj['metadata']['name']}" if name else where


def test_applied_suggestion_reads_back_unchanged_and_changes_show(kube: LocalKube, archive: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("policy", "suggest", "--parquet", str(archive), "--default-deny", "--out", str(tmp_path / "p"))  # validated: CRDs fetched
    assert code == 0, err
    objects = [yaml.safe_load(p.read_text()) for p in sorted((tmp_path / "p").glob("*policy-*.yaml"))]
    assert {o["kind"] for o in objects} == set(PLURAL) and len(objects) >= 15
    for obj in objects:
        kube.request("POST", _path(obj), obj)
    assert all(kube.request("GET", _path(o, name=True))["metadata"]["uid"] for o in objects)

    assert sum(o["metadata"]["name"] == "kubeward-default-deny" for o in objects) == 3 * 5
    code, out, err = run_cli("policy", "suggest", "--parquet", str(archive), "--default-deny", "--kubeconfig", str(kube.kubeconfig))
    assert code == 0 and out == "", (out, err)
    assert f"diff: {len(objects)} unchanged" in err, err

    # someone else's policy, an edited object of ours, and a looser suggestion
    theirs = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-all", "namespace": "shop"},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    kube.request("POST", _path(theirs), theirs)
    edited = next(o for o in objects if o["kind"] == "AuthorizationPolicy" and o["spec"].get("rules"))
    stored = kube.request("GET", _path(edited, name=True))
    stored["spec"]["rules"] = stored["spec"]["rules"][:1] + [{"to": [{"operation": {"methods": ["DELETE"], "paths": ["/x"]}}]}]
    kube.request("PUT", _path(edited, name=True), stored)
    code, out, err = run_cli("policy", "suggest", "--parquet", str(archive), "--default-deny", "--kubeconfig", str(kube.kubeconfig), "--format", "istio")
    assert code == 0, err
    assert f"# AuthorizationPolicy/{edited['metadata']['namespace']}/{edited['metadata']['name']}: changed" in out
    assert "-  - to:\n-    - operation:\n-        methods:\n-        - DELETE" in out
    assert "CiliumNetworkPolicy" not in out and "NetworkPolicy/shop/deny-all" not in out  # only the kinds asked for are compared
    code, out, err = run_cli("policy", "suggest", "--parquet", str(archive), "--kubeconfig", str(kube.kubeconfig), "--min-calls", "1", "--min-callers", "1")
    assert code == 0 and "changed (+" in out and "\n+" in out, (out, err)
    assert "# NetworkPolicy/shop/deny-all: deployed, not managed by kubeward, not suggested: left alone" in out
