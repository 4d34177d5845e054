"""Conformance checks for every registered detector (River's check_estimator, sklearn's parametrize_with_checks).

Each check runs against every entry of ``models.REGISTRY``; test ids read
``<registry name>:<check>``, e.g. ``bola_breadth:fit_returns_self``.
"""

from __future__ import annotations

import doctest
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import models.base
import models.detectors
from ingest import Reason
from models import FEATURES, REGISTRY, Detector, ModelError, UnknownDetectorError, build_detectors, frame_from_row
from models.base import ratio_score
from models.detectors import CountThresholdDetector

NAMES = sorted(REGISTRY)
SETTINGS = settings(max_examples=40, deadline=None)


#: detectors that judge service workloads (no end-user principal); the others judge end users
SERVICE_DETECTORS = {"novel_destination"}


def _context(det: Detector) -> dict[str, float]:
    """A zero row in which the detector's own feature counts: an end user, or a learned service for service detectors."""
    row = dict.fromkeys(FEATURES, 0.0)
    row["age_windows"] = float(getattr(det, "learn_windows", 0))
    row["is_service"] = 1.0 if det.name in SERVICE_DETECTORS else 0.0
    return row


def _feature(det: Detector) -> str:
    assert isinstance(det, CountThresholdDetector)
    return det.feature


def _frame(det: Detector, values: np.ndarray) -> dict[str, np.ndarray]:
    frame = {k: np.full(len(values), v) for k, v in _context(det).items()}
    frame[_feature(det)] = np.asarray(values, dtype=np.float64)
    return frame


def _benign(det: Detector, n: int = 500, high: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return _frame(det, rng.uniform(0.0, high, size=n).round())


def _learned(det: Detector) -> set[str]:
    return {k for k in vars(det) if k.endswith("_") and not k.startswith("_")}


CHECKS: list[Callable[[str], None]] = []


def check(fn: Callable[[str], None]) -> Callable[[str], None]:
    CHECKS.append(fn)
    return fn


def _params() -> list[Any]:
    return [pytest.param(name, fn, id=f"{name}:{fn.__name__}") for name in NAMES for fn in CHECKS]


# ------------------------------------------------------------------ checks


@check
def fit_returns_self(name: str) -> None:
    det = REGISTRY[name]()
    assert det.fit(_benign(det)) is det


@check
def learned_attributes_end_in_underscore(name: str) -> None:
    det = REGISTRY[name]()
    assert _learned(det) == set(), "learned state must not exist before fit"
    before = set(vars(det))
    det.fit(_benign(det))
    added = set(vars(det)) - before
    assert added, "fit learned nothing"
    assert all(a.endswith("_") for a in added), f"fit set attributes without a trailing underscore: {added}"
    assert "floor_" in added


@check
def init_stores_only_hyperparameters(name: str) -> None:
    cls = REGISTRY[name]
    params = inspect.signature(cls.__init__).parameters
    names = [p for p in params if p != "self"]
    assert all(params[p].default is not inspect.Parameter.empty for p in names), "every hyperparameter needs a default"
    det = cls()
    assert set(vars(det)) == set(names), "__init__ must store exactly its parameters"
    assert all(getattr(det, p) == params[p].default for p in names)
    custom = {p: params[p].default * 2 + 1 for p in names}
    det = cls(**custom)
    assert {p: getattr(det, p) for p in names} == custom


@check
def fit_does_not_change_hyperparameters(name: str) -> None:
    det = REGISTRY[name]()
    before = dict(vars(det))
    det.fit(_benign(det, high=500.0))
    assert {k: v for k, v in vars(det).items() if k in before} == before


@check
def scores_in_unit_interval(name: str) -> None:
    det = REGISTRY[name]()

    @SETTINGS
    @given(st.integers(min_value=1, max_value=20).flatmap(lambda n: st.fixed_dictionaries(
        {f: arrays(np.float64, n, elements=st.floats(min_value=-1e6, max_value=1e12)) for f in FEATURES})))
    def run(frame: dict[str, np.ndarray]) -> None:
        for fitted in (False, True):
            scores = det.score_many(frame)
            assert scores.shape == (len(frame["requests"]),)
            assert np.all((scores >= 0.0) & (scores <= 1.0)), scores
            if not fitted:
                det.fit(frame)

    run()


@check
def score_is_monotone_in_own_feature(name: str) -> None:
    det = REGISTRY[name]()

    @SETTINGS
    @given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=30), st.integers(min_value=0, max_value=10**6))
    def run(values: list[int], baseline: int) -> None:
        frame = _frame(det, np.sort(np.asarray(values, dtype=np.float64)))
        for base in ("baseline_distinct", "baseline_pii"):
            frame[base] = np.full(len(values), float(baseline))
        scores = det.score_many(frame)
        assert np.all(np.diff(scores) >= 0.0), scores

    run()


