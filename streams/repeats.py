"""Which rows are a second reporter's record of a call already counted: ``RepeatFilter``.

The shim reports a call's decision and inline findings, the access log and the
ext_proc tap its response; each carries the data plane's request id. A row is a
repeat when its id was seen from a *different* reporter and not yet from its
own: the call is counted once, while a client that sends the same
``x-request-id`` on every call (the id can come from the client) is counted call
by call. Ids are kept as 64-bit hashes with a 16-bit mask of the reporters that
named them (a reporter is one bit, from its name's hash), in a ``KeyTable`` of
at most ``budget`` ids (the least recently seen go first).

Contract: pure and vectorised; rows are judged in order, as if one by one
(``repeats`` of a batch equals ``repeats`` of its rows fed singly).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.keytable import KeyTable, pair_key

__all__ = ["RepeatFilter"]

_U = npt.NDArray[np.uint64]
_F = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]


def _firsts(keys: _U) -> _B:
    """Per row: the first row of the batch with its key."""
    out = np.zeros(len(keys), dtype=bool)
    out[np.unique(keys, return_index=True)[1]] = True
    return out


class RepeatFilter:
    """Remembers request ids and their reporters (see the module docstring)."""

    def __init__(self, budget: int) -> None:
        self.table = KeyTable(budget, {"reporters": np.uint16})

    def repeats(self, ids: _U, reporters: _U, times: _F) -> _B:
        """Per row: a repeat (``ids`` hashed, 0 = no id, never a repeat; ``reporters`` hashed; ``times`` for eviction).

        >>> f = RepeatFilter(100)
        >>> ids, who = np.array([5, 5, 5, 6], np.uint64), np.array([1, 2, 2, 1], np.uint64)
        >>> f.repeats(ids, who, np.zeros(4)).tolist()
        [False, True, False, False]
        """
        out = np.zeros(len(ids), dtype=bool)
        named = np.flatnonzero(ids != 0)
        if not len(named):
            return out
        keys = ids[named]
        bit = (np.uint64(1) << (reporters[named] & np.uint64(15))).astype(np.uint16)
        known = self.table.find(keys)
        prior = np.where(known >= 0, self.table.cols["reporters"][np.maximum(known, 0)], 0).astype(np.uint16)
        seen = (prior != 0) | ~_firsts(keys)  # named before, by anyone
        mine = ((prior & bit) != 0) | ~_firsts(pair_key(keys, bit.astype(np.uint64)))  # named before by this reporter
        out[named] = seen & ~mine
        slots, _, _ = self.table.upsert(keys, times[named])
        np.bitwise_or.at(self.table.cols["reporters"], slots, bit)
        self.table.evict_oldest()
        return out
