"""``kubeward policy suggest``: edges folded from summaries, judged, rendered for Istio, Cilium, NetworkPolicy and the shim,
matched back against calls, diffed; the CLI on a simulated archive. No cluster, no network: the CRD-validated and
applied checks are in tests/integration/test_policysuggest_kube.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.cli import main
from deploy.policydiff import diff_objects
from deploy.policyedges import Edge, EdgeFold, EdgeStats, Endpoint, Peer, peer_of
from deploy.policymatch import Call, CiliumCheck, IstioCheck, NetworkPolicyCheck, calls_of, evaluate, sample_path
from deploy.policymapping import PolicyMapping, mapping_from_dict
from deploy.policysuggest import (
    Thresholds,
    default_deny,
    namespaces_seen,
    cilium_path,
    cilium_policies,
    istio_path,
    istio_policies,
    judge,
    network_policies,
    render,
    review_document,
    shim_allowlist,
)
from deploy.policysuggestcli import directory_objects, write_out
from deploy.runtime.manifestcheck import KUBERNETES_VERSIONS, CoreSchemas, validate_objects
from enforcement.decision import ALLOW, RequestView
from enforcement.shim import summarize
from ingest.errors import SettingsError
from tests.conftest import T0, SummaryFactory, TableOf, run_cli

ORDERS = ("shop", "orders")


def edge(caller: str, service: str = "orders", method: str = "GET", template: str = "/orders/{id}", *, namespace: str | None = "shop",
         ok: int = 10, own: bool = True, principals: int = 0, addresses: int = 0, ports: tuple[int, ...] = (), denied: int = 0,
         external: bool = False) -> Edge:
    """A hand-made edge: ``caller`` ``ns/name`` or ``cidr:...``/``address:...``."""
    kind, _, name = caller.rpartition(":") if caller.startswith(("cidr:", "address:")) else ("workload", "", caller)
    stats = EdgeStats(calls=ok + denied, ok_calls=ok, denied=denied, own_ok=ok if own and kind == "workload" else 0, first_seen=T0,
                      last_seen=T0 + 60, ports=set(ports), principals={f"user-{i}" for i in range(principals)},
                      addresses={f"198.51.100.{i}" for i in range(addresses)})
    return Edge(Peer(kind, name), Endpoint(namespace, service, method, template, external), stats)  # type: ignore[arg-type]


SHOP = [edge("shop/web"), edge("shop/web", template="/orders/{id}/items"), edge("shop/web", method="POST", template="/orders"),
        edge("shop/carts"), edge("shop/carts", template="/orders/{id}/items"), edge("shop/carts", method="POST", template="/orders"),
        edge("payments/checkout", template="/orders/export"), edge("cidr:198.51.100.0/24", "webhooks", "POST", "/psp", addresses=3),
        edge("ml/notebook", "profiles", template="/profiles", namespace="identity", own=False, principals=1),
        edge("ml/reporting", "warehouse", "POST", "/query", namespace="data", ok=2),
        edge("shop/mailer", "api.mail.example.com", "POST", "/send", namespace=None, external=True)]


# -------------------------------------------------------------------------- paths


@pytest.mark.parametrize(("template", "istio", "broadened", "cilium"), [
    ("/orders", "/orders", False, "/orders([?].*)?"),
    ("/orders/{id}", "/orders/{*}", False, "/orders/[^/?]+([?].*)?"),
    ("/orders/{id}/items/{item}", "/orders/{*}/items/{*}", False, "/orders/[^/?]+/items/[^/?]+([?].*)?"),
    ("/calls/{id}.json", "/calls/{*}", True, "/calls/[^/?]+\\.json([?].*)?"),
    ("/v1/{name}:cancel", "/v1/{*}", True, "/v1/[^/?]+:cancel([?].*)?"),
    ("/files/a*b", "/files/{*}", True, "/files/a\\*b([?].*)?"),
    ("/", "/", False, "/([?].*)?"),
])
def test_templates_become_istio_templates_and_cilium_regexes(template: str, istio: str, broadened: bool, cilium: str) -> None:
    assert istio_path(template) == (istio, broadened)
    assert cilium_path(template) == cilium


@pytest.mark.parametrize("template", ["/orders/{id}", "/orders/{id}/items", "/orders", "/calls/{id}.json", "/a.b/{x}/c+d"])
def test_a_templates_own_paths_match_and_its_siblings_do_not(template: str) -> None:
    """Through our matchers: the sample path (and with a query) of a template passes, a path one segment longer does not."""
    s = judge([edge("shop/web", template=template)])
    objects = render(s)
    istio, cilium = IstioCheck(objects), CiliumCheck(objects)
    path = sample_path(template)
    for probe, allowed in ((path, "allowed"), (path + "/more", "denied"), ("/other" + path, "denied")):
        call = Call("shop/web", "10.0.0.1", "shop", "orders", "GET", probe)
        assert istio(call) == allowed, probe
        assert cilium(call) == allowed, probe
    assert cilium(Call("shop/web", None, "shop", "orders", "GET", path + "?page=2")) == "allowed"
    assert istio(Call("shop/web", None, "shop", "orders", "POST", path)) == "denied"


# -------------------------------------------------------------------------- judging


def reasons(s: Any) -> dict[str, tuple[str, ...]]:
    return {f"{j.edge.peer} {j.edge.endpoint.method} {j.edge.endpoint.template}": j.reasons for j in s.judged}


def test_thresholds_hold_back_rare_single_actor_failed_and_uncovered_edges() -> None:
    s = judge(SHOP + [edge("shop/web", template="/admin", ok=0, denied=4), edge("address:10.0.0.9", addresses=1)])
    r = reasons(s)
    assert r["shop/web GET /orders/{id}"] == ()
    assert r["cidr:198.51.100.0/24 POST /psp"] == ()
    assert r["ml/notebook GET /profiles"] == ("1 actor(s) < min_callers 2",)
    assert r["ml/reporting POST /query"] == ("2 successful calls < min_calls 5",)
    assert r["shop/web GET /admin"] == ("no successful call (4 calls, 4 refused with 401/403)",)
    assert "egress" in r["shop/mailer POST /send"][0]
    assert "without a workload" in r["address:10.0.0.9 GET /orders/{id}"][0]
    assert len(s.allowed) == 8 and len(s.review) == 5


def test_a_workload_on_its_own_behalf_needs_no_second_actor_but_a_cohort_does() -> None:
    own, cohort = edge("shop/web", ok=5), edge("shop/web", template="/x", ok=50, own=False, principals=1)
    assert [j.allowed for j in judge([own, cohort]).judged] == [True, False]
    assert [j.allowed for j in judge([own, cohort], Thresholds(min_calls=6, min_callers=1)).judged] == [False, True]
    assert not judge([edge("cidr:203.0.113.0/24", addresses=5)], Thresholds(allow_external=False)).judged[0].allowed
    with pytest.raises(SettingsError, match="min_calls=0"):
        Thresholds(min_calls=0)


# -------------------------------------------------------------------------- objects


def by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def test_istio_groups_callers_with_the_same_operations_into_one_rule() -> None:
    objects = istio_policies(judge(SHOP))
    assert [o["metadata"]["name"] for o in objects] == ["kubeward-orders", "kubeward-webhooks"]
    orders = objects[0]
    assert orders["metadata"] == {"name": "kubeward-orders", "namespace": "shop", "labels": {"app.kubernetes.io/managed-by": "kubeward"}}
    assert orders["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "orders"}}
    assert orders["spec"]["action"] == "ALLOW"
    assert orders["spec"]["rules"] == [
        {"from": [{"source": {"principals": ["cluster.local/ns/payments/sa/checkout"]}}],
         "to": [{"operation": {"methods": ["GET"], "paths": ["/orders/export"]}}]},
        {"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/carts", "cluster.local/ns/shop/sa/web"]}}],
         "to": [{"operation": {"methods": ["GET"], "paths": ["/orders/{*}", "/orders/{*}/items"]}},
                {"operation": {"methods": ["POST"], "paths": ["/orders"]}}]},
    ]
    assert objects[1]["spec"]["rules"] == [{"from": [{"source": {"ipBlocks": ["198.51.100.0/24"]}}],
                                            "to": [{"operation": {"methods": ["POST"], "paths": ["/psp"]}}]}]


def test_cilium_names_endpoints_with_their_namespace_and_cidrs_apart() -> None:
    objects = cilium_policies(judge(SHOP + [edge("shop/web", "webhooks", "POST", "/psp")]))
    orders, hooks = by_name(objects, "CiliumNetworkPolicy", "kubeward-orders"), by_name(objects, "CiliumNetworkPolicy", "kubeward-webhooks")
    assert orders["spec"]["endpointSelector"] == {"matchLabels": {"app.kubernetes.io/name": "orders"}}
    first = orders["spec"]["ingress"][0]
    assert first["fromEndpoints"] == [{"matchLabels": {"app.kubernetes.io/name": "checkout", "k8s:io.kubernetes.pod.namespace": "payments"}}]
    assert first["toPorts"] == [{"ports": [{"port": "http", "protocol": "TCP"}],
                                 "rules": {"http": [{"method": "GET", "path": "/orders/export([?].*)?"}]}}]
    assert [sorted(r) for r in hooks["spec"]["ingress"]] == [["fromEndpoints", "toPorts"], ["fromCIDR", "toPorts"]]


def test_networkpolicy_takes_ports_from_traffic_then_the_mapping_then_the_named_default() -> None:
    seen = [edge("shop/web", ports=(8080,)), edge("shop/carts", ports=(8080, 9090))]
    assert network_policies(judge(seen))[0]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 9090}]
    mapping = mapping_from_dict({"workloads": {"shop/orders": {"ports": ["8443", "grpc"]}}})
    assert network_policies(judge(seen), mapping)[0]["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8443}, {"protocol": "TCP", "port": "grpc"}]
    policy = network_policies(judge([edge("shop/web"), edge("cidr:198.51.100.0/24", addresses=2)]))[0]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [{"from": [
        {"ipBlock": {"cidr": "198.51.100.0/24"}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web"}}, "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}},
    ], "ports": [{"protocol": "TCP", "port": "http"}]}]


def test_the_mapping_overrides_labels_service_accounts_and_trust_domain() -> None:
    mapping = mapping_from_dict({"trust_domain": "prod.example", "label": "app",
                                 "workloads": {"shop/web": {"labels": {"tier": "front", "app": "web-v2"}, "service_account": "web-sa"},
                                               "shop/orders": {"labels": {"app": "orders-api"}}}})
    s = judge([edge("shop/web")])
    istio = istio_policies(s, mapping)[0]
    assert istio["spec"]["selector"] == {"matchLabels": {"app": "orders-api"}}
    assert istio["spec"]["rules"][0]["from"] == [{"source": {"principals": ["prod.example/ns/shop/sa/web-sa"]}}]
    assert cilium_policies(s, mapping)[0]["spec"]["ingress"][0]["fromEndpoints"] == [
        {"matchLabels": {"tier": "front", "app": "web-v2", "k8s:io.kubernetes.pod.namespace": "shop"}}]
    assert IstioCheck(render(s, mapping), mapping)(Call("shop/web", None, "shop", "orders", "GET", "/orders/7")) == "allowed"


@pytest.mark.parametrize(("data", "message"), [
    ({"trust_domian": "x"}, "unknown keys \\['trust_domian'\\]"),
    ({"workloads": {"web": {}}}, "workloads.web: a workload is named namespace/name"),
    ({"workloads": {"shop/web": {"ports": [70000]}}}, "a port number is 1-65535"),
    ({"workloads": {"shop/web": {"ports": ["Not_A_Name"]}}}, "a port name is"),
    ({"workloads": {"shop/web": {"labels": {}}}}, "non-empty mapping"),
    ({"workloads": {"shop/web": {"sa": "x"}}}, "unknown keys \\['sa'\\]"),
    ({"default_port": True}, "a port is a number or a port name"),
    ([1, 2], "expected a mapping at the top"),
])
def test_a_bad_mapping_names_the_key_and_value(data: Any, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        mapping_from_dict(data)


def test_the_shim_allowlist_and_the_review_are_data() -> None:
    s = judge(SHOP)
    allow = shim_allowlist(s)
    assert allow["kind"] == "KubewardAllowList" and allow["thresholds"] == {"min_calls": 5, "min_callers": 2}
    assert {"destination": "shop/orders", "method": "GET", "path_template": "/orders/{id}", "callers": ["shop/carts", "shop/web"]} in allow["endpoints"]
    assert {"destination": "shop/webhooks", "method": "POST", "path_template": "/psp", "callers": ["cidr:198.51.100.0/24"]} in allow["endpoints"]
    review = review_document(judge(SHOP + [edge("shop/web", template="/calls/{id}.json")]))
    assert review["allowed_edges"] == 9 and len(review["review"]) == 3
    assert review["istio_paths_broadened"] == ["/calls/{id}.json"]
    assert yaml.safe_load(yaml.safe_dump(review)) == review


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_networkpolicy_validates_strictly(version: str) -> None:
    core = CoreSchemas()
    mapping = mapping_from_dict({"workloads": {"shop/orders": {"ports": [8080, "metrics"]}}})
    for edges in (SHOP, SHOP[:1], [edge("cidr:2001:db8::/64", addresses=3)], [edge("shop/web", ports=(8443,))]):
        objects = network_policies(judge(edges), mapping)
        assert objects and validate_objects(objects, version, core) == []


def test_default_deny_closes_the_namespaces_seen_to_what_no_edge_allows(core: CoreSchemas) -> None:
    s = judge(SHOP)
    assert namespaces_seen(s) == ["data", "identity", "ml", "payments", "shop"]
    plain, closed = render(s), render(s, deny_namespaces=["shop"])
    assert [o["metadata"]["name"] for o in closed[len(plain):]] == ["kubeward-default-deny"] * 3
    assert default_deny(["shop"], ["networkpolicy"])[0]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    stranger = Call("ml/recommender", "10.0.0.5", "shop", "ledger", "POST", "/adjust")
    friend = Call("shop/web", "10.0.0.6", "shop", "orders", "GET", "/orders/7")
    for check in (IstioCheck, CiliumCheck, NetworkPolicyCheck):
        assert (check(plain)(stranger), check(closed)(stranger), check(closed)(friend)) == ("allowed", "denied", "allowed"), check
    assert validate_objects(default_deny(["shop"], ["networkpolicy"]), KUBERNETES_VERSIONS[-1], core) == []


@pytest.fixture(scope="module")
def core() -> CoreSchemas:
    return CoreSchemas()


def test_output_is_deterministic_whatever_the_edge_order_and_shares_no_list() -> None:
    assert render(judge(SHOP)) == render(judge(list(reversed(SHOP))))
    assert "&id" not in yaml.safe_dump_all(render(judge(SHOP + [edge("ml/x", template="/y")]), mapping_from_dict({"default_port": 80})))


# -------------------------------------------------------------------------- folding summaries


def test_the_fold_names_peers_counts_actors_and_skips_repeats_and_refusals(summary_factory: SummaryFactory, table_of: TableOf) -> None:
    rows = [summary_factory(id=f"u{i}", principal=f"user-{i % 3}", time=T0 + i) for i in range(6)]
    rows += [summary_factory(id="u0", reporter="accesslog", principal="user-0", time=T0 + 7)]  # a second reporter's copy
    rows += [summary_factory(id=f"s{i}", principal=None, port=8080, time=T0 + i) for i in range(2)]
    rows += [summary_factory(id="d", principal=None, status=200, decision="deny", time=T0 + 9)]  # the shim refused it
    rows += [summary_factory(id=f"x{i}", workload=None, source_namespace=None, ip=f"203.0.113.{i}", source_external=True, principal=None,
                             time=T0 + i) for i in range(3)]
    fold = EdgeFold()
    fold.update(table_of(rows))
    edges = {str(e.peer): e.stats for e in fold.edges()}
    assert sorted(edges) == ["cidr:203.0.113.0/24", "shop/web"]
    web = edges["shop/web"]
    assert (web.calls, web.ok_calls, web.own_ok, len(web.principals), web.actors, web.ports) == (9, 8, 2, 3, 4, {8080})
    assert (edges["cidr:203.0.113.0/24"].actors, fold.rows) == (3, 12)


def test_peers_group_external_addresses_by_prefix() -> None:
    assert peer_of(None, "2001:db8::7", True) == Peer("cidr", "2001:db8::/64")
    assert peer_of(None, "198.51.100.7", True, prefix_v4=16) == Peer("cidr", "198.51.0.0/16")
    assert peer_of(None, "10.1.2.3", False) == Peer("address", "10.1.2.3")
    assert peer_of(None, None, False) is None and peer_of(None, "not-an-ip", True) is None


# -------------------------------------------------------------------------- diff


def test_the_diff_shows_added_changed_unchanged_removed_and_unmanaged_objects() -> None:
    old = render(judge(SHOP), formats=["networkpolicy"])
    new = render(judge(SHOP + [edge("ml/recommender")]), formats=["networkpolicy"])
    stale = {**old[0], "metadata": {**old[0]["metadata"], "name": "kubeward-gone"}}
    theirs = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny-all", "namespace": "shop"}, "spec": {"podSelector": {}}}
    server = {**old[1], "metadata": {**old[1]["metadata"], "uid": "x", "resourceVersion": "7", "managedFields": []}, "status": {}}
    diffs = {d.name: d for d in diff_objects(new, [old[0], server, stale, theirs])}
    assert {n: d.status for n, d in diffs.items()} == {"NetworkPolicy/shop/kubeward-orders": "changed", "NetworkPolicy/shop/kubeward-webhooks": "unchanged",
                                                      "NetworkPolicy/shop/kubeward-gone": "removed", "NetworkPolicy/shop/deny-all": "unmanaged"}
    changed = diffs["NetworkPolicy/shop/kubeward-orders"]
    assert "+          app.kubernetes.io/name: recommender" in changed.text and changed.removed_lines == 0
    assert changed.text.startswith("--- deployed/NetworkPolicy/shop/kubeward-orders\n+++ suggested/NetworkPolicy/shop/kubeward-orders")
    assert [d.status for d in diff_objects(new, new)] == ["unchanged", "unchanged"]


def test_deployed_objects_are_read_from_a_directory_of_yaml(tmp_path: Path) -> None:
    objects = render(judge(SHOP))
    write_out(tmp_path / "a", objects, {"review.yaml": {"kind": "KubewardPolicyReview"}})
    (tmp_path / "a" / "list.yml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "extra", "namespace": "x"}, "spec": {}}]}))
    found = directory_objects(tmp_path / "a")
    assert len(found) == len(objects) + 1
    assert all(d.status in ("unchanged", "unmanaged") for d in diff_objects(objects, found))
    with pytest.raises(SettingsError, match="not a directory"):
        directory_objects(tmp_path / "missing")


# -------------------------------------------------------------------------- the CLI on a simulated archive


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 simulated seconds (seed 3; attacks after 10 s) as Parquet."""
    out = tmp_path_factory.mktemp("suggest") / "sim.parquet"
    assert main(["simulate", "--seconds", "30", "--rate", "60", "--users", "300", "--warmup", "10", "--seed", "3", "--out", str(out)]) == 0
    return out


