"""What-if before enforce: recorded requests replayed against a baseline and a candidate, refusals counted.

``whatif(source, baseline, candidate)`` is the pure core of ``kubeward whatif``.
Each of the two ``WorkerSettings`` (the baseline: what is deployed; the
candidate: other rules, overrides, a model, or a policy that switches some
namespaces to enforce) gets its own worker pipeline (``streams.replay.Replay``,
the worker's ``Pipeline`` on the replayed clock) and its own shim state (a real
``enforcement.cache.VerdictCache``, ``TokenBuckets`` and the pure
``enforcement.decision.decide``, with the run's policy). The source is read
once: it is cut into batches of ``batch_s`` event seconds (at most
``batch_rows`` rows); each batch is fed to both pipelines, then every request
of the batch is decided by both shims, in recorded order, at its own time.

**When a verdict applies.** A verdict reaches its shim ``latency_s`` after
its ``evidence_time`` (the newest request that led to it), the detect->enforce
latency (default 0.1 s: ``make bench`` measured p50 ~40 ms, p99 ~180 ms at
10,000 events/s), and applies to every later request its subject keys, scope
and expiry match, exactly as the shim's cache matches them. Replay batches are
larger than the worker's (0.25 s of events against its 0.005 s) because the
per-batch cost dominates (on 14,090 simulated rows: batches of 5 rows replay
at ~670 rows/s, of 500 rows at ~12,700 rows/s); timing the verdict from its
evidence rather than from the batch's end keeps that choice from delaying
enforcement; it only moves a detection to the batch's last request of the actor.

**What the shim sees of a recorded request** (``deploy.recordedcalls``). ``RequestView`` is built from
the summary: source workload, principal and address (the subject keys),
destination service and namespace (scope and policy mode), method, and as the
path the raw path when the collector kept it, else the path template (a
template matches itself as an edge verdict's pattern). An MCP ``tools/call``
carries its tool name in a minimal JSON-RPC body, so tool verdicts are found by
the shim's own ``lookup_keys``. Inline inspection is replayed from the record:
a request whose ``inline_findings`` are not empty is what the shim's inspector
found then, denied where the run's policy enforces its destination.

**Counts.** A request is *refused* when the run's shim answers 403 or 429
(enforced); *observed* when an observe-mode verdict or finding says it would
have refused it; the action is ``block``/``quarantine``/``throttle`` (a
verdict) or ``inline``. Requests the recording already shows refused
(``decision`` ``deny`` or ``throttle``) are counted apart (``already_refused``)
and in no run's refusals: they were not the candidate's cost. A refused request
is *collateral* when it is not the pattern that got its actor flagged: the
verdict that refused it is subject-wide (not scoped to an edge or a tool) and
the request's endpoint (destination service, method, path template) is not
one of the verdict's *pattern endpoints*: those that made up at least
``pattern_share`` (10%) of its subject's requests in the worker's window
(``window_s``) up to the verdict's evidence time (``other_services`` counts
those to a service no pattern endpoint is on). Without labels this is a proxy:
an attacker who moves to other endpoints after its verdict (an exfiltrator
reading ``/profiles/{id}`` then ``/profiles/{id}/contact``) counts as collateral;
the labelled benign collateral below is the measured one. Inline refusals are never
collateral (the request itself carried the finding). With ``labels`` (request
id -> malicious) the report adds attackers caught (actors with a malicious
request and a refusal), benign actors refused (every labelled request benign),
and benign requests refused: the benign collateral, split into those of benign
actors and those of attackers (their cover traffic).

**Open loop.** Recorded traffic is replayed as it happened: a request the
candidate would refuse is still fed to its worker as answered, and the actor
does not react to refusals. ``kubeward evaluate`` closes the loop on simulated
traffic; this counts what a recording says. No Kafka, no files, no wall clock
here; ``deploy.whatif`` is the command-line edge. The recorded ground truth
(``ground_truth``) is nulled before anything reads the rows.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from enforcement.cache import VerdictCache
from enforcement.decision import Decision, Inspection, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from deploy.recordedcalls import Endpoint, RecordedCall, Source, conformed_tables, cut, recorded_calls
from ingest import Verdict
from ingest.envelope import encode_table
from streams.replay import Replay
from streams.settings import WorkerSettings

__all__ = ["WhatIfOptions", "whatif"]

Progress = Callable[[int], None]

#: recorded ``decision`` values of requests the shim refused when they were recorded
RECORDED_REFUSALS = ("deny", "throttle")
_PURGE_EVERY = 10_000


@dataclass(frozen=True)
class WhatIfOptions:
    """How the replay applies verdicts and what the report shows.

    ``latency_s``: evidence -> enforcement at the shim; ``batch_s`` and ``batch_rows``: replay batches (event seconds,
    rows); ``pattern_share``: least share of a subject's requests in the window that makes an endpoint part of the
    pattern it was flagged for; ``top``: actors listed per run.
    """

    latency_s: float = 0.1
    batch_s: float = 0.25
    batch_rows: int = 500
    pattern_share: float = 0.1
    top: int = 10

    def __post_init__(self) -> None:
        if not self.latency_s >= 0:
            raise ValueError(f"latency_s={self.latency_s!r} must be >= 0")
        if not self.batch_s > 0:
            raise ValueError(f"batch_s={self.batch_s!r} must be > 0")
        if self.batch_rows < 1:
            raise ValueError(f"batch_rows={self.batch_rows!r} must be >= 1")
        if not 0 < self.pattern_share <= 1:
            raise ValueError(f"pattern_share={self.pattern_share!r} must be in (0, 1]")


class _Recorded:
    """The shim's inline inspection, replayed: what it found in the request being decided, as recorded."""

    def __init__(self) -> None:
        self.findings: tuple[str, ...] = ()

    def inspect(self, req: RequestView) -> Inspection | None:
        """The recorded findings of the current request, if any."""
        return Inspection(self.findings) if self.findings else None


