"""Detection tuning over Parquet archives of the summary stream, with the worker's own feature and scoring code.

``tune(capture, rule_ids)`` takes one replay's labelled key frames
(``deploy.lab.tuningcapture.capture``: the frames the worker's flagger scored,
after every batch) and scores them with each rule's own code
(``models.detectors.RuleDetector``, the floor replaced) at every floor of a
grid (``data_grid``: the shipped floor / 4 to x 4, and the range where keys'
values lie). A key is *flagged* at a floor when one of its frames scores at
least the worker's ``score_threshold``: the rule alone, as if it were the only
one (in the worker an actor already blocked by another rule raises no second
detection). Recall and flagged benign keys only go down as the floor rises,
because the threshold is ``max(floor, baseline term, cohort term)``; at the
shipped floors every key the replayed pipeline raised with a rule is flagged.

Why one replay and not one per floor: on the notebook's dev archive (29,234
rows, seed 7) a plain replay takes 1.1 s, the capturing one 1.3 s, and the
sweep of all 51 enabled rules over their 1,751 grid floors 2.3 s in all (about
1.3 ms a floor); one replay per floor would take over half an hour. What the capture does not see: baselines and cohort
quantiles learn only from windows that raised no enforcing flag
(``streams.keyspace.KeySpace.roll``), so a rule with a baseline or cohort term
is judged against the baselines the *shipped* rules left. A replay with the
tuned overrides measures that difference (the notebook prints it; on dev seed 7
none of the keys it raised was missing from the sweep's).

Scoring is per key (``tuningcapture``: attackers and benign keys). A rule's
*targets* are the attackers of its attack class; attackers of other classes it
flags are counted apart (``other``), neither true nor false positives.
precision = tp / (tp + fp) (1.0 when nothing is flagged), recall = tp /
targets, F1 their harmonic mean.

Choosing a floor (``choose``): the largest F1 among the floors that flag at
most ``fp_cap`` of the benign keys (``floor(fp_cap * benign)`` keys, 0 below
1,000 benign keys at the default 0.1%). The shipped floor is kept when it is
among the best; otherwise the middle of the best floors on the grid (the widest
margin on both sides). Without a target attacker there is nothing to tune
against: the shipped floor is kept when it respects the cap, else the lowest
floor that does. Every choice carries its reason, and ``RuleTuning.alerts``
explains the top keys at the chosen floor (value against threshold, the rule's
evidence, and what the pipeline said).

Where tuned values go (``write_tuned``): ``rule-overrides.json``, a JSON
object ``{"rule-id": {"floor": value}}`` of the changed rules, exactly what
``KUBEWARD_WORKER_RULE_OVERRIDES`` (``WorkerSettings.rule_overrides``) and
``kubeward whatif --rule-override`` take; and ``tuned-rules/``, a copy of the
rule directory with those floors rewritten in place (comments and line numbers
kept), for ``KUBEWARD_WORKER_RULES_DIR``. Both are linted with
``models.rules.lint``. It refuses to write into the rule directory itself.
``score_curves`` gives ROC and precision-recall curves of model scores. Apart
from ``write_tuned``, which writes where the caller says, nothing here does I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deploy.lab.tuningcapture import Capture, KeyFrames
from models.detectors import RuleDetector
from models.rules import DEFAULT_RULES, Rule, lint, load_rules
from streams import ReplayResult

__all__ = [
    "Alert", "Curves", "Point", "RuleTuning", "TunedFiles", "choose", "critical_floors", "data_grid", "flagged_at",
    "floor_grid", "retune_text", "score_curves", "sweep", "tune", "tuned_overrides", "write_tuned",
]

_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]
_RULE_ID = re.compile(r"^\s*-\s+id:\s*['\"]?([A-Za-z0-9_-]+)")
_FLOOR = re.compile(r"^(\s+floor:\s*)([^\s#]+)(.*)$")


# --- sweeping and choosing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """Key-level figures of one rule at one floor (see the module docstring)."""

    floor: float
    flagged: int
    tp: int
    fp: int
    other: int
    precision: float
    recall: float
    f1: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready dict."""
        return {"floor": self.floor, "flagged": self.flagged, "tp": self.tp, "fp": self.fp, "other": self.other,
                "precision": round(self.precision, 6), "recall": round(self.recall, 6), "f1": round(self.f1, 6)}


