"""Named simulator variants: attack and hard-negative scenarios, each drawing its own parameters from ranges.

A ``Variant`` is a name (kebab-case), its attack class, its kind (``attack``
or ``negative``), its OWASP API Top 10 (2023) id and a generator: given a
``VariantRun`` (the run's ``World``, seed, bounds, warmup, benign rate and an
rng seeded from the seed and the variant's name) it returns the calls of the
variant's actors. ``register`` adds one to ``VARIANTS``; modules that define
variants register them when imported (``_VARIANT_MODULES`` below, imported at
the end of this module). ``variant_simulator`` builds a ``ClusterSimulator``
whose calls merge the ordinary benign traffic, the reporting job and the
variant's calls in time order.

Ground truth, the contract every generator keeps:

* attack calls: ``scenario`` = the variant name, ``attack_id`` =
  ``<variant>-<k>`` with one id per actor the worker will see (a distributed
  campaign has one per principal or source address), ``malicious=True``;
  an attacker's ordinary calls carry its ``attack_id`` with ``malicious=False``,
  and so do a compromised workload's ordinary calls (``VariantRun.compromise``);
* hard-negative calls: ``scenario`` = the variant name, ``attack_id=None``,
  ``malicious=False``;
* attacks start after ``warmup_s`` and end inside the run.

Every call is one the demo API answers (``deploy.runtime.demoapi``); logins name
the attempted account in ``principal`` (the driver posts it as ``username``)
and model a failure as status 401 (the API answers 401 or 200 with an error
body, depending on the route).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ingest.errors import SettingsError
from ingest.simulator.call import SimCall, new_call
from ingest.simulator.catalog import Endpoint
from ingest.simulator.cluster import ClusterSimulator, Injected
from ingest.simulator.world import World

__all__ = ["ATTACK_CLASSES", "VARIANTS", "Actor", "Variant", "VariantRun", "register", "variant_simulator"]

ATTACK_CLASSES: tuple[str, ...] = (
    "bola", "credential_abuse", "exfiltration", "injection", "retired_api", "lateral_movement", "bfla",
    "resource_consumption", "business_flow", "ssrf", "misconfiguration", "inventory", "unsafe_consumption",
    "honeytoken", "mass_assignment", "data_exposure",
)
_KEBAB = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class Variant:
    """One named scenario: its class, kind (``attack`` | ``negative``), OWASP id and call generator."""

    name: str
    attack_class: str
    kind: str
    owasp: str
    description: str
    generate: Callable[[VariantRun], list[SimCall]]

    def __post_init__(self) -> None:
        if not _KEBAB.match(self.name):
            raise SettingsError(f"Variant.name={self.name!r} is not kebab-case")
        if self.kind not in ("attack", "negative"):
            raise SettingsError(f"Variant {self.name!r}: kind={self.kind!r} is not 'attack' or 'negative'")
        valid = ATTACK_CLASSES if self.kind == "attack" else ("benign",)
        if self.attack_class not in valid:
            raise SettingsError(f"Variant {self.name!r}: attack_class={self.attack_class!r} is not one of {valid}")


VARIANTS: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add ``variant`` to ``VARIANTS`` (once per name) and return it."""
    known = VARIANTS.get(variant.name)
    if known is not None and known is not variant:
        raise SettingsError(f"variant name {variant.name!r} is already registered")
    VARIANTS[variant.name] = variant
    return variant


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sends a call: a workload (``ip`` one of its pods) or an outside address, with a principal or not."""

    workload: str | None
    ip: str
    principal: str | None
    auth: str

    @property
    def external(self) -> bool:
        """True for a caller outside the cluster (no workload)."""
        return self.workload is None


@dataclass(frozen=True)
class VariantRun:
    """What a variant's generator gets: the run's world, seed, own rng, bounds, warmup and benign rate."""

    world: World
    seed: int
    rng: random.Random
    t0: float
    t1: float
    warmup_s: float
    rate: float = 100.0
    name: str = ""
    compromised: dict[str, tuple[str, float]] = field(default_factory=dict)

    @property
    def start(self) -> float:
        """The earliest time an attack may start (the end of the warmup)."""
        return self.t0 + self.warmup_s

    def window(self, min_s: float, max_s: float) -> tuple[float, float]:
        """A random ``(start, end)`` after the warmup, lasting ``[min_s, max_s]`` s (less if the run is short)."""
        room = self.t1 - 5.0 - self.start
        length = min(self.rng.uniform(min_s, max_s), room)
        begin = self.start + self.rng.uniform(0.0, room - length)
        return begin, begin + length

    def ticks(self, rate: float, start: float, end: float) -> Iterator[float]:
        """Poisson arrival times at ``rate`` per second inside ``[start, end)``."""
        t = start
        while True:
            t += self.rng.expovariate(rate)
            if t >= end:
                return
            yield t

    def attack_id(self, k: int) -> str:
        """The ``k``-th attack id of this variant (``<variant>-<k>``, from 1)."""
        return f"{self.name}-{k}"

    def attacker(self, k: int) -> Actor:
        """The ``k``-th attacker's own user principal, calling through the gateway (``user-9xxxx``)."""
        base = random.Random(f"{self.seed}:attackers").randrange(10000)
        principal = f"user-9{(base + 500 + k) % 10000:04d}"
        return self.gateway(principal, k)

    def gateway(self, principal: str, k: int = 0) -> Actor:
        """A user principal calling through ``shop/frontend`` (pod ``k`` of it)."""
        ips = self.world.ips["shop/frontend"]
        return Actor("shop/frontend", ips[k % len(ips)], principal, "jwt")

    def service(self, workload: str, k: int = 0) -> Actor:
        """An in-cluster workload (mTLS, no principal), from pod ``k``."""
        ips = self.world.ips[workload]
        return Actor(workload, ips[k % len(ips)], None, "mtls")

    def internet_ip(self, used: set[str]) -> str:
        """A fresh public-looking client address (distinct as the data plane sees it: first, third, fourth octet)."""
        while True:
            a = self.rng.choice((31, 37, 45, 77, 79, 85, 91, 103, 109, 176, 178, 185, 188, 193))
            c, d = self.rng.randrange(1, 255), self.rng.randrange(1, 255)
            key = f"{a}.{c}.{d}"
            if key not in used:
                used.add(key)
                return f"{a}.{self.rng.randrange(1, 255)}.{c}.{d}"

    def pick(self, kind: str) -> str:
        """Any existing object of a kind (drawn with the variant's rng)."""
        pool = self.world.pool[kind]
        return pool[int(self.rng.random() * len(pool))]

    def compromise(self, workload: str, attack_id: str, since: float) -> None:
        """Mark ``workload`` compromised from ``since``: its benign service calls then carry ``attack_id``."""
        if workload not in self.compromised or self.compromised[workload][1] > since:
            self.compromised[workload] = (attack_id, since)

    def emit(self, t: float, actor: Actor, ep: Endpoint, ids: list[str], status: int, attack_id: str | None = None,
             malicious: bool = False, query: str = "", principal: str | None = None) -> SimCall:
        """One call of ``actor`` to ``ep`` (``ids[0]`` fills the path's ``{id}``; a page lists them all)."""
        raw = (ep.prefix + ids[0] + ep.suffix if ids and "{" in ep.template else ep.template) + query
        n = max(1, len(ids)) if ep.items > 1 else 1
        ok = status < 400
        sens = {k: v * n for k, v in ep.sensitive} if ok else {}
        resp = ep.response_bytes * n if ok else 150
        ms = ep.latency_ms * (0.5 + self.rng.expovariate(1.5))
        return new_call(t, actor.workload, actor.ip, actor.external, actor.principal if principal is None else principal,
                        actor.auth, ep, raw, ids, status, ep.request_bytes + 300, resp, sens, ms, self.name, attack_id,
                        malicious)