def test_cli_writes_one_file_per_object_and_diffs_clean_against_them(archive: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("policy", "suggest", "--parquet", str(archive), "--out", str(tmp_path / "p"), "--no-validate")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert "allowlist.yaml" in files and "review.yaml" in files
    kinds = {name.split("-")[0] for name in files}
    assert {"authorizationpolicy", "ciliumnetworkpolicy", "networkpolicy"} <= kinds
    assert " allowed, " in err and " objects, " in err
    code, out, err = run_cli("policy", "suggest", "--parquet", str(archive), "--deployed", str(tmp_path / "p"), "--no-validate")
    assert code == 0 and out == "" and "unchanged" in err and "changed" not in err.replace("unchanged", ""), (out, err)
    code, out, err = run_cli("policy", "suggest", "--parquet", str(archive), "--deployed", str(tmp_path / "p"), "--min-calls", "1",
                             "--min-callers", "1", "--no-validate")
    assert code == 0 and out.startswith("# ") and "changed (+" in out and "\n+" in out, (out, err)


def test_cli_prints_one_format_and_learns_only_the_window_given(archive: Path) -> None:
    code, out, _ = run_cli("policy", "suggest", "--parquet", str(archive), "--format", "istio", "--no-validate")
    docs = list(yaml.safe_load_all(out))
    assert code == 0 and {d["kind"] for d in docs} == {"AuthorizationPolicy", "KubewardPolicyReview"}
    code, out, _ = run_cli("policy", "suggest", "--parquet", str(archive), "--format", "shim", "--until", str(1.8e9 + 10), "--no-validate")
    allow = next(d for d in yaml.safe_load_all(out) if d["kind"] == "KubewardAllowList")
    assert code == 0 and allow["endpoints"]


def test_the_suggested_policy_refuses_no_benign_call_above_the_thresholds(archive: Path) -> None:
    """Learned and checked on the same archive: a benign call is refused only when its edge is under review."""
    import pyarrow.parquet as pq

    table = pq.read_table(archive)
    fold = EdgeFold()
    fold.update(table)
    s = judge(fold.edges())
    held = {(str(j.edge.peer), j.edge.endpoint.destination, j.edge.endpoint.method, sample_path(j.edge.endpoint.template)) for j in s.review}
    objects = render(s)
    checks = {"istio": IstioCheck(objects), "cilium": CiliumCheck(objects), "networkpolicy": NetworkPolicyCheck(objects)}
    for call in calls_of(table):
        peer = str(peer_of(call.workload, call.ip, call.external))
        for name, check in checks.items():
            if not call.malicious and check(call) == "denied":
                assert (peer, f"{call.namespace}/{call.service}", call.method, call.path) in held, (name, call)
    counts = evaluate(calls_of(table), objects)
    assert counts[("istio", "benign", False, "allowed")] > 1000


@pytest.mark.parametrize(("argv", "message"), [
    (["--min-calls", "0"], "min_calls=0"),
    (["--since", "yesterday"], "--since='yesterday'"),
    (["--mapping", "/nonexistent.yaml"], "--mapping='/nonexistent.yaml'"),
])
def test_cli_names_bad_input(archive: Path, argv: list[str], message: str) -> None:
    code, _, err = run_cli("policy", "suggest", "--parquet", str(archive), "--no-validate", *argv)
    assert code == 2 and message in err, err


def test_cli_needs_exactly_one_source() -> None:
    code, _, err = run_cli("policy", "suggest", "--no-validate")
    assert code == 2 and "--parquet FILE... or --kafka" in err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["policy", "suggest", "--help"])
    text = capsys.readouterr().out
    assert "example:" in text and "kubeward policy suggest --parquet" in text and "--deployed" in text


