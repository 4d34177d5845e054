"""enforcement.cache.VerdictCache: apply, replace, lift, stale records, purge, find."""

from __future__ import annotations

from typing import Any

from enforcement.cache import CachedVerdict, VerdictCache, compile_template, entry_key
from ingest import Scope, Subject
from tests.conftest import T0


def test_apply_compiles_what_the_hot_path_needs(verdict_factory: Any) -> None:
    verdict = verdict_factory(action="throttle", rate_per_s=2.5, burst=4, scope="orders")
    cache = VerdictCache()
    cache.apply(verdict)
    assert cache.entries == {"actor:shop/web|alice": CachedVerdict("throttle", "enforce", T0 + 900.0, "orders", 2.5, 4, "bola_breadth", verdict.id, issued_at=T0)}
    assert (len(cache), cache.applied, cache.removed) == (1, 1, 0)


def test_apply_defaults_rate_burst_and_reason(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(reasons=[], rate_per_s=None, burst=None))
    (entry,) = cache.entries.values()
    assert (entry.rate_per_s, entry.burst, entry.reason, entry.scope_service) == (1.0, 1, "verdict", None)


def test_a_newer_verdict_replaces_the_older_for_the_same_subject(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(mode="observe"))
    newer = verdict_factory(mode="enforce", action="throttle")
    cache.apply(newer)
    assert len(cache) == 1 and cache.applied == 2
    (entry,) = cache.entries.values()
    assert (entry.verdict_id, entry.mode, entry.action) == (newer.id, "enforce", "throttle")


def test_verdicts_for_different_subjects_coexist(verdict_factory: Any) -> None:
    cache = VerdictCache()
    for kind, value in [("actor", "a|b"), ("ip", "10.0.0.1"), ("principal", "a|b")]:
        cache.apply(verdict_factory(subject=Subject(kind=kind, value=value)))
    assert sorted(cache.entries) == ["actor:a|b", "ip:10.0.0.1", "principal:a|b"]


def test_remove_lifts_a_verdict_and_counts_only_real_removals(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory())
    cache.remove("actor:shop/web|alice")
    cache.remove("actor:shop/web|alice")
    cache.remove("ip:never-there")
    assert (len(cache), cache.removed) == (0, 1)


def test_a_lift_drops_the_subject_and_its_edges_issued_before_it_and_stands_until_it_expires(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(issued_at=T0))
    cache.apply(verdict_factory(issued_at=T0, scope=Scope(service="orders", path_template="/orders/{id}")))
    later_edge = verdict_factory(issued_at=T0 + 20, scope=Scope(service="orders", path_template="/admin/{id}"))
    cache.apply(later_edge)
    assert cache.apply(verdict_factory(action="lift", issued_at=T0 + 10, expires_at=T0 + 100))
    assert list(cache.entries) == [entry_key(later_edge)]  # issued after the lift: it stands
    assert not cache.apply(verdict_factory(issued_at=T0 + 5))  # an older record, replayed
    assert not cache.apply(verdict_factory(issued_at=T0 + 5, scope=Scope(service="orders", path_template="/orders/{id}")))
    assert cache.stale == 2 and len(cache) == 1
    cache.purge(T0 + 100)
    assert cache.lifted == {} and cache.apply(verdict_factory(issued_at=T0 + 5, expires_at=T0 + 900))  # the lift has expired


def test_a_record_older_than_the_one_in_place_is_stale_within_a_tolerance(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(issued_at=T0 + 100, action="block"))
    assert cache.apply(verdict_factory(issued_at=T0 + 99.5, action="throttle"))  # another worker's clock, 0.5 s behind
    assert not cache.apply(verdict_factory(issued_at=T0 + 98, action="redact"))
    assert (cache.entries["actor:shop/web|alice"].action, cache.stale) == ("throttle", 1)


def test_an_older_subject_lift_does_not_hide_a_newer_edge_lift_and_the_reverse(verdict_factory: Any) -> None:
    cache = VerdictCache()
    edge = Scope(service="orders", path_template="/orders/{id}")
    cache.apply(verdict_factory(action="lift", issued_at=T0 + 50, scope=edge, expires_at=T0 + 1000))
    cache.apply(verdict_factory(action="lift", issued_at=T0 + 80, expires_at=T0 + 1000))  # the subject's, newer
    assert not cache.apply(verdict_factory(issued_at=T0 + 60, scope=edge))  # after the edge's lift, before the subject's
    assert cache.apply(verdict_factory(issued_at=T0 + 90, scope=edge))