def _injector(variant: Variant, seed: int, warmup_s: float, rate: float) -> Callable[[World, float, float], Injected]:
    def inject(world: World, t0: float, t1: float) -> Injected:
        run = VariantRun(world, seed, random.Random(f"{seed}:variant:{variant.name}"), t0, t1, warmup_s, rate,
                         variant.name)
        return Injected(variant.generate(run), dict(run.compromised))

    return inject


def variant_simulator(name: str, seed: int, seconds: float, rate: float = 100.0, users: int = 2000,
                      warmup_s: float = 300.0) -> ClusterSimulator:
    """A ``ClusterSimulator`` of ``seconds`` whose calls merge benign traffic, the reporting job and the variant's.

    >>> from ingest.simulator import variant_simulator
    >>> sim = variant_simulator("bola-low-slow", seed=3, seconds=600.0, rate=20.0, users=200, warmup_s=120.0)
    >>> {c.scenario for c in sim.calls()} == {"benign", "bola-low-slow"}
    True
    """
    variant = VARIANTS.get(name)
    if variant is None:
        raise SettingsError(f"variant={name!r} is not one of {sorted(VARIANTS)}")
    if not math.isfinite(seconds) or seconds - warmup_s < 240.0 or warmup_s < 0:
        raise SettingsError(f"seconds={seconds} must leave >= 240 s after warmup_s={warmup_s}")
    return ClusterSimulator(seed=seed, users=users, benign_rate_eps=rate, duration_s=seconds,
                            inject=_injector(variant, seed, warmup_s, rate))


# modules whose import registers variants (a module adding variants adds itself here)
_VARIANT_MODULES = ("easy", "attacks_hard", "credentials", "negatives", "owasp")

for _module in _VARIANT_MODULES:
    __import__(f"ingest.simulator.{_module}")
