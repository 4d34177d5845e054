"""deploy.counterfactual: recorded requests replayed against a baseline and a candidate, refusals counted as the shim would."""

from __future__ import annotations

from functools import cache
from typing import Any

import pyarrow as pa
import pytest

from deploy.counterfactual import WhatIfOptions, _Recorded, whatif
from deploy.recordedcalls import recorded_calls
from enforcement.allowlist import AllowList, caller_of
from enforcement.allowlistfile import allowlist_from_dict
from enforcement.cache import VerdictCache
from enforcement.decision import decide
from enforcement.ratelimit import TokenBuckets
from ingest import Policy, Subject, row_to_summary, summary_row
from ingest.envelope import SUMMARY_SCHEMA
from streams.settings import WorkerSettings
from tests.conftest import T0

SHOP = {"workload": "shop/web", "namespace": "shop"}
MALLORY = "shop/web|mallory"


def _mallory(i: int, **fields: Any) -> dict[str, Any]:
    """Request ``i`` of an actor walking order ids it does not own (404s): BOLA as the rules see it."""
    row = {"id": f"m{i}", "time": T0 + i, "source": {**SHOP, "ip": "10.0.0.9"}, "principal": "mallory",
           "destination": {"service": "orders", "namespace": "shop"}, "method": "GET", "path_template": "/orders/{id}", "status": 404,
           "object_ids": [f"{i:016x}"], **fields}
    return summary_row(**row)


def _alice(i: int) -> dict[str, Any]:
    return summary_row(id=f"b{i}", time=T0 + i + 0.5, source={**SHOP, "ip": "10.0.0.7"}, principal="alice",
                       destination={"service": "catalog", "namespace": "shop"}, method="GET", path_template="/products", status=200)


def _aside(i: int) -> dict[str, Any]:
    """Mallory's own account page: not the pattern she is flagged for."""
    return summary_row(id=f"x{i}", time=T0 + i + 0.7, source={**SHOP, "ip": "10.0.0.9"}, principal="mallory",
                       destination={"service": "accounts", "namespace": "shop"}, method="GET", path_template="/me", status=200)


def _traffic(asides: bool = True) -> list[dict[str, Any]]:
    """90 s: mallory walks ids every second, alice browses, and from 60 s mallory also reads her account every 5 s."""
    rows = []
    for i in range(90):
        rows += [_mallory(i), _alice(i)]
        if asides and i >= 60 and i % 5 == 0:
            rows.append(_aside(i))
    return rows


def _enforcing(*targets: str) -> WorkerSettings:
    return WorkerSettings(policy=Policy(modes={t: "enforce" for t in targets}))


def _labels() -> dict[str, bool]:
    rows = _traffic()
    return {r["id"]: r["id"].startswith("m") for r in rows}


@cache
def _report() -> dict[str, Any]:
    return whatif(_traffic(), WorkerSettings(), _enforcing("shop"), _labels())


def test_an_id_walker_is_refused_after_its_verdict_when_its_namespace_enforces() -> None:
    cand = _report()["candidate"]
    assert cand["verdicts"]["by_class"] == {"bola": 1} and cand["verdicts"]["by_mode"] == {"enforce": 1}
    (top,) = cand["top_actors"]
    assert top["actor"] == MALLORY and top["requests"] == 96
    # the verdict reaches the shim 0.1 s after its evidence: every later request of mallory is refused, the earlier ones passed
    first = top["first_refused"]
    assert T0 < first < T0 + 30
    assert top["refused"] == sum(1 for r in _traffic() if r["principal"] == "mallory" and r["time"] >= first) == cand["refused"]["requests"]
    assert cand["refused"]["by_action"] == {"block": top["refused"]}
    assert cand["refused"]["by_namespace"] == {"shop": {"requests": top["refused"], "actors": 1}}


def test_a_benign_actor_is_untouched() -> None:
    cand = _report()["candidate"]
    assert cand["refused"]["actors"] == 1 and "shop/catalog" not in cand["refused"]["by_service"]
    assert cand["labels"]["benign_actors"] == 1 and cand["labels"]["benign_actors_refused"] == 0
    assert cand["labels"]["benign_requests_refused_of_benign_actors"] == 0


