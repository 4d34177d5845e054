"""The one detector interface, in the style of scikit-learn and River.

A detector scores *feature frames*: a mapping from feature name to a numpy
array, one entry per actor window (``models.features`` lists the names). Scores
are floats in [0, 1], higher means more anomalous, and 0.5 is the point where
the detector's evidence reaches its threshold. Scoring never picks an action:
``streams`` turns scores into verdicts with a policy.

``__init__`` only stores hyperparameters; learned state ends in ``_``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Self

import numpy as np
import numpy.typing as npt

from ingest import Reason

__all__ = ["Detector", "Frame", "frame_from_row"]

Frame = Mapping[str, npt.NDArray[np.float64]]


def frame_from_row(row: Mapping[str, float]) -> dict[str, npt.NDArray[np.float64]]:
    """A one-row frame from a plain mapping of feature values."""
    return {k: np.asarray([v], dtype=np.float64) for k, v in row.items()}


def ratio_score(value: npt.NDArray[np.float64], threshold: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """value / (value + threshold): 0 at nothing, 0.5 at the threshold, towards 1 beyond it."""
    value = np.maximum(value, 0.0)
    return np.asarray(value / (value + np.maximum(threshold, 1e-9)), dtype=np.float64)


class Detector(ABC):
    """Scores actor windows; ``fit`` learns thresholds from benign rows."""

    #: the detector id that appears in reasons, findings and metrics
    name: str = "detector"
    #: the attack class it targets (OCSF finding type)
    attack_class: str = "anomaly"

    @abstractmethod
    def fit(self, frame: Frame) -> Self:
        """Learn from (mostly benign) rows; returns ``self``."""

    @abstractmethod
    def score_many(self, frame: Frame) -> npt.NDArray[np.float64]:
        """Scores in [0, 1] for every row of ``frame``."""

    @abstractmethod
    def evidence(self, row: Mapping[str, float]) -> str:
        """One sentence on what the detector saw in this row."""

    def score(self, row: Mapping[str, float]) -> float:
        """Score one row given as a mapping of feature values."""
        return float(self.score_many(frame_from_row(row))[0])

    def explain(self, row: Mapping[str, float]) -> list[Reason]:
        """Reasons for the row's score, for verdicts and findings."""
        return [Reason(detector=self.name, score=round(self.score(row), 4), evidence=self.evidence(row))]
