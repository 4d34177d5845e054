"""Conformance checks for every rule detector (River's check_estimator, sklearn's parametrize_with_checks).

Each check runs against every rule of the shipped rule files; test ids read
``<rule id>:<check>``, e.g. ``bola_breadth:fit_returns_self``.
"""

from __future__ import annotations

import doctest
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import models.base
import models.detectors
from ingest import Reason
from models import FEATURES, REGISTRY, ModelError, RuleDetector, UnknownDetectorError, build_detectors, frame_from_row
from models.base import ratio_score

NAMES = sorted(REGISTRY)
SETTINGS = settings(max_examples=40, deadline=None)
_AGE = {"actor": "age_windows", "source": "source_age_windows"}
_MEETS = {">=": 0.0, ">": 1.0, "<=": 0.0, "<": -1.0, "==": 0.0}


def _det(name: str, **rule: Any) -> RuleDetector:
    det = REGISTRY[name]()
    assert isinstance(det, RuleDetector)
    return RuleDetector(replace(det.rule, **rule)) if rule else det


def _context(det: RuleDetector) -> dict[str, float]:
    """A zero row in which the rule applies: its users or services, old enough, every condition met."""
    rule = det.rule
    row = dict.fromkeys(FEATURES, 0.0)
    row[_AGE[rule.key]] = float(rule.learn_windows)
    row["is_service"] = 1.0 if rule.applies_to == "services" else 0.0
    for cond in rule.when:
        row[cond.feature] = cond.value + _MEETS.get(cond.op, 1.0)
    return row


def _frame(det: RuleDetector, values: np.ndarray) -> dict[str, np.ndarray]:
    frame = {k: np.full(len(values), v) for k, v in _context(det).items()}
    frame[det.rule.feature] = np.asarray(values, dtype=np.float64)
    return frame


def _benign(det: RuleDetector, n: int = 500, high: float = 3.0) -> dict[str, np.ndarray]:
    return _frame(det, np.random.default_rng(7).uniform(0.0, high, size=n).round())


CHECKS: list[Callable[[str], None]] = []


def check(fn: Callable[[str], None]) -> Callable[[str], None]:
    CHECKS.append(fn)
    return fn


@check
def fit_returns_self_and_learns_only_underscored_state(name: str) -> None:
    det = _det(name)
    before = set(vars(det))
    assert det.fit(_benign(det)) is det
    assert set(vars(det)) - before == {"floor_"}


@check
def scores_in_unit_interval(name: str) -> None:
    det = _det(name)

    @SETTINGS  # rows x every feature: 20 rows of 67 features overran Hypothesis's buffer too often (data_too_large)
    @given(st.integers(min_value=1, max_value=8).flatmap(lambda n: st.fixed_dictionaries(
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
    det = _det(name)

    @SETTINGS
    @given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=2, max_size=30))
    def run(values: list[int]) -> None:
        scores = det.score_many(_frame(det, np.sort(np.asarray(values, dtype=np.float64))))
        assert np.all(np.diff(scores) >= 0.0), scores

    run()


@check
def score_is_half_exactly_at_threshold(name: str) -> None:
    for floor in (_det(name).rule.floor, 3.0, 250.0):
        det = _det(name, floor=floor)
        row = _context(det) | {det.rule.feature: floor}
        assert det.score(row) == 0.5
        assert det.score(row | {det.rule.feature: floor * 0.99}) < 0.5 < det.score(row | {det.rule.feature: floor * 1.01})


@check
def baseline_and_cohort_multiples_are_the_threshold_when_larger(name: str) -> None:
    det = _det(name, baseline="baseline_distinct", baseline_factor=3.0, cohort_factor=2.0, floor=1.0)
    row = _context(det) | {"baseline_distinct": 100.0, det.rule.feature: 300.0}
    assert det.score(row) == 0.5
    assert det.score(row | {f"cohort:{det.rule.feature}": 300.0}) == pytest.approx(1 / 3)
    plain = _det(name, floor=5.0, baseline=None, baseline_factor=0.0, cohort_factor=0.0)
    assert plain.score(_context(plain) | {plain.rule.feature: 5.0, "baseline_distinct": 1e6, f"cohort:{plain.rule.feature}": 1e6}) == 0.5


@check
def the_rule_judges_only_whom_it_applies_to(name: str) -> None:
    det = _det(name)
    row = _context(det) | {det.rule.feature: 1e6}
    assert det.score(row) > 0.5
    if det.rule.applies_to != "all":
        assert det.score(row | {"is_service": 1.0 - row["is_service"]}) == 0.0
    if det.rule.learn_windows:
        assert det.score(row | {_AGE[det.rule.key]: det.rule.learn_windows - 1.0}) == 0.0
    for cond in det.rule.when:
        failing = cond.value - 1.0 if cond.op in (">=", ">", "==") else cond.value + 1.0
        assert det.score(row | {cond.feature: failing}) == 0.0, str(cond)


@check
def fit_never_lowers_the_floor(name: str) -> None:
    @SETTINGS
    @given(arrays(np.float64, st.integers(min_value=1, max_value=200), elements=st.floats(min_value=0.0, max_value=1e6)),
           st.floats(min_value=0.0, max_value=1e3))
    def run(values: np.ndarray, floor: float) -> None:
        det = _det(name, floor=floor)
        det.fit(_frame(det, values))
        assert det.floor_ == max(floor, det.margin * float(np.quantile(values, det.quantile)))

    run()


@check
def explain_returns_reasons_naming_the_rule(name: str) -> None:
    det = _det(name)
    value = 1000.0 * max(1.0, det.rule.floor)
    row = _context(det) | {det.rule.feature: value}
    reasons = det.explain(row)
    assert reasons and all(isinstance(r, Reason) for r in reasons) and {r.detector for r in reasons} == {name}
    assert reasons[0].score == round(det.score(row), 4) > 0.5
    assert det.rule.feature in reasons[0].evidence and f"{value:.0f}" in reasons[0].evidence


@check
def score_matches_score_many_and_is_pure(name: str) -> None:
    det = _det(name).fit(_benign(_det(name)))
    frame = _frame(det, np.array([0.0, 1.0, 7.0, 40.0, 900.0]))
    copy = {k: v.copy() for k, v in frame.items()}
    many = det.score_many(frame)
    assert list(many) == [det.score({k: float(v[i]) for k, v in frame.items()}) for i in range(5)]
    assert all(np.array_equal(frame[k], copy[k]) for k in frame)


@pytest.mark.parametrize(("name", "fn"), [pytest.param(n, fn, id=f"{n}:{fn.__name__}") for n in NAMES for fn in CHECKS])
def test_detector_conformance(name: str, fn: Callable[[str], None]) -> None:
    fn(name)


def test_missing_features_count_as_zero() -> None:
    assert _det("retired_endpoint").score({"requests": 5.0}) == 0.0


def test_build_detectors_instantiates_in_order_and_fresh() -> None:
    built = build_detectors(["pii_volume", "bola_breadth"])
    assert [d.name for d in built] == ["pii_volume", "bola_breadth"]
    assert built[1] is not build_detectors(["bola_breadth"])[0]


def test_build_detectors_with_an_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownDetectorError) as info:
        build_detectors(["bola_breadth", "iforest"])
    message = info.value.args[0]
    assert "unknown detector 'iforest'" in message and message.endswith("valid names: " + ", ".join(NAMES))
    assert isinstance(info.value, ModelError)


