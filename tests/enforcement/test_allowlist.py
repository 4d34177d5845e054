"""enforcement.allowlist: the loader's errors, the matcher, its agreement with how policy suggest names edges, and the
allow-list inside ``decide`` and ``Shim`` (modes, counters, reload)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from deploy.policyedges import EdgeFold, peer_of
from deploy.policysuggest import Thresholds, judge, shim_allowlist
from enforcement.allowlist import AMBIGUOUS_PATH, UNKNOWN_CALLER, UNKNOWN_ENDPOINT, UNNAMED_CALLER, AllowList, AllowListError, caller_of
from enforcement.allowlistfile import allowlist_from_dict, load_allowlist
from enforcement.cache import VerdictCache
from enforcement.decision import ALLOW, Decision, Inspection, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import AllowListSettings, ShimSettings
from enforcement.shim import Shim, summarize, summary_row
from ingest import Policy, decode_message, encode_rows
from ingest.config import build_settings
from ingest.errors import SettingsError
from tests.conftest import T0

ORDERS = {"destination": "shop/orders", "method": "GET", "path_template": "/orders/{id}", "callers": ["shop/web", "cidr:198.51.100.0/24"]}


def _doc(*endpoints: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"kind": "KubewardAllowList", "version": 1, "thresholds": {"min_calls": 5, "min_callers": 2}, "endpoints": list(endpoints), **top}


def _list(*endpoints: dict[str, Any]) -> AllowList:
    return allowlist_from_dict(_doc(*(endpoints or (ORDERS,))))


def _req(path: str = "/orders/81231", method: str = "GET", workload: str | None = "shop/web", ip: str | None = "10.0.0.7",
         service: str | None = "orders", namespace: str | None = "shop") -> RequestView:
    return RequestView(method, path, workload, None, ip, service, namespace)


# ------------------------------------------------------------------ loading


def test_the_document_policy_suggest_writes_loads(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yaml"
    text = yaml.safe_dump(_doc(ORDERS, {**ORDERS, "method": "POST", "path_template": "/orders", "callers": ["shop/web"]}), sort_keys=False)
    path.write_text(text)
    found = load_allowlist(path)
    assert len(found) == 2 and found.destinations == ["shop/orders"]
    starts = [i + 1 for i, line in enumerate(text.splitlines()) if line.startswith("- ")]
    assert [e.line for e in found.endpoints] == starts == [7, 13]  # the line of each entry, for messages


def test_json_is_yaml_too(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.json"
    path.write_text(json.dumps(_doc(ORDERS)))
    assert len(load_allowlist(path)) == 1


def test_a_misspelt_key_is_named_with_its_line_and_the_key_meant(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text(yaml.safe_dump(_doc(ORDERS, {**{k: v for k, v in ORDERS.items() if k != "callers"}, "method": "PUT", "caller": ["shop/web"]}),
                                   sort_keys=False))
    with pytest.raises(AllowListError) as err:
        load_allowlist(path)
    text = str(err.value)
    assert f"{path}:13: endpoints[1]: unknown key 'caller' (did you mean 'callers'?)" in text
    assert f"{path}:13: endpoints[1]: missing key 'callers'" in text


@pytest.mark.parametrize(("doc", "message"), [
    (_doc(ORDERS, kind="AllowList"), "kind='AllowList': expected 'KubewardAllowList'"),
    (_doc(ORDERS, version=2), "version=2: expected 1"),
    (_doc(ORDERS, version=True), "version=True: expected 1"),
    (_doc(ORDERS, endpionts=[]), "unknown key 'endpionts' (did you mean 'endpoints'?)"),
    (_doc(ORDERS, thresholds={"min_call": 5}), "thresholds: unknown key 'min_call' (did you mean 'min_calls'?)"),
    ({"kind": "KubewardAllowList", "version": 1}, "endpoints=None: expected a list"),
    (_doc({**ORDERS, "path_template": "orders/{id}"}), "path_template='orders/{id}': must start with '/'"),
    (_doc({**ORDERS, "path_template": "/orders/{id"}), "path_template='/orders/{id': has a brace that opens or closes no placeholder"),
    (_doc({**ORDERS, "path_template": "/orders/{a/b}"}), "has a brace that opens or closes no placeholder"),
    (_doc({**ORDERS, "path_template": "/orders?x=1"}), "must not carry a query or fragment"),
    (_doc({**ORDERS, "path_template": 7}), "path_template=7: expected a string"),
    (_doc({**ORDERS, "method": "get"}), "method='get': expected an upper-case HTTP method"),
    (_doc({**ORDERS, "destination": "a/b/c"}), "destination='a/b/c': expected 'namespace/service'"),
    (_doc({**ORDERS, "callers": ["web"]}), "callers: 'web': expected a workload 'namespace/name', 'cidr:<network>' or 'address:<ip>'"),
    (_doc({**ORDERS, "callers": ["cidr:198.51.100.0/33"]}), "callers: 'cidr:198.51.100.0/33'"),
    (_doc({**ORDERS, "callers": "shop/web"}), "callers='shop/web': expected a list"),
    (_doc(ORDERS, {**ORDERS, "callers": ["shop/carts"]}), "shop/orders GET /orders/{id} is listed twice"),
    (_doc("shop/orders"), "endpoints[0]: expected a mapping"),  # type: ignore[arg-type]
    (["not", "a", "mapping"], "expected a KubewardAllowList mapping"),
])  # fmt: skip
def test_a_bad_document_is_refused_naming_key_and_value(doc: Any, message: str) -> None:
    with pytest.raises(AllowListError) as err:
        allowlist_from_dict(doc, "allowlist.yaml")
    assert message in str(err.value)


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(AllowListError) as err:
        allowlist_from_dict(_doc({**ORDERS, "method": "get"}, {**ORDERS, "path_template": "x"}, version=3))
    assert "(3 problems)" in str(err.value)


def test_duplicate_keys_and_broken_yaml_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "allowlist.yaml"
    path.write_text("kind: KubewardAllowList\nversion: 1\nversion: 2\nendpoints: []\n")
    with pytest.raises(AllowListError, match=r"allowlist.yaml:3: .*duplicate key 'version'"):
        load_allowlist(path)
    path.write_text("kind: [\n")
    with pytest.raises(AllowListError, match=r"allowlist.yaml:\d+: "):
        load_allowlist(path)
    with pytest.raises(AllowListError, match="cannot read the allow-list"):
        load_allowlist(tmp_path / "missing.yaml")


# ------------------------------------------------------------------ matching


def test_a_listed_caller_passes_and_anyone_else_is_refused() -> None:
    allow = _list()
    assert allow.refusal(_req()) is None
    assert allow.refusal(_req(workload="shop/carts")) == UNKNOWN_CALLER
    assert allow.refusal(_req(workload=None, ip=None)) == UNNAMED_CALLER


def test_only_governed_destinations_are_checked() -> None:
    allow = _list()
    assert allow.refusal(_req(service="payments", workload="ops/intruder")) is None
    assert allow.refusal(_req(namespace="staging", workload="ops/intruder")) is None
    assert allow.refusal(_req(service=None, workload="ops/intruder")) is None


def test_method_and_template_must_both_be_listed() -> None:
    allow = _list()
    assert allow.refusal(_req(method="DELETE")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(method="HEAD")) == UNKNOWN_ENDPOINT  # exact, as Istio's methods
    assert allow.refusal(_req(path="/orders")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/orders/1/items")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/admin/1")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/orders/")) == UNKNOWN_ENDPOINT  # a placeholder is never empty


@pytest.mark.parametrize("path", ["/orders/81231", "/orders/81231?expand=items", "/orders/alice", "/orders/3fa85f64-5717-4562-b3fc-2c963f66afa6",
                                  "/orders/a%20b", "/orders/81231#frag"])
def test_a_placeholder_is_one_segment_of_any_value(path: str) -> None:
    assert _list().refusal(_req(path=path)) is None


@pytest.mark.parametrize("path", ["/orders/..", "/orders/.", "/orders/%2e%2e", "/orders/%252e%252e", "/orders/%c0%ae%c0%ae", "/orders/１/..",
                                  "/orders/a%2fb", "/orders/a%5Cb", "/orders/%252F", "/orders/1/../../admin", "/orders/\uff0e\uff0e"])
def test_paths_the_upstream_could_resolve_elsewhere_are_refused(path: str) -> None:
    assert _list().refusal(_req(path=path)) == AMBIGUOUS_PATH
    assert _list().refusal(_req(path=path, service="payments")) is None  # ungoverned: not the allow-list's business


def test_templates_with_suffixes_names_and_encoded_literals() -> None:
    allow = _list({**ORDERS, "path_template": "/Accounts/{id}.json"}, {**ORDERS, "path_template": "/v1/{project}/items/{item_id}"},
                  {**ORDERS, "path_template": "/files/{a}-{b}"}, {**ORDERS, "path_template": "/search/a%20b"})
    assert allow.refusal(_req(path="/Accounts/AC0123.json")) is None
    assert allow.refusal(_req(path="/Accounts/.json")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/Accounts/AC0123.xml")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/v1/kube/items/7")) is None
    assert allow.refusal(_req(path="/files/x-y")) is None and allow.refusal(_req(path="/files/xy")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/search/a%20b")) is None and allow.refusal(_req(path="/search/a%2520b")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(path="/Search/a%20b")) == UNKNOWN_ENDPOINT  # literals are case-sensitive, as paths are


def test_entries_without_method_or_template_match_nothing() -> None:
    allow = _list({**ORDERS, "path_template": "-"}, {**ORDERS, "method": "-", "path_template": "/x"})
    assert allow.refusal(_req()) == UNKNOWN_ENDPOINT and allow.refusal(_req(path="/x")) == UNKNOWN_ENDPOINT


def test_callers_by_cidr_and_address_only_without_a_workload() -> None:
    allow = _list({**ORDERS, "callers": ["cidr:198.51.100.0/24", "cidr:2001:db8::/64", "address:10.0.0.9"]})
    assert allow.refusal(_req(workload=None, ip="198.51.100.7")) is None
    assert allow.refusal(_req(workload=None, ip="::ffff:198.51.100.7")) is None  # a dual-stack listener's form
    assert allow.refusal(_req(workload=None, ip="2001:db8::17")) is None
    assert allow.refusal(_req(workload=None, ip="10.0.0.9")) is None
    assert allow.refusal(_req(workload=None, ip="198.51.101.7")) == UNKNOWN_CALLER
    assert allow.refusal(_req(workload=None, ip="not-an-ip")) == UNNAMED_CALLER
    # a workload is named by its workload, as policyedges names it, whatever its address
    assert allow.refusal(_req(workload="shop/web", ip="198.51.100.7")) == UNKNOWN_CALLER


def test_any_matching_entry_may_allow() -> None:
    allow = _list({**ORDERS, "callers": ["shop/web"]}, {**ORDERS, "path_template": "/orders/export", "callers": ["ops/exporter"]})
    assert allow.refusal(_req(path="/orders/export", workload="ops/exporter")) is None
    assert allow.refusal(_req(path="/orders/export", workload="shop/web")) is None  # /orders/{id} covers it too
    assert allow.refusal(_req(path="/orders/1", workload="ops/exporter")) == UNKNOWN_CALLER


def test_a_destination_without_namespace_on_either_side() -> None:
    allow = _list(ORDERS, {**ORDERS, "destination": "billing/orders", "callers": ["billing/app", "shop/web"]},
                  {**ORDERS, "destination": "catalog", "callers": ["ops/x"]})
    # the shim could not tell the namespace: every listed */orders governs it, and each of them must allow it
    assert allow.refusal(_req(namespace=None)) is None
    assert allow.refusal(_req(namespace=None, workload="billing/app")) == UNKNOWN_CALLER  # shop/orders does not list it
    assert allow.refusal(_req(namespace=None, workload="ops/intruder")) == UNKNOWN_CALLER
    # a listed service without namespace governs it in every namespace
    assert allow.refusal(_req(service="catalog", namespace="shop", workload="ops/x")) is None
    assert allow.refusal(_req(service="catalog", namespace="shop")) == UNKNOWN_CALLER


def test_without_a_namespace_one_listed_namespace_opens_no_other() -> None:
    """Review 1b: ``dev/orders`` allowing DELETE from shop/web must not open ``shop/orders`` to a request whose namespace
    the shim could not tell (a bare ``Host: orders``): it passes only if every candidate destination allows it."""
    dev = {"destination": "dev/orders", "method": "DELETE", "path_template": "/orders/{id}", "callers": ["shop/web"]}
    allow = _list(ORDERS, dev)
    assert allow.refusal(_req(method="DELETE", namespace=None)) == UNKNOWN_ENDPOINT  # shop/orders lists no DELETE
    assert allow.refusal(_req(method="DELETE", namespace="dev")) is None
    assert allow.refusal(_req(method="DELETE", namespace="shop")) == UNKNOWN_ENDPOINT
    assert allow.refusal(_req(namespace=None)) == UNKNOWN_ENDPOINT  # and dev/orders lists no GET
    both = _list(ORDERS, {**dev, "method": "GET"})
    assert both.refusal(_req(namespace=None)) is None  # allowed in each: passes
    assert both.refusal(_req(namespace=None, workload=None, ip="198.51.100.7")) == UNKNOWN_CALLER  # dev/orders lists no network
    assert sorted(e.destination for e in both.governing(None, "orders")) == ["dev/orders", "shop/orders"]


def test_without_a_namespace_a_bare_listed_service_alone_decides() -> None:
    """A bare ``orders`` governs it in namespaces the list does not name, where no ``<ns>/orders`` entry helps."""
    allow = _list(ORDERS, {**ORDERS, "destination": "orders", "callers": ["ops/x"]})
    assert allow.refusal(_req(namespace=None)) == UNKNOWN_CALLER  # shop/web: only shop/orders lists it
    assert allow.refusal(_req(namespace=None, workload="ops/x")) is None
    assert allow.refusal(_req(namespace="shop")) is None and allow.refusal(_req(namespace="shop", workload="ops/x")) is None


def test_only_governed_destinations_are_memoised() -> None:
    """Review 1e: the service comes from the Host header; names no entry governs must cost no memory."""
    allow = _list()
    for i in range(500):
        assert allow.refusal(_req(service=f"made-up-{i}")) is None
        assert allow.refusal(_req(namespace=f"ns-{i}")) is None
        assert allow.refusal(_req(namespace=None, service=f"x{i}")) is None
    assert allow.refusal(_req()) is None and allow.refusal(_req(namespace=None)) is None
    assert set(allow._index) == {("shop", "orders"), (None, "orders")}


@pytest.mark.parametrize("path", ["/users/..;/orders/5", "/users/..;x=1/orders/5", "/users/.;/5/orders/5", "/users/..%3B/orders/5",
                                  "/users/%2e%2e;jsessionid=1/orders/5", "/users/;x/orders/5", "/users/..%253b/orders/5"])
def test_dot_segments_behind_path_parameters_are_refused(path: str) -> None:
    """Review 1c: Tomcat and Jetty drop ``;...`` from each segment, then resolve ``..``: ``/users/..;/orders/5`` is
    ``/orders/5`` to them, though it has the shape of ``/users/{id}/orders/{oid}``."""
    allow = _list({**ORDERS, "path_template": "/users/{id}/orders/{oid}"})
    assert allow.refusal(_req(path=path)) == AMBIGUOUS_PATH
    assert allow.refusal(_req(path=path, service="payments")) is None  # ungoverned


def test_path_parameters_that_resolve_nowhere_else_still_match() -> None:
    allow = _list({**ORDERS, "path_template": "/users/{id}/orders/{oid}"})
    assert allow.refusal(_req(path="/users/7/orders/5;jsessionid=abc")) is None
    assert allow.refusal(_req(path="/users/7;v=1/orders/5")) is None
    assert allow.refusal(_req(path="/users/..a;/orders/5")) is None  # '..a' is a name, not a dot segment


def test_caller_of_names_like_policyedges() -> None:
    assert caller_of(_req()) == str(peer_of("shop/web", "10.0.0.7", False))
    assert caller_of(_req(workload=None)) == str(peer_of(None, "10.0.0.7", False))
    assert caller_of(_req(workload=None, ip=None)) is None


# ------------------------------------------------------------------ agreement with policy suggest


def test_what_suggest_learns_from_summaries_the_matcher_allows(summary_factory: Any, table_of: Any) -> None:
    """Summaries as collectors report them -> EdgeFold -> judge -> shim_allowlist -> the shim's matcher, on requests
    with the same identities: every allowed edge passes, every edge held for review is refused."""
    calls = [  # (workload, ip, external, principal, method, path)
        ("shop/web", "10.0.0.7", False, None, "GET", "/orders/81231"),
        ("shop/web", "10.0.0.7", False, "alice", "GET", "/orders/81232/items"),  # one user behind the workload: review
        (None, "198.51.100.7", True, "bob", "POST", "/orders"),
        (None, "198.51.100.8", True, "carol", "POST", "/orders"),
        (None, "10.0.0.99", False, None, "GET", "/orders/1"),  # in-cluster, no workload: review
        ("ops/cron", "10.0.0.5", False, None, "DELETE", "/orders/1"),  # too few calls: review
    ]
    summaries = []
    for i, (workload, ip, external, principal, method, path) in enumerate(calls):
        template = "/orders/{id}/items" if path.endswith("/items") else "/orders/{id}" if path != "/orders" else "/orders"
        repeat = 1 if workload == "ops/cron" else 6
        summaries += [summary_factory(workload=workload, source_namespace=workload.split("/")[0] if workload else None, ip=ip,
                                      source_external=external, principal=principal, method=method, path_template=template,
                                      time=T0 + i + k / 10, status=200) for k in range(repeat)]
    fold = EdgeFold()
    fold.update(table_of(summaries))
    suggestion = judge(fold.edges(), Thresholds(min_calls=5, min_callers=2))
    allow = allowlist_from_dict(yaml.safe_load(yaml.safe_dump(shim_allowlist(suggestion))))
    assert sorted(str(e.peer) for e in suggestion.allowed) == ["cidr:198.51.100.0/24", "shop/web"]
    assert sorted(str(j.edge.peer) for j in suggestion.review) == ["address:10.0.0.99", "ops/cron", "shop/web"]
    verdicts = {(w or ip, method, path): allow.refusal(_req(path, method, w, ip)) for w, ip, _, _, method, path in calls}
    assert verdicts == {
        ("shop/web", "GET", "/orders/81231"): None,
        ("shop/web", "GET", "/orders/81232/items"): UNKNOWN_ENDPOINT,
        ("198.51.100.7", "POST", "/orders"): None,
        ("198.51.100.8", "POST", "/orders"): None,
        ("10.0.0.99", "GET", "/orders/1"): UNKNOWN_CALLER,
        ("ops/cron", "DELETE", "/orders/1"): UNKNOWN_ENDPOINT,
    }
    assert allow.refusal(_req("/orders/5", "GET", None, "198.51.100.200")) == UNKNOWN_CALLER  # the CIDR is allowed POST only


def test_what_the_shim_reports_it_then_allows(table_of: Any) -> None:
    """The loop closed on the shim's own reports (``summarize``): its workload, destination and template are read back
    by policyedges and matched by the allow-list as the same names."""
    views = [RequestView("GET", f"/orders/{n}?x=1", "shop/web", "alice", "10.0.0.7", "orders", "shop") for n in range(100, 106)]
    views += [RequestView("PUT", f"/carts/{n}/lines/3fa85f64-5717-4562-b3fc-2c963f66afa{n % 10}", "shop/carts", None, "10.0.0.8", "carts", "shop")
              for n in range(6)]
    fold = EdgeFold()
    fold.update(table_of([summarize(T0 + i, v, ALLOW, b"k").model_copy(update={"status": 200}) for i, v in enumerate(views)]))
    allow = allowlist_from_dict(shim_allowlist(judge(fold.edges(), Thresholds(min_calls=5, min_callers=1))))
    assert len(allow) == 2
    assert all(allow.refusal(v) is None for v in views)
    assert allow.refusal(RequestView("GET", "/orders/7", "shop/carts", None, "10.0.0.8", "orders", "shop")) == UNKNOWN_CALLER


# ------------------------------------------------------------------ decide and the shim


class _Finds:
    def __init__(self, found: Inspection | None = None) -> None:
        self.found = found

    def inspect(self, req: RequestView) -> Inspection | None:
        return self.found


def _decide(req: RequestView, mode: str = "enforce", allow: AllowList | None = None, found: Inspection | None = None,
            modes: dict[str, str] | None = None) -> Decision:
    policy = Policy(default_mode=mode, modes=modes or {})
    return decide(req, VerdictCache(), TokenBuckets(), _Finds(found), policy, T0, allow if allow is not None else _list())


def test_decide_refuses_in_enforce_mode_and_only_reports_in_observe_mode() -> None:
    assert _decide(_req()) is ALLOW
    assert _decide(_req(workload="ops/intruder")) == Decision(403, "deny", True, "allowlist:unknown-caller")
    assert _decide(_req(workload="ops/intruder"), "observe") == Decision(200, "deny", False, "allowlist:unknown-caller")
    # the mode is the destination's, as for inline findings
    assert _decide(_req(workload="ops/intruder"), "observe", modes={"shop/orders": "enforce"}).status == 403
    assert _decide(_req(workload="ops/intruder"), "enforce", modes={"shop": "observe"}).status == 200
    assert decide(_req(workload="ops/intruder"), VerdictCache(), TokenBuckets(), _Finds(), Policy(default_mode="enforce"), T0) is ALLOW


def test_a_request_whose_namespace_is_unknown_is_refused_in_the_strictest_listed_mode() -> None:
    """A bare Host (namespace unknown) must not turn an enforced service's refusals into observed ones."""
    bare = _req(workload="ops/intruder", namespace=None)
    assert _decide(bare, "observe", modes={"shop": "enforce"}).status == 403
    assert _decide(bare, "observe", modes={"dev": "enforce"}).status == 200  # no listed namespace enforces orders
    assert _list().namespaces("orders") == ("shop",) and _list().namespaces("carts") == ()