class _History:
    """Recent endpoints of every actor and client address (``window_s`` of events), for the pattern a verdict stands for."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self.seen: dict[str, deque[tuple[float, Endpoint]]] = defaultdict(deque)

    def add(self, call: RecordedCall) -> None:
        """Remember one request under its actor and its address."""
        for key in (f"actor:{call.actor}", f"ip:{call.ip}" if call.ip else None):
            if key is None:
                continue
            seen = self.seen[key]
            seen.append((call.time, call.endpoint))
            while seen and seen[0][0] < call.time - 2 * self.window_s:  # slack: a verdict's evidence may precede the newest request
                seen.popleft()

    def pattern(self, subject: str, until: float, share: float) -> frozenset[Endpoint]:
        """Endpoints that made up at least ``share`` of the subject's requests in the window up to ``until``."""
        counts = Counter(e for t, e in self.seen.get(subject, ()) if until - self.window_s <= t <= until)
        total = sum(counts.values())
        return frozenset(e for e, n in counts.items() if n >= share * total)


# --- one run: a pipeline, a shim, and the tally -------------------------------------------------------------------


@dataclass(frozen=True)
class _Issued:
    """What the report needs of a verdict: attack class, first rule, action, mode, and its pattern (None: any request)."""

    attack_class: str
    rule: str
    action: str
    mode: str
    pattern: frozenset[Endpoint] | None


@dataclass
class _ActorTally:
    refused: int = 0
    collateral: int = 0
    first_refused: float | None = None
    classes: Counter[str] = field(default_factory=Counter)