def test_an_external_address_is_read_as_the_shims_matcher_reads_it() -> None:
    """A dual-stack listener's ``::ffff:a.b.c.d`` is the IPv4 client (not ``cidr:::/64``, which holds every mapped
    address and ``::1``); a bracketed address is an address."""
    assert peer_of(None, "::ffff:198.51.100.7", True) == Peer("cidr", "198.51.100.0/24") == peer_of(None, "198.51.100.7", True)
    assert peer_of(None, "[2001:db8::7]", True) == Peer("cidr", "2001:db8::/64")
    assert peer_of(None, "::ffff:10.0.0.3", False) == Peer("address", "::ffff:10.0.0.3")  # in-cluster: named as reported


def test_the_shims_own_reports_of_external_clients_fold_into_their_network(summary_factory: SummaryFactory, table_of: TableOf) -> None:
    """Rows as ``enforcement.shim.summary_row`` writes them (reporter ``shim``, ``source.external`` from the adapter) fold
    like a collector's; the upstream's status is stamped on (the shim answers before the upstream does)."""
    views = [RequestView("GET", f"/orders/{i}", None, f"user-{i % 2}", f"198.51.100.{i}", "orders", "shop", request_id=f"r{i}", external=True)
             for i in range(6)]
    fold = EdgeFold()
    fold.update(table_of([summarize(T0 + i, v, ALLOW, b"k").model_copy(update={"status": 200}) for i, v in enumerate(views)]))
    ((edge,),) = [fold.edges()]
    assert (str(edge.peer), edge.endpoint.destination, edge.stats.ok_calls, edge.stats.actors) == ("cidr:198.51.100.0/24", "shop/orders", 6, 2)
    assert judge([edge], Thresholds(min_calls=5, min_callers=2)).allowed == [edge]