def test_decide_keeps_inline_findings_and_lets_enforced_ones_answer() -> None:
    found = Inspection(("sqli",), ("r1",), 5)
    enforced = _decide(_req(workload="ops/intruder"), found=found)
    assert (enforced.status, enforced.reason) == (403, "inline:sqli")  # an enforced inline finding answers first
    observed = _decide(_req(workload="ops/intruder"), "observe", modes={"shop/orders": "observe"}, found=found)
    assert (observed.status, observed.reason, observed.findings) == (200, "inline:sqli", ("sqli",))


def _write(path: Path, *endpoints: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(_doc(*endpoints), sort_keys=False))
    return path


def test_the_setting_reads_the_file_and_empty_means_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path / "allowlist.yaml", ORDERS)
    monkeypatch.setenv("KUBEWARD_SHIM_ALLOW_LIST__FILE", str(path))
    loaded = build_settings(ShimSettings).allow_list.load()
    assert loaded is not None and len(loaded) == 1
    monkeypatch.setenv("KUBEWARD_SHIM_ALLOW_LIST__FILE", "")
    assert build_settings(ShimSettings).allow_list.file is None
    monkeypatch.setenv("KUBEWARD_SHIM_ALLOW_LIST__FIEL", str(path))
    with pytest.raises(SettingsError, match="KUBEWARD_SHIM_ALLOW_LIST__FIEL"):
        build_settings(ShimSettings)


