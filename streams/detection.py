"""From scores to detections: which rules of a key fired, and the ``Detection`` each group of them gives.

``Flagger.detect`` takes the frame of the keys one batch touched in one key space
(``streams.keyspace``: the actor, the trusted client address) and the detectors of
that key, scores them (``models.detectors.score_all``) and returns a
``Detection`` for each key whose best score reaches the threshold and that is not
already flagged. The rules that fired are grouped by scope (actor-wide, or the
edge of the batch's rows that carry the rule's signal) and mode (enforcing or
observe-only), one detection per group; an enforcing actor-wide one is
remembered in the key's ``flagged_until`` column, the others in the flagger's
own bounded memory until their verdict expires. ``streams.processor`` owns the
state and calls this once per key space and batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest import Reason
from models import Detector, feature
from models.detectors import score_all
from streams.batch import BatchView
from streams.keyspace import KeySpace

__all__ = ["Detection", "Flagger"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_SUBJECT_KIND = {"actor": "actor", "source": "ip"}


@dataclass(frozen=True)
class Detection:
    """One key (an actor, or a client address) whose window crossed at least one detector's threshold.

    ``actor`` is the subject's value (the actor key, or the address when
    ``subject_kind`` is ``ip``); ``scope`` is ``(service, path template)`` when the
    rule that fired scopes its verdict to the edge; ``action`` and ``mode`` are the
    rule's (``mode`` ``observe`` caps the policy's), ``None`` for models;
    ``ttl_s`` is how long the verdict lasts when not the policy's ``verdict_ttl_s``.
    """

    actor: str
    attack_class: str
    score: float
    reasons: tuple[Reason, ...]
    evidence_time: float
    destination_namespace: str | None
    destination_service: str | None
    features: dict[str, float]
    subject_kind: str = "actor"
    scope: tuple[str, str] | None = None
    action: str | None = None
    mode: str | None = None
    ttl_s: float | None = None


class Flagger:
    """Turns one key space's scores into detections, and remembers what it flagged (bounded).

    ``score_threshold`` is the score a detector must reach, ``flag_ttl_s`` how long a key stays flagged, and
    ``memory`` bounds the remembered flags: past a tenth of it the expired ones are dropped, past a fifth the oldest.
    """

    def __init__(self, score_threshold: float, flag_ttl_s: int, memory: int) -> None:
        self.score_threshold = score_threshold
        self.flag_ttl_s = flag_ttl_s
        self.memory = memory
        #: (key, subject, scope, observe-only) -> flagged until, for every detection but an enforcing actor-wide one
        self._flags: dict[tuple[str, str, tuple[str, str] | None, bool], float] = {}

    def detect(self, key: str, space: KeySpace, detectors: list[Detector], b: BatchView, frame: dict[str, _F], group: _I,
               labels: list[str], rows: _I, latest: _F, signals: dict[str, _F]) -> list[Detection]:
        """Detections of the keys at ``rows`` of ``space`` (``frame`` is theirs) whose rules fired in this batch."""
        scores = score_all(detectors, frame)
        best = scores.max(axis=0)
        flagged_until = space.store.cols["flagged_until"][rows]
        hit = np.nonzero((best >= self.score_threshold) & (flagged_until <= latest))[0]
        if not len(hit):
            return []
        last_row = np.full(len(rows), -1, dtype=np.intp)
        mine = np.nonzero(group >= 0)[0]
        last_row[group[mine]] = mine
        out: list[Detection] = []
        for i in hit:
            out += self._detections(key, space, detectors, b, frame, scores[:, i], labels[i], int(last_row[i]), float(latest[i]),
                                    group, int(i), signals, int(rows[i]))
        return out

    def _detections(self, key: str, space: KeySpace, detectors: list[Detector], b: BatchView, frame: dict[str, _F], scores: _F,
                    label: str, last: int, t: float, group: _I, i: int, signals: dict[str, _F], row_index: int) -> list[Detection]:
        """The detections of one key whose rules fired: one per (scope, enforcing or observe-only) group of rules.

        An observe-only rule (experimental) never speaks for an enforcing one, and an edge rule never for an
        actor-wide one: each group gives its own detection, led by its highest score. An enforcing actor-wide
        detection makes the others redundant (the whole key is blocked). An edge rule names the edge of the
        rows of this batch that carry its signal; without such a row it waits (never a guessed edge).
        """
        groups: dict[tuple[tuple[str, str] | None, bool], list[tuple[Detector, float]]] = {}
        for d, score in zip(detectors, scores):
            if score < self.score_threshold:
                continue
            rule = getattr(d, "rule", None)
            observe = (rule.mode if rule is not None else getattr(d, "mode", None)) == "observe"
            scope = self._edge_of(rule, b, group, i, signals) if rule is not None and rule.scope == "edge" else None
            if rule is not None and rule.scope == "edge" and scope is None:
                continue
            groups.setdefault((scope, observe), []).append((d, float(score)))
        whole = groups.get((None, False))
        if whole is not None and getattr(getattr(max(whole, key=lambda f: f[1])[0], "rule", None), "action", "block") == "block":
            groups = {(None, False): whole}  # the whole key is blocked: nothing narrower adds anything
        else:
            groups = {k: v for k, v in groups.items() if not (k[1] and (k[0], False) in groups)}
        row = {name: float(col[i]) for name, col in frame.items()}
        dest = b.table["destination"][last].as_py()
        out = []
        for (scope, observe), fired in groups.items():
            until = t + self.flag_ttl_s
            if scope is None and not observe:
                space.store.cols["flagged_until"][row_index] = np.uint32(until)
            else:
                flag = (key, label, scope, observe)
                if self._flags.get(flag, 0.0) > t:
                    continue
                self._flag(flag, until, t)
            top, best = max(fired, key=lambda f: f[1])
            # the scores are already known: build the reasons from them rather than re-scoring with explain()
            reasons = tuple(Reason(detector=d.name, score=round(s, 4), evidence=d.evidence(row)) for d, s in fired)
            rule = getattr(top, "rule", None)
            out.append(Detection(label, top.attack_class, best, reasons, t, dest.get("namespace"), dest.get("service"), row,
                                 subject_kind=_SUBJECT_KIND[key], scope=scope, action=getattr(rule, "action", None),
                                 mode="observe" if observe else "inherit"))
        return out

    def _edge_of(self, rule: Any, b: BatchView, group: _I, i: int, signals: dict[str, _F]) -> tuple[str, str] | None:
        """(service, template) of the key's last row in this batch carrying the rule's signal, or None."""
        signal = _signal_of(rule.feature)
        values = signals.get(signal) if signal else None
        if values is None:
            return None
        rows = np.flatnonzero((group == i) & (values > 0))
        if not len(rows):
            return None
        at = int(rows[-1])
        return str(b.service[at].as_py()), str(b.template[at].as_py())

    def _flag(self, flag: tuple[str, str, tuple[str, str] | None, bool], until: float, now: float) -> None:
        """Remember a flagged (key, scope, mode) until its verdict expires; expired ones are dropped as the memory fills,
        and past twice the cap the oldest go regardless (bounded)."""
        flags = self._flags
        if len(flags) >= self.memory // 10:
            for stale in [e for e, u in flags.items() if u <= now]:
                del flags[stale]
            while len(flags) >= self.memory // 5:
                del flags[next(iter(flags))]
        flags[flag] = until


def _signal_of(name: str) -> str | None:
    return feature(name).signal

