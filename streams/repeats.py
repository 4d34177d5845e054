"""Which rows are a second reporter's record of a call already counted: ``RepeatFilter``.

The shim reports a call's decision and inline findings, the access log and the
ext_proc tap its response; each carries the data plane's request id. A row is a
repeat when its id was seen from a *different* reporter and not yet from its
own: the call is counted once, while a client that sends the same
``x-request-id`` on every call (the id can come from the client) is counted call
by call. Ids are kept as 64-bit hashes with a 16-bit mask of the reporters that
named them (a reporter is one bit, from its name's hash), in two generations of
``KeyTable`` of up to ``budget / 2`` ids each: when the newer fills, the older
is dropped and the newer takes its place (no sort, no per-id bookkeeping).

Contract: pure and vectorised; rows are judged in order, as if one by one
(``repeats`` of a batch equals ``repeats`` of its rows fed singly).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.keytable import KeyTable, pair_key

__all__ = ["RepeatFilter"]

_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]


def _firsts(keys: _U) -> _B:
    """Per row: the first row of the batch with its key."""
    out = np.zeros(len(keys), dtype=bool)
    out[np.unique(keys, return_index=True)[1]] = True
    return out


class RepeatFilter:
    """Remembers request ids and their reporters (see the module docstring)."""

    def __init__(self, budget: int) -> None:
        self.half = max(1, budget // 2)
        self.new = KeyTable(self.half, {"reporters": np.uint16})
        self.old = KeyTable(self.half, {"reporters": np.uint16})
        #: ids forgotten so far (dropped with an old generation)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.new) + len(self.old)

    def _prior(self, keys: _U) -> npt.NDArray[np.uint16]:
        out = np.zeros(len(keys), dtype=np.uint16)
        for table in (self.old, self.new):
            if len(table):
                slot = table.find(keys)
                hit = slot >= 0
                out[hit] |= table.cols["reporters"][slot[hit]]
        return out

    def repeats(self, ids: _U, reporters: _U) -> _B:
        """Per row: a repeat (``ids`` hashed, 0 = no id, never a repeat; ``reporters`` hashed).

        >>> f = RepeatFilter(100)
        >>> ids, who = np.array([5, 5, 5, 6], np.uint64), np.array([1, 2, 2, 1], np.uint64)
        >>> f.repeats(ids, who).tolist()
        [False, True, False, False]
        """
        out = np.zeros(len(ids), dtype=bool)
        named = np.flatnonzero(ids != 0)
        if not len(named):
            return out
        keys = ids[named]
        bit = (np.uint64(1) << (reporters[named] & np.uint64(15))).astype(np.uint16)
        prior = self._prior(keys)
        slots, first_named, _ = self.new.upsert(keys)  # new keys come zeroed
        seen = (prior != 0) | ~first_named  # named before, by anyone (first_named: the batch's first row of a key new to the table)
        mine = (prior & bit) != 0  # named before by this reporter: in the memory, or earlier in this batch
        repeated = np.flatnonzero(np.bincount(slots, minlength=len(self.new))[slots] > 1)
        if len(repeated):  # only ids named twice in the batch need the (id, reporter) order; no sort of the whole batch
            mine[repeated] |= ~_firsts(pair_key(keys[repeated], bit[repeated].astype(np.uint64)))
        out[named] = seen & ~mine
        np.bitwise_or.at(self.new.cols["reporters"], slots, prior | bit)  # an id moves to the newer generation with what the older knew
        if len(self.new) >= self.half:
            self.evicted += int((self.new.find(self.old.keys[: len(self.old)]) < 0).sum())  # carried ids are not forgotten
            self.old, self.new = self.new, KeyTable(self.half, {"reporters": np.uint16})
        return out
