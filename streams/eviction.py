"""Which keys leave the worker's per-key state: idle ones, and the oldest past a memory budget.

Contract: pure and vectorised; it picks rows, the caller removes them
(``streams.state.ActorStore.remove``) between batches. ``Eviction`` keeps

* an **event clock**: it only moves forward, to each batch's median event
  time (``advance``), so a few rows stamped far ahead (a skewed clock, a
  forged summary) do not age every key out at once; the wall clock is never read;
* an **idle time-to-live** (``idle_ttl_s``, 0 = none): a key whose latest event
  is ``idle_ttl_s`` or more behind the clock goes. Keys are swept when the clock
  has moved ``sweep_s`` (a 32nd of the TTL, at least one window) since the last
  sweep, so a key idle for the TTL is gone at most ``sweep_s`` later and sweeps
  cost nothing on most batches (``select`` says when it swept: the caller may
  tidy up then too);
* a **memory budget** (``budget_bytes`` per partition over the per-key tables, 0 =
  none): past it, the least recently active keys go, oldest first, until ``KEEP``
  of the budget is held (the headroom makes it run once per many batches).
  Keys last active in the same window go in table order, then row order (arrival).

A key's last activity is the start of the window of its latest event
(``ActorStore.last_seen``). What goes is counted per table and reason in
``evicted`` (``"actor:ttl"``, ``"source:budget"``, ...); ``take_counts`` hands
the counts since its previous call to the metrics.

Consequence: an evicted key's state is gone -- window counters, baselines,
decayed sums, learned destinations, age, flags. If it comes back it is a new
key: it learns again (its first ``learn_windows`` windows), its baselines start
from its first window, and a flag it carried is forgotten (its verdict, already
published, stays in force in the shims until it expires; a new detection
publishes a new one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["KEEP", "Eviction", "EvictionConfig", "Table"]

_I = npt.NDArray[np.intp]
#: share of the budget kept after a budget eviction
KEEP = 0.9
#: one table as eviction sees it: (name, last activity of each row, bytes each row costs)
Table = tuple[str, npt.NDArray[np.uint32], npt.NDArray[np.int64]]


@dataclass(frozen=True)
class EvictionConfig:
    """Idle time-to-live (seconds of event time, 0 = none), budget (bytes per partition, 0 = none), window length."""

    idle_ttl_s: float = 86_400.0
    budget_bytes: int = 256 << 20
    window_s: int = 60

    def __post_init__(self) -> None:
        if self.idle_ttl_s < 0 or self.budget_bytes < 0 or self.window_s < 1:
            raise ValueError(f"EvictionConfig: idle_ttl_s={self.idle_ttl_s!r} and budget_bytes={self.budget_bytes!r} "
                             f"must be >= 0, window_s={self.window_s!r} >= 1")

    @property
    def sweep_s(self) -> float:
        """Event time between two idle sweeps (without a TTL, sweeps still run, as if it were a day)."""
        return max(float(self.window_s), (self.idle_ttl_s or 86_400.0) / 32)


class Eviction:
    """The event clock, the sweep schedule and the eviction counts of one partition (see the module docstring)."""

    def __init__(self, config: EvictionConfig) -> None:
        self.config = config
        self.clock = float("-inf")
        self._swept = float("-inf")
        #: keys evicted so far, by ``<table>:<reason>``
        self.evicted: dict[str, int] = {}
        self._taken: dict[str, int] = {}

    def advance(self, times: npt.NDArray[np.float64]) -> None:
        """Move the clock to the median event time of a batch (never back)."""
        n = len(times)
        if n:
            median = float(times[0]) if n == 1 else float(np.partition(times, n // 2)[n // 2])
            self.clock = max(self.clock, median)

    def due(self, held_bytes: int) -> bool:
        """True when a sweep is due or the budget is exceeded."""
        c = self.config
        return self.clock >= self._swept + c.sweep_s or bool(c.budget_bytes and held_bytes > c.budget_bytes)

    def select(self, tables: Sequence[Table], held_bytes: int) -> tuple[list[_I], bool]:
        """The rows of each table to evict now (idle ones, then the oldest past the budget), counted; and whether
        this was a sweep."""
        c = self.config
        drop = [np.zeros(0, dtype=np.intp) for _ in tables]
        swept = self.clock >= self._swept + c.sweep_s
        if swept:
            self._swept = self.clock
        if swept and c.idle_ttl_s:
            for i, (name, seen, cost) in enumerate(tables):
                drop[i] = np.flatnonzero(seen.astype(np.float64) + c.window_s + c.idle_ttl_s <= self.clock)
                held_bytes -= int(cost[drop[i]].sum())
                self._count(name, "ttl", len(drop[i]))
        if c.budget_bytes and held_bytes > c.budget_bytes:
            for i, rows in enumerate(self._oldest(tables, drop, held_bytes - int(c.budget_bytes * KEEP))):
                self._count(tables[i][0], "budget", len(rows))
                drop[i] = np.concatenate([drop[i], rows])
        return drop, swept

    @staticmethod
    def _oldest(tables: Sequence[Table], dropped: Sequence[_I], excess: int) -> list[_I]:
        """The least recently active rows (not already dropped) whose bytes add up to at least ``excess``."""
        rows, seen, cost, table = [], [], [], []
        for i, ((_, last, each), gone) in enumerate(zip(tables, dropped)):
            alive = np.ones(len(last), dtype=bool)
            alive[gone] = False
            r = np.flatnonzero(alive)
            rows.append(r)
            seen.append(last[r])
            cost.append(each[r])
            table.append(np.full(len(r), i, dtype=np.intp))
        order = np.argsort(np.concatenate(seen), kind="stable")
        spent = np.cumsum(np.concatenate(cost)[order])
        take = order[: int(np.searchsorted(spent, excess)) + 1]
        which, flat = np.concatenate(table)[take], np.concatenate(rows)[take]
        return [flat[which == i] for i in range(len(tables))]

    def _count(self, table: str, reason: str, n: int) -> None:
        if n:
            key = f"{table}:{reason}"
            self.evicted[key] = self.evicted.get(key, 0) + n

    def take_counts(self) -> dict[str, int]:
        """Keys evicted since the previous call, by ``<table>:<reason>`` (for counters that only add)."""
        out = {k: v - self._taken.get(k, 0) for k, v in self.evicted.items() if v != self._taken.get(k, 0)}
        self._taken = dict(self.evicted)
        return out