def test_a_bad_file_stops_the_shim_naming_setting_key_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "allowlist.yaml", {**ORDERS, "callerz": []})
    with pytest.raises(SettingsError, match=r"(?s)KUBEWARD_SHIM_ALLOW_LIST__FILE=.*allowlist.yaml:7: endpoints\[0\]: unknown key 'callerz'"):
        Shim(ShimSettings(bootstrap=None, allow_list=AllowListSettings(file=path)))


def test_shim_enforces_counts_and_reloads(tmp_path: Path) -> None:
    path = _write(tmp_path / "allowlist.yaml", ORDERS)
    shim = Shim(ShimSettings(bootstrap=None, report="none", allow_list={"file": path, "reload_s": 0.0},
                             policy={"default_mode": "enforce", "modes": {"shop/observed": "observe"}}))
    shim.synced.set()
    assert shim.decide_view(_req()) is ALLOW
    assert shim.decide_view(_req(workload="ops/intruder")).status == 403
    assert shim.decide_view(_req(method="DELETE")).reason == "allowlist:unknown-endpoint"
    assert shim.decision_counts()["deny:enforce"] == 2
    assert shim.allowlist_refusals == {("unknown-caller", "enforce"): 1, ("unknown-endpoint", "enforce"): 1}
    # a changed file is read again; a broken one is counted and the list in force stays
    _write(path, ORDERS, {**ORDERS, "destination": "shop/observed", "callers": ["shop/web"]})
    assert shim.reload_allowlist() and shim.allowlist is not None and len(shim.allowlist) == 2
    observed = shim.decide_view(_req(service="observed", workload="ops/intruder"))
    assert (observed.status, observed.would, observed.reason) == (200, "deny", "allowlist:unknown-caller")
    assert shim.allowlist_refusals[("unknown-caller", "observe")] == 1
    path.write_text("kind: KubewardAllowList\nversion: 9\nendpoints: [\n")
    assert not shim.reload_allowlist()
    assert shim.allowlist_reload_errors == 1 and len(shim.allowlist) == 2
    assert not shim.reload_allowlist()  # counted once per change