def floor_grid(floor: float, points: int = 25, span: float = 4.0) -> list[float]:
    """Floors from ``floor / span`` to ``floor * span`` on a geometric grid (3 significant digits), the floor included."""
    if floor <= 0:
        return sorted({round(x, 3) for x in np.linspace(0.0, 1.0, points)})
    grid = {float(f"{x:.3g}") for x in floor * np.geomspace(1 / span, span, points)}
    return sorted(grid | {float(floor)})


def critical_floors(cap: Capture, rule: Rule) -> dict[str, float]:
    """Per key with a nonzero value, the highest floor at which the rule still flags it (its own terms decide the rest).

    A frame flags at floor ``f`` when its value reaches ``k * max(f, baseline term, cohort term)``, with ``k`` the
    worker's score threshold as a ratio (``t / (1 - t)``, 1 at 0.5): so up to ``value / k`` when the value also
    clears the other terms, never otherwise. Used to lay the grid over the floors where something changes.
    """
    frames = cap.frames[rule.key]
    if not len(frames):
        return {}
    det = RuleDetector(replace(rule, floor=0.0))
    value, others = det.value(frames.frame), det.threshold(frames.frame)
    k = cap.score_threshold / (1.0 - cap.score_threshold) if cap.score_threshold < 1 else math.inf
    crit = np.where((value > 0) & (value >= k * others), value / k, 0.0)
    best = np.zeros(len(frames.keys))
    np.maximum.at(best, frames.key_index, crit)
    return {frames.keys[i]: float(best[i]) for i in np.flatnonzero(best > 0)}


def data_grid(cap: Capture, rule: Rule, points: int = 33) -> list[float]:
    """``floor_grid`` of the shipped floor, plus a geometric grid over the keys' critical floors (``critical_floors``):
    from the lowest (at least floor / 100) to just past the highest, so the sweep reaches where benign keys fire."""
    grid = set(floor_grid(rule.floor, 17))
    crit = [c for c in critical_floors(cap, rule).values() if c > 0]
    if crit and rule.floor > 0:
        lo, hi = max(min(crit), rule.floor / 100), min(max(crit) * 1.05, rule.floor * 1000)
        if hi > lo:
            grid |= {float(f"{x:.3g}") for x in np.geomspace(lo, hi, points)}
    return sorted(grid | {float(rule.floor)})


def _targets(cap: Capture, rule: Rule) -> tuple[set[str], set[str], set[str]]:
    """(target attackers, other attackers, benign keys) of the rule's key space."""
    attackers = cap.attackers.get(rule.key, {})
    targets = {k for k, classes in attackers.items() if rule.attack_class in classes}
    return targets, set(attackers) - targets, set(cap.benign.get(rule.key, frozenset()))


def _key_scores(frames: KeyFrames, rule: Rule, floor: float) -> tuple[_F, _I]:
    """(each key's best score with the rule at this floor, the frame row of that score; -1 for keys never scored)."""
    scores = RuleDetector(replace(rule, floor=float(floor))).score_many(frames.frame) if len(frames) else np.zeros(0)
    best = np.full(len(frames.keys), -1.0)
    np.maximum.at(best, frames.key_index, scores)
    order = np.lexsort((-scores, frames.key_index))  # per key, its best row first
    at = np.full(len(frames.keys), -1, dtype=np.intp)
    firsts = order[np.r_[True, frames.key_index[order][1:] != frames.key_index[order][:-1]]] if len(order) else order
    at[frames.key_index[firsts]] = firsts
    return best, at


def flagged_at(cap: Capture, rule: Rule, floor: float) -> set[str]:
    """Keys the rule alone flags at ``floor`` in the captured frames (a frame scoring at least the worker's threshold)."""
    frames = cap.frames[rule.key]
    best, _ = _key_scores(frames, rule, floor)
    return {frames.keys[i] for i in np.flatnonzero(best >= cap.score_threshold)}


