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

**The learned allow-list** (``kubeward policy suggest --format shim``). Each
run's shim may enforce one (``enforcement.allowlist.AllowList``), passed to
``decide`` as the shim passes it: after verdicts and inline inspection, in the
mode the run's policy gives the destination. The caller it checks is the
recorded one, as the shim derives it: the source workload, else the client
address (a listed ``cidr:`` or ``address:``); principals play no part. Its
refusals are counted with the action ``allowlist`` and the class and rule
``allowlist:<reason>`` (``unknown-caller``, ``unknown-endpoint``,
``unnamed-caller``, ``ambiguous-path``), never as collateral (the request
itself is what the list does not name); in observe mode they are *observed*.
The shim's first answer hides a refusal the list would also make (a blocked
actor's calls are counted ``block``), so each run with a list also reports
``allowlist``: what the list refuses on its own where the policy enforces the
destination, whatever else refused it (``python -m deploy.policymatch``
counts the same edges in the Istio and Cilium renderings, every namespace
enforced).
Without a recorded ``raw_path`` the path checked is the template, which
matches its own entry: an ``ambiguous-path`` refusal needs the raw path.

**Counts.** A request is *refused* when the run's shim answers 403 or 429
(enforced); *observed* when an observe-mode verdict, finding or allow-list
refusal says it would have refused it; the action is
``block``/``quarantine``/``throttle`` (a verdict), ``inline`` or
``allowlist``. Requests the recording already shows refused
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
here; ``deploy.whatif`` is the command-line edge, ``deploy.whatifreport``
builds the report. The recorded ground truth
(``ground_truth``) is nulled before anything reads the rows.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from enforcement.allowlist import AllowList
from enforcement.cache import VerdictCache
from enforcement.decision import ALLOWLIST, Decision, Inspection, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from deploy.recordedcalls import Endpoint, RecordedCall, Source, conformed_tables, cut, recorded_calls
from deploy.whatifreport import Archive, report
from ingest import Verdict
from ingest.envelope import encode_table
from streams.replay import Replay
from streams.settings import WorkerSettings

__all__ = ["WhatIfOptions", "whatif"]

Progress = Callable[[int], None]

#: recorded ``decision`` values of requests the shim refused when they were recorded
RECORDED_REFUSALS = ("deny", "throttle")
#: the action a refusal no verdict made is counted under, by its reason's prefix (``allowlist:unknown-caller``)
_REFUSER = {ALLOWLIST: "allowlist"}
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


@dataclass
class _ListTally:
    """What the run's allow-list refuses on its own (where the policy enforces), and would refuse elsewhere."""

    refused: dict[str, str] = field(default_factory=dict)  # request id -> actor
    by_reason: Counter[str] = field(default_factory=Counter)
    by_service: Counter[str] = field(default_factory=Counter)
    observed: int = 0


class Run:
    """One settings' worker pipeline and shim (with its allow-list, if any) over the recorded requests, and what it refused."""

    def __init__(self, settings: WorkerSettings, options: WhatIfOptions, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None,
                 allowlist: AllowList | None = None) -> None:
        self.settings, self.options, self.allowlist = settings, options, allowlist
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
        self.listed = _ListTally()

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
        return decide(call.view, self.cache, self.buckets, self.inspector, self.settings.policy, call.time, self.allowlist)

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
        action = issued.action if issued is not None else _REFUSER.get((decision.reason or "").partition(":")[0] + ":", "inline")
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

    def check_list(self, call: RecordedCall) -> None:
        """The allow-list on its own: would it refuse this request, whichever check of the shim answers first."""
        why = self.allowlist.refusal(call.view) if self.allowlist is not None else None
        if why is None:
            return
        if self.settings.policy.mode_for(call.view.namespace, call.view.service) != "enforce":
            self.listed.observed += 1
            return
        self.listed.refused[call.id] = call.actor
        self.listed.by_reason[ALLOWLIST + why] += 1
        self.listed.by_service[f"{call.namespace}/{call.endpoint[0]}"] += 1

    def purge(self, now: float) -> None:
        """Drop expired verdicts from the shim's cache (memory only: lookups ignore them already)."""
        self.cache.purge(now)


# --- the loop -----------------------------------------------------------------------------------------------------


def whatif(source: Source, baseline: WorkerSettings, candidate: WorkerSettings, labels: Mapping[str, bool] | None = None,
           options: WhatIfOptions = WhatIfOptions(), declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None,
           progress: Progress | None = None, allowlist: AllowList | None = None, baseline_allowlist: AllowList | None = None) -> dict[str, Any]:
    """Replay ``source`` against ``baseline`` and ``candidate``; the report (see the module docstring).

    ``source``: an Arrow table or batch, or an iterable of rows (``summary_row`` shape or ``RequestSummary``) and
    Arrow tables, in time order. ``labels``: request id -> malicious, for the labelled figures (never read by the
    replay). ``declared``: the declared endpoints of the specs, as the worker reads them. ``progress`` is called with
    the number of rows replayed after every batch. ``allowlist`` / ``baseline_allowlist``: the learned allow-list each
    run's shim enforces (None: none; the candidate does not inherit the baseline's).
    """
    runs = {"baseline": Run(baseline, options, declared, baseline_allowlist), "candidate": Run(candidate, options, declared, allowlist)}
    history = _History(max(baseline.window_s, candidate.window_s))
    archive, clock, since_purge = Archive(), 0.0, 0
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
                    run.check_list(call)
        archive.batches += 1
        since_purge += len(calls)
        if since_purge >= _PURGE_EVERY:
            since_purge = 0
            for run in runs.values():
                run.purge(clock)
        if progress is not None:
            progress(archive.rows)
    return report(runs["baseline"], runs["candidate"], archive, labels, options)
