"""Detectors for the attack classes of the walking skeleton.

Each detector compares one count of the actor's window with a threshold: a
floor (hyperparameter, raised by ``fit`` to a high quantile of benign rows)
and, where it has one, a multiple of the actor's own baseline. The score is
``value / (value + threshold)``, so 0.5 means "at the threshold".

>>> d = ObjectBreadthDetector(floor=20)
>>> round(d.score({"distinct_objects": 60.0, "baseline_distinct": 2.0}), 2)
0.75
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import numpy as np
import numpy.typing as npt

from models.base import Detector, Frame, ratio_score

__all__ = [
    "AuthFailureDetector",
    "CountThresholdDetector",
    "InlineSignatureDetector",
    "NovelDestinationDetector",
    "ObjectBreadthDetector",
    "RetiredEndpointDetector",
    "VolumeDetector",
]

_F = npt.NDArray[np.float64]


def _col(frame: Frame, name: str) -> _F:
    first = next(iter(frame.values()))
    return frame[name] if name in frame else np.zeros(len(first))


class CountThresholdDetector(Detector):
    """Scores one windowed count against ``max(floor, baseline_factor * baseline)``.

    Parameters
    ----------
    feature: the count to score (a name from ``models.features.FEATURES``).
    floor: the smallest threshold; ``fit`` may raise it, never lower it.
    baseline_feature: the actor's own baseline for the count, if any.
    baseline_factor: how many times its baseline an actor may reach.
    quantile, margin: ``fit`` sets ``floor_ = max(floor, margin * quantile(benign))``.
    """

    feature = "requests"
    baseline_feature: str | None = None

    def __init__(self, floor: float = 1.0, baseline_factor: float = 4.0, quantile: float = 0.999, margin: float = 1.5):
        self.floor = floor
        self.baseline_factor = baseline_factor
        self.quantile = quantile
        self.margin = margin

    def fit(self, frame: Frame) -> Self:
        values = self._fit_values(frame)
        learned = self.margin * float(np.quantile(values, self.quantile)) if len(values) else 0.0
        self.floor_ = max(self.floor, learned)
        return self

    def _value(self, frame: Frame) -> _F:
        return _col(frame, self.feature)

    def _fit_values(self, frame: Frame) -> _F:
        """The values the floor is learned from (those the floor, not a baseline, judges)."""
        return self._value(frame)

    def threshold(self, frame: Frame) -> _F:
        """The per-row threshold (floor, or the actor's baseline multiple when larger)."""
        floor = getattr(self, "floor_", self.floor)
        base = np.full(len(self._value(frame)), floor)
        if self.baseline_feature is not None:
            base = np.maximum(base, self.baseline_factor * _col(frame, self.baseline_feature))
        return base

    def score_many(self, frame: Frame) -> _F:
        return ratio_score(self._value(frame), self.threshold(frame))

    def evidence(self, row: Mapping[str, float]) -> str:
        frame = {k: np.asarray([v], dtype=np.float64) for k, v in row.items()}
        value, limit = float(self._value(frame)[0]), float(self.threshold(frame)[0])
        return f"{self.feature}={value:.0f} in window, threshold {limit:.1f}"


class ObjectBreadthDetector(CountThresholdDetector):
    """BOLA by breadth: an end user touching far more distinct objects than users do (id enumeration).

    Parameters
    ----------
    floor: distinct objects per window an end user may touch (default 25; benign p99.9 is ~10).
    baseline_factor: multiple of the user's own ``baseline_distinct`` allowed (default 4).
    quantile, margin: what ``fit`` learns the floor from.

    Services (no principal) score 0: they read many objects by design.

    >>> d = ObjectBreadthDetector()
    >>> d.score({"distinct_objects": 75.0, "is_service": 0.0}) > 0.5, d.score({"distinct_objects": 75.0, "is_service": 1.0})
    (True, 0.0)
    """

    name = "bola_breadth"
    attack_class = "bola"
    feature = "distinct_objects"
    baseline_feature = "baseline_distinct"

    def __init__(self, floor: float = 25.0, baseline_factor: float = 4.0, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)

    def _value(self, frame: Frame) -> _F:
        # Object-level authorization concerns end users; services read many objects by design.
        return np.where(_col(frame, "is_service") > 0, 0.0, _col(frame, self.feature))


class AuthFailureDetector(CountThresholdDetector):
    """Credential abuse: bursts of 401 answers for one source (stuffing, spraying).

    Parameters
    ----------
    floor: 401 answers per window one actor may get (default 8; benign users mistype 1-3 times).
    baseline_factor, quantile, margin: as in ``CountThresholdDetector``.

    >>> AuthFailureDetector().score({"auth_failures": 8.0})
    0.5
    """

    name = "auth_failures"
    attack_class = "credential_abuse"
    feature = "auth_failures"

    def __init__(self, floor: float = 8.0, baseline_factor: float = 4.0, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)


class VolumeDetector(CountThresholdDetector):
    """Exfiltration: sensitive values returned to one actor far above users and its own baseline.

    Parameters
    ----------
    floor: sensitive values per window (default 150; benign users' p99.9 is ~44).
    baseline_factor: multiple of the actor's own ``baseline_pii`` allowed (default 5).
    learn_windows: windows a service actor is only learned, never scored (default 3).
    quantile, margin: what ``fit`` learns the floor from (end users only).

    >>> d = VolumeDetector()
    >>> round(d.score({"pii": 600.0, "is_service": 0.0}), 2)
    0.8
    >>> d.score({"pii": 600.0, "is_service": 1.0, "age_windows": 1.0})
    0.0
    """

    name = "pii_volume"
    attack_class = "exfiltration"
    feature = "pii"
    baseline_feature = "baseline_pii"

    def __init__(self, floor: float = 150.0, baseline_factor: float = 5.0, learn_windows: int = 3, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)
        self.learn_windows = learn_windows

    def _value(self, frame: Frame) -> _F:
        # A service's volume is judged against its own baseline once learned, never in its first windows.
        learning = (_col(frame, "is_service") > 0) & (_col(frame, "age_windows") < self.learn_windows)
        return np.where(learning, 0.0, _col(frame, self.feature))

    def _fit_values(self, frame: Frame) -> _F:
        # Learned services are judged against their own baseline; the floor is for end users.
        return np.asarray(_col(frame, self.feature)[_col(frame, "is_service") == 0], dtype=np.float64)


class NovelDestinationDetector(CountThresholdDetector):
    """Lateral movement: a service workload, past its learning windows, calling services it never called.

    Parameters
    ----------
    floor: novel-destination calls that reach the threshold (default 0.5, so one call scores 0.67).
    learn_windows: windows in which a service's destinations are learned (default 3).

    >>> d = NovelDestinationDetector(learn_windows=2)
    >>> round(d.score({"novel_destinations": 1.0, "is_service": 1.0, "age_windows": 2.0}), 2)
    0.67
    >>> d.score({"novel_destinations": 1.0, "is_service": 1.0, "age_windows": 1.0})
    0.0
    """

    name = "novel_destination"
    attack_class = "lateral_movement"
    feature = "novel_destinations"

    def __init__(self, floor: float = 0.5, learn_windows: int = 3, baseline_factor: float = 0.0, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)
        self.learn_windows = learn_windows

    def _value(self, frame: Frame) -> _F:
        learned = (_col(frame, "age_windows") >= self.learn_windows) & (_col(frame, "is_service") > 0)
        return np.where(learned, _col(frame, self.feature), 0.0)


class InlineSignatureDetector(CountThresholdDetector):
    """Injection and traversal: calls an inline signature flagged; one is enough to act on the actor.

    Parameters
    ----------
    floor: flagged calls that reach the threshold (default 0.5, so one call scores 0.67).

    >>> round(InlineSignatureDetector().score({"inline_hits": 1.0}), 2)
    0.67
    """

    name = "inline_signature"
    attack_class = "injection"
    feature = "inline_hits"

    def __init__(self, floor: float = 0.5, baseline_factor: float = 0.0, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)


class RetiredEndpointDetector(CountThresholdDetector):
    """Abuse of retired or undocumented APIs: calls to endpoints the policy lists as retired.

    Parameters
    ----------
    floor: retired-endpoint calls that reach the threshold (default 0.5, so one call scores 0.67).

    >>> round(RetiredEndpointDetector().score({"retired_hits": 2.0}), 2)
    0.8
    """

    name = "retired_endpoint"
    attack_class = "retired_api"
    feature = "retired_hits"

    def __init__(self, floor: float = 0.5, baseline_factor: float = 0.0, quantile: float = 0.999, margin: float = 1.5):
        super().__init__(floor, baseline_factor, quantile, margin)
