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