def test_purge_drops_only_expired_entries(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(subject=Subject(kind="ip", value="1"), expires_at=T0 + 10))
    cache.apply(verdict_factory(subject=Subject(kind="ip", value="2"), expires_at=T0 + 20))
    cache.apply(verdict_factory(subject=Subject(kind="ip", value="3"), expires_at=T0 + 30))
    assert cache.purge(T0 + 5) == 0
    assert cache.purge(T0 + 20) == 2
    assert list(cache.entries) == ["ip:3"]
    assert cache.purge(T0 + 20) == 0


def test_find_returns_the_first_live_matching_key(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(subject=Subject(kind="actor", value="a|b"), expires_at=T0))
    cache.apply(verdict_factory(subject=Subject(kind="principal", value="b"), scope="payments"))
    cache.apply(verdict_factory(subject=Subject(kind="ip", value="1.2.3.4")))
    keys = ("actor:a|b", "principal:b", "ip:1.2.3.4")
    found = cache.find(keys, "orders", T0 + 1)
    assert found is not None and found[0] == "ip:1.2.3.4"
    found = cache.find(keys, "payments", T0 + 1)
    assert found is not None and found[0] == "principal:b"
    found = cache.find(keys, "orders", T0 - 1)
    assert found is not None and found[0] == "actor:a|b"
    assert cache.find(("workload:x",), "orders", T0) is None


# --- edge scopes: a verdict on (service, path template) denies only that edge ---


def _edge(verdict_factory: Any, template: str, service: str | None = "ledger", **kw: Any) -> Any:
    return verdict_factory(scope=Scope(service=service, path_template=template), **kw)


