"""enforcement.cache.VerdictCache: apply, replace, remove (tombstone), purge, find."""

from __future__ import annotations

from typing import Any

from enforcement.cache import CachedVerdict, VerdictCache
from ingest import Subject
from tests.conftest import T0


def test_apply_compiles_what_the_hot_path_needs(verdict_factory: Any) -> None:
    verdict = verdict_factory(action="throttle", rate_per_s=2.5, burst=4, scope="orders")
    cache = VerdictCache()
    cache.apply(verdict)
    assert cache.entries == {"actor:shop/web|alice": CachedVerdict("throttle", "enforce", T0 + 900.0, "orders", 2.5, 4, "bola_breadth", verdict.id)}
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
