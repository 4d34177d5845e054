"""A bounded table of 64-bit keys with numpy columns, shared by the worker's enrichers.

Contract: pure, vectorised (no Python work per key). ``KeyTable.upsert(keys,
times)`` maps each row's key to a slot (keys may repeat), inserting the
missing ones with zeroed columns, and keeps ``last_seen`` per slot (the
latest of ``times``; without ``times`` the caller keeps it). Slots are dense
(``0 .. len-1``, in insertion order) and the columns are numpy arrays indexed
by slot (read ``cols`` again after an upsert: growing reallocates them).
Keys are found through an open-addressing index (linear probing over an int32
numpy array of slots, at most a quarter full, so probe runs stay short): a
lookup is a few numpy passes over the batch, never a dictionary probe per key. ``evict_oldest()`` keeps the table
within its budget by dropping the least recently seen, counting what it
dropped in ``evicted``; slots change then, so call it only between batches.
``arrays()``/``load()`` carry the whole table as plain arrays (for ``.npz``).
``mix`` is the 64-bit finalizer used to combine keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GOLD", "M1", "M2", "KeyTable", "column_view", "mix", "mix1", "pair_key", "pair_key1"]

_I = npt.NDArray[np.intp]
_B = npt.NDArray[np.bool_]
_U = npt.NDArray[np.uint64]
_F = npt.NDArray[np.float64]

#: murmur3's finalizer multipliers and the golden-ratio constant: the one set every 64-bit hash of the worker uses
M1, M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
GOLD = np.uint64(0x9E3779B97F4A7C15)
#: share of the budget ``evict_oldest`` keeps (the rest is headroom, so eviction runs once per many batches)
KEEP = 0.9


def mix(x: _U) -> _U:
    """murmur3's 64-bit finalizer: a bijection that spreads every input bit (combine keys as ``mix(a ^ mix(b))``).

    >>> int(mix(np.array([1], dtype=np.uint64))[0]) != 1
    True
    """
    x = np.array(x, dtype=np.uint64)  # a copy; array multiplication wraps silently (only scalars warn)
    x ^= x >> np.uint64(33)
    x *= M1
    x ^= x >> np.uint64(33)
    x *= M2
    x ^= x >> np.uint64(33)
    return x


def pair_key(a: _U, b: _U, tag: int = 0) -> _U:
    """One nonzero 64-bit key for each pair of hashes (order matters; ``tag`` keeps kinds of pairs apart).

    >>> a, b = np.array([1, 2], dtype=np.uint64), np.array([2, 1], dtype=np.uint64)
    >>> bool((pair_key(a, b) != pair_key(b, a)).all()), bool((pair_key(a, b, 1) != pair_key(a, b)).all())
    (True, True)
    """
    x = mix((a * GOLD) ^ (b + np.uint64(tag)))  # uint64 arrays wrap silently
    x |= x == 0  # 0 marks an empty slot
    return x


_M64 = (1 << 64) - 1
_M1, _M2, _GOLD = int(M1), int(M2), int(GOLD)


def mix1(x: int) -> int:
    """``mix`` of one Python int (the same arithmetic modulo 2**64), for plain-Python paths of small batches.

    >>> mix1(12345) == int(mix(np.array([12345], dtype=np.uint64))[0])
    True
    """
    x ^= x >> 33
    x = (x * _M1) & _M64
    x ^= x >> 33
    x = (x * _M2) & _M64
    return x ^ (x >> 33)


def pair_key1(a: int, b: int, tag: int = 0) -> int:
    """``pair_key`` of one pair of Python ints.

    >>> a, b = np.array([7], np.uint64), np.array([2**64 - 1], np.uint64)
    >>> pair_key1(7, 2**64 - 1, 5) == int(pair_key(a, b, 5)[0])
    True
    """
    return mix1(((a * _GOLD) & _M64) ^ ((b + tag) & _M64)) or 1


def column_view(values: npt.NDArray[Any]) -> memoryview[Any]:
    """A 1-d column as a memoryview: item reads and writes in Python numbers, without numpy's cost per item
    (valid until the column is replaced: a table that grows or loads makes new ones)."""
    return values.data


def _grown(values: npt.NDArray[Any], used: int, size: int) -> npt.NDArray[Any]:
    """``values`` in a zeroed array of ``size``: only the ``used`` part is copied, so the rest stays fresh zero pages
    (not resident until written: the process's RSS follows the keys held, not the doubling)."""
    out = np.zeros(size, dtype=values.dtype)
    out[:used] = values[:used]
    return out


class KeyTable:
    """uint64 key -> dense slot, with typed numpy columns and ``last_seen``, at most ``budget`` keys after eviction (< 2**31).

    >>> t = KeyTable(4, {"calls": np.float64})
    >>> slots, new_first, new_slots = t.upsert(np.array([7, 9, 7], dtype=np.uint64), np.array([1.0, 2.0, 3.0]))
    >>> slots.tolist(), new_first.tolist(), len(t), float(t.cols["last_seen"][slots[0]])
    ([0, 1, 0], [True, True, False], 2, 3.0)
    """

    def __init__(self, budget: int, columns: Mapping[str, Any]) -> None:
        if not 1 <= budget <= 1 << 30:  # slots are int32 in the index, with room for a batch past the budget
            raise ValueError(f"KeyTable budget={budget!r} must be in [1, 2**30]")
        self.budget = budget
        self.dtypes: dict[str, np.dtype[Any]] = {k: np.dtype(d) for k, d in {"last_seen": np.float64, **columns}.items()}
        self.keys: _U = np.zeros(16, dtype=np.uint64)
        self.cols: dict[str, npt.NDArray[Any]] = {k: np.zeros(16, dtype=d) for k, d in self.dtypes.items()}
        self.n = 0
        self.evicted = 0
        self._index: npt.NDArray[np.int32] = np.full(64, -1, dtype=np.int32)
        self._shift = np.uint64(64 - 6)

    def __len__(self) -> int:
        return self.n

    def _home(self, keys: _U) -> _I:
        """Each key's first index position (Fibonacci hashing: the top bits of key * 2^64/phi)."""
        return ((keys * GOLD) >> self._shift).astype(np.intp)

    def find(self, keys: _U) -> _I:
        """The slot of each key, -1 when absent (no insertion)."""
        keys = np.asarray(keys, dtype=np.uint64)
        pos = self._home(keys)
        slot = self._index[pos].astype(np.intp)
        out = np.where(self.keys[slot] == keys, slot, -1)  # an empty position (-1) stays -1 whatever key it reads
        todo = np.flatnonzero((out < 0) & (slot >= 0))  # home taken by another key: probe on
        mask = len(self._index) - 1
        pos = pos[todo]
        while len(todo):  # the few keys not at their home position
            pos = (pos + 1) & mask
            slot = self._index[pos].astype(np.intp)
            used = slot >= 0
            hit = used & (self.keys[slot] == keys[todo])
            out[todo[hit]] = slot[hit]
            go = used & ~hit
            todo, pos = todo[go], pos[go]
        return out

    def _place(self, keys: _U, slots: _I) -> None:
        """Enter distinct absent keys (already stored at ``slots``) into the index."""
        todo, pos, mask = np.arange(len(keys)), self._home(keys), len(self._index) - 1
        while len(todo):
            free = self._index[pos] < 0
            self._index[pos[free]] = slots[todo[free]]  # of keys sharing a free position, one write lands
            placed = self._index[pos] == slots[todo]
            todo, pos = todo[~placed], (pos[~placed] + 1) & mask

    def _grow(self, need: int) -> None:
        """Room for ``need`` keys: dense arrays double, and the index stays at most half full."""
        size = len(self.keys)
        if need > size:
            while size < need:
                size *= 2
            self.keys = _grown(self.keys, self.n, size)
            self.cols = {k: _grown(v, self.n, size) for k, v in self.cols.items()}
        if 4 * need > len(self._index):
            self._reindex(need)

    def _reindex(self, need: int) -> None:
        """A fresh index for ``need`` keys (at most half full) holding the current ones."""
        bits = max(6, (4 * need - 1).bit_length())
        self._index, self._shift = np.full(1 << bits, -1, dtype=np.int32), np.uint64(64 - bits)
        self._place(self.keys[: self.n], np.arange(self.n, dtype=np.intp))

    def find_few(self, keys: list[int]) -> list[int]:
        """``find`` of a few Python-int keys in plain Python (-1 = absent): the same index walk, no numpy call."""
        index, stored = column_view(self._index), column_view(self.keys)
        mask, shift, out = len(index) - 1, int(self._shift), []
        for key in keys:
            pos = ((key * _GOLD) & _M64) >> shift
            slot = index[pos]
            while slot >= 0 and stored[slot] != key:
                pos = (pos + 1) & mask
                slot = index[pos]
            out.append(slot)
        return out

    def insert_few(self, keys: list[int]) -> list[int]:
        """Insert distinct absent Python-int ``keys`` in their order (zeroed columns) as ``upsert`` would; their slots.

        A table that must grow (its arrays or its index) goes through ``upsert`` itself.
        """
        n, index = self.n, self._index
        if n + len(keys) > len(self.keys) or 4 * (n + len(keys)) > len(index):
            return [int(s) for s in self.upsert(np.array(keys, dtype=np.uint64))[0]]
        for col in self.cols.values():
            col[n : n + len(keys)] = 0
        mask, shift, stored, where = len(index) - 1, int(self._shift), column_view(self.keys), column_view(index)
        for slot, key in enumerate(keys, n):
            stored[slot] = key
            pos = ((key * _GOLD) & _M64) >> shift
            while where[pos] >= 0:
                pos = (pos + 1) & mask
            where[pos] = slot
        self.n = n + len(keys)
        return list(range(n, n + len(keys)))

    def upsert(self, keys: _U, times: _F | None = None) -> tuple[_I, _B, _I]:
        """(slot of each row, rows that first name a key inserted now, the inserted slots); ``last_seen`` = max time.

        Without ``times`` ``last_seen`` is left to the caller (new slots start at 0).
        """
        keys = np.asarray(keys, dtype=np.uint64)
        row_slots = self.find(keys)
        new_first = np.zeros(len(keys), dtype=bool)
        miss = np.flatnonzero(row_slots < 0)
        new_slots = np.arange(self.n, self.n, dtype=np.intp)
        if len(miss):
            uniq, first_idx, inverse = np.unique(keys[miss], return_index=True, return_inverse=True)
            new_slots = np.arange(self.n, self.n + len(uniq), dtype=np.intp)
            self._grow(self.n + len(uniq))
            self.keys[new_slots] = uniq
            for col in self.cols.values():
                col[new_slots] = 0
            self._place(uniq, new_slots)
            self.n += len(uniq)
            row_slots[miss] = new_slots[inverse.reshape(-1)]
            new_first[miss[first_idx]] = True
        if times is not None:
            np.maximum.at(self.cols["last_seen"], row_slots, times)
        return row_slots, new_first, new_slots

    def evict_oldest(self) -> int:
        """Past the budget, keep the most recently seen ``KEEP`` share of it; returns how many keys were dropped."""
        if self.n <= self.budget:
            return 0
        keep = max(1, int(self.budget * KEEP))
        order = np.sort(np.argsort(self.cols["last_seen"][: self.n], kind="stable")[self.n - keep :])
        dropped = self.n - keep
        # compacted in place, index rebuilt in its own array: no new arrays of the table's size (a full table of
        # 1M keys evicted in ~0.1 s; through load() its duplicate check alone took ~2 s)
        self.keys[:keep] = self.keys[order]
        for col in self.cols.values():
            col[:keep] = col[order]
        self.n = keep
        self._index.fill(-1)
        self._place(self.keys[:keep], np.arange(keep, dtype=np.intp))
        self.evicted += dropped
        return dropped

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """``keys`` and every column, trimmed to the used slots."""
        return {"keys": self.keys[: self.n].copy(), **{k: v[: self.n].copy() for k, v in self.cols.items()}}

    def load(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the content with ``arrays`` (as ``arrays()`` returns; missing columns start at zero)."""
        keys = np.asarray(arrays["keys"], dtype=np.uint64)
        n = len(keys)
        ordered = np.sort(keys)  # a sort: np.unique hashed 1M uint64 keys in ~1 s here
        duplicates = int((ordered[1:] == ordered[:-1]).sum())
        if duplicates:
            raise ValueError(f"KeyTable.load: {duplicates} duplicate keys")
        self.keys = np.zeros(max(16, n), dtype=np.uint64)
        self.keys[:n] = keys
        self.cols = {}
        for name, dtype in self.dtypes.items():
            col = np.zeros(max(16, n), dtype=dtype)
            if name in arrays:
                col[:n] = np.asarray(arrays[name], dtype=dtype)
            self.cols[name] = col
        self.n = n
        self._reindex(n)
