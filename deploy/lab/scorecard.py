"""Scoring one enforced run against the simulator's ground truth, call by call.

``Scorecard.see`` takes every call once, in time order, with what the shim
did to it: the call's ground truth (scenario, attack id, malicious), the actor
Kubeward derived for it, whether the shim refused it (denied or throttled, by
a verdict or an inline signature), the sensitive records its answer carried,
and an opaque ``probe`` (the request as the shim saw it) kept for the
attacker's malicious calls. ``Scorecard.result(verdicts, covers)`` then counts:

* **attackers**: distinct attack ids with at least one malicious call; an
  attacker's actors are the actors of its malicious calls.
* **detected**: some verdict covers one of its malicious calls
  (``covers(verdict, probe)``: a verdict for its actor, or a broader subject or
  a scope that takes the call in; any attack class); **stopped**: one of its
  calls was refused.
* **requests_before_verdict**: per attacker, its calls (those carrying its
  attack id) from its first malicious call up to, not including, the first one
  the shim refused; ``None`` when none was refused.
* **sensitive_records_before_verdict**: over the same calls, the records with
  sensitive data its answers carried (per call the largest count of one
  sensitive type: a page of 50 profiles with an e-mail and a phone each is 50).
* **malicious_allowed_after_first_refusal** / **sensitive_records_after_first_refusal**:
  what still got through after that first refusal (a throttle passes some calls,
  a verdict may expire), so "stopped" is not read as "nothing more left".
* **benign_actors**: every actor that is not an attacker's (hard negatives
  included); **benign_actors_blocked**: those with any call refused.
* **benign_requests**: calls not labelled malicious, the compromised actor's
  own legitimate calls included; **benign_requests_denied**: those refused
  (``collateral_*``: the part of both from attackers' actors).
* **variant_actors** / **variant_actors_blocked**: benign actors with calls
  labelled with the variant's own scenario (the hard negatives themselves).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["AttackerTally", "Scorecard", "median", "merge_runs"]

P = TypeVar("P")
V = TypeVar("V")


@dataclass
class AttackerTally:
    """One attacker's calls as the shim treated them."""

    attack_id: str
    scenario: str
    actors: set[str] = field(default_factory=set)
    malicious: int = 0
    before: int = 0
    stopped: bool = False
    sensitive_records: int = 0
    allowed_after: int = 0
    sensitive_records_after: int = 0
    probes: dict[tuple[Any, ...], Any] = field(default_factory=dict)


@dataclass
class _Actor:
    benign: int = 0
    benign_refused: int = 0
    refused: bool = False
    variant: bool = False


def median(values: Iterable[float]) -> float | None:
    """The median of the values, None when there are none."""
    got = list(values)
    return statistics.median(got) if got else None