def test_requests_to_other_endpoints_than_the_flagged_pattern_are_collateral() -> None:
    cand = _report()["candidate"]
    assert cand["refused"]["by_service"]["shop/accounts"] == 6
    assert cand["collateral"] == {"requests": 6, "actors": 1, "other_services": 6, "by_class": {"bola": 6}}
    assert cand["top_actors"][0]["collateral"] == 6


def test_the_baseline_in_observe_refuses_nothing_but_says_what_it_would_and_the_difference_is_the_candidates() -> None:
    report = _report()
    base, cand, diff = report["baseline"], report["candidate"], report["difference"]
    assert base["verdicts"]["by_mode"] == {"observe": 1}
    assert base["refused"]["requests"] == 0 and base["top_actors"] == []
    assert base["observed"]["requests"] == cand["refused"]["requests"] and base["observed"]["actors"] == 1
    assert diff["requests_newly_refused"] == cand["refused"]["requests"] and diff["requests_no_longer_refused"] == 0
    assert diff["actors_newly_refused"] == 1 and [a["actor"] for a in diff["top_newly_refused"]] == [MALLORY]
    assert diff["attackers_newly_caught"] == 1 and diff["benign_actors_newly_refused"] == 0


def test_labels_give_attackers_caught_and_the_benign_collateral() -> None:
    report = _report()
    labels, cand = report["labels"], report["candidate"]["labels"]
    assert labels == {"labelled_requests": 186, "malicious_requests": 90, "attackers": 1, "benign_actors": 1}
    assert cand["attackers_caught"] == 1 and cand["malicious_requests_refused"] == report["candidate"]["refused"]["requests"] - 6
    # mallory's account reads are labelled benign: refused with her, they are the benign collateral (of an attacker)
    assert cand["benign_requests_refused"] == cand["benign_requests_refused_of_attackers"] == 6
    assert report["baseline"]["labels"]["attackers_caught"] == 0
    assert report["difference"]["benign_requests_newly_refused"] == 6


def test_enforcing_another_namespace_refuses_nothing_here() -> None:
    report = whatif(_traffic(), WorkerSettings(), _enforcing("payments"))
    assert report["candidate"]["refused"]["requests"] == 0 and report["difference"]["actors_newly_refused"] == 0
    assert report["candidate"]["observed"]["requests"] == report["baseline"]["observed"]["requests"] > 0
    assert report["labels"] is None and "labels" not in report["candidate"]


def test_a_longer_latency_lets_more_requests_through() -> None:
    quick = _report()["candidate"]["top_actors"][0]
    slow = whatif(_traffic(), WorkerSettings(), _enforcing("shop"), options=WhatIfOptions(latency_s=2.5))["candidate"]["top_actors"][0]
    # requests come every second: 2.4 s more latency is two or three requests more
    assert slow["first_refused"] - quick["first_refused"] in (2.0, 3.0)
    assert quick["refused"] - slow["refused"] == slow["first_refused"] - quick["first_refused"]


def test_requests_refused_when_recorded_are_counted_apart() -> None:
    rows = _traffic()
    refused_then = {f"m{i}" for i in range(70, 80)}
    rows = [{**r, "decision": "deny", "status": 403} if r["id"] in refused_then else r for r in rows]
    report = whatif(rows, WorkerSettings(), _enforcing("shop"))
    assert report["already_refused"] == {"requests": 10, "actors": 1, "by_decision": {"deny": 10}, "by_namespace": {"shop": 10}}
    assert report["candidate"]["refused"]["requests"] == _report()["candidate"]["refused"]["requests"] - 10


def test_an_inline_finding_is_refused_where_the_policy_enforces() -> None:
    probe = summary_row(id="e1", time=T0 + 1, source={**SHOP, "ip": "10.0.0.66"}, principal="eve", destination={"service": "orders", "namespace": "shop"},
                        method="GET", path_template="/orders", status=200, inline_findings=["sqli"])
    report = whatif([probe], WorkerSettings(), _enforcing("shop"))
    assert report["candidate"]["refused"]["by_action"] == {"inline": 1} and report["candidate"]["refused"]["by_class"] == {"inline:sqli": 1}
    assert report["candidate"]["collateral"]["requests"] == 0
    assert report["baseline"]["refused"]["requests"] == 0 and report["baseline"]["observed"]["by_class"] == {"inline:sqli": 1}


