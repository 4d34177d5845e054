"""The ``kubeward whatif`` report: what the archive holds, what each run refused, and the difference.

``deploy.counterfactual`` replays; this turns its two runs and the archive's
tally into the report's dictionary (its fields are defined in that module's
docstring; ``deploy.whatiftable`` renders it). ``Archive`` is what is counted
once over the recorded requests (sizes, actors, refusals already recorded,
labels). Pure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deploy.recordedcalls import RecordedCall
from enforcement.allowlist import AllowList

if TYPE_CHECKING:
    from deploy.counterfactual import Run, WhatIfOptions

__all__ = ["Archive", "report"]


@dataclass
class Archive:
    """What is counted once over the recorded requests: sizes, actors, recorded refusals, labels."""

    rows: int = 0
    batches: int = 0
    first: float | None = None
    last: float | None = None
    requests: Counter[str] = field(default_factory=Counter)  # actor -> requests
    already: Counter[str] = field(default_factory=Counter)  # recorded decision -> requests
    already_actors: set[str] = field(default_factory=set)
    already_by_namespace: Counter[str] = field(default_factory=Counter)
    attackers: set[str] = field(default_factory=set)
    labelled_actors: set[str] = field(default_factory=set)
    labelled: Counter[bool] = field(default_factory=Counter)

    def see(self, call: RecordedCall, labels: Mapping[str, bool] | None) -> None:
        self.rows += 1
        self.first = call.time if self.first is None else min(self.first, call.time)
        self.last = call.time if self.last is None else max(self.last, call.time)
        self.requests[call.actor] += 1
        if labels is not None and call.id in labels:
            bad = bool(labels[call.id])
            self.labelled[bad] += 1
            self.labelled_actors.add(call.actor)
            if bad:
                self.attackers.add(call.actor)


def _top(counter: Counter[str], n: int | None = None) -> dict[str, int]:
    return dict(counter.most_common(n))


def _label_figures(run: Run, archive: Archive, labels: Mapping[str, bool]) -> dict[str, Any]:
    refused_actors = set(run.actors)
    benign_actors = archive.labelled_actors - archive.attackers
    bad = sum(1 for rid in run.refused if labels.get(rid) is True)
    benign = [(rid, actor) for rid, actor in run.refused.items() if labels.get(rid) is False]
    return {
        "attackers": len(archive.attackers), "attackers_caught": len(archive.attackers & refused_actors),
        "benign_actors": len(benign_actors), "benign_actors_refused": len(benign_actors & refused_actors),
        "malicious_requests": archive.labelled[True], "malicious_requests_refused": bad,
        "benign_requests": archive.labelled[False], "benign_requests_refused": len(benign),
        "benign_requests_refused_of_benign_actors": sum(1 for _, a in benign if a not in archive.attackers),
        "benign_requests_refused_of_attackers": sum(1 for _, a in benign if a in archive.attackers),
        "unlabelled_requests_refused": sum(1 for rid in run.refused if rid not in labels),
    }


def _actor_rows(run: Run, archive: Archive, actors: Iterable[str], labels: Mapping[str, bool] | None) -> list[dict[str, Any]]:
    rows = []
    for actor in actors:
        tally = run.actors[actor]
        row: dict[str, Any] = {"actor": actor, "requests": archive.requests[actor], "refused": tally.refused, "collateral": tally.collateral,
                               "first_refused": tally.first_refused, "classes": dict(tally.classes.most_common())}
        if labels is not None:
            row["label"] = "attacker" if actor in archive.attackers else "benign" if actor in archive.labelled_actors else "unlabelled"
        rows.append(row)
    return rows


def _ranked(run: Run, actors: Iterable[str]) -> list[str]:
    return sorted(actors, key=lambda a: (-run.actors[a].refused, a))


def _run_report(run: Run, archive: Archive, labels: Mapping[str, bool] | None, top: int) -> dict[str, Any]:
    issued = run.issued.values()
    collateral_actors = sum(1 for t in run.actors.values() if t.collateral)
    report: dict[str, Any] = {
        "verdicts": {"total": len(run.issued), "by_class": _top(Counter(i.attack_class for i in issued)),
                     "by_action": _top(Counter(i.action for i in issued)), "by_mode": _top(Counter(i.mode for i in issued))},
        "refused": {"requests": len(run.refused), "actors": len(run.actors),
                    "by_namespace": {ns: {"requests": n, "actors": len(run.actors_by_namespace[ns])} for ns, n in run.by["namespace"].most_common()},
                    "by_service": _top(run.by["service"]), "by_class": _top(run.by["class"]), "by_action": _top(run.by["action"]),
                    "by_rule": _top(run.by["rule"])},
        "collateral": {"requests": sum(t.collateral for t in run.actors.values()), "actors": collateral_actors,
                       "other_services": run.collateral_elsewhere, "by_class": _top(run.collateral_by_class)},
        "observed": {"requests": sum(run.observed.values()), "actors": len(run.observed_actors), "by_class": _top(run.observed)},
        "redacted": {"requests": run.redacted},
        "dead_letters": run.dead_letters,
        "top_actors": _actor_rows(run, archive, _ranked(run, run.actors)[:top], labels),
    }
    if labels is not None:
        report["labels"] = _label_figures(run, archive, labels)
    report["allowlist"] = _list_figures(run, archive, labels) if run.allowlist is not None else None
    return report


def _list_figures(run: Run, archive: Archive, labels: Mapping[str, bool] | None) -> dict[str, Any]:
    """What the run's allow-list refuses on its own where the policy enforces (``refused``: also answered first, counted
    under the refusals as action ``allowlist``), and its refusals where the policy only observes."""
    listed = run.listed
    out: dict[str, Any] = {"requests": len(listed.refused), "actors": len(set(listed.refused.values())),
                           "answered_first": run.by["action"]["allowlist"], "observed_requests": listed.observed,
                           "by_reason": _top(listed.by_reason), "by_service": _top(listed.by_service)}
    if labels is not None:
        actors = set(listed.refused.values())
        out["attackers"] = len(actors & archive.attackers)
        out["benign_actors"] = len(actors & (archive.labelled_actors - archive.attackers))
        out["malicious_requests"] = sum(1 for rid in listed.refused if labels.get(rid) is True)
        out["benign_requests"] = sum(1 for rid in listed.refused if labels.get(rid) is False)
    return out


def _difference(base: Run, cand: Run, archive: Archive, labels: Mapping[str, bool] | None, top: int) -> dict[str, Any]:
    new_actors = set(cand.actors) - set(base.actors)
    out: dict[str, Any] = {
        "requests_newly_refused": len(cand.refused.keys() - base.refused.keys()),
        "requests_no_longer_refused": len(base.refused.keys() - cand.refused.keys()),
        "actors_newly_refused": len(new_actors), "actors_no_longer_refused": len(set(base.actors) - set(cand.actors)),
        "top_newly_refused": _actor_rows(cand, archive, _ranked(cand, new_actors)[:top], labels),
    }
    if labels is not None:
        benign_actors = archive.labelled_actors - archive.attackers
        out["benign_requests_newly_refused"] = sum(1 for rid in cand.refused.keys() - base.refused.keys() if labels.get(rid) is False)
        out["benign_actors_newly_refused"] = len(new_actors & benign_actors)
        out["attackers_newly_caught"] = len(new_actors & archive.attackers)
    return out


def _allowlist_summary(allowlist: AllowList | None) -> dict[str, Any] | None:
    if allowlist is None:
        return None
    return {"source": allowlist.source, "endpoints": len(allowlist), "destinations": len(allowlist.destinations)}


def _settings_summary(run: Run) -> dict[str, Any]:
    settings, policy = run.settings, run.settings.policy
    return {"rules_dir": str(settings.rules_dir) if settings.rules_dir else None, "rule_overrides": settings.rule_overrides,
            "detectors": settings.detector_names(), "model_path": str(settings.model_path) if settings.model_path else None,
            "model_mode": settings.model_mode, "window_s": settings.window_s,
            "policy": {"name": policy.name, "version": policy.version, "default_mode": policy.default_mode, "modes": dict(policy.modes),
                       "actions": dict(policy.actions), "verdict_ttl_s": policy.verdict_ttl_s},
            "allowlist": _allowlist_summary(run.allowlist)}


def report(base: Run, cand: Run, archive: Archive, labels: Mapping[str, bool] | None, options: WhatIfOptions) -> dict[str, Any]:
    """The whole report: the archive's figures, each run's, the difference and the settings (module docstring of ``deploy.counterfactual``)."""
    return {
        "rows": archive.rows, "batches": archive.batches, "actors": len(archive.requests), "first_time": archive.first, "last_time": archive.last,
        "already_refused": {"requests": sum(archive.already.values()), "actors": len(archive.already_actors),
                            "by_decision": _top(archive.already), "by_namespace": _top(archive.already_by_namespace)},
        "labels": None if labels is None else {"labelled_requests": archive.labelled[True] + archive.labelled[False],
                                               "malicious_requests": archive.labelled[True], "attackers": len(archive.attackers),
                                               "benign_actors": len(archive.labelled_actors - archive.attackers)},
        "baseline": _run_report(base, archive, labels, options.top),
        "candidate": _run_report(cand, archive, labels, options.top),
        "difference": _difference(base, cand, archive, labels, options.top),
        "settings": {"latency_s": options.latency_s, "batch_s": options.batch_s, "batch_rows": options.batch_rows,
                     "pattern_share": options.pattern_share, "baseline": _settings_summary(base),
                     "candidate": _settings_summary(cand),
                     "note": "open loop: recorded requests replayed as they happened; refused requests are still fed to the worker as answered"},
    }