def test_an_edge_the_shim_reported_first_gets_the_access_logs_answers(table_of: TableOf) -> None:
    """Both reporters of each call, the shim's first (``summary_row``: no status on a call it let through, no port), then
    the access log's (the upstream's status, the port): each call counted once, its answer once, from the access log."""
    views = [RequestView("GET", f"/orders/{i}", None, f"user-{i % 2}", f"198.51.100.{i}", "orders", "shop", request_id=f"r{i}", external=True)
             for i in range(6)]
    shim = [summarize(T0 + i, v, ALLOW, b"k") for i, v in enumerate(views)]
    log = [s.model_copy(update={"reporter": "access_log", "status": 403 if i == 5 else 200, "decision": None,
                                "destination": s.destination.model_copy(update={"port": 8080})}) for i, s in enumerate(shim)]
    fold = EdgeFold()
    fold.update(table_of(shim[:3]))
    fold.update(table_of([*log[:3], *shim[3:]]))
    fold.update(table_of(log[3:]))
    ((edge,),) = [fold.edges()]
    s = edge.stats
    assert (s.calls, s.ok_calls, s.denied, s.actors, s.ports, fold.rows) == (6, 5, 1, 2, {8080}, 6)
    assert judge([edge], Thresholds(min_calls=5, min_callers=2)).allowed == [edge]


