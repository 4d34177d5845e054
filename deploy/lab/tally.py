"""Scoring a run against the simulator's ground truth: who attacked, who was caught, who was hurt.

Pure bookkeeping fed by the demo driver (every check the shim answered) and by
the verdict watcher (every verdict seen on the control topic). ``report``
renders the numbers the demo prints and writes to ``build/demo-report.json``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Tally", "plot_timeline"]


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


@dataclass
class _Attacker:
    kind: str
    actor: str
    requests: int = 0
    allowed_before_block: int | None = None
    denied: int = 0
    first_time: float = 0.0
    #: every actor the attack's calls came from (the first is ``actor``)
    actors: set[str] = field(default_factory=set)


@dataclass
class Tally:
    """Counts per actor and per attacker; verdicts by subject."""

    events: int = 0
    actor_requests: Counter[str] = field(default_factory=Counter)
    actor_denied: Counter[str] = field(default_factory=Counter)
    attackers: dict[str, _Attacker] = field(default_factory=dict)
    verdict_times: dict[str, float] = field(default_factory=dict)
    verdict_classes: dict[str, str] = field(default_factory=dict)
    detections: Counter[str] = field(default_factory=Counter)
    denied_reasons: Counter[str] = field(default_factory=Counter)
    #: per second of the run: (malicious calls allowed, malicious calls denied)
    timeline: dict[int, list[int]] = field(default_factory=dict)
    #: calls per (second, actor, denied), to split benign actors from attackers after the run
    actor_seconds: Counter[tuple[int, str, bool]] = field(default_factory=Counter)
    verdict_seconds: list[tuple[float, str]] = field(default_factory=list)
    started: float | None = None
    #: legitimate calls per actor (an attacker's own normal traffic is counted as benign collateral)
    legit_calls: Counter[str] = field(default_factory=Counter)
    legit_denied: Counter[str] = field(default_factory=Counter)
    #: calls the data plane could not complete, by error, and checks the shim could not parse
    errors: Counter[str] = field(default_factory=Counter)
    unparsed: int = 0

    def record_check(self, actor: str, malicious: bool, kind: str, attack_id: str | None, denied: bool, reason: str | None, t: float) -> None:
        """One call and the shim's answer to it."""
        self.events += 1
        self.actor_requests[actor] += 1
        if self.started is None:
            self.started = t
        second = int(t - self.started)
        self.actor_seconds[second, actor, denied] += 1
        if malicious:
            self.timeline.setdefault(second, [0, 0])[1 if denied else 0] += 1
        if denied:
            self.actor_denied[actor] += 1
            self.denied_reasons[reason or "?"] += 1
        if not malicious:
            self.legit_calls[actor] += 1
            self.legit_denied[actor] += denied
        if attack_id is None or not malicious:
            return
        att = self.attackers.setdefault(attack_id, _Attacker(kind, actor, first_time=t))
        att.actors.add(actor)
        att.requests += 1
        if denied:
            att.denied += 1
            if att.allowed_before_block is None:
                att.allowed_before_block = att.requests - 1

    def record_verdict(self, subject_value: str, attack_class: str, t: float, kind: str = "actor") -> None:
        """A verdict seen on the control topic (first one per subject counts).

        A verdict on a client address (``kind`` ``ip``) is kept as ``ip:<address>`` and covers
        every actor whose source is that address (the shim matches it on each of their calls);
        one on an MCP tool (``kind`` ``tool``) as ``tool:<server>/<tool>``, the actor a tool
        attack's calls are counted under.
        """
        if kind in ("ip", "tool"):
            subject_value = f"{kind}:{subject_value}"
        if subject_value not in self.verdict_times:
            self.verdict_times[subject_value] = t
            if self.started is not None:
                self.verdict_seconds.append((t - self.started, attack_class))
            self.verdict_classes[subject_value] = attack_class
            self.detections[attack_class] += 1

    def _verdict_of(self, actor: str) -> str | None:
        """The attack class of the first verdict covering an actor: on the actor itself, else on its client address."""
        found = self.verdict_classes.get(actor)
        return found if found is not None else self.verdict_classes.get(f"ip:{actor.split('|', 1)[0]}")

    def _attack_verdict(self, att: _Attacker) -> str | None:
        """The class of the first verdict covering the attack's first actor, else any of its other actors."""
        return next((v for v in map(self._verdict_of, [att.actor, *sorted(att.actors - {att.actor})]) if v is not None), None)

    def attacker_actors(self) -> set[str]:
        """Actors that made at least one malicious call (an attack can span actors: an agent's tool calls carry a user's
        token, its model calls its own key)."""
        return {actor for a in self.attackers.values() for actor in a.actors}

    def benign_counts(self) -> tuple[int, int, int, int]:
        """(actors, actors blocked, requests, requests blocked) over actors that never attacked."""
        bad = self.attacker_actors()
        actors = [a for a in self.actor_requests if a not in bad]
        return (len(actors), sum(1 for a in actors if self.actor_denied[a]), sum(self.actor_requests[a] for a in actors), sum(self.actor_denied[a] for a in actors))

    def collateral(self) -> tuple[int, int]:
        """(legitimate calls of actors that also attacked, how many of them Kubeward denied)."""
        bad = self.attacker_actors()
        return sum(self.legit_calls[a] for a in bad), sum(self.legit_denied[a] for a in bad)

    def report(self, latencies_ms: list[float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The demo report (the keys the issue asks for, plus per-attacker detail)."""
        atts = self.attackers.values()
        collateral, collateral_blocked = self.collateral()
        before = [a.allowed_before_block for a in atts if a.allowed_before_block is not None]
        b_actors, b_blocked, b_reqs, b_reqs_blocked = self.benign_counts()
        return {
            "events": self.events,
            "attackers": {
                "total": len(self.attackers),
                "detected": sum(1 for a in atts if self._attack_verdict(a) is not None),
                "blocked": sum(1 for a in atts if a.denied),
                "requests_before_block_median": statistics.median(before) if before else None,
                "by_attack": {k: {"kind": a.kind, "actor": a.actor, "requests": a.requests, "denied": a.denied, "allowed_before_block": a.allowed_before_block, "detected_as": self._attack_verdict(a)} for k, a in sorted(self.attackers.items())},
            },
            "benign": {"actors": b_actors, "actors_blocked": b_blocked, "requests": b_reqs, "requests_blocked": b_reqs_blocked,
                       "collateral_requests": collateral, "collateral_requests_blocked": collateral_blocked},
            "unparsed": self.unparsed,
            "errors": dict(self.errors),
            "detections_by_class": dict(self.detections),
            "denied_by_reason": dict(self.denied_reasons),
            "latency_ms": {
                "detect_to_enforce_p50": _percentile(latencies_ms, 50),
                "detect_to_enforce_p99": _percentile(latencies_ms, 99),
                "samples": len(latencies_ms),
            },
            **(extra or {}),
        }


def plot_timeline(tally: Tally, path: Any) -> bool:
    """Per second: malicious calls allowed/denied, and benign actors' calls allowed/denied; verdicts marked.

    Writes a PNG; returns False when matplotlib is not installed (it is a dev extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    first = min((k[0] for k in tally.actor_seconds), default=0)  # a call answered before the run's first second counts at -1
    last = max((k[0] for k in tally.actor_seconds), default=0)
    seconds = list(range(min(first, 0), last + 1))
    attackers = tally.attacker_actors()
    benign = {s: [0, 0] for s in seconds}
    for (second, actor, denied), n in tally.actor_seconds.items():
        if actor not in attackers:
            benign[second][1 if denied else 0] += n
    series = [[tally.timeline.get(s, [0, 0])[i] for s in seconds] for i in range(2)]
    series += [[benign[s][i] for s in seconds] for i in range(2)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True, height_ratios=[2, 1])
    top.stackplot(seconds, series[0], series[1], labels=["malicious calls allowed", "malicious calls denied"], colors=["#d62728", "#7f7f7f"])
    for when, cls in tally.verdict_seconds:
        top.axvline(when, color="k", linewidth=0.8, linestyle=":")
        top.annotate(cls, (when, top.get_ylim()[1] * 0.9), rotation=90, fontsize=7, va="top")
    top.set_ylabel("malicious calls/s")
    top.legend(loc="upper left", fontsize=8)
    bottom.plot(seconds, series[2], label="calls of actors that never attacked, allowed", color="#1f77b4")
    bottom.plot(seconds, series[3], label="... denied", color="#ff7f0e")
    bottom.set_ylabel("benign actors' calls/s")
    bottom.set_xlabel("seconds since the start of the run")
    bottom.legend(loc="lower left", fontsize=8)
    fig.suptitle("Kubeward demo: every call asked the shim; dotted lines are verdicts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