@check
def score_is_half_exactly_at_threshold(name: str) -> None:
    det = REGISTRY[name]()
    for floor in (det.floor, 3.0, 250.0):  # type: ignore[attr-defined]
        det = REGISTRY[name](floor=floor)
        row = _context(det) | {_feature(det): floor}
        assert det.score(row) == 0.5
        assert det.score(row | {_feature(det): floor * 0.99}) < 0.5 < det.score(row | {_feature(det): floor * 1.01})


@check
def baseline_multiple_is_the_threshold_when_larger(name: str) -> None:
    det = REGISTRY[name]()
    assert isinstance(det, CountThresholdDetector)
    if det.baseline_feature is None:
        row = _context(det) | {_feature(det): det.floor, "baseline_distinct": 1e6, "baseline_pii": 1e6}
        assert det.score(row) == 0.5, "a detector without a baseline ignores baselines"
        return
    baseline = 10 * det.floor
    row = _context(det) | {det.baseline_feature: baseline, _feature(det): det.baseline_factor * baseline}
    assert det.score(row) == 0.5


@check
def fit_never_lowers_the_floor(name: str) -> None:
    @SETTINGS
    @given(arrays(np.float64, st.integers(min_value=1, max_value=200), elements=st.floats(min_value=0.0, max_value=1e6)),
           st.floats(min_value=0.0, max_value=1e3))
    def run(values: np.ndarray, floor: float) -> None:
        det = REGISTRY[name](floor=floor)
        det.fit(_frame(det, values))
        assert det.floor_ >= floor  # type: ignore[attr-defined]
        assert det.floor_ == max(floor, det.margin * float(np.quantile(values, det.quantile)))  # type: ignore[attr-defined]

    run()


@check
def fit_raises_the_threshold_above_benign_traffic(name: str) -> None:
    det = REGISTRY[name](floor=0.5)
    busy = _benign(det, high=200.0)
    before = det.score_many(busy)
    det.fit(busy)
    after = det.score_many(busy)
    assert det.floor_ > 0.5  # type: ignore[attr-defined]
    assert np.all(after <= before) and np.mean(after < 0.5) > 0.99


@check
def explain_returns_reasons_naming_the_detector(name: str) -> None:
    det = REGISTRY[name]()
    row = _context(det) | {_feature(det): 1000.0}
    reasons = det.explain(row)
    assert reasons and all(isinstance(r, Reason) for r in reasons)
    assert {r.detector for r in reasons} == {name}
    assert reasons[0].score == round(det.score(row), 4) > 0.5
    assert _feature(det) in reasons[0].evidence and "1000" in reasons[0].evidence


@check
def registry_name_feature_and_class_agree(name: str) -> None:
    cls = REGISTRY[name]
    assert cls.name == name
    assert _feature(cls()) in FEATURES
    assert cls.attack_class not in ("", "anomaly")
    assert (cls.__doc__ or "").strip()


@check
def score_matches_score_many(name: str) -> None:
    det = REGISTRY[name]().fit(_benign(REGISTRY[name]()))
    frame = _frame(det, np.array([0.0, 1.0, 7.0, 40.0, 900.0]))
    many = det.score_many(frame)
    singles = [det.score({k: float(v[i]) for k, v in frame.items()}) for i in range(5)]
    assert list(many) == singles