@pytest.mark.parametrize(("bad", "reason"), [
    (edge("shop/web", template="/orders/{id}/a b"), "path_template='/orders/{id}/a b': must not contain whitespace"),
    (edge("shop/web", template="/orders/{id"), "path_template='/orders/{id': has a brace that opens or closes no placeholder"),
    (edge("shop/web", method="M-SEARCH!"), "method='M-SEARCH!': expected an upper-case HTTP method"),
    (edge("shop/web", method="get"), "method='get': expected an upper-case HTTP method"),
])  # fmt: skip
def test_an_edge_the_shims_loader_would_refuse_goes_to_review_not_into_the_list(bad: Edge, reason: str) -> None:
    """Review 1h: one learned entry the shim's loader refuses would make it refuse the whole file (the shim fails to start,
    a reload keeps the old list); suggest leaves it out of the allow-list and lists it for review with the loader's reason."""
    from enforcement.allowlistfile import allowlist_from_dict

    s = judge([*SHOP, bad])
    assert bad in s.allowed  # the edge itself passed the thresholds: the other formats still render it
    allow = shim_allowlist(s)
    assert len(allowlist_from_dict(yaml.safe_load(yaml.safe_dump(allow)))) == len(shim_allowlist(judge(SHOP))["endpoints"])
    assert not any(e["method"] == bad.endpoint.method and e["path_template"] == bad.endpoint.template for e in allow["endpoints"])
    review = review_document(s)
    ((left_out,),) = [review["shim_left_out"]]
    assert (left_out["caller"], left_out["method"], left_out["path_template"]) == ("shop/web", bad.endpoint.method, bad.endpoint.template)
    assert [reason in r and r.startswith("not in the shim's allow-list: ") for r in left_out["reasons"]] == [True]
    assert review_document(judge(SHOP))["shim_left_out"] == []
