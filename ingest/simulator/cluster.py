"""``ClusterSimulator``: the seeded simulated cluster, its traffic merged in time order.

The facade over the other modules: it builds a fresh ``World`` per run and
merges the benign stream, the reporting job and each planned attacker
(``heapq.merge``, stable: benign, reporting, then attackers in plan order).
It also answers what a test or a policy needs to know about the cluster:
its catalog, retired routes, dependency graph and support agents.

An ``inject`` callable (what ``ingest.simulator.variants`` passes) adds calls
of its own to a run: it gets the run's ``World`` and bounds and returns an
``Injected`` (its calls, plus the workloads it compromised: from then on the
benign stream's service calls of such a workload carry its ``attack_id``,
still ``malicious=False``, so denials of them count as collateral).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from ingest.errors import SettingsError
from ingest.simulator.attacks import AttackPlan, attack_calls, plan_attacks
from ingest.simulator.benign import REPORTING_SHARE, Benign, reporting
from ingest.simulator.call import SimCall
from ingest.simulator.catalog import Service, build_catalog, dependencies
from ingest.simulator.world import World

__all__ = ["ClusterSimulator", "Injected", "Injector"]


@dataclass(frozen=True)
class Injected:
    """Calls added to a run (any order) and the workloads they compromised: workload -> (attack id, since)."""

    calls: list[SimCall]
    compromised: Mapping[str, tuple[str, float]] = field(default_factory=dict)


Injector = Callable[[World, float, float], Injected]


def _tagged(calls: Iterator[SimCall], compromised: Mapping[str, tuple[str, float]]) -> Iterator[SimCall]:
    """The calls, a compromised workload's own service calls after its compromise carrying the attack id."""
    for call in calls:
        hit = compromised.get(call.source_workload or "") if call.principal is None else None
        if hit is not None and call.time >= hit[1]:
            call.attack_id = hit[0]
        yield call


class ClusterSimulator:
    """A seeded simulated cluster; ``calls(duration_s)`` yields its traffic in time order.

    Parameters: ``seed`` (every draw derives from it), ``users`` (end users,
    about 1% of them support agents), ``start_time`` (Unix s), ``attacks``
    (``AttackPlan`` list, see ``plan_attacks``), ``benign_rate_eps`` (mean
    benign calls/s, modulated by a +-20% sine over the run), ``inject`` (extra
    calls, see the module docstring), ``duration_s`` (the default length of
    ``calls()``).

    >>> sim = ClusterSimulator(seed=1, users=200, benign_rate_eps=100.0)
    >>> calls = list(sim.calls(5.0))
    >>> all(a.time <= b.time for a, b in zip(calls, calls[1:]))
    True
    """

    plan_attacks = staticmethod(plan_attacks)

    def __init__(self, seed: int = 7, users: int = 3000, start_time: float = 1.8e9,
                 attacks: Sequence[AttackPlan] = (), benign_rate_eps: float = 2000.0,
                 inject: Injector | None = None, duration_s: float | None = None) -> None:
        if not 10 <= users <= 90000:
            raise SettingsError(f"users={users} must be in [10, 90000] (user-9xxxx ids are attackers')")
        if benign_rate_eps <= 0:
            raise SettingsError(f"benign_rate_eps={benign_rate_eps} must be > 0")
        self._seed, self._users, self._start, self._rate = seed, users, start_time, benign_rate_eps
        self._attacks = tuple(attacks)
        self._inject, self.duration_s = inject, duration_s
        self._catalog = build_catalog()

    @property
    def catalog(self) -> tuple[Service, ...]:
        """Every destination service (in-cluster and external) with its endpoints."""
        return self._catalog

    @property
    def attacks(self) -> tuple[AttackPlan, ...]:
        """The planned attacks."""
        return self._attacks

    @property
    def retired_endpoints(self) -> list[str]:
        """Retired routes as ``service METHOD /template`` (service = ``destination.service``)."""
        return sorted(e.key for s in self._catalog for e in s.endpoints if e.retired)

    @property
    def service_dependencies(self) -> dict[str, list[str]]:
        """Workload (``namespace/name``) -> the services it calls (``namespace/name``, or host if external)."""
        return dependencies()

    @property
    def support_agents(self) -> list[str]:
        """Principals of the support agents, who legitimately read other users' objects."""
        world = World(self._seed, self._users)
        return sorted(world.principals[u] for u in world.agents)

    def calls(self, duration_s: float | None = None) -> Iterator[SimCall]:
        """Yield the calls of ``[start_time, start_time + duration_s)`` in non-decreasing time order."""
        duration_s = self.duration_s if duration_s is None else duration_s
        if duration_s is None:
            raise SettingsError("calls(duration_s=None) needs the simulator's duration_s")
        world = World(self._seed, self._users)
        t0, t1 = self._start, self._start + duration_s
        rate = self._rate * REPORTING_SHARE
        injected = self._inject(world, t0, t1) if self._inject is not None else Injected([])
        benign: Iterator[SimCall] = iter(Benign(world, self._seed, t0, t1, self._rate - rate))
        if injected.compromised:
            benign = _tagged(benign, injected.compromised)
        streams: list[Iterator[SimCall]] = [benign, reporting(world, self._seed, t0, t1, rate)]
        streams += [iter(attack_calls(self._attacks, i, world, self._seed, t0, t1)) for i in range(len(self._attacks))]
        streams.append(iter(sorted((c for c in injected.calls if t0 <= c.time < t1), key=attrgetter("time"))))
        return heapq.merge(*streams, key=attrgetter("time"))