def _point(floor: float, flagged: set[str], targets: set[str], others: set[str], benign: set[str]) -> Point:
    tp, fp, other = len(flagged & targets), len(flagged & benign), len(flagged & others)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / len(targets) if targets else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return Point(float(floor), len(flagged), tp, fp, other, precision, recall, f1)


def sweep(cap: Capture, rule: Rule, floors: Sequence[float]) -> list[Point]:
    """The rule's key-level figures at each floor (ascending), from the captured frames."""
    targets, others, benign = _targets(cap, rule)
    return [_point(f, flagged_at(cap, rule, f), targets, others, benign) for f in sorted(floors)]


def choose(points: Sequence[Point], shipped: float, targets: int, allowed_fp: int) -> tuple[float, str]:
    """(the chosen floor, why): see the module docstring. ``points`` ascend by floor and include ``shipped``."""
    at = {p.floor: p for p in points}
    base = at[float(shipped)]
    ok = [p for p in points if p.fp <= allowed_fp]
    if not ok:
        return float(shipped), f"no floor on the grid keeps benign keys flagged within {allowed_fp}; kept the shipped floor"
    if not targets:
        if base.fp <= allowed_fp:
            return float(shipped), f"no target attacker in the archive: nothing to tune against; the shipped floor flags {base.fp} benign keys (cap {allowed_fp})"
        return ok[0].floor, f"no target attacker in the archive; the shipped floor flags {base.fp} benign keys, over the cap {allowed_fp}: lowest floor within it"
    best = max(p.f1 for p in ok)
    tied = [p for p in ok if math.isclose(p.f1, best)]
    if base in tied:
        return float(shipped), (f"the shipped floor already gives the best F1 {best:.3f} within the cap ({base.tp}/{targets} targets, "
                                f"{base.fp} benign keys, cap {allowed_fp})")
    pick = tied[len(tied) // 2]
    return pick.floor, (f"F1 {base.f1:.3f} -> {pick.f1:.3f} within the cap: targets {base.tp} -> {pick.tp} of {targets}, benign keys "
                        f"{base.fp} -> {pick.fp} (cap {allowed_fp}); middle of {len(tied)} equally good floors "
                        f"[{tied[0].floor:g}, {tied[-1].floor:g}]")


@dataclass(frozen=True)
class Alert:
    """One key a rule flags at its tuned floor, explained: its best frame's value against the threshold.

    ``evidence`` is the rule's own evidence sentence at the tuned floor (``RuleDetector.evidence``);
    ``pipeline_evidence`` what the replayed pipeline (shipped settings) said for this key and rule, if it raised it.
    """

    rule: str
    subject: str
    truth: str
    score: float
    value: float
    threshold: float
    time: float
    evidence: str
    pipeline_evidence: str | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rule": self.rule, "subject": self.subject, "truth": self.truth, "score": round(self.score, 4),
                "value": self.value, "threshold": self.threshold, "time": self.time, "evidence": self.evidence,
                "pipeline_evidence": self.pipeline_evidence}


