"""One key's state and how a batch folds into it, driven by the feature table.

``KeySpace`` owns the ``ActorStore`` of one key (``actor`` or ``source``) and
does what every declared ``Feature`` of that key asks (``models.features``):
window sums and maxima and distinct sketches, reset when a key's tumbling
window closes; EWMA baselines updated at the close from clean (unflagged)
windows; long-horizon decayed sums; age and flags. It also feeds the cohort
quantiles rules compare with (``streams.cohorts``). ``frame(rows)`` gives the
feature frame detectors score. Pure numpy; no Python work per row.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from models.features import Feature
from streams.cohorts import CohortQuantiles
from streams.state import ActorStore, distinct_estimate

__all__ = ["Elements", "KeySpace"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_U = npt.NDArray[np.uint64]
#: an element stream: (row of each element, 64-bit hash of each element)
Elements = tuple[_I, _U]


def _stack(signals: Mapping[str, _F], features: list[Feature], mine: npt.NDArray[np.bool_]) -> _F:
    """The features' signals as columns, this key's rows only (rows x features)."""
    return np.column_stack([signals[str(f.signal)] for f in features])[mine]


def _group_sums(group: _I, values: _F, k: int) -> _F:
    """Per group (0..k-1) the column sums of ``values`` (rows x columns) -> (k x columns)."""
    width = values.shape[1]
    if len(group) <= 64:  # a few rows: add them one by one in numpy
        out = np.zeros((k, width))
        np.add.at(out, group, values)
        return out
    flat = (group[:, None] * width + np.arange(width)).ravel()
    return np.asarray(np.bincount(flat, weights=values.ravel(), minlength=k * width).reshape(k, width), dtype=np.float64)


class KeySpace:
    """The state of one key and its folds (see the module docstring)."""

    def __init__(self, key: str, features: Iterable[Feature], window_s: int, alpha: float, buckets: int,
                 extra: Mapping[str, Any] | None = None, cohort_features: Iterable[str] = ()):
        self.key = key
        self.features = tuple(features)
        self.window_s, self.alpha = window_s, alpha
        self.store = ActorStore(buckets=buckets, features=self.features, extra=extra or {})
        self.cohorts = CohortQuantiles(cohort_features)
        self._age = next((f.name for f in self.features if f.fold == "age"), None)
        self._windowed = [f for f in self.features if f.fold in ("sum", "max")]
        self._sketched = [f for f in self.features if f.fold == "distinct"]
        self._ewma = [f for f in self.features if f.fold == "ewma"]
        self._decay = [f for f in self.features if f.fold == "decay"]
        self._flags = [f for f in self.features if f.fold == "flag"]
        self._is_service = next((f.name for f in self._flags if f.name == "is_service"), None)
        f32 = self.store.f32_col
        self._sums = [f for f in self._windowed if f.fold == "sum" and f.name in f32]
        self._sum_at = np.array([f32[f.name] for f in self._sums], dtype=np.intp)
        self._maxes = [f for f in self._windowed if f not in self._sums]
        lives = sorted({f.half_life_s for f in self._decay})
        self._decay_groups = [([f for f in self._decay if f.half_life_s == hl], hl) for hl in lives]
        self._decay_at = [np.array([f32[f.name] for f in group], dtype=np.intp) for group, _ in self._decay_groups]

    def _value_at_close(self, name: str, rows: _I) -> _F:
        if name in self.store.sketches:
            return distinct_estimate(self.store.sketches[name][rows])
        return np.asarray(self.store.cols[name][rows], dtype=np.float64)

    def cohort_of(self, rows: _I) -> _I:
        """Cohort index per row: 1 for workloads (no principal), else 0."""
        if self._is_service is None:
            return np.zeros(len(rows), dtype=np.intp)
        return (self.store.cols[self._is_service][rows] > 0).astype(np.intp)

    def roll(self, rows: _I, new: npt.NDArray[np.bool_], latest: _F) -> None:
        """Start new keys' windows; close the windows of keys whose latest event passed their end."""
        cols, w = self.store.cols, self.window_s
        start = (latest // w * w).astype(np.uint32)
        cols["window_start"][rows[new]] = start[new]
        ended = ~new & (cols["window_start"][rows] + w <= latest)
        closing = rows[ended]
        if not len(closing):
            return
        clean = cols["flagged_until"][closing] <= cols["window_start"][closing]
        first = cols[self._age][closing] == 0 if self._age else np.zeros(len(closing), dtype=bool)
        for f in self._ewma:
            value, old = self._value_at_close(str(f.of), closing), cols[f.name][closing]
            updated = np.where(first, value, (1 - self.alpha) * old + self.alpha * value)
            cols[f.name][closing] = np.where(clean, updated, old)
        cohort = self.cohort_of(closing)
        for name in self.cohorts.features:
            self.cohorts.update(name, cohort[clean], self._value_at_close(name, closing)[clean])
        if self._age:
            elapsed = (start[ended].astype(np.int64) - cols["window_start"][closing]) // w
            age = cols[self._age][closing].astype(np.int64) + np.maximum(elapsed, 1)
            cols[self._age][closing] = np.minimum(age, np.iinfo(np.uint16).max).astype(np.uint16)
        cols["window_start"][closing] = start[ended]
        for f in self._windowed:
            cols[f.name][closing] = 0
        for f in self._sketched:
            self.store.sketches[f.name][closing] = 0

    def fold(self, rows: _I, group: _I, k: int, latest: _F, time: _F, signals: Mapping[str, _F], elements: Mapping[str, Elements]) -> None:
        """Add one batch: ``group`` maps each batch row to one of ``k`` keys (-1: not this key's row).

        A signal no enricher produced (its enricher is switched off) counts as 0.
        """
        cols, mine = self.store.cols, group >= 0
        g = group[mine]
        absent = np.zeros(len(group))
        signals = {**{str(f.signal): absent for f in self.features if f.signal and f.signal not in signals}, **signals}
        if self._sums:
            at = np.ix_(rows, self._sum_at)
            added = _group_sums(g, _stack(signals, self._sums, mine), k)
            self.store.f32[at] = (self.store.f32[at] + added).astype(np.float32)
        for f in self._maxes:
            top = np.zeros(k)
            np.maximum.at(top, g, signals[str(f.signal)][mine])
            cols[f.name][rows] = np.maximum(cols[f.name][rows], top).astype(cols[f.name].dtype)
        for f in self._flags:
            hit = np.bincount(g, weights=signals[str(f.signal)][mine], minlength=k) > 0
            cols[f.name][rows] |= hit.astype(cols[f.name].dtype)
        for f in self._sketched:
            if str(f.signal) not in elements:
                continue
            el_rows, hashes = elements[str(f.signal)]
            el_group = group[el_rows]
            keep = el_group >= 0
            bit = (hashes[keep] & np.uint64(255)).astype(np.intp)
            np.bitwise_or.at(self.store.sketches[f.name], (rows[el_group[keep]], bit >> 3), (1 << (bit & 7)).astype(np.uint8))
        self._fold_decay(rows, g, k, latest, time, signals, mine)
        self.store.mark_dirty(rows)

    def _fold_decay(self, rows: _I, g: _I, k: int, latest: _F, time: _F, signals: Mapping[str, _F], mine: npt.NDArray[np.bool_]) -> None:
        """Decay each key's sums to its latest event, then add each row decayed from its own time (batching-invariant)."""
        if not self._decay:
            return
        cols, f32 = self.store.cols, self.store.f32
        now = np.maximum(latest, cols["decay_at"][rows])
        dt = now - cols["decay_at"][rows]
        age = np.maximum(now[g] - time[mine], 0.0)
        for (features, half_life), where in zip(self._decay_groups, self._decay_at):  # one pass per half-life
            factor = np.exp2(-dt / half_life)[:, None]
            added = _group_sums(g, _stack(signals, features, mine) * np.exp2(-age / half_life)[:, None], k)
            at = np.ix_(rows, where)
            f32[at] = (f32[at] * factor + added).astype(np.float32)
        cols["decay_at"][rows] = now

    def frame(self, rows: _I) -> dict[str, _F]:
        """The feature frame (every feature of this key) of these rows."""
        cols, f32 = self.store.cols, self.store.f32_col
        block = self.store.f32[rows].astype(np.float64)  # every float32 feature in one copy
        out: dict[str, _F] = {}
        for f in self.features:
            if f.fold == "distinct":
                out[f.name] = distinct_estimate(self.store.sketches[f.name][rows])
            elif f.name in f32:
                out[f.name] = block[:, f32[f.name]]
            else:
                out[f.name] = cols[f.name][rows].astype(np.float64)
        if self.cohorts.features:
            cohort = self.cohort_of(rows)
            for name in self.cohorts.features:
                out[f"cohort:{name}"] = self.cohorts.quantile(name, cohort)
        return out