def test_rows_records_and_arrow_tables_give_one_report_and_ground_truth_is_never_read() -> None:
    rows = _traffic()
    table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
    truthful = [{**r, "ground_truth": {"scenario": "bola", "attack_id": "bola-1", "malicious": True}} for r in rows]
    reports = [whatif(source, WorkerSettings(), _enforcing("shop"), _labels())
               for source in ([row_to_summary(r) for r in rows], table, [table.slice(0, 50), table.slice(50)], truthful)]
    assert all(r == _report() for r in reports)


def test_a_tool_call_is_seen_with_its_tool_so_a_tool_verdict_applies(verdict_factory: Any) -> None:
    row = summary_row(id="t1", time=T0, source={"workload": "agents/bot", "namespace": "agents"}, principal=None,
                      destination={"service": "mcp-files", "namespace": "agents"}, method="POST", path_template="/mcp", status=200,
                      mcp={"jsonrpc_method": "tools/call", "tool_name": "delete_all"})
    (call,) = recorded_calls(pa.Table.from_pylist([row], schema=SUMMARY_SCHEMA))
    cache = VerdictCache()
    cache.apply(verdict_factory(subject=Subject(kind="tool", value="agents/mcp-files/delete_all"), issued_at=T0 - 1, expires_at=T0 + 60))
    assert decide(call.view, cache, TokenBuckets(), _Recorded(), Policy(), T0).status == 403
    other = recorded_calls(pa.Table.from_pylist([{**row, "mcp": {"jsonrpc_method": "tools/call", "tool_name": "read_file"}}], schema=SUMMARY_SCHEMA))[0]
    assert decide(other.view, cache, TokenBuckets(), _Recorded(), Policy(), T0).status == 200