def _pipeline_evidence(result: ReplayResult, rule_id: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for det in result.detections:
        for reason in det.reasons:
            if reason.detector == rule_id:
                out.setdefault(det.actor, reason.evidence)
    return out


def _alerts(cap: Capture, rule: Rule, floor: float, top: int) -> list[Alert]:
    frames = cap.frames[rule.key]
    best, at = _key_scores(frames, rule, floor)
    targets, others, _ = _targets(cap, rule)
    said = _pipeline_evidence(cap.result, rule.id)
    det = RuleDetector(replace(rule, floor=float(floor)))
    out = []
    for i in [int(i) for i in np.argsort(-best, kind="stable")[:top] if best[i] >= cap.score_threshold]:
        name, row = frames.keys[i], {c: float(v[at[i]]) for c, v in frames.frame.items()}
        one = {c: np.asarray([v]) for c, v in row.items()}
        truth = f"attacker:{rule.attack_class}" if name in targets else "attacker:other" if name in others else "benign"
        out.append(Alert(rule.id, name, truth, float(best[i]), float(det.value(one)[0]), float(det.threshold(one)[0]),
                         float(frames.time[at[i]]), det.evidence(row), said.get(name)))
    return out


@dataclass(frozen=True)
class RuleTuning:
    """One rule tuned on one capture: the sweep, the choice and its reason, the top alerts at the chosen floor."""

    rule: Rule
    points: tuple[Point, ...]
    targets: int
    benign: int
    allowed_fp: int
    floor: float
    reason: str
    alerts: tuple[Alert, ...]

    @property
    def changed(self) -> bool:
        """Whether the chosen floor differs from the shipped one."""
        return not math.isclose(self.floor, self.rule.floor)

    def at(self, floor: float) -> Point:
        """The point of the sweep at ``floor``."""
        return next(p for p in self.points if math.isclose(p.floor, floor))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"rule": self.rule.id, "key": self.rule.key, "attack_class": self.rule.attack_class, "feature": self.rule.feature,
                "shipped_floor": self.rule.floor, "tuned_floor": self.floor, "changed": self.changed, "reason": self.reason,
                "targets": self.targets, "benign": self.benign, "allowed_fp": self.allowed_fp,
                "shipped": self.at(self.rule.floor).to_dict(), "tuned": self.at(self.floor).to_dict(),
                "sweep": [p.to_dict() for p in self.points], "alerts": [a.to_dict() for a in self.alerts]}


def tune(cap: Capture, rule_ids: Sequence[str], rules_dir: Path = DEFAULT_RULES, fp_cap: float = 0.001,
         grids: Mapping[str, Sequence[float]] | None = None, top: int = 5) -> list[RuleTuning]:
    """Sweep and choose a floor for each rule (ids of ``rules_dir``'s rules; see the module docstring).

    The grid of a rule is ``grids[rule_id]`` when given, else ``data_grid`` (the shipped floor / 4 to x 4, and the
    range of the keys' critical floors); the shipped floor is always on it.
    """
    by_id = {r.id: r for r in load_rules(rules_dir)}
    unknown = [r for r in rule_ids if r not in by_id]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; valid: {', '.join(sorted(by_id))}")
    out = []
    for rid in rule_ids:
        rule = by_id[rid]
        if rule.key not in cap.frames:
            raise ValueError(f"rule {rid!r}: its {rule.key} frames were not captured (pass it to capture(rules=...))")
        grid = sorted(set((grids or {}).get(rid, data_grid(cap, rule))) | {rule.floor})
        points = sweep(cap, rule, grid)
        targets, _, benign = _targets(cap, rule)
        allowed = int(math.floor(fp_cap * len(benign) + 1e-9))
        floor, reason = choose(points, rule.floor, len(targets), allowed)
        out.append(RuleTuning(rule, tuple(points), len(targets), len(benign), allowed, floor, reason, tuple(_alerts(cap, rule, floor, top))))
    return out


# --- writing tuned values -------------------------------------------------------------------------------------------


def tuned_overrides(tunings: Iterable[RuleTuning]) -> dict[str, dict[str, float]]:
    """``{"rule-id": {"floor": value}}`` of the rules whose floor changed (the ``rule_overrides`` setting's format)."""
    return {t.rule.id: {"floor": _number(t.floor)} for t in tunings if t.changed}


def _number(x: float) -> float:
    return int(x) if float(x).is_integer() else float(x)


def retune_text(text: str, floors: Mapping[str, float]) -> str:
    """A rule file's text with the ``floor:`` of each rule in ``floors`` replaced (everything else kept, comments too)."""
    out: list[str] = []
    current, done = "", set()
    for line in text.splitlines(keepends=True):
        m = _RULE_ID.match(line)
        if m:
            current = m.group(1)
        f = _FLOOR.match(line.rstrip("\n"))
        if f and current in floors and current not in done:
            line = f"{f.group(1)}{_number(floors[current])}{f.group(3)}\n"
            done.add(current)
        out.append(line)
    return "".join(out)