def test_an_edge_verdict_denies_only_paths_of_its_template_on_its_service(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(_edge(verdict_factory, "/admin/export/{id}"))
    keys = ("actor:shop/web|alice",)
    assert cache.find(keys, "ledger", T0, "/admin/export/17") is not None
    assert cache.find(keys, "ledger", T0, "/admin/export/17?format=csv") is not None
    assert cache.find(keys, "ledger", T0, "/admin/export") is None
    assert cache.find(keys, "ledger", T0, "/admin/export/17/items") is None
    assert cache.find(keys, "ledger", T0, "/orders/17") is None
    assert cache.find(keys, "orders", T0, "/admin/export/17") is None
    assert cache.find(keys, "ledger", T0) is None  # path unknown: an edge verdict cannot be matched


def test_edge_matching_resists_slashes_case_and_percent_encoding(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(_edge(verdict_factory, "/admin/export/{id}"))
    keys = ("actor:shop/web|alice",)
    for path in ("//admin//export/17/", "/ADMIN/Export/17", "/admin/%65xport/17", "/admin/export/a%2Fb"):
        assert cache.find(keys, "ledger", T0, path) is not None, path


def test_several_edge_verdicts_of_one_subject_coexist_with_an_unscoped_one(verdict_factory: Any) -> None:
    cache = VerdictCache()
    a = _edge(verdict_factory, "/admin/balances")
    b = _edge(verdict_factory, "/secrets/{name}", service="secrets-broker")
    cache.apply(a)
    cache.apply(b)
    assert len(cache) == 2
    keys = ("actor:shop/web|alice",)
    hit = cache.find(keys, "secrets-broker", T0, "/secrets/db")
    assert hit is not None and hit[1].verdict_id == b.id and hit[0] == entry_key(b)
    assert cache.find(keys, "ledger", T0, "/admin/balances") is not None
    assert cache.find(keys, "ledger", T0, "/ledger/entries") is None
    whole = verdict_factory(action="throttle")
    cache.apply(whole)  # an unscoped verdict is stored under the subject key, beside the edges
    assert len(cache) == 3
    found = cache.find(keys, "ledger", T0, "/ledger/entries")
    assert found is not None and found[1].verdict_id == whole.id


def test_unscoped_and_service_scoped_verdicts_are_unchanged_by_a_path(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(verdict_factory(scope="payments"))
    keys = ("actor:shop/web|alice",)
    assert list(cache.entries) == ["actor:shop/web|alice"] and cache.edges == {}
    assert cache.find(keys, "payments", T0, "/anything/at/all") is not None
    assert cache.find(keys, "orders", T0, "/anything") is None


def test_edge_verdicts_expire_are_lifted_and_purged(verdict_factory: Any) -> None:
    cache = VerdictCache()
    short = _edge(verdict_factory, "/admin/balances", expires_at=T0 + 10)
    long = _edge(verdict_factory, "/admin/adjustments", expires_at=T0 + 100)
    cache.apply(short)
    cache.apply(long)
    keys = ("actor:shop/web|alice",)
    assert cache.find(keys, "ledger", T0 + 20, "/admin/balances") is None
    assert cache.purge(T0 + 20) == 1 and list(cache.edges["actor:shop/web|alice"]) == [entry_key(long)]
    cache.remove(entry_key(long))
    assert len(cache) == 0 and cache.edges == {} and cache.removed == 1


def test_lifting_a_subject_lifts_its_edge_verdicts(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(_edge(verdict_factory, "/admin/balances"))
    cache.apply(_edge(verdict_factory, "/secrets/{name}", service=None, subject=Subject(kind="principal", value="bob@example.com")))
    cache.remove("actor:shop/web|alice")
    assert list(cache.edges) == ["principal:bob@example.com"] and cache.removed == 1
    hit = cache.find(("principal:bob@example.com",), "any-service", T0, "/secrets/x")
    assert hit is not None  # a scope without a service matches the template on every service


def test_entry_key_and_compiled_template(verdict_factory: Any) -> None:
    v = _edge(verdict_factory, "/invoices/{id}.json")
    assert entry_key(v) == "actor:shop/web|alice@ledger /invoices/{id}.json"
    assert entry_key(verdict_factory(scope="ledger")) == "actor:shop/web|alice"
    p = compile_template("/invoices/{id}.json")
    assert p.fullmatch("/invoices/42.json") and not p.fullmatch("/invoices/42xjson")


def test_a_weaker_verdict_on_a_specific_key_never_hides_a_block_on_its_edge_or_address() -> None:
    from ingest import Reason, Scope, Subject, Verdict

    t0 = 1_700_000_000.0

    def verdict(kind: str, value: str, mode: str, scope: Scope | None = None, action: str = "block") -> Verdict:
        return Verdict(id=f"{kind}{mode}{scope}{action}", subject=Subject(kind=kind, value=value), scope=scope, action=action,  # type: ignore[arg-type]
                       mode=mode, expires_at=t0 + 900, reasons=[Reason(detector="x", score=0.9, evidence="e")], issued_at=t0,  # type: ignore[arg-type]
                       evidence_time=t0)

    cache = VerdictCache()
    cache.apply(verdict("actor", "203.0.113.9|-", "observe"))
    keys = ("actor:203.0.113.9|-", "ip:203.0.113.9")
    assert cache.find(keys, "orders", t0 + 1, "/admin/export/1")[1].mode == "observe"  # type: ignore[index]
    cache.apply(verdict("actor", "203.0.113.9|-", "enforce", Scope(service="orders", path_template="/admin/export/{id}")))
    key, hit = cache.find(keys, "orders", t0 + 1, "/admin/export/1")  # type: ignore[misc]
    assert hit.mode == "enforce" and "@orders /admin/export/{id}" in key
    assert cache.find(keys, "orders", t0 + 1, "/orders/1")[1].mode == "observe"  # type: ignore[index]
    cache.apply(verdict("ip", "203.0.113.9", "enforce", action="throttle"))
    assert cache.find(keys, "orders", t0 + 1, "/orders/1")[0] == "ip:203.0.113.9"  # type: ignore[index]
    cache.apply(verdict("ip", "203.0.113.9", "enforce"))
    assert cache.find(keys, "orders", t0 + 1, "/orders/1")[1].action == "block"  # type: ignore[index]


# --- a path the server reads differently from how it was written must still meet its edge verdict ---


def test_edge_matching_resolves_dot_segments_and_cuts_params(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(_edge(verdict_factory, "/admin/export"))
    cache.apply(_edge(verdict_factory, "/admin/users/{id}"))
    keys = ("actor:shop/web|alice",)
    for path in ("/admin/./export", "/admin/export;x=1", "/admin;v=2/export", "/admin/x/../export", "/./admin/export/.",
                 "/../admin/export", "/admin/export/", "/admin/%2e/export", "/admin/export%3bx=1", "/admin/x/..;/export",
                 "/admin/x/%2e%2e/export?a=1", "/admin/users/./7", "/admin/users/7;jsessionid=9", "//admin/./users//7/"):
        assert cache.find(keys, "ledger", T0, path) is not None, path


def test_resolving_a_path_never_widens_an_edge_verdict(verdict_factory: Any) -> None:
    cache = VerdictCache()
    cache.apply(_edge(verdict_factory, "/admin/export"))
    cache.apply(_edge(verdict_factory, "/admin/users/{id}"))
    keys = ("actor:shop/web|alice",)
    for path in ("/admin/export/../orders", "/admin/export/x", "/admin/exports;x", "/admin/users", "/admin/users/7/..",
                 "/admin/x/export", "/admin/users/7/../../orders/7", "/orders/export;admin"):
        assert cache.find(keys, "ledger", T0, path) is None, path