class Scorecard:
    """Ground truth and the shim's answers of one run, counted call by call (see the module docstring)."""

    def __init__(self, variant: str, max_probes: int = 256) -> None:
        self.variant = variant
        self.max_probes = max_probes
        self.attackers: dict[str, AttackerTally] = {}
        self.actors: dict[str, _Actor] = {}
        self.calls = 0
        #: benign calls refused, by the decision's reason (a detector, ``inline:<category>``)
        self.benign_refusals: dict[str, int] = {}

    def see(self, scenario: str, attack_id: str | None, malicious: bool, actor: str, refused: bool,
            sensitive_records: int = 0, probe: Any = None, probe_key: tuple[Any, ...] = (), reason: str | None = None) -> None:
        """Count one call (see the module docstring); ``probe_key`` dedupes the probes kept per attacker, ``reason`` names a refusal's cause."""
        self.calls += 1
        who = self.actors.setdefault(actor, _Actor())
        who.refused |= refused
        if not malicious:
            who.benign += 1
            who.benign_refused += refused
            who.variant |= scenario == self.variant
            if refused:
                self.benign_refusals[reason or "-"] = self.benign_refusals.get(reason or "-", 0) + 1
        if attack_id is None:
            return
        tally = self.attackers.get(attack_id)
        if tally is None:
            if not malicious:
                return
            tally = self.attackers[attack_id] = AttackerTally(attack_id, scenario)
        if malicious:
            tally.malicious += 1
            tally.actors.add(actor)
            if probe is not None and len(tally.probes) < self.max_probes:
                tally.probes.setdefault(probe_key, probe)
        if tally.stopped:
            if malicious and not refused:  # a throttle lets some through; a verdict can expire
                tally.allowed_after += 1
                tally.sensitive_records_after += sensitive_records
            return
        if refused:
            tally.stopped = True
        else:
            tally.before += 1
            tally.sensitive_records += sensitive_records

    def _detected(self, verdicts: Iterable[V], covers: Callable[[V, Any], bool]) -> dict[str, bool]:
        found = {a: False for a in self.attackers}
        for verdict in verdicts:
            for attack_id, tally in self.attackers.items():
                if not found[attack_id] and any(covers(verdict, p) for p in tally.probes.values()):
                    found[attack_id] = True
        return found

    def result(self, verdicts: Iterable[V] = (), covers: Callable[[V, Any], bool] | None = None) -> dict[str, Any]:
        """The run's counts (field names as ``build/evaluate.json`` has them)."""
        detected = self._detected(verdicts, covers) if covers is not None else {a: False for a in self.attackers}
        bad = set().union(*(t.actors for t in self.attackers.values())) if self.attackers else set()
        benign = {a: s for a, s in self.actors.items() if a not in bad}
        collateral = [s for a, s in self.actors.items() if a in bad]
        tallies = sorted(self.attackers.values(), key=lambda t: t.attack_id)
        return {
            "attackers": len(tallies),
            "detected": sum(detected.values()),
            "stopped": sum(t.stopped for t in tallies),
            "requests_before_verdict": [t.before if t.stopped else None for t in tallies],
            "requests_before_verdict_median": median(t.before for t in tallies if t.stopped),
            "sensitive_records_before_verdict": [t.sensitive_records for t in tallies],
            "benign_actors": len(benign),
            "benign_actors_blocked": sum(s.refused for s in benign.values()),
            "variant_actors": sum(s.variant for s in benign.values()),
            "variant_actors_blocked": sum(s.variant and s.refused for s in benign.values()),
            "benign_requests": sum(s.benign for s in self.actors.values()),
            "benign_requests_denied": sum(s.benign_refused for s in self.actors.values()),
            "collateral_requests": sum(s.benign for s in collateral),
            "collateral_requests_denied": sum(s.benign_refused for s in collateral),
            "benign_denied_by_reason": dict(sorted(self.benign_refusals.items())),
            "malicious_allowed_after_first_refusal": sum(t.allowed_after for t in tallies),
            "sensitive_records_after_first_refusal": sum(t.sensitive_records_after for t in tallies),
            "by_attacker": {t.attack_id: {"scenario": t.scenario, "malicious": t.malicious, "detected": detected[t.attack_id],
                                          "stopped": t.stopped, "requests_before_verdict": t.before if t.stopped else None,
                                          "sensitive_records_before_verdict": t.sensitive_records,
                                          "malicious_allowed_after_first_refusal": t.allowed_after} for t in tallies},
        }


def merge_runs(runs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several runs' results (seeds of one variant) summed; medians over every attacker of every run."""
    runs = list(runs)
    keys = ("attackers", "detected", "stopped", "benign_actors", "benign_actors_blocked", "variant_actors", "variant_actors_blocked",
            "benign_requests", "benign_requests_denied", "collateral_requests", "collateral_requests_denied")
    out: dict[str, Any] = {k: sum(int(r[k]) for r in runs) for k in keys}
    for k in ("malicious_allowed_after_first_refusal", "sensitive_records_after_first_refusal"):
        out[k] = sum(int(r.get(k, 0)) for r in runs)
    before = [b for r in runs for b in r["requests_before_verdict"]]
    sensitive = [s for r in runs for s in r["sensitive_records_before_verdict"]]
    out["requests_before_verdict"] = before
    out["requests_before_verdict_median"] = median(b for b in before if b is not None)
    out["sensitive_records_before_verdict"] = sensitive
    out["sensitive_records_before_verdict_max"] = max(sensitive, default=None)
    reasons: dict[str, int] = {}
    for r in runs:
        for reason, n in r.get("benign_denied_by_reason", {}).items():
            reasons[reason] = reasons.get(reason, 0) + n
    out["benign_denied_by_reason"] = dict(sorted(reasons.items()))
    return out
