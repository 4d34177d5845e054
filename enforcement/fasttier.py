"""The shim's fast tier: the fastest signals counted and acted on in the shim itself, at once.

The worker sees every call of an actor across shims and acts on baselines,
ownership and models, at the cost of a trip through Kafka (``make bench``:
detect->enforce p50 ~40 ms, p99 ~180 ms at 10,000 events/s). Two signals need
none of that and are answered here on the request that completes them:

- **enumeration**: one principal reading ``max_distinct_objects`` distinct
  object ids of one destination service within ``window_s`` (the ids as
  ``ingest.template_path`` reads them from the percent-decoded path, without
  ``;params``; paths of static files, ``.js`` ``.css`` ``.png`` and the like,
  are not counted: their hashed names are not objects). Volume alone, so the
  floor sits far above people and ordinary clients (150 objects of one service
  in 10 s); the worker's ownership rules catch slow and careful walks, and ids
  sent in the query string.
- **inline repeat**: ``inline_hits`` (3) requests flagged by inline inspection
  within ``window_s`` (a body refused for its size or a scan cut at its budget
  is not an attack and does not count): a scanner's burst, whose next requests
  (the payload variants no signature matches) are refused at once. The worker's
  ``inline_signature`` rule acts on one hit, for every shim, a Kafka round trip
  later; the fast tier waits for a burst so that one signature false positive
  alone never becomes a refusal of everything here.

**Who is counted.** A local verdict must not be something a client can aim at
someone else, so signals are counted per subject that only its owner can be:
a principal the shim or the data plane verified (``auth_type`` ``jwt`` with a
key configured, ``api_key``, ``session``, ``data_plane``), on every address it
comes from; for inline repeats also a client address with no principal and no
workload (as a WAF blocks an address), and a workload with no principal only
with ``workloads`` on (behind one gateway workload every anonymous caller is
that workload). Principals anyone can name (``basic``: the password is not
checked here; ``jwt-unverified``: no key configured) are never counted.

A tripped subject gets a local verdict for ``block_s`` with the action the
policy gives the attack class (``actions``: ``bola`` for enumeration,
``injection`` for inline repeats; ``block`` or ``throttle``; any other action
leaves the signal to the worker, and then nothing is counted for it). It is
enforced only where the policy enforces both at the destination where it
tripped and at the request's own destination; elsewhere it is reported as what
would have happened. Local verdicts are this replica's own, as Envoy's local
rate limits are: each shim counts what it sees, and the worker's verdict,
issued from the calls of every shim, reaches them all. A signed lift of any of
the request's subject keys issued after a local verdict lifts it. State is
bounded: at most ``max_actors`` windows and as many local verdicts, the oldest
dropped first and counted; a subject evicted so starts again at zero (an
identity flood is the worker's signal, ``streams.identityflood``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from urllib.parse import unquote

from enforcement.decision import Decision, RequestView
from ingest import Policy, template_path

__all__ = ["ENUMERATION", "INLINE_REPEAT", "NOT_ATTACKS", "VERIFIED_AUTH", "FastTier", "FastTierConfig", "LocalVerdict"]

ENUMERATION = "fast-tier:enumeration"
INLINE_REPEAT = "fast-tier:inline-repeat"
#: inline findings that are not an attack (``enforcement.inspection.OVERSIZE`` and ``OVER_BUDGET``)
NOT_ATTACKS = frozenset({"oversize", "inspection-budget"})
#: auth types whose principal a client cannot choose for someone else (``ingest.identity``, the adapters)
VERIFIED_AUTH = frozenset({"jwt", "api_key", "session", "data_plane"})
#: the attack class whose policy action each signal takes
_CLASS = {ENUMERATION: "bola", INLINE_REPEAT: "injection"}
_ACTING = ("block", "throttle")
_STATIC = frozenset({"js", "mjs", "css", "map", "png", "jpg", "jpeg", "gif", "svg", "ico", "webp", "avif", "woff", "woff2",
                     "ttf", "eot", "otf", "mp4", "webm", "mp3", "wasm", "html", "htm", "txt"})
_NEVER = (float("-inf"), float("-inf"))


@dataclass(frozen=True, slots=True)
class FastTierConfig:
    """Floors and bounds (``ShimSettings.fast_tier``); a floor of 0 turns its signal off."""

    window_s: float = 10.0
    max_distinct_objects: int = 150
    inline_hits: int = 3
    block_s: float = 300.0
    max_actors: int = 50_000
    workloads: bool = False


@dataclass(slots=True)
class _Window:
    started: float
    count: int
    objects: set[str] | None


@dataclass(slots=True)
class LocalVerdict:
    """A verdict this shim issued itself on ``subject`` from ``since`` until ``until`` (``tokens``/``at``: its throttle
    bucket)."""

    subject: str
    signal: str
    action: str
    enforce: bool
    since: float
    until: float
    tokens: float = 0.0
    at: float = 0.0

    @property
    def verdict_id(self) -> str:
        return f"local:{self.signal}:{self.since:.3f}"


def _subjects(req: RequestView, config: FastTierConfig) -> tuple[str | None, str | None]:
    """(the subject enumeration is counted on, the subject inline repeats are counted on); None = not counted."""
    if req.principal is not None:
        if req.auth_type in VERIFIED_AUTH:
            key = f"principal:{req.principal}"
            return key, key
        return None, None
    if req.source_workload is not None:
        return None, f"workload:{req.source_workload}" if config.workloads else None
    return None, f"ip:{req.ip}" if req.ip is not None else None


def _object_ids(path: str) -> list[str]:
    """The object ids of a path as the worker reads them, once decoded and cut of ``;params``; none for static files."""
    path = path.split("?", 1)[0].split("#", 1)[0]
    if "%" in path:
        path = unquote(path)
    if ";" in path:
        path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    last = path.rsplit("/", 1)[-1]
    if "." in last and last.rsplit(".", 1)[1].lower() in _STATIC:
        return []
    return template_path(path)[1]


class FastTier:
    """Per-subject windows and local verdicts; ``check`` runs after ``decide`` on every request (one thread)."""

    def __init__(self, config: FastTierConfig) -> None:
        self.config = config
        self._windows: dict[str, _Window] = {}  # "<signal>\0<subject>[\0<service>]" -> window, oldest start first
        self.verdicts: dict[str, LocalVerdict] = {}  # subject -> local verdict, oldest first
        self.tripped: dict[str, int] = {ENUMERATION: 0, INLINE_REPEAT: 0}
        self.evicted = 0
        self.lifted = 0

    def __len__(self) -> int:
        return len(self._windows)

    def check(self, req: RequestView, decision: Decision, policy: Policy, now: float,
              lifted: dict[str, tuple[float, float]] | None = None) -> Decision:
        """The decision for ``req`` given what ``decide`` answered: a standing or newly tripped local verdict of its
        subject replaces an answer that lets the request through (an enforced refusal stands as it is).

        ``lifted``: the verdict cache's lift markers (entry key -> (issued_at, expires_at)); a lift of any subject
        key of the request (the actor, its principal, workload or address) issued after a local verdict lifts it.
        """
        objects_on, inline_on = _subjects(req, self.config)
        if objects_on is None and inline_on is None:
            return decision
        local = self._standing(objects_on, req, now, lifted)
        if local is None and inline_on != objects_on:
            local = self._standing(inline_on, req, now, lifted)
        if local is None:
            local = self._count(objects_on, inline_on, req, decision, policy, now)
        if local is None or (decision.enforced and decision.status != 200):
            return decision
        return self._decide(local, req, decision, policy, now)

    def _standing(self, subject: str | None, req: RequestView, now: float, lifted: dict[str, tuple[float, float]] | None) -> LocalVerdict | None:
        local = self.verdicts.get(subject) if subject is not None else None
        if local is None:
            return None
        if local.until <= now or (lifted and any(lifted.get(k, _NEVER)[0] >= local.since for k in (*req.subject_keys(), local.subject))):
            del self.verdicts[local.subject]
            self.lifted += local.until > now
            return None
        return local

    def _window(self, key: str, now: float, objects: bool) -> _Window:
        windows = self._windows
        window = windows.get(key)
        if window is not None and now - window.started < self.config.window_s:
            return window
        if window is not None:
            del windows[key]  # re-inserted at the end: the dictionary stays ordered by window start
        elif len(windows) >= self.config.max_actors:
            del windows[next(iter(windows))]
            self.evicted += 1
        window = windows[key] = _Window(now, 0, set() if objects else None)
        return window

    def _count(self, objects_on: str | None, inline_on: str | None, req: RequestView, decision: Decision, policy: Policy,
               now: float) -> LocalVerdict | None:
        config = self.config
        if (inline_on is not None and config.inline_hits > 0 and decision.would == "deny" and decision.findings
                and not NOT_ATTACKS.issuperset(decision.findings) and policy.actions.get("injection", "block") in _ACTING):
            key = f"i\0{inline_on}"
            window = self._window(key, now, objects=False)
            window.count += 1
            if window.count >= config.inline_hits:
                del self._windows[key]
                return self._trip(inline_on, INLINE_REPEAT, req, policy, now)
        if objects_on is not None and config.max_distinct_objects > 0 and policy.actions.get("bola", "block") in _ACTING:
            ids = _object_ids(req.path)
            if ids:
                key = f"o\0{objects_on}\0{req.service or '-'}"
                window = self._window(key, now, objects=True)
                assert window.objects is not None
                window.objects.update(ids)
                if len(window.objects) >= config.max_distinct_objects:
                    del self._windows[key]
                    return self._trip(objects_on, ENUMERATION, req, policy, now)
        return None

    def _trip(self, subject: str, signal: str, req: RequestView, policy: Policy, now: float) -> LocalVerdict:
        self.tripped[signal] += 1
        enforce = policy.mode_for(req.namespace, req.service) == "enforce"
        local = LocalVerdict(subject, signal, policy.actions.get(_CLASS[signal], "block"), enforce, now, now + self.config.block_s,
                             float(policy.throttle_burst), now)
        self.verdicts.pop(subject, None)
        self.verdicts[subject] = local
        if len(self.verdicts) > self.config.max_actors:  # bounded too: the oldest local verdict goes first
            del self.verdicts[next(iter(self.verdicts))]
        return local

    def _decide(self, local: LocalVerdict, req: RequestView, decision: Decision, policy: Policy, now: float) -> Decision:
        enforce = local.enforce and policy.mode_for(req.namespace, req.service) == "enforce"
        findings = decision.findings or (local.signal,)
        if local.action == "throttle":
            rate, burst = policy.throttle_rate_per_s, float(policy.throttle_burst)
            local.tokens, local.at = min(burst, local.tokens + (now - local.at) * rate), now
            if local.tokens >= 1.0:
                local.tokens -= 1.0
                return decision
            retry = max(1, math.ceil((1.0 - local.tokens) / rate))
            return Decision(429 if enforce else 200, "throttle", enforce, local.signal, retry, findings, local.verdict_id, decision.redacted)
        return Decision(403 if enforce else 200, "deny", enforce, local.signal, None, findings, local.verdict_id, decision.redacted)

    def stats(self) -> dict[str, int]:
        """Windows open, local verdicts standing, tripped by signal, evicted windows, local verdicts lifted."""
        return {"actors_tracked": len(self._windows), "local_verdicts": len(self.verdicts), "evicted": self.evicted,
                "lifted": self.lifted, **{f"tripped_{s.rsplit(':', 1)[1]}": n for s, n in self.tripped.items()}}
