"""The keyed login tables behind ``streams.credentials``: decayed counters and time-stamped distinct slots per key.

Contract: pure (numpy only), bounded. A ``LoginTable`` maps 64-bit keys (a
client address, an account, a login endpoint) to rows holding ``len(half_lives)``
exponentially decayed counters (one half-life each), ``slots`` time-stamped
distinct slots (an element sets the slot ``hash >> 40 mod slots`` to the time of
its failure, and a success clears it), a bit mask of elements that succeeded
(``ok_mask``) and one free time stamp per key (``mark``, ``-inf`` when unset).
Two ways to fold a batch, with the same results: vectorised over grouped events
(``count``, ``distinct``, for large batches) and one event at a time
(``count_one``, ``distinct_one``, for the worker's small batches, where numpy's
fixed cost per call dominates). Both evaluate decays against one time per batch
(``now``, the newest login of the batch): a counter's value just after an event
at ``t`` is its state at ``now`` moved back to ``t``.

Memory: at most ``capacity`` keys; past that the least recently updated keys
(ties by key, so never by row position) are evicted in blocks of 1/16 and
counted (``evicted``). ``export``/``restore`` carry a table as plain arrays (no
pickle). ``Campaign``: a partition's decayed gauge of stuffing-like addresses
that join only after a grace period (see the class).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from streams.keytable import column_view

__all__ = ["SLOTS", "Campaign", "Groups", "LoginTable", "grouped_cumsum", "linear_count", "linear_count_one", "slot_of"]

#: distinct slots per key
SLOTS = 32
_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]
_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]
_EMPTY = np.float32(-np.inf)
_SHIFT = np.uint64(40)


@dataclass(frozen=True, slots=True)
class Groups:
    """Events grouped by key: a stable sort puts each group's events together, event order kept inside."""

    order: _I  # event indices, grouped
    starts: _I  # where each group starts in ``order``
    sorted_group: _I  # group number of each position of ``order``
    inverse: _I  # group number of each event
    keys: npt.NDArray[Any]  # the key of each group (ascending)
    singletons: bool  # every event is a group of its own

    @classmethod
    def of(cls, keys: npt.NDArray[Any]) -> Groups:
        """Group events by their key (any sortable dtype)."""
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        flag = np.empty(len(k), bool)
        flag[:1] = True
        np.not_equal(k[1:], k[:-1], out=flag[1:])
        starts = np.flatnonzero(flag)
        sorted_group = np.cumsum(flag) - 1
        inverse = np.empty(len(k), np.intp)
        inverse[order] = sorted_group
        return cls(order, starts, sorted_group, inverse, k[starts], len(starts) == len(k))

    def cumsum(self, values: _F) -> _F:
        """Inclusive running sum of ``values`` (1-d, or 2-d along axis 0) within each group."""
        if self.singletons:
            return values.copy()
        v = values[self.order]
        cs = np.cumsum(v, axis=0)
        out = np.empty_like(values)
        out[self.order] = cs - (cs - v)[self.starts][self.sorted_group]
        return out

    def totals(self, values: _F) -> _F:
        """Sum of ``values`` per group (in group order: a group of one holds its event, ``order`` says which)."""
        return values[self.order] if self.singletons else np.add.reduceat(values[self.order], self.starts, axis=0)


