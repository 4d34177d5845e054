"""What a key's cohort does: an online high quantile of a feature per cohort, for rules with ``cohort_factor``.

A rule that compares a key with its cohort (end users with end users, workloads
with workloads) needs the cohort's high quantile of the feature, learned from the
traffic itself. ``CohortQuantiles`` keeps, per feature and cohort, a histogram on
log-spaced bins of the values keys reached when their windows closed (flagged
windows excluded, as for baselines); counts are halved whenever a cohort passes
``horizon`` samples, so the quantile follows the last few horizons. Below
``min_samples`` the quantile is 0 (no cohort term yet): the floor alone decides.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

__all__ = ["COHORTS", "CohortQuantiles"]

#: cohort index 0 = end users (a principal), 1 = workloads (no principal)
COHORTS = ("users", "services")
_EDGES = np.concatenate([[0.0], np.geomspace(0.25, 1e10, 160)])


class CohortQuantiles:
    """Per (feature, cohort) log histograms of window-close values; ``quantile`` reads them."""

    def __init__(self, features: Iterable[str], q: float = 0.99, horizon: int = 200_000, min_samples: int = 200):
        self.q, self.horizon, self.min_samples = q, horizon, min_samples
        self.hist = {f: np.zeros((len(COHORTS), len(_EDGES)), dtype=np.float64) for f in features}
        self._cache: dict[str, npt.NDArray[np.float64]] = {}

    @property
    def features(self) -> tuple[str, ...]:
        """The features tracked."""
        return tuple(self.hist)

    def update(self, name: str, cohort: npt.NDArray[np.intp], values: npt.NDArray[np.float64]) -> None:
        """Add the values keys of these cohorts reached (one per closed window)."""
        if not len(values) or name not in self.hist:
            return
        hist = self.hist[name]
        bins = np.searchsorted(_EDGES, np.maximum(values, 0.0), side="right") - 1
        np.add.at(hist, (cohort, bins), 1.0)
        full = hist.sum(axis=1) > self.horizon
        hist[full] *= 0.5
        self._cache.pop(name, None)

    def _per_cohort(self, name: str) -> npt.NDArray[np.float64]:
        found = self._cache.get(name)
        if found is None:
            hist = self.hist[name]
            totals = hist.sum(axis=1)
            cum = np.cumsum(hist, axis=1)
            idx = np.array([np.searchsorted(cum[c], self.q * totals[c]) for c in range(len(COHORTS))])
            upper = _EDGES[np.minimum(idx + 1, len(_EDGES) - 1)]
            found = self._cache[name] = np.where(totals >= self.min_samples, upper, 0.0)
        return found

    def quantile(self, name: str, cohort: npt.NDArray[np.intp]) -> npt.NDArray[np.float64]:
        """The cohort quantile of a feature for each row's cohort (0 while a cohort has too few samples)."""
        return np.asarray(self._per_cohort(name)[cohort], dtype=np.float64)

    def export(self) -> bytes:
        """The histograms, for the changelog."""
        return json.dumps({k: v.tolist() for k, v in self.hist.items()}).encode()

    def restore(self, blob: bytes) -> None:
        """Load histograms written by ``export`` (features no longer tracked are ignored)."""
        for name, rows in json.loads(blob).items():
            if name in self.hist and np.shape(rows) == self.hist[name].shape:
                self.hist[name] = np.asarray(rows, dtype=np.float64)
        self._cache.clear()
