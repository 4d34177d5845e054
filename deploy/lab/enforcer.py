"""The closed loop of offline evaluation: the shim decides each call, the worker's verdicts reach the shim.

``OfflineShim`` is the shim's decision state with the replayed clock instead
of the wall clock: a real ``enforcement.cache.VerdictCache`` and
``TokenBuckets``, the inline inspector the shim builds from its shipped
settings (rule engines, plus request-schema validation learning from the
requests it allows, as ``enforcement.shim.Shim.decide_view`` does), the policy,
and the real pure ``enforcement.decision.decide``. A verdict the pipeline
issued at ``issued_at`` enters the cache once the call being decided is at
``issued_at + latency_s`` or later (the control topic's delivery latency).

``EnforcedRun.run(calls)`` is the loop, one call at a time in time order: the
shim decides on the ``RequestView`` Envoy's check would carry
(``OfflineDataPlane.view``); the call becomes the row a collector would
publish (``OfflineDataPlane.row``: answered by the demo API when allowed, a
403/429 with no answer when refused); rows are fed to ``streams.replay.Replay``
in batches cut by event time like the worker's batch window (a batch holds the
rows of ``batch_s`` from its first row), so a verdict is issued at the newest
event time of the batch holding the call that triggered it, and every verdict
reaches the shim before any call it could apply to (exact while ``latency_s >=
batch_s``). ``on_call`` sees each call with its view, decision and row;
``on_batch`` each batch's ``Outcome``.

``covers(verdict, view)`` says whether a verdict, alone in a shim's cache,
refuses a request: the same cache and ``decide`` (a throttle verdict counts
as covering, whatever its bucket holds).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from deploy.lab.offline import OfflineDataPlane
from enforcement.cache import VerdictCache
from enforcement.fasttier import FastTier
from enforcement.decision import Decision, Inspection, RequestView, decide
from enforcement.inspectors import build_shim_inspectors
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from ingest import Policy, Verdict
from streams.pipeline import Outcome
from streams.replay import Replay

__all__ = ["EnforcedRun", "OfflineShim", "RunStats", "covers"]

OnCall = Callable[[Any, RequestView, Decision, dict[str, Any]], None]
OnBatch = Callable[[list[dict[str, Any]], Outcome], None]


class _NoInspection:
    """An inspector that finds nothing (for ``covers``: only the verdict may refuse)."""

    def inspect(self, req: RequestView) -> Inspection | None:
        """Nothing found."""
        return None


class _EmptyBuckets(TokenBuckets):
    """Token buckets that never grant (for ``covers``: a throttle verdict that applies always refuses)."""

    def take(self, key: str, rate: float, burst: int, now: float) -> float:
        """No token, ever."""
        return 1.0 / rate


def covers(verdict: Verdict, view: RequestView) -> bool:
    """Whether ``verdict``, alone in a shim's cache at its issue time, refuses the request ``view`` (see the module docstring)."""
    if verdict.subject.cache_key not in view.subject_keys():
        return False
    cache = VerdictCache()
    cache.apply(verdict)
    return decide(view, cache, _EmptyBuckets(), _NoInspection(), verdict_policy(), verdict.issued_at).verdict_id == verdict.id


def verdict_policy() -> Policy:
    """The enforce-mode policy evaluation runs under (what enforcement would stop)."""
    return Policy(default_mode="enforce")


class OfflineShim:
    """The shim's decision state on the replayed clock (see the module docstring)."""

    def __init__(self, policy: Policy, latency_s: float = 0.05, settings: ShimSettings | None = None):
        if latency_s < 0:
            raise ValueError(f"latency_s={latency_s} must be >= 0")
        settings = settings or ShimSettings(bootstrap=None)
        self.policy, self.latency_s, self.now = policy, latency_s, 0.0
        self.cache, self.buckets = VerdictCache(), TokenBuckets()
        parts = build_shim_inspectors(settings, clock=lambda: self.now)
        self.inspector: Any = parts.inspector
        self.schema = parts.schema
        self.fast = FastTier(settings.fast_tier.config()) if settings.fast_tier.enabled else None
        self._pending: list[tuple[float, int, Verdict]] = []
        self._seq = 0

    def deliver(self, verdicts: Iterable[Verdict]) -> None:
        """Verdicts the worker published; each enters the cache ``latency_s`` after it was issued."""
        for v in verdicts:
            self._seq += 1
            heapq.heappush(self._pending, (v.issued_at + self.latency_s, self._seq, v))

    def decide(self, view: RequestView, now: float) -> Decision:
        """Decide one request at event time ``now`` (due verdicts applied first)."""
        self.now = now
        pending = self._pending
        while pending and pending[0][0] <= now:
            self.cache.apply(heapq.heappop(pending)[2])
        decision = decide(view, self.cache, self.buckets, self.inspector, self.policy, now)
        if self.fast is not None:
            decision = self.fast.check(view, decision, self.policy, now, self.cache.lifted)
        if self.schema is not None and decision.status == 200 and decision.would in ("allow", "redact"):
            self.schema.learn(view)
        return decision


@dataclass(frozen=True)
class RunStats:
    """What one enforced run fed: calls, rows, batches, and every verdict the pipeline issued."""

    calls: int
    batches: int
    verdicts: tuple[Verdict, ...]


class EnforcedRun:
    """Calls -> shim decision -> rows -> replay in event-time batches -> verdicts -> shim (see the module docstring)."""

    def __init__(self, plane: OfflineDataPlane, shim: OfflineShim, replay: Replay, batch_s: float,
                 on_call: OnCall | None = None, on_batch: OnBatch | None = None, prefix: str = "e"):
        if batch_s <= 0:
            raise ValueError(f"batch_s={batch_s} must be > 0")
        self.plane, self.shim, self.replay, self.batch_s = plane, shim, replay, batch_s
        self.on_call, self.on_batch, self.prefix = on_call, on_batch, prefix
        self.verdicts: list[Verdict] = []
        self.batches = 0

    def _feed(self, batch: list[dict[str, Any]]) -> None:
        out = self.replay.feed(batch)
        self.batches += 1
        self.verdicts += out.verdicts
        self.shim.deliver(out.verdicts)
        if self.on_batch is not None:
            self.on_batch(batch, out)

    def run(self, calls: Iterable[Any]) -> RunStats:
        """Run the loop over calls in time order; returns what was fed and issued."""
        batch: list[dict[str, Any]] = []
        start, n = 0.0, 0
        for n, call in enumerate(calls, 1):
            if batch and call.time >= start + self.batch_s:
                self._feed(batch)
                batch = []
            rid = f"{self.prefix}{n}"
            view = self.plane.view(call, rid)
            decision = self.shim.decide(view, call.time)
            row = self.plane.row(call, rid, decision)
            if self.on_call is not None:
                self.on_call(call, view, decision, row)
            if not batch:
                start = call.time
            batch.append(row)
        if batch:
            self._feed(batch)
        return RunStats(n, self.batches, tuple(self.verdicts))