@pytest.mark.parametrize("bad", [{"latency_s": -0.1}, {"batch_s": 0.0}, {"batch_rows": 0}, {"pattern_share": 0.0}, {"pattern_share": 1.5}])
def test_options_out_of_range_are_refused_naming_them(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        WhatIfOptions(**bad)


# --- the learned allow-list ------------------------------------------------------------------------------------------


def _allowlist(*entries: tuple[str, str, str, list[str]]) -> AllowList:
    return allowlist_from_dict({"kind": "KubewardAllowList", "version": 1, "endpoints": [
        {"destination": d, "method": m, "path_template": t, "callers": c} for d, m, t, c in entries]})


#: alice's catalog reads are listed for her workload; the order ids mallory walks are listed for another caller only
SHOP_LIST = (("shop/catalog", "GET", "/products", ["shop/web"]), ("shop/orders", "GET", "/orders/{id}", ["shop/checkout"]))


@cache
def _listed() -> dict[str, Any]:
    return whatif(_traffic(), WorkerSettings(), _enforcing("shop"), _labels(), allowlist=_allowlist(*SHOP_LIST))


def test_an_allowlist_refuses_a_caller_it_does_not_name_from_the_first_request_and_names_the_reason() -> None:
    cand, without = _listed()["candidate"], _report()["candidate"]
    walks = [r for r in _traffic() if r["id"].startswith("m")]
    (top,) = cand["top_actors"]
    assert top["actor"] == MALLORY and top["first_refused"] == T0
    # before her verdict reaches the shim the list refuses her walk; after it, the verdict answers first (as in the shim)
    before = sum(1 for r in walks if r["time"] < without["top_actors"][0]["first_refused"])
    assert cand["refused"]["by_action"] == {"allowlist": before, "block": without["refused"]["by_action"]["block"]}
    assert cand["refused"]["by_class"]["allowlist:unknown-caller"] == cand["refused"]["by_rule"]["allowlist:unknown-caller"] == before
    assert cand["refused"]["requests"] == len(walks) + 6 and cand["top_actors"][0]["classes"]["allowlist:unknown-caller"] == before
    # the list refuses the request itself: never collateral; alice's listed reads pass
    assert cand["collateral"] == without["collateral"] and "shop/catalog" not in cand["refused"]["by_service"]
    assert cand["labels"]["malicious_requests_refused"] == len(walks) and cand["labels"]["benign_actors_refused"] == 0
    assert _listed()["settings"]["candidate"]["allowlist"] == {"source": "<allow-list>", "endpoints": 2, "destinations": 2}
    assert _listed()["settings"]["baseline"]["allowlist"] is None and _report()["settings"]["candidate"]["allowlist"] is None


def test_what_the_allowlist_refuses_on_its_own_is_reported_apart_from_what_answered_first() -> None:
    report = _listed()
    alone, walks = report["candidate"]["allowlist"], sum(1 for r in _traffic() if r["id"].startswith("m"))
    assert alone["requests"] == walks and alone["by_reason"] == {"allowlist:unknown-caller": walks} and alone["by_service"] == {"shop/orders": walks}
    assert alone["answered_first"] == report["candidate"]["refused"]["by_action"]["allowlist"] < walks
    assert (alone["actors"], alone["attackers"], alone["benign_actors"], alone["malicious_requests"], alone["benign_requests"]) == (1, 1, 0, walks, 0)
    assert alone["observed_requests"] == 0 and report["baseline"]["allowlist"] is None and _report()["candidate"]["allowlist"] is None


def test_an_allowlist_refuses_an_unlisted_endpoint_and_leaves_unlisted_destinations_alone() -> None:
    listed = _allowlist(("shop/orders", "GET", "/orders/{id}", ["shop/web"]), ("shop/orders", "GET", "/orders", ["shop/web"]))
    probe = summary_row(id="p1", time=T0, source={**SHOP, "ip": "10.0.0.7"}, principal="alice", destination={"service": "orders", "namespace": "shop"},
                        method="DELETE", path_template="/orders/{id}", status=200)
    report = whatif([probe, _alice(0)], WorkerSettings(), _enforcing("shop"), allowlist=listed)
    assert report["candidate"]["refused"]["by_rule"] == {"allowlist:unknown-endpoint": 1}  # alice's catalog read: catalog is not governed


def test_in_observe_mode_an_allowlist_only_says_what_it_would_refuse() -> None:
    report = whatif(_traffic(), WorkerSettings(), WorkerSettings(), _labels(), allowlist=_allowlist(*SHOP_LIST))
    cand = report["candidate"]
    assert cand["refused"]["requests"] == 0 and cand["observed"]["by_class"]["allowlist:unknown-caller"] > 0
    assert cand["allowlist"]["requests"] == 0 and cand["allowlist"]["observed_requests"] == 90
    assert report["baseline"]["observed"].get("by_class", {}).get("allowlist:unknown-caller") is None


def test_a_deployed_allowlist_is_in_both_runs_and_no_difference() -> None:
    listed = _allowlist(*SHOP_LIST)
    report = whatif(_traffic(), _enforcing("shop"), _enforcing("shop"), _labels(), allowlist=listed, baseline_allowlist=listed)
    assert report["baseline"]["refused"] == report["candidate"]["refused"] and report["baseline"]["refused"]["by_action"]["allowlist"] > 0
    assert report["difference"]["requests_newly_refused"] == report["difference"]["requests_no_longer_refused"] == 0


def test_the_caller_the_allowlist_checks_is_the_recorded_workload_else_the_address() -> None:
    listed = _allowlist(("shop/orders", "GET", "/orders", ["cidr:198.51.100.0/24", "shop/web"]))
    outside = {"ip": "198.51.100.7", "external": True}
    rows = [summary_row(id=i, time=T0, source=src, principal=p, destination={"service": "orders", "namespace": "shop"}, method="GET",
                        path_template="/orders", status=200)
            for i, src, p in (("ext", outside, "bob"), ("far", {"ip": "203.0.113.9", "external": True}, None),
                              ("pod", {"workload": "shop/cart", "namespace": "shop", "ip": "198.51.100.8"}, None),
                              ("web", {**SHOP, "ip": "10.0.0.7"}, "alice"), ("anon", {}, None))]
    calls = {c.id: c for c in recorded_calls(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))}
    # a workload is checked as the workload even when its address is in a listed CIDR; without one, the address
    assert {i: listed.refusal(c.view) for i, c in calls.items()} == {
        "ext": None, "far": "unknown-caller", "pod": "unknown-caller", "web": None, "anon": "unnamed-caller"}
    # and named as policy suggest named the peers it learned (an external address as its network)
    assert {i: caller_of(c.view) for i, c in calls.items()} == {
        "ext": "cidr:198.51.100.0/24", "far": "cidr:203.0.113.0/24", "pod": "shop/cart", "web": "shop/web", "anon": None}
    report = whatif(rows, WorkerSettings(), _enforcing("shop"), allowlist=listed)["candidate"]["refused"]
    assert report["by_rule"] == {"allowlist:unknown-caller": 2, "allowlist:unnamed-caller": 1}
