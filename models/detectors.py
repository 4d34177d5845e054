"""``RuleDetector``: one threshold rule (``models.rules.Rule``) behind the ``Detector`` interface.

The score is ``value / (value + threshold)``, so 0.5 means "at the threshold":
``value`` is the rule's feature where the rule applies (its users or services,
keys at least ``learn_windows`` old, every ``when`` condition true) and 0
elsewhere; ``threshold`` is the largest of the floor (``fit`` may raise it from
benign rows, never lower it), ``baseline_factor`` times the key's own baseline
and ``cohort_factor`` times the cohort's p99 of the feature (``cohort:<feature>``
in the frame, kept online by the worker; absent means no cohort term).

>>> from models.rules import Rule
>>> d = RuleDetector(Rule("demo", "stable", "bola", "distinct_objects", 20.0, "users", "block", "demo",
...                       baseline="baseline_distinct", baseline_factor=4.0))
>>> round(d.score({"distinct_objects": 60.0, "baseline_distinct": 2.0}), 2)
0.75
>>> d.score({"distinct_objects": 60.0, "is_service": 1.0})
0.0
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
import numpy.typing as npt

from models.base import Detector, Frame, ratio_score
from models.rules import Rule

__all__ = ["RuleDetector", "score_all"]

_F = npt.NDArray[np.float64]
_AGE = {"actor": "age_windows", "source": "source_age_windows"}


def _col(frame: Frame, name: str, n: int) -> _F:
    return frame[name] if name in frame else np.zeros(n)


def _rows(frame: Frame) -> int:
    return len(next(iter(frame.values()))) if frame else 0


class RuleDetector(Detector):
    """Scores frames with one ``Rule`` (see the module docstring).

    ``quantile`` and ``margin``: ``fit`` sets ``floor_ = max(floor, margin * quantile(benign values))``.
    """

    def __init__(self, rule: Rule, quantile: float = 0.999, margin: float = 1.5):
        self.rule = rule
        self.name = rule.id
        self.attack_class = rule.attack_class
        self.quantile = quantile
        self.margin = margin

    @property
    def key(self) -> str:
        """The state key whose frames this detector scores."""
        return self.rule.key

    def applies(self, frame: Frame) -> npt.NDArray[np.bool_]:
        """Rows the rule judges: its users or services, old enough, every condition true."""
        rule, n = self.rule, _rows(frame)
        ok = np.ones(n, dtype=bool)
        if rule.applies_to != "all":
            service = _col(frame, "is_service", n) > 0
            ok &= service if rule.applies_to == "services" else ~service
        if rule.learn_windows:
            ok &= _col(frame, _AGE[rule.key], n) >= rule.learn_windows
        for cond in rule.when:
            ok &= np.asarray(cond.holds(_col(frame, cond.feature, n)), dtype=bool)
        return ok

    def value(self, frame: Frame) -> _F:
        """The rule's feature where the rule applies, 0 elsewhere."""
        return np.where(self.applies(frame), _col(frame, self.rule.feature, _rows(frame)), 0.0)

    def threshold(self, frame: Frame) -> _F:
        """Per-row threshold: floor, the key's baseline multiple, the cohort multiple, whichever is largest."""
        rule, n = self.rule, _rows(frame)
        out = np.full(n, getattr(self, "floor_", rule.floor), dtype=np.float64)
        if rule.baseline is not None and rule.baseline_factor:
            out = np.maximum(out, rule.baseline_factor * _col(frame, rule.baseline, n))
        if rule.cohort_factor:
            out = np.maximum(out, rule.cohort_factor * _col(frame, f"cohort:{rule.feature}", n))
        return out

    def fit(self, frame: Frame) -> Self:
        values = np.asarray(_col(frame, self.rule.feature, _rows(frame))[self.applies(frame)], dtype=np.float64)
        learned = self.margin * float(np.quantile(values, self.quantile)) if len(values) else 0.0
        self.floor_ = max(self.rule.floor, learned)
        return self

    def score_many(self, frame: Frame) -> _F:
        if not frame:
            return np.zeros(0)
        return ratio_score(self.value(frame), self.threshold(frame))

    def evidence(self, row: Mapping[str, float]) -> str:
        frame = {k: np.asarray([v], dtype=np.float64) for k, v in row.items()}
        value, limit = float(_col(frame, self.rule.feature, 1)[0]), float(self.threshold(frame)[0])
        extra = "".join(f", {c}" for c in self.rule.when)
        return f"{self.rule.feature}={value:.0f}, threshold {limit:.1f}{extra}"


def score_all(detectors: Sequence[Detector], frame: Frame) -> _F:
    """Scores of every detector on every row of ``frame`` (detectors x rows), in the detectors' order.

    The rule detectors are scored together, one numpy operation per term for
    all of them (``RuleDetector.score_many`` is the reference: the same
    values); any other detector scores itself.
    """
    n = _rows(frame)
    out = np.zeros((len(detectors), n))
    rules = [i for i, d in enumerate(detectors) if type(d) is RuleDetector]
    if rules and n:
        out[rules] = _score_rules([detectors[i] for i in rules], frame, n)  # type: ignore[misc]
    for i, d in enumerate(detectors):
        if type(d) is not RuleDetector:
            out[i] = d.score_many(frame)
    return out


def _score_rules(detectors: list[RuleDetector], frame: Frame, n: int) -> _F:
    rules = [d.rule for d in detectors]
    zero = np.zeros(n)

    def stack(names: list[str | None]) -> _F:
        return np.vstack([frame.get(name, zero) if name is not None else zero for name in names])

    value = stack([r.feature for r in rules])
    limit = np.array([getattr(d, "floor_", d.rule.floor) for d in detectors], dtype=np.float64)[:, None]
    active = [r.baseline is not None and bool(r.baseline_factor) for r in rules]  # as RuleDetector.threshold
    if any(active):
        factor = np.array([r.baseline_factor if on else 0.0 for r, on in zip(rules, active)])[:, None]
        limit = np.maximum(limit, factor * stack([r.baseline if on else None for r, on in zip(rules, active)]))
    if any(r.cohort_factor for r in rules):
        factor = np.array([r.cohort_factor for r in rules])[:, None]
        limit = np.maximum(limit, factor * stack([f"cohort:{r.feature}" if r.cohort_factor else None for r in rules]))
    service = frame.get("is_service", zero) > 0
    ok = np.ones((len(rules), n), dtype=bool)
    users = np.array([r.applies_to not in ("all", "services") for r in rules])  # as RuleDetector.applies
    services = np.array([r.applies_to == "services" for r in rules])
    ok[users] &= ~service
    ok[services] &= service
    for i, r in enumerate(rules):
        if r.learn_windows:
            ok[i] &= frame.get(_AGE[r.key], zero) >= r.learn_windows
        for cond in r.when:
            ok[i] &= np.asarray(cond.holds(frame.get(cond.feature, zero)), dtype=bool)
    return ratio_score(np.where(ok, value, 0.0), limit)
