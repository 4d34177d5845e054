"""Which rows are a second reporter's record of a call already counted: ``RepeatFilter``.

The shim reports a call's decision and inline findings, the access log and the
ext_proc tap its response; each carries the data plane's request id. A row is a
repeat when its id was seen from a *different* reporter and not yet from its
own: the call is counted once, while a client that sends the same
``x-request-id`` on every call (the id can come from the client) is counted call
by call. Ids are kept as 64-bit hashes with a 32-bit mask per id: the low 16
bits are the reporters that named it (a reporter is one bit, from its name's
hash), the high 16 the reporters whose copy carried the call's *answer* (a
status, a derived outcome, the shim's own refusal), in two generations of
``KeyTable`` of up to ``budget / 2`` ids each: when the newer fills, the older
is dropped and the newer takes its place (no sort, no per-id bookkeeping).

The answer is judged by the same rule over the rows that carry one
(``judge``): a row that carries an answer repeats it when another reporter's
copy of the call carried it first. So a call the shim reported before the
upstream answered (its copy has no status) is counted once, at the shim's row,
and its answer once, at the access log's row; status-derived signals read the
second mask, request counts the first.

Contract: pure and vectorised; rows are judged in order, as if one by one
(``judge`` of a batch equals ``judge`` of its rows fed singly). The filter is
worker memory only (never written to the changelog): a restarted worker starts
it empty.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from streams.keytable import KeyTable, pair_key

__all__ = ["RepeatFilter"]

_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]
_M = npt.NDArray[np.uint32]
#: the reporters that named an id are its mask's low 16 bits; those whose copy carried the answer, the high 16
_NAMED = np.uint32(0xFFFF)
_ANSWER_SHIFT = np.uint32(16)


def _firsts(keys: _U) -> _B:
    """Per row: the first row of the batch with its key."""
    out = np.zeros(len(keys), dtype=bool)
    out[np.unique(keys, return_index=True)[1]] = True
    return out


def _table(half: int) -> KeyTable:
    return KeyTable(half, {"reporters": np.uint32})


class RepeatFilter:
    """Remembers request ids, their reporters and which reporters carried the answer (see the module docstring)."""

    def __init__(self, budget: int) -> None:
        self.half = max(1, budget // 2)
        self.new = _table(self.half)
        self.old = _table(self.half)
        #: ids forgotten so far (dropped with an old generation)
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.new) + len(self.old)

    def _prior(self, keys: _U) -> _M:
        out = np.zeros(len(keys), dtype=np.uint32)
        for table in (self.old, self.new):
            if len(table):
                slot = table.find(keys)
                hit = slot >= 0
                out[hit] |= table.cols["reporters"][slot[hit]]
        return out

    def repeats(self, ids: _U, reporters: _U) -> _B:
        """Per row: a repeat (``ids`` hashed, 0 = no id, never a repeat; ``reporters`` hashed); ``judge`` without answers.

        >>> f = RepeatFilter(100)
        >>> ids, who = np.array([5, 5, 5, 6], np.uint64), np.array([1, 2, 2, 1], np.uint64)
        >>> f.repeats(ids, who).tolist()
        [False, True, False, False]
        """
        return self.judge(ids, reporters, np.zeros(len(ids), dtype=bool))[0]

    def judge(self, ids: _U, reporters: _U, answered: _B) -> tuple[_B, _B]:
        """Per row: (a repeat of a call already counted, a repeat of an answer already counted).

        ``answered``: the row carries the call's answer; the second mask is False where it does not.
        A shim's copy without status, then the access log's with one: the call counts at the first row, its
        answer at the second.

        >>> f = RepeatFilter(100)
        >>> ids, who = np.array([5, 5, 6, 6], np.uint64), np.array([1, 2, 1, 2], np.uint64)
        >>> [m.tolist() for m in f.judge(ids, who, np.array([False, True, True, True]))]
        [[False, True, False, True], [False, False, False, True]]
        """
        again = np.zeros(len(ids), dtype=bool)
        out = np.zeros(len(ids), dtype=bool)
        named = np.flatnonzero(ids != 0)
        if not len(named):
            return out, again
        keys = ids[named]
        bit = (np.uint64(1) << (reporters[named] & np.uint64(15))).astype(np.uint32)
        prior = self._prior(keys)
        slots, first_named, _ = self.new.upsert(keys)  # new keys come zeroed
        seen = ((prior & _NAMED) != 0) | ~first_named  # named before, by anyone (first_named: the batch's first row of a key new to the table)
        mine = (prior & bit) != 0  # named before by this reporter: in the memory, or earlier in this batch
        repeated = np.flatnonzero(np.bincount(slots, minlength=len(self.new))[slots] > 1)
        if len(repeated):  # only ids named twice in the batch need the (id, reporter) order; no sort of the whole batch
            mine[repeated] |= ~_firsts(pair_key(keys[repeated], bit[repeated].astype(np.uint64)))
        out[named] = seen & ~mine
        carried = answered[named]
        if carried.any():
            again[named] = carried & self._answered_before(keys, bit, prior >> _ANSWER_SHIFT, carried, repeated)
        np.bitwise_or.at(self.new.cols["reporters"], slots, prior | bit | np.where(carried, bit << _ANSWER_SHIFT, 0).astype(np.uint32))
        if len(self.new) >= self.half:
            self.evicted += int((self.new.find(self.old.keys[: len(self.old)]) < 0).sum())  # carried ids are not forgotten
            self.old, self.new = self.new, _table(self.half)
        return out, again

    @staticmethod
    def _answered_before(keys: _U, bit: _M, prior: _M, carried: _B, repeated: npt.NDArray[np.intp]) -> _B:
        """Per named row: the call's answer was carried before by another reporter and not by this row's (the named
        rule over the rows that carry an answer; only ids named twice in the batch can be answered twice in it)."""
        seen, mine = prior != 0, (prior & bit) != 0
        twice = repeated[carried[repeated]]
        if len(twice) > 1:
            seen[twice] |= ~_firsts(keys[twice])
            mine[twice] |= ~_firsts(pair_key(keys[twice], bit[twice].astype(np.uint64)))
        return np.asarray(seen & ~mine, dtype=bool)