def test_before_the_cache_syncs_the_allow_list_applies_too(tmp_path: Path) -> None:
    shim = Shim(ShimSettings(bootstrap=None, report="none", failure_mode="allow", allow_list={"file": _write(tmp_path / "a.yaml", ORDERS)},
                             policy={"default_mode": "enforce"}))
    assert shim.decide_view(_req(workload="ops/intruder")).reason == "allowlist:unknown-caller"
    assert shim.decide_view(_req()).reason == "kubeward-unsynced"


# ------------------------------------------------------------------ external callers the shim alone saw


def test_caller_of_names_an_external_address_by_its_network_like_policyedges() -> None:
    outside = RequestView("GET", "/", ip="198.51.100.7", external=True)
    assert caller_of(outside) == str(peer_of(None, "198.51.100.7", True)) == "cidr:198.51.100.0/24"
    assert caller_of(RequestView("GET", "/", ip="2001:db8::7", external=True)) == str(peer_of(None, "2001:db8::7", True))
    mapped = RequestView("GET", "/", ip="::ffff:198.51.100.7", external=True)  # a dual-stack listener's peer
    assert caller_of(mapped) == str(peer_of(None, "::ffff:198.51.100.7", True)) == "cidr:198.51.100.0/24"
    assert caller_of(RequestView("GET", "/", ip="198.51.100.7", external=True), prefix_v4=16) == "cidr:198.51.0.0/16"
    assert caller_of(RequestView("GET", "/", ip="not-an-ip", external=True)) is None is peer_of(None, "not-an-ip", True)
    assert caller_of(RequestView("GET", "/", "shop/web", ip="198.51.100.7", external=True)) == "shop/web"


