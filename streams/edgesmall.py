"""The edge learner's plain-Python path for small batches: the same state and signals as the vectorised path.

The live worker hands ``streams.edges.EdgeEnricher`` batches of 5-50 rows (a
5 ms gathering window). On such a batch the vectorised path pays numpy's fixed
cost per call about a hundred times (0.4 ms for 30 rows on the loaded
machine), while the work is a dictionary probe or two per row: almost every row
is a caller calling an edge it learned long ago. This path keys the rows in
plain Python, finds their slots through ``SlotMemo`` (a dictionary over a
``KeyTable``'s slots, emptied whenever the table's slots move) and hands the
few rows that need scoring (calls on provisional edges, calls to external
hosts) to the enricher's vectorised code. Pure: no I/O.

Contract: for any batch, ``SmallPath.enrich`` leaves the enricher's tables as
the vectorised path would (the same keys and columns, the same slot of each
key) and returns the same signals (tests/streams/test_edges_small.py feeds one
stream both ways).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from itertools import compress
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from streams.batch import BatchView, Signals
from streams.keytable import KeyTable, column_view, mix1, pair_key

if TYPE_CHECKING:
    from streams.edges import EdgeEnricher

__all__ = ["ANON", "COHORT", "HOST", "SlotMemo", "SmallPath"]

#: salts of the callers that are not one workload: a workload's user cohort, the anonymous cohorts (inside, outside)
COHORT, ANON = 0x5EED_C0_4057, 0xA11_0_A11
#: salt of (source, external host) pairs and of anonymous sources calling out
HOST = 0x4057_4057
_U = npt.NDArray[np.uint64]


class SlotMemo:
    """A dictionary from a memo key to its slot in ``table``; misses go through ``KeyTable.upsert``.

    ``limit`` bounds the dictionary (emptied when full); ``clear()`` must follow
    anything that moves the table's slots (eviction, ``load``).
    """

    def __init__(self, table: KeyTable, limit: int = 1 << 16) -> None:
        self.table = table
        self.limit = limit
        self.slots: dict[Hashable, int] = {}

    def clear(self) -> None:
        """Forget every slot (the table's slots moved)."""
        self.slots.clear()

    def upsert(self, memo_keys: Sequence[Hashable], times: Sequence[float], table_keys: Callable[[list[int]], _U]) -> tuple[list[int], list[int]]:
        """(slot of each row, rows that first name a key inserted now), as ``KeyTable.upsert`` with ``times``.

        ``table_keys(rows)`` gives the table's keys of those rows (asked only for rows the memo does not know).
        """
        memo = self.slots
        slots: list[int] = list(map(memo.get, memo_keys))  # type: ignore[arg-type]  # None where unknown, filled below
        miss = [i for i, s in enumerate(slots) if s is None]
        new_rows: list[int] = []
        if miss:
            got, new_first, _ = self.table.upsert(table_keys(miss), np.array([times[i] for i in miss]))
            if len(memo) + len(miss) > self.limit:
                memo.clear()
            for i, s in zip(miss, got.tolist()):
                slots[i] = s
                memo[memo_keys[i]] = s
            new_rows = [miss[j] for j in np.flatnonzero(new_first).tolist()]
        last = column_view(self.table.cols["last_seen"])
        for i, s in enumerate(slots):
            if times[i] > last[s]:
                last[s] = times[i]
        return slots, new_rows


class SmallPath:
    """``EdgeEnricher.enrich`` for a few rows, in plain Python over the enricher's tables (see the module docstring)."""

    def __init__(self, owner: EdgeEnricher, limit: int = 1 << 16) -> None:
        self.owner = owner
        self.callers = SlotMemo(owner.callers, limit)
        self.pairs = SlotMemo(owner.pairs, limit)
        self.hosts = SlotMemo(owner.hosts, limit)
        self._caller_keys: dict[tuple[int, int], int] = {}

    def clear(self) -> None:
        """Forget every remembered slot (the enricher evicted or restored)."""
        self.callers.clear()
        self.pairs.clear()
        self.hosts.clear()

    def enrich(self, batch: BatchView, out: Signals) -> None:
        """Update the state with ``batch`` and fill ``out`` (zeros, one array per signal) as the vectorised path would."""
        times, first = batch.time.tolist(), batch.first.tolist()
        caller, workload, learn, source_learn = self._callers(batch, times, first)
        self._edges(batch, times, first, caller, learn, out)
        rows = [i for i, (e, f) in enumerate(zip(batch.dest_external.tolist(), first)) if e and f]
        if rows:
            self._hosts(batch, rows, [workload[i] for i in rows], [source_learn[i] for i in rows], out)

    def _key(self, w: int, kind: int) -> int:
        """A caller's key: the workload (0), its user cohort (1), an anonymous cohort (2 inside, 3 outside)."""
        key = self._caller_keys.get((w, kind))
        if key is None:
            key = w if kind == 0 else mix1(w ^ COHORT) if kind == 1 else mix1(kind ^ ANON)
            if len(self._caller_keys) >= 1 << 16:
                self._caller_keys.clear()
            self._caller_keys[(w, kind)] = key
        return key

    def _callers(self, batch: BatchView, times: list[float], first: list[bool]) -> tuple[list[int], list[int], list[bool], list[bool]]:
        """Per row: caller key, source workload hash, caller learning, source workload learning (``EdgeEnricher._callers``)."""
        workload = self.owner._names.each(batch.source_workload.to_pylist())
        row_codes = [(w, (0 if w else 2 + x) if s else 1) for w, s, x in zip(workload, batch.is_service.tolist(), batch.external.tolist())]
        # (workload, kind) -> its earliest time (the dictionary keeps the last write: the smallest), and its first calls
        earliest = {code: t for t, code in sorted(zip(times, row_codes), reverse=True)}
        calls = Counter(compress(row_codes, first))
        present = list(earliest)
        # a user cohort's source workload learns too: its age says when that workload's egress is news
        proxied = [c for c in present if c[1] == 1 and c[0] != 0]
        keyof = {c: self._key(*c) for c in present}
        both = present + proxied
        learning = self._learning([keyof[c] for c in present] + [w for w, _ in proxied], [earliest[c] for c in both],
                                  [float(calls[c]) for c in both], max(times))
        own = dict(zip(present, learning))
        source = dict(own)
        source.update(zip(proxied, learning[len(present):]))
        return (list(map(keyof.__getitem__, row_codes)), workload, list(map(own.__getitem__, row_codes)),
                list(map(source.__getitem__, row_codes)))

    def _learning(self, keys: list[int], first: list[float], counts: list[float], newest: float) -> list[bool]:
        """``EdgeEnricher._learning`` over a few keys (they may repeat)."""
        c, table = self.owner.config, self.owner.callers
        slots, new_rows = self.callers.upsert(keys, [newest] * len(keys), lambda rows: np.array([keys[i] for i in rows], dtype=np.uint64))
        seen, calls = column_view(table.cols["first_seen"]), column_view(table.cols["calls"])
        for i in new_rows:
            seen[slots[i]] = math.inf
        before = [calls[s] for s in slots]
        for s, f, n in zip(slots, first, counts):
            if f < seen[s]:
                seen[s] = f
            calls[s] += n
        return [newest - seen[s] < c.learn_s or b < c.learn_calls for s, b in zip(slots, before)]

    def _edges(self, batch: BatchView, times: list[float], first: list[bool], caller: list[int], learn: list[bool], out: Signals) -> None:
        """``EdgeEnricher._edges``: (caller, edge) pairs through the memo, provisional rows to the vectorised scorer."""
        edge = batch.edge_hash.tolist()
        keys = list(zip(caller, edge))
        slots, new_rows = self.pairs.upsert(keys, times, lambda rows: pair_key(np.array([caller[i] for i in rows], dtype=np.uint64),
                                                                                 np.array([edge[i] for i in rows], dtype=np.uint64)))
        owner, cols = self.owner, self.owner.pairs.cols
        learned = cols["learned"]
        if new_rows:
            at = np.array([slots[i] for i in new_rows], dtype=np.intp)
            cols["ok_first"][at] = np.inf
            learned[at] = [learn[i] for i in new_rows]
            cols["edge"][at] = [edge[i] for i in new_rows]
            owner._popularity(np.array([edge[i] for i in new_rows if learn[i]], dtype=np.uint64))
        known = learned.data
        rows = [i for i, (f, s) in enumerate(zip(first, slots)) if f and known[s] == 0]
        if rows:
            new_first = np.zeros(batch.n, dtype=bool)
            new_first[new_rows] = True
            owner._score(batch, np.array(rows, dtype=np.intp), np.array(slots, dtype=np.intp), new_first, np.array(learn), out)

    def _hosts(self, batch: BatchView, rows: list[int], workload: list[int], quiet: list[bool], out: Signals) -> None:
        """``EdgeEnricher._hosts`` for the given rows (first calls to external hosts): their workloads and learning."""
        ip, service = batch.source_ip_hash, batch.service_hash
        times = [float(batch.time[i]) for i in rows]
        source = [w or mix1(int(ip[i]) ^ HOST) for w, i in zip(workload, rows)]
        anonymous = [j for j, w in enumerate(workload) if w == 0]
        if anonymous:  # an address calling out is a caller of its own
            learning = self._learning([source[j] for j in anonymous], [times[j] for j in anonymous], [1.0] * len(anonymous), max(times))
            for j, q in zip(anonymous, learning):
                quiet[j] = q
        keys = [(src, int(service[i])) for src, i in zip(source, rows)]
        slots, new_rows = self.hosts.upsert(keys, times, lambda js: np.array([mix1(keys[j][0] ^ mix1(keys[j][1] ^ HOST)) for j in js], dtype=np.uint64))
        cols = self.owner.hosts.cols
        settled, seen = cols["settled"], cols["first_seen"]
        for j in new_rows:
            settled[slots[j]], seen[slots[j]] = quiet[j], times[j]
            if not quiet[j]:
                out["new_external_host"][rows[j]] = 1.0
        for j, (i, s) in enumerate(zip(rows, slots)):
            if settled[s] == 0 and times[j] - seen[s] < self.owner.config.host_settle_s:
                out["new_host_bytes"][i] = batch.request_bytes[i]