class _Run:
    """One settings' worker pipeline and shim over the recorded requests, and what it refused."""

    def __init__(self, settings: WorkerSettings, options: WhatIfOptions, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None) -> None:
        self.settings, self.options = settings, options
        self.replay = Replay(settings, declared=declared)
        self.cache, self.buckets, self.inspector = VerdictCache(), TokenBuckets(), _Recorded()
        self.pending: list[tuple[float, int, Verdict]] = []
        self.issued: dict[str, _Issued] = {}
        self.dead_letters = 0
        self.refused: dict[str, str] = {}  # request id -> actor
        self.actors: dict[str, _ActorTally] = defaultdict(_ActorTally)
        self.by: dict[str, Counter[str]] = {k: Counter() for k in ("namespace", "service", "class", "action", "rule")}
        self.actors_by_namespace: dict[str, set[str]] = defaultdict(set)
        self.observed: Counter[str] = Counter()
        self.observed_actors: set[str] = set()
        self.collateral_by_class: Counter[str] = Counter()
        self.collateral_elsewhere = 0  # collateral requests to a service none of the pattern's endpoints is on
        self.redacted = 0

    def feed(self, envelope: bytes, now: float, history: _History) -> None:
        """One batch through the pipeline; its verdicts wait for their delivery time."""
        out = self.replay.feed(envelope, now=now)
        self.dead_letters += len(out.dead_letters)
        for detection, verdict in zip(out.detections, out.verdicts):
            subject_wide = verdict.scope is None or not (verdict.scope.path_template or verdict.scope.tool)
            pattern = None
            if subject_wide and verdict.subject.kind in ("actor", "ip"):
                pattern = history.pattern(verdict.subject.cache_key, verdict.evidence_time, self.options.pattern_share)
            rule = verdict.reasons[0].detector if verdict.reasons else "verdict"
            self.issued[verdict.id] = _Issued(detection.attack_class, rule, verdict.action, verdict.mode, pattern)
            heapq.heappush(self.pending, (verdict.evidence_time + self.options.latency_s, len(self.issued), verdict))

    def decide(self, call: RecordedCall) -> Decision:
        """The shim's decision on one recorded request at its time (verdicts due by then applied first)."""
        while self.pending and self.pending[0][0] <= call.time:
            self.cache.apply(heapq.heappop(self.pending)[2])
        self.inspector.findings = call.findings
        return decide(call.view, self.cache, self.buckets, self.inspector, self.settings.policy, call.time)

    def count(self, call: RecordedCall, decision: Decision) -> None:
        """Tally one decision (requests already refused when recorded are the caller's to count)."""
        if decision.would == "redact":
            self.redacted += 1
        if decision.status == 200:
            if decision.would in ("deny", "throttle"):
                self.observed[self._class_of(decision)] += 1
                self.observed_actors.add(call.actor)
            return
        issued = self.issued.get(decision.verdict_id or "")
        klass = self._class_of(decision)
        action = issued.action if issued is not None else "inline"
        collateral = issued is not None and issued.pattern is not None and call.endpoint not in issued.pattern
        self.refused[call.id] = call.actor
        tally = self.actors[call.actor]
        tally.refused += 1
        tally.collateral += collateral
        tally.classes[klass] += 1
        if tally.first_refused is None:
            tally.first_refused = call.time
        self.actors_by_namespace[call.namespace].add(call.actor)
        for key, value in (("namespace", call.namespace), ("service", f"{call.namespace}/{call.endpoint[0]}"), ("class", klass),
                           ("action", action), ("rule", issued.rule if issued is not None else decision.reason or "inline")):
            self.by[key][value] += 1
        if collateral:
            self.collateral_by_class[klass] += 1
            self.collateral_elsewhere += issued is not None and issued.pattern is not None and all(e[0] != call.endpoint[0] for e in issued.pattern)

    def _class_of(self, decision: Decision) -> str:
        issued = self.issued.get(decision.verdict_id or "")
        return issued.attack_class if issued is not None else decision.reason or "inline"

    def purge(self, now: float) -> None:
        """Drop expired verdicts from the shim's cache (memory only: lookups ignore them already)."""
        self.cache.purge(now)


# --- the report ---------------------------------------------------------------------------------------------------


@dataclass
class _Archive:
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


def _label_figures(run: _Run, archive: _Archive, labels: Mapping[str, bool]) -> dict[str, Any]:
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