def test_a_listed_network_allows_a_new_external_address_in_it_in_either_spelling() -> None:
    allow = _list()  # callers: shop/web, cidr:198.51.100.0/24
    for ip in ("198.51.100.200", "::ffff:198.51.100.200", "[::ffff:198.51.100.200]"):
        assert allow.refusal(RequestView("GET", "/orders/9", None, None, ip, "orders", "shop", external=True)) is None
    assert allow.refusal(RequestView("GET", "/orders/9", None, None, "192.0.2.5", "orders", "shop", external=True)) == UNKNOWN_CALLER
    assert allow.refusal(RequestView("GET", "/orders/9", None, None, "10.0.0.99", "orders", "shop")) == UNKNOWN_CALLER


def _shim_reports(shim: Shim, clients: list[tuple[str, str, str]], rounds: int) -> Any:
    """Checks of ``clients`` (x-forwarded-for, method, path) through the shim's own adapter, as Envoy (on loopback, one trusted
    hop) sends them; the shim's reports as the worker reads them off the topic (envelope encoded and decoded)."""
    for r in range(rounds):
        for n, (xff, method, path) in enumerate(clients):
            headers = {b"host": b"orders", b"x-kubeward-destination": b"shop/orders", b"x-forwarded-for": xff.encode(),
                       b"x-request-id": f"rid-{r}-{n}".encode()}
            shim.handle(method, path.format(n=r * 100 + n), headers, "127.0.0.1")
    rows = [summary_row(t, view, decision, b"k") for t, view, decision in shim.take_pending()]
    # The shim reports no upstream status (it answers before the upstream does); the data plane's answer, 200 here, is
    # stamped on as the worker would learn it, so only the caller's name is under test.
    return decode_message(encode_rows([{**row, "status": 200} for row in rows]), 1 << 24)


