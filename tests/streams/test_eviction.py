"""streams.eviction and the processor's bounded state: idle keys by TTL on the event clock, the oldest past a
memory budget, counted; the changelog written after an eviction never brings an evicted key back."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from ingest import actor_key
from models import REGISTRY as RULES, build_detectors
from streams import WorkerSettings, metrics, state
from streams.eviction import KEEP, Eviction, EvictionConfig
from streams.processor import SIDE_TABLE, BatchProcessor, ProcessorConfig
from streams.state import actor_hash
from tests.conftest import T0

W = 60


def _processor(**config: Any) -> BatchProcessor:
    return BatchProcessor(ProcessorConfig(**config), build_detectors(sorted(RULES)))


def _calls(factory: Any, users: range, t: float, **fields: Any) -> list[Any]:
    return [factory(principal=f"u{i}", ip=f"10.1.{i // 250}.{i % 250}", time=t, **fields) for i in users]


def _has(proc: BatchProcessor, *principals: str) -> list[bool]:
    keys = np.array([actor_hash(actor_key("shop/web", p)) for p in principals], dtype=np.uint64)
    return (proc.store.find(keys) >= 0).tolist()


# ------------------------------------------------------------------ the clock and the selection


def test_the_clock_follows_the_median_event_time_and_never_goes_back() -> None:
    ev = Eviction(EvictionConfig())
    ev.advance(np.array([100.0, 101.0, 99.0]))
    assert ev.clock == 100.0
    ev.advance(np.array([50.0]))
    assert ev.clock == 100.0
    ev.advance(np.array([200.0, 201.0, 202.0, 9e10, 9e10]))  # two rows stamped far ahead do not move it there
    assert ev.clock == 202.0


def test_idle_rows_go_at_a_sweep_and_are_counted() -> None:
    ev = Eviction(EvictionConfig(idle_ttl_s=600, budget_bytes=0, window_s=W))
    seen = np.array([0, 500, 1000, 1100], dtype=np.uint32)
    ev.advance(np.array([1650.0]))
    assert ev.due(0)
    (drop,), swept = ev.select([("actor", seen, np.full(4, 100, np.int64))], 400)
    assert swept and drop.tolist() == [0, 1]  # last windows ended at 60 and 560; 1,060 is 590 s ago
    assert ev.evicted == {"actor:ttl": 2} and ev.take_counts() == {"actor:ttl": 2} and ev.take_counts() == {}
    ev.advance(np.array([1651.0]))
    assert not ev.due(0)  # the next sweep is sweep_s (60 s here) of event time later


def test_past_the_budget_the_oldest_go_until_keep_of_it_is_held() -> None:
    ev = Eviction(EvictionConfig(idle_ttl_s=0, budget_bytes=1000, window_s=W))
    ev.advance(np.array([0.0]))
    actors = np.array([300, 100, 200, 400, 500], dtype=np.uint32)
    sources = np.array([150, 450], dtype=np.uint32)
    tables = [("actor", actors, np.full(5, 150, np.int64)), ("source", sources, np.full(2, 100, np.int64))]
    (a, s), swept = ev.select(tables, 950)  # the first batch sweeps (nothing is idle without a TTL), within budget
    assert swept and len(a) == len(s) == 0 and not ev.due(950) and ev.due(1001)
    (a, s), _ = ev.select(tables, 1100)  # 1100 - 900 = 200 bytes to free: actor@100 (150) then source@150 (100)
    assert a.tolist() == [1] and s.tolist() == [0]
    assert ev.evicted == {"actor:budget": 1, "source:budget": 1} and KEEP == 0.9


def test_eviction_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        EvictionConfig(idle_ttl_s=-1)
    with pytest.raises(ValidationError, match="at least two windows"):
        WorkerSettings(state_idle_ttl_s=90)
    with pytest.raises(ValidationError, match="at least 1 MiB"):
        WorkerSettings(state_budget_bytes=4096)
    assert WorkerSettings(state_idle_ttl_s=0, state_budget_bytes=0).state_budget_bytes == 0


def test_the_processor_defaults_are_the_worker_settings_defaults() -> None:
    settings, config = WorkerSettings(), ProcessorConfig()
    assert (settings.state_idle_ttl_s, settings.state_budget_bytes) == (config.idle_ttl_s, config.state_budget_bytes)


# ------------------------------------------------------------------ the processor


def test_an_idle_actor_is_evicted_by_event_time_and_an_active_one_stays(summary_factory: Any, table_of: Any) -> None:
    proc = _processor(idle_ttl_s=600)
    proc.process(table_of(_calls(summary_factory, range(3), T0 + 1, inline_findings=["sqli"])))  # u0..u2, with side rows
    assert len(proc.side.store) == 3
    for minute in range(1, 13):  # u0 keeps calling, u1 and u2 stop; event time moves 12 minutes
        proc.process(table_of(_calls(summary_factory, range(1), T0 + minute * W + 1)))
    assert _has(proc, "u0", "u1", "u2") == [True, False, False]
    stats = proc.state_stats()
    assert stats["evicted"] == {"actor:ttl": 2, "source:ttl": 2} and stats["keys"]["actor"] == stats["keys"]["source"] == 1
    assert len(proc.side.store) == 0  # u1's and u2's side rows went with them, u0's was released (its window ended clean)
    assert proc.take_evictions() == {"actor:ttl": 2, "source:ttl": 2} and proc.take_evictions() == {}


def test_past_the_budget_the_least_recently_active_actors_go(summary_factory: Any, table_of: Any) -> None:
    proc = _processor(idle_ttl_s=0, state_budget_bytes=1 << 20)
    per_actor = proc.store.row_bytes
    for minute in range(12):  # 1,000 new users a minute: about 171 bytes each, and their client addresses
        proc.process(table_of(_calls(summary_factory, range(minute * 1000, (minute + 1) * 1000), T0 + minute * W + 1)))
    assert proc.state_bytes() <= 1 << 20
    stats = proc.state_stats()
    assert stats["evicted"].get("actor:budget", 0) > 0 and per_actor < 200
    assert _has(proc, "u11999", "u11000", "u0") == [True, True, False]  # the newest minute is kept, the oldest went
    alive = proc.store.cols["window_start"][: len(proc.store)]
    assert alive.min() > T0  # nothing of the first minute


def test_an_evicted_actor_comes_back_as_a_new_one_and_learns_again(summary_factory: Any, table_of: Any) -> None:
    proc = _processor(idle_ttl_s=600)
    for minute in range(5):
        proc.process(table_of(_calls(summary_factory, range(1), T0 + minute * W + 1, sensitive={"email": 3})))
    row = int(proc.store.find(np.array([actor_hash(actor_key("shop/web", "u0"))], dtype=np.uint64))[0])
    assert proc.store.cols["age_windows"][row] == 4 and proc.store.cols["baseline_pii"][row] == 3
    proc.process(table_of(_calls(summary_factory, range(1, 2), T0 + 30 * W + 1)))  # others' traffic moves the clock on
    assert _has(proc, "u0") == [False]
    proc.process(table_of(_calls(summary_factory, range(1), T0 + 31 * W + 1)))
    row = int(proc.store.find(np.array([actor_hash(actor_key("shop/web", "u0"))], dtype=np.uint64))[0])
    assert proc.store.cols["age_windows"][row] == 0 and proc.store.cols["baseline_pii"][row] == 0


def test_the_changelog_after_an_eviction_restores_without_the_evicted(summary_factory: Any, table_of: Any) -> None:
    proc = _processor(idle_ttl_s=600)
    changelog: dict[str, bytes] = {}
    proc.process(table_of(_calls(summary_factory, range(200), T0 + 1, inline_findings=["sqli"])))
    changelog.update(proc.checkpoint(everything=True))
    for minute in range(1, 13):
        proc.process(table_of(_calls(summary_factory, range(20), T0 + minute * W + 1)))
        changelog.update(proc.checkpoint())  # a compacted topic: the latest blob per key
    assert len(proc.store) == 20 and proc.state_stats()["evicted"]["actor:ttl"] == 180
    restored = _processor(idle_ttl_s=600)
    restored.restore(changelog.items())
    assert len(restored.store) == 20 and len(restored.side.store) == len(proc.side.store)
    keys = lambda p: sorted(p.store.cols["key"][: len(p.store)].tolist())  # noqa: E731
    assert keys(restored) == keys(proc)
    assert _has(restored, "u150", "u5") == [False, True]


def test_evictions_are_counted_in_prometheus(summary_factory: Any, table_of: Any) -> None:
    proc = _processor(idle_ttl_s=600)
    before = REGISTRY.get_sample_value("kubeward_worker_state_evictions_total", {"table": "actor", "reason": "ttl"}) or 0.0
    proc.process(table_of(_calls(summary_factory, range(5), T0 + 1)))
    proc.process(table_of(_calls(summary_factory, range(5, 6), T0 + 20 * W + 1)))
    metrics.observe_state(7, proc)
    after = REGISTRY.get_sample_value("kubeward_worker_state_evictions_total", {"table": "actor", "reason": "ttl"})
    assert after == before + 5
    assert REGISTRY.get_sample_value("kubeward_worker_state_keys", {"partition": "7", "table": "actor"}) == 1
    assert REGISTRY.get_sample_value("kubeward_worker_state_keys", {"partition": "7", "table": SIDE_TABLE}) == 0


def test_a_restored_partition_empties_the_parts_its_buckets_no_longer_need(summary_factory: Any, table_of: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state, "PART_BYTES", 4096)  # ~25 actors a part
    proc = _processor(idle_ttl_s=600, buckets=4)
    proc.process(table_of(_calls(summary_factory, range(400), T0 + 1)))
    changelog = dict(proc.checkpoint(everything=True))
    assert {"0.1", "3.2"} <= set(changelog) and max(len(v) for v in changelog.values() if v[:1] != b"{") <= 4096
    restored = _processor(idle_ttl_s=600, buckets=4)
    restored.restore(changelog.items())
    assert len(restored.store) == 400
    restored.process(table_of(_calls(summary_factory, range(10), T0 + 20 * W + 1)))  # the other 390 idle past the TTL
    changelog.update(restored.checkpoint())
    again = _processor(idle_ttl_s=600, buckets=4)
    again.restore(changelog.items())
    assert len(again.store) == 10 and _has(again, "u3", "u300") == [True, False]