def _actor_rows(run: _Run, archive: _Archive, actors: Iterable[str], labels: Mapping[str, bool] | None) -> list[dict[str, Any]]:
    rows = []
    for actor in actors:
        tally = run.actors[actor]
        row: dict[str, Any] = {"actor": actor, "requests": archive.requests[actor], "refused": tally.refused, "collateral": tally.collateral,
                               "first_refused": tally.first_refused, "classes": dict(tally.classes.most_common())}
        if labels is not None:
            row["label"] = "attacker" if actor in archive.attackers else "benign" if actor in archive.labelled_actors else "unlabelled"
        rows.append(row)
    return rows


def _ranked(run: _Run, actors: Iterable[str]) -> list[str]:
    return sorted(actors, key=lambda a: (-run.actors[a].refused, a))


def _run_report(run: _Run, archive: _Archive, labels: Mapping[str, bool] | None, top: int) -> dict[str, Any]:
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
    return report


def _difference(base: _Run, cand: _Run, archive: _Archive, labels: Mapping[str, bool] | None, top: int) -> dict[str, Any]:
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


def _settings_summary(settings: WorkerSettings) -> dict[str, Any]:
    policy = settings.policy
    return {"rules_dir": str(settings.rules_dir) if settings.rules_dir else None, "rule_overrides": settings.rule_overrides,
            "detectors": settings.detector_names(), "model_path": str(settings.model_path) if settings.model_path else None,
            "model_mode": settings.model_mode, "window_s": settings.window_s,
            "policy": {"name": policy.name, "version": policy.version, "default_mode": policy.default_mode, "modes": dict(policy.modes),
                       "actions": dict(policy.actions), "verdict_ttl_s": policy.verdict_ttl_s}}


# --- the loop -----------------------------------------------------------------------------------------------------


def whatif(source: Source, baseline: WorkerSettings, candidate: WorkerSettings, labels: Mapping[str, bool] | None = None,
           options: WhatIfOptions = WhatIfOptions(), declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Replay ``source`` against ``baseline`` and ``candidate``; the report (see the module docstring).

    ``source``: an Arrow table or batch, or an iterable of rows (``summary_row`` shape or ``RequestSummary``) and
    Arrow tables, in time order. ``labels``: request id -> malicious, for the labelled figures (never read by the
    replay). ``declared``: the declared endpoints of the specs, as the worker reads them. ``progress`` is called with
    the number of rows replayed after every batch.
    """
    runs = {"baseline": _Run(baseline, options, declared), "candidate": _Run(candidate, options, declared)}
    history = _History(max(baseline.window_s, candidate.window_s))
    archive, clock, since_purge = _Archive(), 0.0, 0
    for batch in cut(conformed_tables(source), options.batch_s, options.batch_rows):
        calls = recorded_calls(batch)
        for call in calls:
            history.add(call)
        clock = max(clock, max(c.time for c in calls))
        envelope = encode_table(batch)
        for run in runs.values():
            run.feed(envelope, clock, history)
        for call in calls:
            archive.see(call, labels)
            recorded_refusal = call.recorded in RECORDED_REFUSALS
            if recorded_refusal:
                archive.already[call.recorded or ""] += 1
                archive.already_actors.add(call.actor)
                archive.already_by_namespace[call.namespace] += 1
            for run in runs.values():
                decision = run.decide(call)
                if not recorded_refusal:
                    run.count(call, decision)
        archive.batches += 1
        since_purge += len(calls)
        if since_purge >= _PURGE_EVERY:
            since_purge = 0
            for run in runs.values():
                run.purge(clock)
        if progress is not None:
            progress(archive.rows)
    return _report(runs["baseline"], runs["candidate"], archive, labels, options)


def _report(base: _Run, cand: _Run, archive: _Archive, labels: Mapping[str, bool] | None, options: WhatIfOptions) -> dict[str, Any]:
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
                     "pattern_share": options.pattern_share, "baseline": _settings_summary(base.settings),
                     "candidate": _settings_summary(cand.settings),
                     "note": "open loop: recorded requests replayed as they happened; refused requests are still fed to the worker as answered"},
    }
