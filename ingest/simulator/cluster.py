"""``ClusterSimulator``: the seeded simulated cluster, its traffic merged in time order.

The facade over the other modules: it builds a fresh ``World`` per run and
merges the benign stream, the reporting job and each planned attacker
(``heapq.merge``, stable: benign, reporting, then attackers in plan order).
It also answers what a test or a policy needs to know about the cluster:
its catalog, retired routes, dependency graph and support agents.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from operator import attrgetter

from ingest.errors import SettingsError
from ingest.simulator.attacks import AttackPlan, attack_calls, plan_attacks
from ingest.simulator.benign import REPORTING_SHARE, Benign, reporting
from ingest.simulator.call import SimCall
from ingest.simulator.catalog import Service, build_catalog, dependencies
from ingest.simulator.world import World

__all__ = ["ClusterSimulator"]


class ClusterSimulator:
    """A seeded simulated cluster; ``calls(duration_s)`` yields its traffic in time order.

    Parameters: ``seed`` (every draw derives from it), ``users`` (end users,
    about 1% of them support agents), ``start_time`` (Unix s), ``attacks``
    (``AttackPlan`` list, see ``plan_attacks``), ``benign_rate_eps`` (mean
    benign calls/s, modulated by a +-20% sine over the run).

    >>> sim = ClusterSimulator(seed=1, users=200, benign_rate_eps=100.0)
    >>> calls = list(sim.calls(5.0))
    >>> all(a.time <= b.time for a, b in zip(calls, calls[1:]))
    True
    """

    plan_attacks = staticmethod(plan_attacks)

    def __init__(self, seed: int = 7, users: int = 3000, start_time: float = 1.8e9,
                 attacks: Sequence[AttackPlan] = (), benign_rate_eps: float = 2000.0) -> None:
        if not 10 <= users <= 90000:
            raise SettingsError(f"users={users} must be in [10, 90000] (user-9xxxx ids are attackers')")
        if benign_rate_eps <= 0:
            raise SettingsError(f"benign_rate_eps={benign_rate_eps} must be > 0")
        self._seed, self._users, self._start, self._rate = seed, users, start_time, benign_rate_eps
        self._attacks = tuple(attacks)
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

    def calls(self, duration_s: float) -> Iterator[SimCall]:
        """Yield the calls of ``[start_time, start_time + duration_s)`` in non-decreasing time order."""
        world = World(self._seed, self._users)
        t0, t1 = self._start, self._start + duration_s
        rate = self._rate * REPORTING_SHARE
        streams: list[Iterator[SimCall]] = [
            iter(Benign(world, self._seed, t0, t1, self._rate - rate)),
            reporting(world, self._seed, t0, t1, rate),
        ]
        streams += [iter(attack_calls(self._attacks, i, world, self._seed, t0, t1)) for i in range(len(self._attacks))]
        return heapq.merge(*streams, key=attrgetter("time"))