@check
def scoring_is_deterministic_and_pure(name: str) -> None:
    det = REGISTRY[name]().fit(_benign(REGISTRY[name]()))
    frame = _frame(det, np.arange(50, dtype=np.float64))
    copy = {k: v.copy() for k, v in frame.items()}
    state = dict(vars(det))
    assert np.array_equal(det.score_many(frame), det.score_many(frame))
    assert all(np.array_equal(frame[k], copy[k]) for k in frame) and vars(det) == state


@check
def missing_features_count_as_zero(name: str) -> None:
    det = REGISTRY[name]()
    assert det.score({"requests": 5.0}) == 0.0


@pytest.mark.parametrize(("name", "fn"), _params())
def test_detector_conformance(name: str, fn: Callable[[str], None]) -> None:
    fn(name)


# ------------------------------------------------------------------ registry and helpers


def test_registry_is_not_empty_and_sorted_by_name() -> None:
    assert NAMES and list(REGISTRY) == NAMES


def test_build_detectors_instantiates_in_order() -> None:
    built = build_detectors(["pii_volume", "bola_breadth"])
    assert [d.name for d in built] == ["pii_volume", "bola_breadth"]
    assert built[1] is not build_detectors(["bola_breadth"])[0]


def test_build_detectors_with_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownDetectorError) as info:
        build_detectors(["bola_breadth", "iforest"])
    message = info.value.args[0]
    assert "unknown detector 'iforest'" in message
    assert message.endswith("valid names: " + ", ".join(NAMES))
    assert isinstance(info.value, ModelError) and isinstance(info.value, KeyError)


def test_ratio_score_is_value_over_value_plus_threshold() -> None:
    got = ratio_score(np.array([0.0, 1.0, 3.0, -5.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert list(got) == [0.0, 0.5, 0.75, 0.0]
    assert ratio_score(np.array([2.0]), np.array([0.0]))[0] == pytest.approx(1.0)


def test_frame_from_row_builds_one_row_arrays() -> None:
    frame = frame_from_row({"requests": 3, "pii": 1.5})
    assert {k: (v.dtype, v.tolist()) for k, v in frame.items()} == {"requests": (np.float64, [3.0]), "pii": (np.float64, [1.5])}


def test_the_novel_destination_detector_ignores_learning_and_user_actors() -> None:
    det = REGISTRY["novel_destination"]()
    learned_service = {"novel_destinations": 2.0, "age_windows": float(det.learn_windows), "is_service": 1.0}  # type: ignore[attr-defined]
    assert det.score(learned_service) > 0.5
    assert det.score(learned_service | {"age_windows": det.learn_windows - 1.0}) == 0.0  # type: ignore[attr-defined]
    assert det.score(learned_service | {"is_service": 0.0}) == 0.0


def test_bola_breadth_judges_end_users_only() -> None:
    det = REGISTRY["bola_breadth"]()
    assert det.score({"distinct_objects": 500.0, "is_service": 0.0}) > 0.9
    assert det.score({"distinct_objects": 500.0, "is_service": 1.0}) == 0.0


def test_pii_volume_skips_services_while_they_learn() -> None:
    det = REGISTRY["pii_volume"](learn_windows=3)
    service = {"pii": 5000.0, "is_service": 1.0}
    assert det.score(service | {"age_windows": 2.0}) == 0.0
    assert det.score(service | {"age_windows": 3.0}) > 0.9
    assert det.score(service | {"age_windows": 3.0, "baseline_pii": 2000.0}) < 0.5
    assert det.score({"pii": 5000.0, "is_service": 0.0, "age_windows": 0.0}) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_registered_detectors_document_parameters_and_an_example(name: str) -> None:
    doc = inspect.getdoc(REGISTRY[name]) or ""
    assert "Parameters" in doc and ">>> " in doc


@pytest.mark.parametrize("module", [models.detectors, models.base], ids=lambda m: m.__name__)
def test_doctests_pass(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module is models.detectors:
        assert result.attempted >= 2
