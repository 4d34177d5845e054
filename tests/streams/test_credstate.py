"""streams.credstate: grouped sums, and the login tables' vectorised and one-at-a-time folds agreeing."""

from __future__ import annotations

import numpy as np
import pytest

from streams.credstate import Groups, LoginTable, grouped_cumsum, linear_count


def test_grouped_cumsum_keeps_event_order_within_groups() -> None:
    assert grouped_cumsum(np.array([2, 0, 2, 2, 0]), np.array([1.0, 10.0, 2.0, 3.0, 20.0])).tolist() == [1, 10, 3, 6, 30]


def test_totals_come_in_group_order_when_every_group_has_one_event() -> None:
    groups = Groups.of(np.array([30, 10, 20], dtype=np.uint64))
    assert groups.singletons and groups.keys.tolist() == [10, 20, 30]
    assert groups.totals(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 2.0, 3.0]  # key 10's event is the second


def _folds(table: LoginTable, keys: list[int], t: np.ndarray, w: np.ndarray, now: float) -> np.ndarray:
    """The vectorised fold of events with these keys."""
    groups = Groups.of(np.array(keys, dtype=np.uint64))
    return table.count(groups, table.rows_for(groups.keys), t, w, now)


def test_count_and_count_one_give_the_same_values_and_state() -> None:
    rng = np.random.default_rng(4)
    vec, one = LoginTable(64, 8, (60.0, 3600.0)), LoginTable(64, 8, (60.0, 3600.0))
    for batch in range(5):
        keys = rng.integers(1, 12, size=9).tolist()
        t = np.sort(100.0 * batch + rng.uniform(0, 50, size=9))
        w = rng.integers(0, 2, size=(9, 2)).astype(np.float64)
        now = float(t.max())
        want = _folds(vec, keys, t, w, now)
        distinct = list(dict.fromkeys(keys))
        rows = dict(zip(distinct, one.rows_of(distinct)))
        state: dict[int, list[float]] = {}
        got = [one.count_one(rows[k], float(ti), tuple(wi), now, state) for k, ti, wi in zip(keys, t, w.tolist())]
        one.settle(state, now)
        assert np.allclose(got, want, rtol=1e-12)
    for key in vec.index:
        i, j = vec.index[key], one.index[key]
        assert np.allclose(vec.counts[i], one.counts[j]) and vec.last[i] == one.last[j]


def test_distinct_and_distinct_one_count_unresolved_failures_alike() -> None:
    rng = np.random.default_rng(5)
    vec, one = LoginTable(16, 32, (60.0,)), LoginTable(16, 32, (60.0,))
    for batch in range(4):
        keys = rng.integers(1, 4, size=12).tolist()
        elements = (rng.integers(1, 40, size=12).astype(np.uint64) << np.uint64(40))
        failed = rng.random(12) < 0.7
        t_rel = np.float32(50.0 * batch) + np.arange(12, dtype=np.float64)
        alive_after = float(np.float32(t_rel.min() - 120.0))
        distinct = list(dict.fromkeys(keys))
        vec_rows = dict(zip(distinct, vec.rows_of(distinct)))
        want = vec.distinct(np.array([vec_rows[k] for k in keys], dtype=np.intp), elements, failed, t_rel, alive_after)
        rows = dict(zip(distinct, one.rows_of(distinct)))
        live: dict[int, float] = {}
        touched: dict[int, bool] = {}
        got = [one.distinct_one(rows[k], int(e), bool(f), float(t), alive_after, live, touched)
               for k, e, f, t in zip(keys, elements, failed, t_rel)]
        assert np.allclose(got, want, rtol=1e-12), batch
    assert linear_count(np.array([0.0, 1.0, 2.0])).round(3).tolist() == [0.0, 1.016, 2.065]


def test_a_table_never_evicts_a_key_of_the_batch_and_restores_only_its_own_shape() -> None:
    table = LoginTable(4, 2, (60.0,))
    rows = table.rows_of([1, 2, 3, 4])
    table.last[rows] = [10.0, 20.0, 30.0, 40.0]
    assert table.rows_of([5], keep=[rows[0]]) == [rows[1]] and 1 in table.index and 2 not in table.index
    with pytest.raises(ValueError, match="counters"):
        LoginTable(4, 2, (60.0, 60.0)).restore(table.export())
    copy = LoginTable(4, 2, (60.0,))
    copy.restore(table.export())
    assert copy.index.keys() == table.index.keys() and copy.evicted == table.evicted == 1


def test_a_batch_that_cannot_fit_is_refused_with_the_keys_it_needs() -> None:
    table = LoginTable(4, 2, (60.0,))
    table.rows_of([1, 2, 3])
    with pytest.raises(ValueError, match=r"capacity=4: one batch needs 6 keys"):
        table.rows_of([1, 2, 10, 11, 12, 13])
    assert table.size == 3


def test_union_bits_counts_the_first_success_of_each_element_once() -> None:
    table = LoginTable(8, 32, (60.0,))
    rows = np.array(table.rows_of([7, 8]), dtype=np.intp)
    slots = np.array([3, 3, 5, 3, 9], dtype=np.intp)
    events = rows[[0, 0, 0, 1, 0]]
    got = table.union_bits(Groups.of(events), events, slots, np.array([True, True, False, True, True]))
    assert got.tolist() == [1, 1, 1, 1, 2] and table.bits_at(int(rows[0])) == (1 << 3) | (1 << 9)
