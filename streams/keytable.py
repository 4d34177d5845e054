"""A bounded table of 64-bit keys with numpy columns, for the worker's enrichers.

Contract: pure. ``KeyTable.upsert(keys, times)`` maps each row's key to a slot
(a dictionary probe per *distinct* key of the batch, never per row), inserting
the missing ones with zeroed columns, and keeps ``last_seen`` per slot; columns
are numpy arrays indexed by slot (read ``cols`` again after an upsert: growing
reallocates them). ``evict_oldest()`` keeps the table within its budget by
dropping the least recently seen tenth, counting what it dropped in
``evicted``; slots change then, so call it only between batches.
``arrays()``/``load()`` carry the whole table as plain arrays (for ``.npz``).
``mix`` is the 64-bit finalizer used to combine keys.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KeyTable", "mix"]

_I = npt.NDArray[np.intp]
_B = npt.NDArray[np.bool_]
_U = npt.NDArray[np.uint64]
_F = npt.NDArray[np.float64]

_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)


def mix(x: _U) -> _U:
    """murmur3's 64-bit finalizer: a bijection that spreads every input bit (combine keys as ``mix(a ^ mix(b))``).

    >>> int(mix(np.array([1], dtype=np.uint64))[0]) != 1
    True
    """
    x = np.array(x, dtype=np.uint64)  # a copy; array multiplication wraps silently (only scalars warn)
    x ^= x >> np.uint64(33)
    x *= _M1
    x ^= x >> np.uint64(33)
    x *= _M2
    x ^= x >> np.uint64(33)
    return x


class KeyTable:
    """uint64 key -> slot, with typed numpy columns and ``last_seen``, at most ``budget`` keys after eviction.

    >>> t = KeyTable(4, {"calls": np.float64})
    >>> slots, new_first, new_slots = t.upsert(np.array([7, 9, 7], dtype=np.uint64), np.array([1.0, 2.0, 3.0]))
    >>> slots.tolist(), new_first.tolist(), len(t), float(t.cols["last_seen"][slots[0]])
    ([0, 1, 0], [True, True, False], 2, 3.0)
    """

    def __init__(self, budget: int, columns: Mapping[str, Any]) -> None:
        if budget < 1:
            raise ValueError(f"KeyTable budget={budget!r} must be >= 1")
        self.budget = budget
        self.dtypes: dict[str, Any] = {"last_seen": np.float64, **columns}
        self.index: dict[int, int] = {}
        self.keys: _U = np.zeros(16, dtype=np.uint64)
        self.cols: dict[str, npt.NDArray[Any]] = {k: np.zeros(16, dtype=d) for k, d in self.dtypes.items()}
        self.n = 0
        self.evicted = 0

    def __len__(self) -> int:
        return self.n

    def _grow(self, need: int) -> None:
        size = len(self.keys)
        if need <= size:
            return
        while size < need:
            size *= 2
        self.keys = np.concatenate([self.keys, np.zeros(size - len(self.keys), dtype=np.uint64)])
        self.cols = {k: np.concatenate([v, np.zeros(size - len(v), dtype=v.dtype)]) for k, v in self.cols.items()}

    def find(self, keys: _U) -> _I:
        """The slot of each key, -1 when absent (no insertion)."""
        uniq, inverse = np.unique(keys, return_inverse=True)
        get = self.index.get
        slots = np.fromiter((get(k, -1) for k in uniq.tolist()), dtype=np.intp, count=len(uniq))
        return slots[inverse.reshape(-1)]

    def upsert(self, keys: _U, times: _F) -> tuple[_I, _B, _I]:
        """(slot of each row, rows that first name a key inserted now, the inserted slots); ``last_seen`` = max time."""
        uniq, first_idx, inverse = np.unique(keys, return_index=True, return_inverse=True)
        get = self.index.get
        slots = np.fromiter((get(k, -1) for k in uniq.tolist()), dtype=np.intp, count=len(uniq))
        missing = np.flatnonzero(slots < 0)
        new_slots = np.arange(self.n, self.n + len(missing), dtype=np.intp)
        if len(missing):
            self._grow(self.n + len(missing))
            slots[missing] = new_slots
            self.keys[new_slots] = uniq[missing]
            self.index.update(zip(uniq[missing].tolist(), new_slots.tolist()))
            self.n += len(missing)
        row_slots = slots[inverse.reshape(-1)]
        new_first = np.zeros(len(keys), dtype=bool)
        new_first[first_idx[missing]] = True
        np.maximum.at(self.cols["last_seen"], row_slots, times)
        return row_slots, new_first, new_slots

    def evict_oldest(self) -> int:
        """Past the budget, keep the most recently seen 90% of it; returns how many keys were dropped."""
        if self.n <= self.budget:
            return 0
        keep = max(1, int(self.budget * 0.9))
        order = np.sort(np.argsort(self.cols["last_seen"][: self.n], kind="stable")[self.n - keep :])
        dropped = self.n - keep
        self.load({"keys": self.keys[order], **{k: v[order] for k, v in self.cols.items()}})
        self.evicted += dropped
        return dropped

    def arrays(self) -> dict[str, npt.NDArray[Any]]:
        """``keys`` and every column, trimmed to the used slots."""
        return {"keys": self.keys[: self.n].copy(), **{k: v[: self.n].copy() for k, v in self.cols.items()}}

    def load(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        """Replace the content with ``arrays`` (as ``arrays()`` returns; missing columns start at zero)."""
        keys = np.asarray(arrays["keys"], dtype=np.uint64)
        n = len(keys)
        self.n, self.keys = n, np.zeros(max(16, n), dtype=np.uint64)
        self.keys[:n] = keys
        self.cols = {}
        for name, dtype in self.dtypes.items():
            col = np.zeros(max(16, n), dtype=dtype)
            if name in arrays:
                col[:n] = np.asarray(arrays[name], dtype=dtype)
            self.cols[name] = col
        self.index = dict(zip(keys.tolist(), range(n)))
