"""The actor columns that are zero for nearly every actor, kept in a side table for the actors that use them.

Most actor features count something unusual: novel edges, ownership violations,
honeytokens, MCP tools and model calls (only agent workloads and model clients
make them). On 300k rows of simulated benign traffic
(``deploy.lab.bench_worker.FreshRows``, seed 11; 8,577 actors) each feature of
``RARE`` was 0 for every actor, yet in one table every actor paid 4 bytes for
each (100 of its 263; 96 with the shipped rules, one of which compares
``thin_owners_long`` with its cohort). ``novel_destinations`` was 0 there too but is not rare:
end users reach services they had not called before all the time (a quarter of
the actors of ``deploy.lab.bench_memory``'s mix, most of the simulator's users
with two learning windows), and a side row costs more than the column. ``SideTable``
holds them in a second ``KeySpace`` keyed by the actor's hash, with a row only for
an actor one of whose rare signals was once nonzero; every other actor reads 0
for them, which is exactly what its columns held. Rows that hold nothing an
actor could read again are released at each eviction sweep (``empty``).

Same results as one table: an actor with a side row has it rolled and folded on
every batch the actor appears in, with the actor's latest time, after the actor's
own fold; its window start, age, flag and decay clock are copied from the actor
when the side row is made (before that its rare columns were 0, and 0 stays 0
under every fold), and its flag again before each roll (a detection sets the
actor's), so windows close, baselines update and sums decay at the same moments.
A feature some rule compares with its cohort stays in the actor table (cohorts
are fed from every actor's closing windows), as does an EWMA of a feature that is
not rare. Evicting an actor evicts its side row. ``migrate`` splits changelog
buckets written with the one-table layout, so an upgrade keeps its state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import Feature
from streams.keyspace import Elements, KeySpace
from streams.state import ActorStore

__all__ = ["RARE", "SideTable"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_U = npt.NDArray[np.uint64]

#: actor features that were 0 for every actor of the benign sample (see the module docstring)
RARE: frozenset[str] = frozenset({
    "inline_hits", "retired_hits", "shadow_hits", "honeytoken_hits",
    "foreign_owners", "dense_blocks", "foreign_objects_long", "thin_owners_long", "dense_blocks_long",
    "novel_edges", "novel_privileged_edges", "novel_edges_denied", "rare_functions", "new_external_hosts",
    "new_host_bytes_long", "novel_privileged_edges_long",
    "agent_new_behaviour", "agent_hijack_sensitive", "agent_tool_bursts", "llm_sensitive_after_tools", "tool_injections",
    "llm_calls", "llm_distinct_prompts", "llm_distinct_shapes", "baseline_llm_calls",
})
#: the side table's own age column (a copy of the actor's: baselines start from a key's first window)
AGE = "side_age_windows"


def split(features: Sequence[Feature], cohort: Iterable[str] = ()) -> tuple[tuple[Feature, ...], tuple[Feature, ...]]:
    """(features kept in the actor table, features moved to the side table) of the actor's features."""
    compared = set(cohort)
    side = {f.name for f in features if f.name in RARE and f.name not in compared and f.fold in ("sum", "decay", "ewma")}
    side -= {f.name for f in features if f.fold == "ewma" and f.of not in side}
    return tuple(f for f in features if f.name not in side), tuple(f for f in features if f.name in side)