def test_external_clients_only_the_shim_saw_are_learned_as_their_network_and_a_new_address_in_it_passes(tmp_path: Path) -> None:
    """End to end in process: the shim's reports of external clients (``source.external`` from the identity resolver)
    -> EdgeFold -> judge -> shim_allowlist -> a shim enforcing that list: the clients' network is listed, a new address in
    it is allowed by the matcher, an address elsewhere and an unresolved in-cluster address are refused."""
    clients = [("198.51.100.7", "GET", "/orders/{n}"), ("198.51.100.8", "GET", "/orders/{n}"), ("203.0.113.4", "GET", "/orders/{n}"),
               ("10.0.0.99", "GET", "/orders/{n}")]
    learner = Shim(ShimSettings(bootstrap=None, report="all", identity={"trusted_hops": 1}))
    learner.synced.set()
    table = _shim_reports(learner, clients, rounds=6)
    assert table.column("source").combine_chunks().field("external").to_pylist()[:4] == [True, True, True, False]
    fold = EdgeFold()
    fold.update(table)
    suggestion = judge(fold.edges(), Thresholds(min_calls=5, min_callers=2))
    assert [str(e.peer) for e in suggestion.allowed] == ["cidr:198.51.100.0/24"]
    assert sorted(str(j.edge.peer) for j in suggestion.review) == ["address:10.0.0.99", "cidr:203.0.113.0/24"]  # one actor only
    path = tmp_path / "allowlist.yaml"
    path.write_text(yaml.safe_dump(shim_allowlist(suggestion), sort_keys=False))
    assert [e.callers for e in load_allowlist(path).endpoints] == [("cidr:198.51.100.0/24",)]

    enforcer = Shim(ShimSettings(bootstrap=None, report="none", identity={"trusted_hops": 1}, allow_list={"file": path},
                                 policy={"default_mode": "enforce"}))
    enforcer.synced.set()
    headers = {b"host": b"orders", b"x-kubeward-destination": b"shop/orders"}
    newcomer = enforcer.adapter.view_of("GET", "/orders/424242", {**headers, b"x-forwarded-for": b"198.51.100.200"}, "127.0.0.1")
    assert (newcomer.external, caller_of(newcomer)) == (True, "cidr:198.51.100.0/24")
    assert enforcer.decide_view(newcomer) is ALLOW
    for xff in (b"203.0.113.4", b"10.0.0.99"):
        view = enforcer.adapter.view_of("GET", "/orders/1", {**headers, b"x-forwarded-for": xff}, "127.0.0.1")
        assert enforcer.decide_view(view).reason == "allowlist:unknown-caller"


def test_without_the_external_bit_the_same_reports_would_be_held_for_review() -> None:
    """What the bit fixes: the same shim reports with ``source.external`` off name each client ``address:<ip>``, never
    allowed."""
    learner = Shim(ShimSettings(bootstrap=None, report="all", identity={"trusted_hops": 1}))
    learner.synced.set()
    table = _shim_reports(learner, [("198.51.100.7", "GET", "/orders/{n}"), ("198.51.100.8", "GET", "/orders/{n}")], rounds=6)
    source = table.column("source").combine_chunks()
    fields = [source.field(i) for i in range(source.type.num_fields)]
    names = [source.type.field(i).name for i in range(source.type.num_fields)]
    fields[names.index("external")] = pa.array([False] * len(source))
    blind = table.set_column(table.schema.get_field_index("source"), "source", pa.StructArray.from_arrays(fields, names=names))
    fold = EdgeFold()
    fold.update(blind)
    suggestion = judge(fold.edges(), Thresholds(min_calls=5, min_callers=2))
    assert not suggestion.allowed and sorted(str(j.edge.peer) for j in suggestion.review) == ["address:198.51.100.7", "address:198.51.100.8"]
