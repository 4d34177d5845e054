"""streams.keytable.KeyTable: upsert, find, bounded eviction, arrays/load round trip."""

from __future__ import annotations

import numpy as np
import pytest

from streams.keytable import KeyTable, mix


def _u(*keys: int) -> np.ndarray:
    return np.array(keys, dtype=np.uint64)


def test_upsert_inserts_once_and_reports_first_rows() -> None:
    t = KeyTable(10, {"n": np.float64})
    slots, new_first, new_slots = t.upsert(_u(5, 6, 5, 7), np.array([1.0, 2.0, 3.0, 4.0]))
    assert slots[0] == slots[2] and len(set(slots.tolist())) == 3
    assert new_first.tolist() == [True, True, False, True] and new_slots.tolist() == [0, 1, 2]
    slots2, new_first2, new_slots2 = t.upsert(_u(6, 8), np.array([9.0, 9.0]))
    assert slots2[0] == slots[1] and new_first2.tolist() == [False, True] and new_slots2.tolist() == [3]
    assert t.find(_u(5, 8, 99)).tolist() == [slots[0], 3, -1]
    assert t.cols["last_seen"][slots[0]] == 3.0 and t.cols["last_seen"][slots[1]] == 9.0


def test_growing_keeps_columns() -> None:
    t = KeyTable(10_000, {"n": np.float64})
    slots, _, _ = t.upsert(np.arange(5, dtype=np.uint64), np.zeros(5))
    t.cols["n"][slots] = [1, 2, 3, 4, 5]
    t.upsert(np.arange(5, 1000, dtype=np.uint64), np.zeros(995))
    assert len(t) == 1000 and t.cols["n"][t.find(np.arange(5, dtype=np.uint64))].tolist() == [1, 2, 3, 4, 5]


def test_eviction_keeps_the_most_recently_seen_and_counts() -> None:
    t = KeyTable(10, {"n": np.float64})
    t.upsert(np.arange(20, dtype=np.uint64), np.arange(20, dtype=np.float64))
    assert t.evict_oldest() == 11 and len(t) == 9 and t.evicted == 11
    assert sorted(t.keys[: len(t)].tolist()) == list(range(11, 20))
    assert t.find(_u(0, 19)).tolist()[0] == -1 and t.find(_u(19))[0] >= 0
    assert t.evict_oldest() == 0


def test_arrays_load_round_trip() -> None:
    t = KeyTable(10, {"n": np.float64, "flag": np.uint8})
    slots, _, _ = t.upsert(_u(3, 4), np.array([1.0, 2.0]))
    t.cols["flag"][slots] = [1, 0]
    twin = KeyTable(10, {"n": np.float64, "flag": np.uint8})
    twin.load(t.arrays())
    assert twin.find(_u(3, 4)).tolist() == t.find(_u(3, 4)).tolist()
    assert twin.cols["flag"][: len(twin)].tolist() == [1, 0]


def test_mix_is_a_bijection_on_a_sample_and_rejects_nothing() -> None:
    x = np.arange(10_000, dtype=np.uint64)
    assert len(np.unique(mix(x))) == 10_000 and mix(x).dtype == np.uint64
    with pytest.raises(ValueError, match="budget=0"):
        KeyTable(0, {})


def test_a_key_touched_again_survives_eviction_although_it_was_the_oldest() -> None:
    t = KeyTable(16, {"v": np.int32})
    t.upsert(np.arange(1, 13, dtype=np.uint64), np.arange(12, dtype=np.float64))
    t.upsert(_u(1, 100, 101, 102, 103, 104), np.full(6, 20.0))
    assert t.evict_oldest() == 17 - 14 and len(t) == 14
    found = t.find(np.arange(1, 13, dtype=np.uint64))
    assert found[0] >= 0 and (found[1:4] < 0).all() and (found[4:] >= 0).all()
    assert (t.find(_u(100, 104)) >= 0).all()


def test_a_batch_larger_than_the_budget_is_taken_whole_then_evicted_to_the_budget() -> None:
    t = KeyTable(16, {"v": np.int32})
    slots, new_first, new_slots = t.upsert(np.arange(1, 41, dtype=np.uint64), np.arange(40, dtype=np.float64))
    assert new_first.all() and len(new_slots) == 40 and len(set(slots.tolist())) == 40
    assert t.evict_oldest() == 40 - 14 and sorted(t.keys[: len(t)].tolist()) == list(range(27, 41))


def test_columns_follow_their_keys_through_growth_eviction_and_reload() -> None:
    rng = np.random.default_rng(3)
    t, model = KeyTable(300, {"v": np.uint64}), {}
    for step in range(30):
        keys = rng.integers(0, 2**64 - 1, size=int(rng.integers(1, 200)), dtype=np.uint64, endpoint=True)
        keys[: len(keys) // 3] = rng.choice(np.array(list(model) or [7], dtype=np.uint64), len(keys) // 3)  # repeats of known keys
        slots, _, _ = t.upsert(keys, np.full(len(keys), float(step)))
        t.cols["v"][slots] = keys ^ np.uint64(0xABC)
        model.update((int(k), step) for k in keys)
        t.evict_oldest()
        model = {k: s for k, s in model.items() if t.find(np.array([k], dtype=np.uint64))[0] >= 0}
        assert len(model) == len(t) <= 300
        held = np.array(list(model), dtype=np.uint64)
        assert (t.cols["v"][t.find(held)] == held ^ np.uint64(0xABC)).all()
        assert (t.cols["last_seen"][t.find(held)] == np.array(list(model.values()), dtype=np.float64)).all()
    twin = KeyTable(300, {"v": np.uint64})
    twin.load(t.arrays())
    assert (twin.cols["v"][twin.find(held)] == held ^ np.uint64(0xABC)).all()
    assert (twin.find(rng.integers(0, 2**63, size=1000, dtype=np.uint64)) < 0).sum() >= 999


def test_keys_with_one_home_position_are_all_found() -> None:
    inverse = pow(0x9E3779B97F4A7C15, -1, 2**64)  # keys * golden ratio (the home hash) = 7 << 54 + j: one home in a 1024-entry index
    keys = np.array([((7 << 54) + j) * inverse % 2**64 for j in range(200)], dtype=np.uint64)
    t = KeyTable(1000, {})
    t.upsert(keys, np.zeros(200))
    assert len(t._index) == 1024 and len(set(t._home(keys).tolist())) == 1
    assert sorted(t.find(keys).tolist()) == list(range(200)) and (t.find(keys + np.uint64(1)) < 0).sum() >= 190