class SideTable:
    """The side ``KeySpace`` of the rare actor features (see the module docstring)."""

    def __init__(self, features: Sequence[Feature], actor_age: str, window_s: int, alpha: float, buckets: int):
        self.features = tuple(features)
        self.names = tuple(f.name for f in self.features)
        self.actor_age = actor_age
        self.signals = tuple(sorted({str(f.signal) for f in self.features if f.signal}))
        self.space = KeySpace("actor", (*self.features, Feature(AGE, "age")), window_s, alpha, buckets)

    @property
    def store(self) -> ActorStore:
        """The side rows."""
        return self.space.store

    def fold(self, actor: ActorStore, keys: _U, rows: _I, group: _I, latest: _F, time: _F, signals: Mapping[str, _F],
             elements: Mapping[str, Elements]) -> tuple[_I, _I]:
        """Fold a batch already folded into the actor table: (which of ``keys`` have side rows, their side rows)."""
        if not self.features:
            return np.zeros(0, np.intp), np.zeros(0, np.intp)
        hot = np.zeros(len(group), dtype=bool)
        for name in self.signals:
            values = signals.get(name)
            if values is not None:
                hot |= values != 0
        wanted = np.zeros(len(keys), dtype=bool)
        wanted[group[hot & (group >= 0)]] = True
        if len(self.store):
            wanted |= self.store.find(keys) >= 0
        sel = np.flatnonzero(wanted)
        if not len(sel):
            return sel, sel
        side, new = self.store.rows_for(keys[sel])
        cols, mine = self.store.cols, actor.cols
        cols["flagged_until"][side] = mine["flagged_until"][rows[sel]]
        self.space.roll(side, new, latest[sel])
        if new.any():  # the actor's first rare signal: its side row joins the actor's window, age and decay clock
            at, made = rows[sel[new]], side[new]
            cols["window_start"][made] = mine["window_start"][at]
            cols[AGE][made] = mine[self.actor_age][at]
            cols["decay_at"][made] = mine["decay_at"][at]
        index = np.full(len(keys), -1, dtype=np.intp)
        index[sel] = np.arange(len(sel))
        self.space.fold(side, np.where(group >= 0, index[np.maximum(group, 0)], -1), len(sel), latest[sel], time, signals, elements)
        return sel, side

    def extend(self, frame: dict[str, _F], n: int, sel: _I, side: _I) -> None:
        """Add the rare features of ``n`` actors to their frame: from their side rows (``sel`` of them), else 0."""
        block = self.store.f32[side].astype(np.float64) if len(side) else None
        at = self.store.f32_col
        for name in self.names:
            values = np.zeros(n)
            if block is not None:
                values[sel] = block[:, at[name]]
            frame[name] = values

    def empty(self, clock: float) -> _I:
        """Side rows that hold nothing an actor could read again (removing them changes no frame): every column 0;
        or, when the row's window ended a whole window before ``clock`` (the next event closes and resets it),
        every column 0 but window sums that feed no baseline.

        Not quite the same as one table in one case: a summary arriving more than a window late, for an actor
        whose ended window was released, counts from 0 where one table would add it to that ended window's sums.
        """
        n = len(self.store)
        if not n:
            return np.zeros(0, dtype=np.intp)
        space, cols = self.space, self.store.cols
        fed = {str(f.of) for f in self.features if f.fold == "ewma"}
        kept = [f.name for f in self.features if f.fold != "sum" or f.name in fed]
        lasting = np.zeros(n, dtype=bool)
        for name in kept:
            lasting |= cols[name][:n] != 0
        window = np.zeros(n, dtype=bool)
        for f in self.features:
            if f.name not in kept:
                window |= cols[f.name][:n] != 0
        ended = cols["window_start"][:n].astype(np.float64) + 2 * space.window_s <= clock
        return np.flatnonzero(~lasting & (~window | ended))

    def lookup(self, keys: _U) -> tuple[_I, _I]:
        """(which of ``keys`` have side rows, their side rows)."""
        found = self.store.find(keys) if len(self.store) else np.full(len(keys), -1, dtype=np.intp)
        sel = np.flatnonzero(found >= 0)
        return sel, found[sel]

    def forget(self, keys: _U) -> int:
        """Remove the side rows of these (evicted) actors; how many there were."""
        return self.store.remove(self.lookup(keys)[1]) if len(keys) and len(self.store) else 0

    def migrate(self, blobs: Sequence[bytes], actor: ActorStore, full: Sequence[Feature], extra: Mapping[str, Any]) -> int:
        """Load actor buckets written with every actor feature in one table (before the side table); rows loaded.

        Blobs of neither layout are skipped and counted in ``actor.skipped_blobs``. Migrated rows are marked
        dirty, so the changelog is rewritten in the current layout.
        """
        legacy = ActorStore(buckets=actor.buckets, features=full, extra=extra)
        old = [blob for blob in blobs if legacy.accepts(blob)]
        actor.skipped_blobs += len(blobs) - len(old)
        loaded = legacy.import_buckets(old)
        if not loaded:
            return 0
        rows, _ = actor.rows_for(legacy.cols["key"][: len(legacy)].copy())
        actor.mark_dirty(rows)
        for name, col in actor.cols.items():
            if name in legacy.cols:
                col[rows] = legacy.cols[name][: len(legacy)]
        for name, sketch in actor.sketches.items():
            sketch[rows] = legacy.sketches[name][: len(legacy)]
        rare = np.column_stack([legacy.cols[n][: len(legacy)] for n in self.names]) if self.names else np.zeros((loaded, 0))
        has = np.flatnonzero((rare != 0).any(axis=1))
        if len(has):
            side, _ = self.store.rows_for(legacy.cols["key"][has].copy())
            for name in (*self.names, "window_start", "flagged_until", "decay_at"):
                self.store.cols[name][side] = legacy.cols[name][has]
            self.store.cols[AGE][side] = legacy.cols[self.actor_age][has]
            self.store.mark_dirty(side)
        return loaded
