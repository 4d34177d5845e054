"""Unsupervised anomaly models per cohort, behind the ``models.base.Detector`` interface.

A ``CohortAnomalyDetector`` fits one scikit-learn estimator per cohort of
actor windows (``users``: ``is_service == 0``; ``services``: ``is_service ==
1``) on ``log1p``-scaled features standardised with the cohort's mean and
standard deviation. The features are whatever the frame it is fitted on
carries (minus the cohort column and ``age_windows``), or the list given; they
are stored in ``features_`` and travel in the artifact (``models.artifacts``).

Scores are calibrated per cohort so that 0.5 means "at the benign quantile
chosen at fit": with ``raw`` the estimator's anomaly (higher = more abnormal),
``center`` its training median and ``q`` its training ``quantile``,
``z = (raw - center) / (q - center)`` and ``score = sigmoid(slope * (z -
margin))``: ``margin = 1`` puts 0.5 exactly at the quantile, ``1.5`` half as far
again. Scores lie in [0, 1] and grow with ``raw``. A cohort with fewer than
``min_rows`` training windows has no model and scores 0 (nothing learned,
nothing claimed). Scoring is vectorised over the whole frame.

Explanations name the features whose standardised deviation from the cohort's
training distribution is largest (``top_features``), with their values.

Labels are never read: ``fit`` takes the windows of an archive as they are.

    ModelError (models.errors)  scoring an unfitted model, a frame missing a feature, a bad state

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> frame = {"requests": rng.poisson(5, 500).astype(float), "pii": rng.poisson(2, 500).astype(float),
...          "is_service": np.zeros(500)}
>>> d = GaussianMixtureDetector(n_components=1).fit(frame)
>>> d.score({"requests": 5.0, "pii": 2.0, "is_service": 0.0}) < 0.5 < d.score({"requests": 5.0, "pii": 900.0, "is_service": 0.0})
True
>>> d.top_features({"requests": 5.0, "pii": 900.0, "is_service": 0.0})[0][0]
'pii'
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import IsolationForest
from sklearn.mixture import GaussianMixture

from models.base import Detector, Frame, frame_from_row
from models.errors import ModelError

__all__ = [
    "COHORTS",
    "MODEL_KINDS",
    "CohortAnomalyDetector",
    "CohortFit",
    "GaussianMixtureDetector",
    "IsolationForestDetector",
    "log1p_scale",
]

_F = npt.NDArray[np.float64]

#: cohort name -> value of the cohort column
COHORTS: dict[str, float] = {"users": 0.0, "services": 1.0}
#: columns never used as model inputs by default (the cohort itself; an actor's age is not behaviour)
DEFAULT_EXCLUDED: tuple[str, ...] = ("is_service", "age_windows")
_MIN_STD = 0.1  # log1p units: a feature constant in training still gets a finite deviation


def log1p_scale(x: _F) -> _F:
    """``sign(x) * log1p(|x|)``: counts and bytes on a scale where a factor matters, not a difference."""
    return np.asarray(np.sign(x) * np.log1p(np.abs(x)), dtype=np.float64)


@dataclass
class CohortFit:
    """What was learned for one cohort: the estimator, the input standardisation and the score calibration."""

    estimator: Any
    mean: _F
    std: _F
    center: float
    spread: float
    rows: int


class CohortAnomalyDetector(Detector):
    """Per-cohort unsupervised model over actor windows (see the module docstring).

    Parameters
    ----------
    features: model inputs; ``None`` takes every column of the fit frame but the cohort column, ``age_windows``
        and derived ``<kind>:<feature>`` columns (such as the worker's online ``cohort:`` quantiles).
    cohort_feature: the column whose value (0 or 1) picks the cohort.
    quantile: the benign quantile of training scores that ``margin = 1`` maps to 0.5.
    margin: how far past the quantile (in units of its distance from the median) the 0.5 point sits.
    slope: steepness of the calibration sigmoid.
    min_rows: fewest windows a cohort needs to get a model.
    random_state: seed of the estimator.
    """

    attack_class = "anomaly"
    #: registry-style short name of the model kind (``MODEL_KINDS``)
    kind: ClassVar[str] = "model"

    def __init__(self, features: Sequence[str] | None = None, cohort_feature: str = "is_service", quantile: float = 0.999,
                 margin: float = 1.0, slope: float = 4.0, min_rows: int = 50, random_state: int = 0):
        self.features = None if features is None else tuple(features)
        self.cohort_feature = cohort_feature
        self.quantile = quantile
        self.margin = margin
        self.slope = slope
        self.min_rows = min_rows
        self.random_state = random_state

    @abstractmethod
    def _estimator(self, rows: int) -> Any:
        """A fresh, unfitted scikit-learn estimator for ``rows`` training windows."""

    @abstractmethod
    def _raw(self, estimator: Any, x: _F) -> _F:
        """The estimator's anomaly of standardised rows ``x``: higher = more abnormal."""

    def params(self) -> dict[str, Any]:
        """The hyperparameters, as ``__init__`` takes them."""
        return {"features": None if self.features is None else list(self.features), "cohort_feature": self.cohort_feature,
                "quantile": self.quantile, "margin": self.margin, "slope": self.slope, "min_rows": self.min_rows,
                "random_state": self.random_state}

    def _feature_names(self, frame: Frame) -> tuple[str, ...]:
        if self.features is not None:
            return self.features
        names = tuple(sorted(k for k in frame if k not in DEFAULT_EXCLUDED and k != self.cohort_feature and ":" not in k))
        if not names:
            raise ModelError(f"{self.kind}: the frame has no feature columns (columns: {sorted(frame)})")
        return names

    def _matrix(self, frame: Frame, names: Sequence[str]) -> _F:
        missing = [n for n in names if n not in frame]
        if missing:
            raise ModelError(f"{self.kind}: frame lacks feature(s) {missing} the model was fitted on")
        return log1p_scale(np.column_stack([np.asarray(frame[n], dtype=np.float64) for n in names]))

    def _cohort(self, frame: Frame, n: int) -> _F:
        if self.cohort_feature not in frame:
            return np.zeros(n)
        return np.asarray(frame[self.cohort_feature], dtype=np.float64)

    def fit(self, frame: Frame) -> Self:
        """Fit one model per cohort with at least ``min_rows`` windows; labels are never read."""
        if not 0.5 < self.quantile < 1.0:
            raise ModelError(f"{self.kind}: quantile={self.quantile} must be in (0.5, 1)")
        self.features_ = self._feature_names(frame)
        x = self._matrix(frame, self.features_)
        cohort = self._cohort(frame, len(x))
        self.cohorts_: dict[str, CohortFit] = {}
        for name, value in COHORTS.items():
            rows = x[cohort == value]
            if len(rows) >= self.min_rows:
                self.cohorts_[name] = self._fit_cohort(rows)
        self.rows_ = len(x)
        return self

    def _fit_cohort(self, rows: _F) -> CohortFit:
        mean, std = rows.mean(axis=0), np.maximum(rows.std(axis=0), _MIN_STD)
        z = (rows - mean) / std
        estimator = self._estimator(len(rows)).fit(z)
        raw = self._raw(estimator, z)
        center = float(np.median(raw))
        spread = max(float(np.quantile(raw, self.quantile)) - center, 1e-9)
        return CohortFit(estimator, mean, std, center, spread, len(rows))

    def _fitted(self) -> dict[str, CohortFit]:
        if not hasattr(self, "cohorts_"):
            raise ModelError(f"{self.kind}: not fitted; call fit(frame) or load an artifact (models.artifacts.load_model)")
        return self.cohorts_

    def score_many(self, frame: Frame) -> _F:
        """Calibrated scores in [0, 1] for every row (0.5 = the benign quantile chosen at fit)."""
        cohorts = self._fitted()
        x = self._matrix(frame, self.features_)
        cohort = self._cohort(frame, len(x))
        out = np.zeros(len(x))
        for name, fitted in cohorts.items():
            sel = cohort == COHORTS[name]
            if sel.any():
                raw = self._raw(fitted.estimator, (x[sel] - fitted.mean) / fitted.std)
                z = (raw - fitted.center) / fitted.spread
                out[sel] = 0.5 * (1.0 + np.tanh(0.5 * self.slope * (z - self.margin)))  # the logistic, overflow-free
        return out

    def deviations(self, frame: Frame) -> _F:
        """Standardised deviation (log1p units / cohort std) of every feature of every row; 0 where no cohort model."""
        cohorts = self._fitted()
        x = self._matrix(frame, self.features_)
        cohort = self._cohort(frame, len(x))
        out = np.zeros_like(x)
        for name, fitted in cohorts.items():
            sel = cohort == COHORTS[name]
            out[sel] = (x[sel] - fitted.mean) / fitted.std
        return out

    def top_features(self, row: Mapping[str, float], k: int = 3) -> list[tuple[str, float, float]]:
        """The ``k`` features that deviate most from the row's cohort: ``(name, value, deviation)``."""
        dev = self.deviations(frame_from_row(row))[0]
        order = np.argsort(-np.abs(dev), kind="stable")[:k]
        return [(self.features_[i], float(row.get(self.features_[i], 0.0)), round(float(dev[i]), 2)) for i in order]

    def evidence(self, row: Mapping[str, float]) -> str:
        """The cohort, the score and the top three deviating features with their values."""
        cohort = "services" if float(row.get(self.cohort_feature, 0.0)) == COHORTS["services"] else "users"
        tops = ", ".join(f"{name}={value:g} ({dev:+.1f} sd)" for name, value, dev in self.top_features(row))
        return f"{self.kind} {cohort}: score {self.score(row):.2f}; {tops}"

    def get_state(self) -> dict[str, Any]:
        """Everything learned, as plain values, numpy arrays and scikit-learn estimators (for ``models.artifacts``)."""
        cohorts = self._fitted()
        return {
            "kind": self.kind,
            "params": self.params(),
            "features": list(self.features_),
            "rows": int(self.rows_),
            "cohorts": {name: {"estimator": c.estimator, "mean": c.mean, "std": c.std, "center": c.center,
                               "spread": c.spread, "rows": c.rows} for name, c in cohorts.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Self:
        """Rebuild a fitted detector from ``get_state()``; raises ``ModelError`` naming the bad key."""
        try:
            model = cls(**state["params"])
            model.features_ = tuple(str(f) for f in state["features"])
            model.rows_ = int(state["rows"])
            model.cohorts_ = {
                str(name): CohortFit(c["estimator"], np.asarray(c["mean"], dtype=np.float64), np.asarray(c["std"], dtype=np.float64),
                                     float(c["center"]), float(c["spread"]), int(c["rows"]))
                for name, c in state["cohorts"].items()
            }
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{cls.kind}: bad model state ({type(exc).__name__}: {exc})") from exc
        unknown = sorted(set(model.cohorts_) - set(COHORTS))
        if unknown:
            raise ModelError(f"{cls.kind}: unknown cohort(s) {unknown} in model state; known: {sorted(COHORTS)}")
        for name, c in model.cohorts_.items():
            if c.mean.shape != (len(model.features_),) or c.std.shape != c.mean.shape:
                raise ModelError(f"{cls.kind}: cohort {name!r} has {c.mean.shape} means for {len(model.features_)} features")
        return model


class IsolationForestDetector(CohortAnomalyDetector):
    """Isolation forest per cohort; raw anomaly = ``-score_samples`` (short isolation paths = abnormal).

    Parameters: those of ``CohortAnomalyDetector`` plus ``n_estimators`` and ``max_samples`` (scikit-learn's).
    """

    name = kind = "iforest"

    def __init__(self, features: Sequence[str] | None = None, cohort_feature: str = "is_service", quantile: float = 0.999,
                 margin: float = 1.0, slope: float = 4.0, min_rows: int = 50, random_state: int = 0,
                 n_estimators: int = 100, max_samples: int = 256):
        super().__init__(features, cohort_feature, quantile, margin, slope, min_rows, random_state)
        self.n_estimators = n_estimators
        self.max_samples = max_samples

    def params(self) -> dict[str, Any]:
        """The hyperparameters, as ``__init__`` takes them."""
        return {**super().params(), "n_estimators": self.n_estimators, "max_samples": self.max_samples}

    def _estimator(self, rows: int) -> Any:
        return IsolationForest(n_estimators=self.n_estimators, max_samples=min(self.max_samples, rows), random_state=self.random_state)

    def _raw(self, estimator: Any, x: _F) -> _F:
        return np.asarray(-estimator.score_samples(x), dtype=np.float64)


class GaussianMixtureDetector(CohortAnomalyDetector):
    """Gaussian mixture per cohort; raw anomaly = negative log-likelihood of the standardised row.

    Parameters: those of ``CohortAnomalyDetector`` plus ``n_components``, ``covariance_type`` and
    ``reg_covar`` (scikit-learn's; the inputs are standardised, so ``reg_covar`` is in units of a
    cohort standard deviation squared and keeps features constant in training from dominating).
    """

    name = kind = "gmm"

    def __init__(self, features: Sequence[str] | None = None, cohort_feature: str = "is_service", quantile: float = 0.999,
                 margin: float = 1.0, slope: float = 4.0, min_rows: int = 50, random_state: int = 0,
                 n_components: int = 4, covariance_type: str = "full", reg_covar: float = 0.01):
        super().__init__(features, cohort_feature, quantile, margin, slope, min_rows, random_state)
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar

    def params(self) -> dict[str, Any]:
        """The hyperparameters, as ``__init__`` takes them."""
        return {**super().params(), "n_components": self.n_components, "covariance_type": self.covariance_type,
                "reg_covar": self.reg_covar}

    def _estimator(self, rows: int) -> Any:
        return GaussianMixture(n_components=self.n_components, covariance_type=self.covariance_type,
                               reg_covar=self.reg_covar, random_state=self.random_state)

    def _raw(self, estimator: Any, x: _F) -> _F:
        return np.asarray(-estimator.score_samples(x), dtype=np.float64)


#: model kind -> class (artifacts record the kind; ``kubeward train --model`` takes it)
MODEL_KINDS: dict[str, type[CohortAnomalyDetector]] = {
    GaussianMixtureDetector.kind: GaussianMixtureDetector,
    IsolationForestDetector.kind: IsolationForestDetector,
}