def test_build_detectors_applies_overrides() -> None:
    (det,) = build_detectors(["auth_failures"], overrides={"auth_failures": {"floor": 20}})
    assert det.score({"auth_failures": 20.0}) == 0.5


def test_ratio_score_is_value_over_value_plus_threshold() -> None:
    got = ratio_score(np.array([0.0, 1.0, 3.0, -5.0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert list(got) == [0.0, 0.5, 0.75, 0.0]
    assert ratio_score(np.array([2.0]), np.array([0.0]))[0] == pytest.approx(1.0)


def test_frame_from_row_builds_one_row_arrays() -> None:
    frame = frame_from_row({"requests": 3, "pii": 1.5})
    assert {k: (v.dtype, v.tolist()) for k, v in frame.items()} == {"requests": (np.float64, [3.0]), "pii": (np.float64, [1.5])}


def test_pii_volume_for_services_waits_for_their_baseline() -> None:
    det = _det("pii_volume_services")
    service = {"pii": 5000.0, "is_service": 1.0}
    assert det.score(service | {"age_windows": 2.0}) == 0.0
    assert det.score(service | {"age_windows": 3.0}) > 0.9
    assert det.score(service | {"age_windows": 3.0, "baseline_pii": 2000.0}) < 0.5


@pytest.mark.parametrize("module", [models.detectors, models.base], ids=lambda m: m.__name__)
def test_doctests_pass(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module is models.detectors:
        assert result.attempted >= 2


def test_score_all_matches_each_rule_scored_alone() -> None:
    """The vectorised scorer gives every shipped rule the scores it gives itself, on random frames with every column."""
    import numpy as np

    from models.detectors import RuleDetector, score_all
    from models.features import FEATURE_TABLE
    from models.rules import load_rules

    rules = [RuleDetector(r) for r in load_rules() if r.status != "disabled"]
    rng = np.random.default_rng(5)
    names = {f.name for f in FEATURE_TABLE} | {f"cohort:{d.rule.feature}" for d in rules} | {"is_service", "age_windows", "source_age_windows"}
    for n in (1, 7, 40):
        frame = {name: rng.choice([0.0, 1.0, 3.0, 50.0, 400.0, 5000.0], size=n) for name in sorted(names)}
        frame["is_service"] = rng.integers(0, 2, size=n).astype(float)
        expected = np.vstack([d.score_many(frame) for d in rules])
        np.testing.assert_allclose(score_all(rules, frame), expected)
        assert (expected > 0.5).any()  # the frames reach thresholds: the comparison is not all zeros
    rules[0].floor_ = 1e6  # a fitted floor is honoured
    np.testing.assert_allclose(score_all(rules[:1], frame)[0], rules[0].score_many(frame))


def test_score_all_ignores_a_baseline_without_a_factor() -> None:
    """A rule naming a baseline with factor 0 has no baseline term, even when another rule of the pack has one."""
    import numpy as np

    from models.detectors import RuleDetector, score_all
    from models.rules import Rule

    with_term = RuleDetector(Rule("a", "stable", "bola", "distinct_objects", 5.0, "all", "block", "a", baseline="baseline_distinct", baseline_factor=2.0))
    without = RuleDetector(Rule("b", "stable", "bola", "pii", 5.0, "all", "block", "b", baseline="baseline_pii", baseline_factor=0.0))
    frame = {"distinct_objects": np.array([8.0]), "baseline_distinct": np.array([1.0]), "pii": np.array([2.0]), "baseline_pii": np.array([np.inf])}
    np.testing.assert_array_equal(score_all([with_term, without], frame), np.vstack([with_term.score_many(frame), without.score_many(frame)]))