@dataclass(frozen=True)
class TunedFiles:
    """What ``write_tuned`` wrote and what the rule linter said about it (empty lists: clean)."""

    overrides_path: Path
    rules_dir: Path
    overrides: dict[str, dict[str, float]]
    overrides_errors: list[str] = field(default_factory=list)
    rules_dir_errors: list[str] = field(default_factory=list)
    floors_in_copy: dict[str, float] = field(default_factory=dict)


def write_tuned(tunings: Sequence[RuleTuning], out: str | Path, rules_dir: Path = DEFAULT_RULES) -> TunedFiles:
    """Write ``<out>/rule-overrides.json`` and ``<out>/tuned-rules/`` (see the module docstring); lint both."""
    out = Path(out)
    target = out / "tuned-rules"
    for shipped in {Path(rules_dir).resolve(), DEFAULT_RULES.resolve()}:
        if target.resolve() == shipped or shipped in target.resolve().parents or target.resolve() in shipped.parents:
            raise ValueError(f"refusing to write tuned rules at {target}: it is or holds the rule files {shipped}")
    overrides = tuned_overrides(tunings)
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted(Path(rules_dir).glob("*.yaml"))
    for stale in set(target.glob("*.yaml")) - {target / s.name for s in sources}:
        stale.unlink()
    floors = {rid: v["floor"] for rid, v in overrides.items()}
    for src in sources:
        (target / src.name).write_text(retune_text(src.read_text(encoding="utf-8"), floors), encoding="utf-8")
    path = out / "rule-overrides.json"
    path.write_text(json.dumps(overrides, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    copy_errors = lint(target)
    in_copy = {} if copy_errors else {r.id: r.floor for r in load_rules(target) if r.id in {t.rule.id for t in tunings}}
    return TunedFiles(path, target, overrides, lint(Path(rules_dir), overrides), copy_errors, in_copy)


# --- score curves (models) ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curves:
    """ROC and precision-recall curves of scores against labels, with the counts they rest on."""

    positives: int
    negatives: int
    auc: float
    average_precision: float
    fpr: _F
    tpr: _F
    roc_thresholds: _F
    precision: _F
    recall: _F
    pr_thresholds: _F

    def to_dict(self, points: int = 200) -> dict[str, Any]:
        """A JSON-ready dict; curves thinned to at most ``points`` points (ends kept)."""
        def thin(*cols: _F) -> list[list[float]]:
            idx = np.unique(np.linspace(0, len(cols[0]) - 1, min(points, len(cols[0]))).astype(int)) if len(cols[0]) else np.zeros(0, dtype=int)
            return [[float(x) if np.isfinite(x) else (1e308 if x > 0 else -1e308) for x in c[idx]] for c in cols]

        fpr, tpr, rt = thin(self.fpr, self.tpr, self.roc_thresholds)
        prec, rec = thin(self.precision, self.recall)
        return {"positives": self.positives, "negatives": self.negatives, "auc": self.auc, "average_precision": self.average_precision,
                "roc": {"fpr": fpr, "tpr": tpr, "thresholds": rt}, "pr": {"precision": prec, "recall": rec}}


def score_curves(scores: _F, positive: npt.NDArray[np.bool_]) -> Curves:
    """ROC (fpr, tpr ascending as the threshold falls), PR and their areas (scikit-learn's metrics)."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y = np.asarray(positive, dtype=bool)
    if y.all() or not y.any():
        raise ValueError(f"need both classes: {int(y.sum())} positives, {int((~y).sum())} negatives")
    fpr, tpr, rt = roc_curve(y, scores)
    prec, rec, pt = precision_recall_curve(y, scores)
    return Curves(int(y.sum()), int((~y).sum()), float(roc_auc_score(y, scores)), float(average_precision_score(y, scores)),
                  np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64), np.asarray(rt, dtype=np.float64),
                  np.asarray(prec, dtype=np.float64), np.asarray(rec, dtype=np.float64), np.asarray(pt, dtype=np.float64))