def grouped_cumsum(group: _I, values: _F) -> _F:
    """Inclusive running sum of ``values`` within each group, in the given (event) order.

    >>> grouped_cumsum(np.array([0, 1, 0, 1]), np.array([1.0, 2.0, 3.0, 4.0])).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    return Groups.of(group).cumsum(values)


def linear_count(live: _F, slots: int = SLOTS) -> _F:
    """Linear-counting estimate of distinct items from the number of live slots."""
    return np.asarray(-slots * np.log(np.maximum(slots - live, 0.5) / slots), dtype=np.float64)


def linear_count_one(live: float, slots: int = SLOTS) -> float:
    """``linear_count`` of one value, in plain Python."""
    return -slots * math.log(max(slots - live, 0.5) / slots)


def slot_of(elements: _U, slots: int = SLOTS) -> _I:
    """The distinct slot of each element hash."""
    return np.asarray((elements >> _SHIFT) % np.uint64(slots), dtype=np.intp)


class LoginTable:
    """Keys -> rows of decayed counters, time-stamped slots, a success mask and a mark (see the module docstring)."""

    def __init__(self, capacity: int, slots: int, half_lives: tuple[float, ...]) -> None:
        self.capacity, self.nslots, self.half_lives = capacity, slots, half_lives
        self._hl = np.array(half_lives, dtype=np.float64)
        self._k, self._zeros = len(half_lives), [0.0] * len(half_lives)
        self.index: dict[int, int] = {}
        self.keys = np.zeros(capacity, np.uint64)
        self.last = np.full(capacity, -np.inf)
        self.counts = np.zeros((capacity, len(half_lives)))
        self.slots = np.full((capacity, max(slots, 1)), _EMPTY, np.float32)
        self.ok_mask = np.zeros(capacity, np.uint32)
        self.mark = np.full(capacity, -np.inf)
        # scalar access for the small-batch folds (the arrays are only ever written in place, never reallocated)
        self._counts, self._last, self._slots = column_view(self.counts), column_view(self.last), column_view(self.slots.reshape(-1))
        self._keys, self._bits, self._marks = self.keys.data, self.ok_mask.data, column_view(self.mark)
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.intp)  # a stack: rows popped from the end
        self._nfree = capacity
        self.evicted = 0

    @property
    def size(self) -> int:
        """Keys held."""
        return len(self.index)

    def rows_of(self, keys: list[int], keep: list[int] | None = None) -> list[int]:
        """Rows of the given distinct keys, allocating (and evicting, never a row of ``keep``) as needed."""
        get = self.index.get
        rows = [get(k, -1) for k in keys]
        missing = [i for i, r in enumerate(rows) if r < 0]
        if missing:
            count = len(missing)
            if count > self._nfree:
                held = [r for r in rows if r >= 0] + (keep or [])
                if count + len(set(held)) > self.capacity:
                    raise ValueError(f"credential table capacity={self.capacity}: one batch needs "
                                     f"{count + len(set(held))} keys")
                self._evict(count - self._nfree, np.array(held, np.intp))
            self._nfree -= count
            index, keys_mv = self.index, self._keys
            for i, row in zip(missing, self._free[self._nfree : self._nfree + count].tolist()):
                rows[i] = index[keys[i]] = row
                keys_mv[row] = keys[i]
        return rows

    def rows_for(self, keys: _U) -> _I:
        """``rows_of`` for an array of distinct keys."""
        return np.array(self.rows_of(keys.tolist()), dtype=np.intp)

    def _evict(self, count: int, keep: _I) -> None:
        """Free at least ``count`` rows (1/16 of the table when there is room): the least recently updated keys first,
        ties by key, so the victims never depend on which row a key happened to get (folds and restores agree)."""
        held = self.keys != 0
        held[keep] = False
        ages = np.where(held, self.last, np.inf)
        k = min(max(count, self.capacity // 16), int(np.count_nonzero(held)))
        cut = np.partition(ages, k - 1)[k - 1]
        below, tied = np.flatnonzero(ages < cut), np.flatnonzero(ages == cut)
        victims = np.concatenate([below, tied[np.argsort(self.keys[tied], kind="stable")[: k - len(below)]]])
        for key in self.keys[victims].tolist():
            del self.index[key]
        self.evicted += k
        self._clear(victims)
        self._free[self._nfree : self._nfree + k] = victims
        self._nfree += k

    def _clear(self, rows: _I) -> None:
        self.keys[rows] = 0
        self.last[rows] = -np.inf
        self.counts[rows] = 0.0
        self.slots[rows] = _EMPTY
        self.ok_mask[rows] = 0
        self.mark[rows] = -np.inf

    # -- vectorised folds (large batches)

    def count(self, groups: Groups, rows: _I, t: _F, weights: _F, now: float) -> _F:
        """Fold decayed counters of events grouped by key (``rows``: the table row of each group).

        ``weights`` is (events, counters); returns each event's counters just after it.
        """
        hl = self._hl
        keep = np.exp2(-np.maximum(now - self.last[rows], 0.0)[:, None] / hl)
        prior = self.counts[rows] * keep
        up = np.exp2((t - now)[:, None] / hl)
        scaled = weights * up
        after = (groups.cumsum(scaled) + prior[groups.inverse]) / up
        self.counts[rows] = prior + groups.totals(scaled)
        self.last[rows] = np.maximum(self.last[rows], now)
        return np.asarray(after, dtype=np.float64)

    def distinct(self, rows: _I, elements: _U, failed: _B, t_rel: _F, alive_after: float) -> _F:
        """Unresolved distinct failing elements per event's row, just after it (a success clears its slot)."""
        m = self.nslots
        pair = rows * m + slot_of(elements, m)
        flat = self.slots.reshape(-1)
        f = failed.astype(np.float64)
        pg, rg = Groups.of(pair), Groups.of(rows)
        fs = f[pg.order]
        prev = np.empty_like(fs)
        prev[1:] = fs[:-1]
        prev[pg.starts] = flat[pg.keys] >= alive_after
        delta = np.empty_like(f)
        delta[pg.order] = fs - prev
        live_before = (self.slots[rg.keys] >= alive_after).sum(axis=1).astype(np.float64)
        live = live_before[rg.inverse] + rg.cumsum(delta)
        ends = np.append(pg.starts[1:] - 1, len(fs) - 1)
        flat[pg.keys] = np.where(fs[ends] > 0, t_rel[pg.order][ends], -np.inf).astype(np.float32)
        return linear_count(live, m)

    # -- one event at a time (small batches): the same arithmetic in plain Python, through memoryviews
    # (a scalar read or write of a numpy array costs ~0.6 us, through a memoryview ~0.1 us)

    def count_one(self, row: int, t: float, weights: tuple[float, ...], now: float, state: dict[int, list[float]]) -> list[float]:
        """One event of ``count``; ``state`` holds the batch's running sums per row (write them back with ``settle``)."""
        acc = state.get(row)
        k = self._k
        if acc is None:
            counts, dt = self._counts, max(now - self._last[row], 0.0)
            acc = state[row] = [counts[row, j] * math.exp2(-dt / h) for j, h in enumerate(self.half_lives)] + self._zeros
        out = []
        for j, h in enumerate(self.half_lives):
            up = math.exp2((t - now) / h)
            acc[k + j] += weights[j] * up
            out.append((acc[k + j] + acc[j]) / up)
        return out

    def settle(self, state: dict[int, list[float]], now: float) -> None:
        """Write the running sums of ``count_one`` back (the end of the batch)."""
        k, counts, last = len(self.half_lives), self._counts, self._last
        for row, acc in state.items():
            for j in range(k):
                counts[row, j] = acc[j] + acc[k + j]
            last[row] = max(last[row], now)

    def distinct_one(self, row: int, element: int, failed: bool, t_rel: float, alive_after: float,
                     state: dict[int, float], touched: dict[int, bool]) -> float:
        """One event of ``distinct`` (``alive_after`` a float32 value); ``state`` holds the batch's live count per row,
        ``touched`` each (row, slot)'s."""
        m, slots = self.nslots, self._slots
        live = state.get(row)
        if live is None:
            live = float(sum(1 for x in slots[row * m : row * m + m].tolist() if x >= alive_after))
        pair = row * m + (element >> 40) % m
        prev = touched.get(pair)
        if prev is None:
            prev = slots[pair] >= alive_after
        live += float(failed) - float(prev)
        state[row], touched[pair] = live, failed
        slots[pair] = t_rel if failed else -math.inf
        return linear_count_one(live, m)

    def bits_at(self, row: int) -> int:
        """The row's success mask (``ok_mask``) as an int."""
        return int(self._bits[row])

    def set_bits(self, row: int, bits: int) -> None:
        """Overwrite the row's success mask."""
        self._bits[row] = bits

    def mark_at(self, row: int) -> float:
        """The row's mark (``-inf`` when unset)."""
        return float(self._marks[row])

    def set_mark(self, row: int, t: float) -> None:
        """Overwrite the row's mark."""
        self._marks[row] = t

    def live_at(self, row: int, alive_after: float) -> int:
        """Distinct slots of the row stamped at or after ``alive_after`` (unresolved failures still within the horizon)."""
        m = self.nslots
        return sum(1 for x in self._slots[row * m : row * m + m].tolist() if x >= alive_after)

    def union_bits(self, groups: Groups, rows: _I, slots: _I, ok: _B) -> _F:
        """Set each ``ok`` event's slot bit in its row's success mask (``groups``: the events grouped by row); returns
        the bits set in the row just after each event (``popcount``: the first success of an element counts once)."""
        before = self.ok_mask[rows]
        count = np.bitwise_count(before).astype(np.float64)
        if not ok.any():
            return count
        bits = (np.uint32(1) << slots.astype(np.uint32)).astype(np.uint32)
        fresh = (ok & ((before & bits) == 0)).astype(np.float64)
        if fresh.any():
            pairs = Groups.of(rows * 32 + slots)
            count += groups.cumsum(fresh * (pairs.cumsum(fresh) == 1))  # the first success of an element in the batch
        np.bitwise_or.at(self.ok_mask, rows[ok], bits[ok])
        return count

    # -- state

    def export(self) -> dict[str, npt.NDArray[np.generic]]:
        """The used rows as named arrays."""
        used = np.flatnonzero(self.keys != 0)
        return {"keys": self.keys[used], "last": self.last[used], "counts": self.counts[used], "slots": self.slots[used],
                "ok_mask": self.ok_mask[used], "mark": self.mark[used],
                "meta": np.array([self.capacity, self.nslots, self.evicted, len(self.half_lives)], np.int64)}

    def restore(self, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        """Load what ``export`` gave (capacity, slot and counter counts must match this table's)."""
        capacity, nslots, evicted, counters = (int(x) for x in arrays["meta"])
        if (capacity, nslots, counters) != (self.capacity, self.nslots, len(self.half_lives)):
            raise ValueError(f"credential table: saved capacity/slots/counters {(capacity, nslots, counters)} != "
                             f"{(self.capacity, self.nslots, len(self.half_lives))}")
        self._clear(np.arange(self.capacity))
        n = len(arrays["keys"])
        for name in ("keys", "last", "counts", "slots", "ok_mask", "mark"):
            getattr(self, name)[:n] = arrays[name]
        self.evicted = evicted
        self.index = {k: i for i, k in enumerate(self.keys[:n].tolist())}
        self._free = np.concatenate([np.arange(self.capacity - 1, n - 1, -1, dtype=np.intp), np.zeros(n, np.intp)])
        self._nfree = self.capacity - n


class Campaign:
    """A partition's gauge of stuffing-like client addresses, decayed (half-life ``half_life_s``), joined late.

    An address ``enlist``-ed at ``t`` (it failed on a few accounts and logged in to
    almost none) joins the gauge at ``t + grace_s`` only if it still qualifies then:
    a user who mistyped or tried their e-mail after their user name logs in within
    the grace and never joins. ``begin(now, table, qualifies)`` opens a batch: every
    pending address whose join time is at most ``now`` is judged on the table's
    state before the batch (so both folds see the same joins) and joins or is
    dropped (its mark cleared); ``at``/``at_many`` give the gauge at an event
    without the address's own share (its mark: its join time). At most
    ``max_pending`` addresses wait at once; more are counted (``dropped``).
    """

    def __init__(self, half_life_s: float, grace_s: float, max_pending: int) -> None:
        self.half_life_s, self.grace_s, self.max_pending = half_life_s, grace_s, max_pending
        self.value, self.last = 0.0, -math.inf  # the gauge at its time, this batch's joins included
        self.pending: dict[int, float] = {}  # address key -> join time, in enlisting order
        self.dropped = 0
        self._now, self._prior, self._joins, self._cum = 0.0, 0.0, list[float](), np.zeros(0)

    def begin(self, now: float, table: LoginTable, qualifies: Callable[[int], bool]) -> None:
        """Open a batch whose newest login is at ``now``: judge the pending addresses whose time has come."""
        h = self.half_life_s
        self._now, self._prior, self._joins = now, self.value * math.exp2(-max(now - self.last, 0.0) / h), []
        due = [(key, t) for key, t in self.pending.items() if t <= now] if self.pending else []
        for key, t_join in due:
            del self.pending[key]
            row = table.index.get(key)
            if row is None or table.mark_at(row) != t_join:
                continue  # evicted meanwhile
            if qualifies(row):
                self._joins.append(t_join)
            else:
                table.set_mark(row, -math.inf)
        self._joins.sort()
        self._cum = np.cumsum(np.exp2((np.array(self._joins) - now) / h))  # joins up to each, at ``now``
        self.value = self._prior + (float(self._cum[-1]) if self._joins else 0.0)
        self.last = max(self.last, now)

    def at(self, t: float, mark: float) -> float:
        """The gauge at ``t`` without the share of an address whose mark is ``mark``."""
        h = self.half_life_s
        g = self._prior * math.exp2((self._now - t) / h)
        for t_join in self._joins:
            if t_join <= t:
                g += math.exp2(-(t - t_join) / h)
        if mark <= t:
            g -= math.exp2(-(t - mark) / h)
        return g if g > 1e-9 else 0.0

    def at_many(self, t: _F, mark: _F) -> _F:
        """``at`` for arrays of events."""
        h = self.half_life_s
        g = self._prior * np.exp2((self._now - t) / h)
        if self._joins:
            k = np.searchsorted(self._joins, t, side="right")
            g += np.where(k > 0, self._cum[np.maximum(k - 1, 0)], 0.0) * np.exp2((self._now - t) / h)
        g -= np.where(mark <= t, np.exp2(-np.maximum(t - mark, 0.0) / h), 0.0)
        return np.where(g > 1e-9, g, 0.0)

    def enlist(self, t: float, key: int, row: int, table: LoginTable) -> None:
        """An address qualified at ``t``: it joins at ``t + grace_s`` if it still does then (its mark says when)."""
        if len(self.pending) >= self.max_pending:
            self.dropped += 1
            return
        self.pending[key] = t_join = t + self.grace_s
        table.set_mark(row, t_join)

    def export(self) -> dict[str, npt.NDArray[np.generic]]:
        """The gauge, the pending addresses and the dropped count as named arrays."""
        return {"campaign": np.array([self.value, self.last]), "campaign.dropped": np.array([self.dropped], np.int64),
                "campaign.pending_keys": np.array(list(self.pending), np.uint64),
                "campaign.pending_times": np.array(list(self.pending.values()), np.float64)}

    def restore(self, arrays: Mapping[str, npt.NDArray[np.generic]]) -> None:
        """Load what ``export`` gave (a blob without pending addresses restores none)."""
        self.value, self.last = (float(x) for x in arrays["campaign"])
        keys, times = arrays.get("campaign.pending_keys"), arrays.get("campaign.pending_times")
        self.pending = {} if keys is None or times is None else dict(zip(keys.tolist(), times.tolist()))
        dropped = arrays.get("campaign.dropped")
        self.dropped = 0 if dropped is None else int(dropped[0])
