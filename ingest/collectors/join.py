"""Join observations of one call from several reporters by request id (pure; time is passed in).

Contract of ``Joiner``:

* An observation without ``request_id`` is released at once, alone.
* Observations sharing a ``request_id`` are held together and released as one
  merged observation (``ingest.observation.merge``; reporters earlier in
  ``precedence`` win field by field, the others follow in arrival order) as
  soon as every ``expected`` reporter has arrived, or ``hold_s`` after the
  first of them arrived (``expire``), whichever comes first. When the first
  observation already covers ``expected`` it is released without being held.
* A second observation from a reporter already held under the same request id
  is a different call that reused the id (clients can set ``x-request-id``):
  the held entry is released as it is and the newcomer starts a new one, so a
  reused id can never fold many calls into one summary.
* Memory is bounded: when ``max_pending`` ids are held, the oldest is released
  (``evicted``) to make room. Nothing is ever dropped.

Counters (``JoinStats``): ``passed`` (no request id), ``joined`` (released
complete after merging two or more observations), ``complete`` (released
complete, merged or not), ``expired`` (released by ``hold_s`` before every
expected reporter arrived), ``evicted`` (released by ``max_pending``),
``reused`` (released early because a reporter repeated an id).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ingest.observation import HttpObservation, merge

__all__ = ["DEFAULT_PRECEDENCE", "JoinStats", "Joiner"]

#: Who wins a field both saw: the shim saw the decision, ext_proc the bodies, the access log the outcome.
DEFAULT_PRECEDENCE: tuple[str, ...] = ("shim", "ext_proc", "access_log", "als", "otlp", "har", "jsonl")


@dataclass
class JoinStats:
    """Running counts of how observations left the joiner (see the module docstring)."""

    passed: int = 0
    complete: int = 0
    joined: int = 0
    expired: int = 0
    evicted: int = 0
    reused: int = 0


class _Entry:
    __slots__ = ("since", "observations", "reporters")

    def __init__(self, since: float, observation: HttpObservation, reporters: frozenset[str]) -> None:
        self.since = since
        self.observations = [observation]
        self.reporters = set(reporters)


def _reporters(observation: HttpObservation) -> frozenset[str]:
    reporter = observation.reporter
    return frozenset(reporter.split("+")) if "+" in reporter else frozenset((reporter,))


class Joiner:
    """Merge observations of one call by request id; see the module docstring for the rules.

    Parameters
    ----------
    expected: the reporters whose observations make a call complete (e.g. ``{"shim", "access_log"}``).
    hold_s: how long an incomplete call is held after its first observation arrived.
    max_pending: how many request ids may be held at once.
    precedence: reporter names, earliest wins a field both saw (others rank after, by arrival).

    >>> j = Joiner(frozenset({"shim", "access_log"}), hold_s=2.0, max_pending=100)
    >>> j.add(HttpObservation(1.0, "GET", "/a", "shim", request_id="r1", decision="allow"), now=10.0)
    []
    >>> [(o.reporter, o.decision, o.status) for o in j.add(
    ...     HttpObservation(1.0, "GET", "/a", "access_log", request_id="r1", status=200), now=10.1)]
    [('shim+access_log', 'allow', 200)]
    """

    def __init__(self, expected: frozenset[str], hold_s: float, max_pending: int,
                 precedence: Sequence[str] = DEFAULT_PRECEDENCE) -> None:
        if hold_s < 0:
            raise ValueError(f"hold_s must be >= 0, got {hold_s!r}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending!r}")
        self.expected = frozenset(expected)
        self.hold_s = hold_s
        self.max_pending = max_pending
        self._rank = {name: i for i, name in enumerate(precedence)}
        self._reporter_sets: dict[str, frozenset[str]] = {}
        self._pending: OrderedDict[str, _Entry] = OrderedDict()
        self.stats = JoinStats()

    def __len__(self) -> int:
        """How many request ids are held."""
        return len(self._pending)

    def add(self, observation: HttpObservation, now: float) -> list[HttpObservation]:
        """Take one observation; return the observations released by it (merged ones included)."""
        out: list[HttpObservation] = []
        self._add(observation, now, out)
        return out

    def add_many(self, observations: Iterable[HttpObservation], now: float) -> list[HttpObservation]:
        """``add`` for a batch, in order; the released observations of the whole batch."""
        out: list[HttpObservation] = []
        for observation in observations:
            self._add(observation, now, out)
        return out

    def expire(self, now: float) -> list[HttpObservation]:
        """Release every call held for ``hold_s`` or longer (incomplete ones, merged as far as they got)."""
        out: list[HttpObservation] = []
        pending = self._pending
        while pending:
            request_id, entry = next(iter(pending.items()))
            if now - entry.since < self.hold_s:
                break
            del pending[request_id]
            self.stats.expired += 1
            out.append(self._merged(entry))
        return out

    def drain(self) -> list[HttpObservation]:
        """Release everything held (on stop), oldest first; counted as expired."""
        out = [self._merged(entry) for entry in self._pending.values()]
        self.stats.expired += len(out)
        self._pending.clear()
        return out

    def _add(self, observation: HttpObservation, now: float, out: list[HttpObservation]) -> None:
        request_id = observation.request_id
        if not request_id:
            self.stats.passed += 1
            out.append(observation)
            return
        reporters = self._reporter_sets.get(observation.reporter)
        if reporters is None:
            if len(self._reporter_sets) > 256:
                self._reporter_sets.clear()
            reporters = self._reporter_sets[observation.reporter] = _reporters(observation)
        entry = self._pending.get(request_id) if self._pending else None
        if entry is not None and not reporters.isdisjoint(entry.reporters):
            del self._pending[request_id]
            self.stats.reused += 1
            out.append(self._merged(entry))
            entry = None
        if entry is None:
            if self.expected <= reporters:
                self.stats.complete += 1
                out.append(observation)
                return
            self._hold(request_id, _Entry(now, observation, reporters), out)
            return
        entry.observations.append(observation)
        entry.reporters |= reporters
        if self.expected <= entry.reporters:
            del self._pending[request_id]
            self.stats.complete += 1
            self.stats.joined += 1
            out.append(self._merged(entry))

    def _hold(self, request_id: str, entry: _Entry, out: list[HttpObservation]) -> None:
        if len(self._pending) >= self.max_pending:
            _, oldest = self._pending.popitem(last=False)
            self.stats.evicted += 1
            out.append(self._merged(oldest))
        self._pending[request_id] = entry

    def _merged(self, entry: _Entry) -> HttpObservation:
        observations = entry.observations
        if len(observations) == 1:
            return observations[0]
        unranked = len(self._rank)
        ordered = sorted(observations, key=lambda o: self._rank.get(o.reporter.split("+", 1)[0], unranked))
        result = ordered[0]
        for other in ordered[1:]:
            result = merge(result, other)
        return result
