"""The per-run world: who owns which object ids, which ids exist, pod ips, users' tasks and sessions.

``World(seed, users)`` is the mutable state one run of the simulator shares
between its benign traffic and its attackers: the principals (about 1% of them
support agents), each user's own objects, the dense id sequences of every
object kind, the pod ips of every calling workload, and what each user and
agent is busy with. All of it is drawn from ``random.Random(f"{seed}:world")``.

Two additions draw from rngs of their own, so the draws above (and every
stream built on them) are unchanged by them: the pod ips of ``EXTRA_WORKLOADS``
(workloads only hard variants use, e.g. a nightly batch job) and ``heavy``, a
few users owning many objects in an id range of their own (``HEAVY_FIRST_ID``;
kept out of ``pool`` and ``owned``, so benign draws never see them; the demo
API's database holds them).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from ingest.simulator.catalog import CALLS, TASK_CUM

__all__ = ["EXTRA_WORKLOADS", "FIRST_ID", "HEAVY_FIRST_ID", "MAX_ACTIVITY", "SECRETS", "World", "cumulative"]

# the first id of every object kind; each kind's ids grow densely from here
FIRST_ID = {"profile": 100000, "account": 200000, "order": 310000, "invoice": 520000, "cart": 640000,
            "document": 730000, "payment_method": 850000}
SECRETS = ["jwt-signing-key", "db-password", "psp-api-key", "smtp-password", "kafka-sasl", "s3-credentials"]
MAX_ACTIVITY = 10.0  # cap of a user's lognormal activity weight (mean 1.65)
# workloads that only hard variants run (no benign share in ``CALLS``); pods in 10.244.100+.x
EXTRA_WORKLOADS = ("data/nightly-batch",)
# heavy users' objects: an id range per kind far above the dense sequences (and below the demo API's 9,000,000)
HEAVY_FIRST_ID = {"order": 5_100_000, "invoice": 5_200_000, "document": 5_300_000}
_HEAVY_USERS, _HEAVY_OBJECTS = (5, 12), (30, 200)


def cumulative(weights: Sequence[float]) -> list[float]:
    """Running sums of ``weights`` (for ``bisect`` draws)."""
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


class World:
    """Mutable state of one run: who owns which object ids, pod ips, agents' tickets."""

    __slots__ = ("rng", "principals", "owned", "focus", "task", "logged_in", "pool", "exists", "next_id", "user_cum",
                 "agents", "tickets", "ips", "heavy")

    def __init__(self, seed: int, users: int) -> None:
        rng = random.Random(f"{seed}:world")
        self.rng = rng
        self.next_id = dict(FIRST_ID)
        self.pool: dict[str, list[str]] = {k: [] for k in FIRST_ID}
        self.pool["secret"] = list(SECRETS)
        self.exists: set[str] = set()
        self.agents = {u for u in range(users) if rng.random() < 0.01} or {0}
        self.principals = [f"support-{u:05d}" if u in self.agents else f"user-{u:05d}" for u in range(users)]
        self.owned = [self._own(rng) for _ in range(users)]
        self.focus: list[dict[str, str]] = [{} for _ in range(users)]
        self.task = [bisect_right(TASK_CUM, rng.random()) for _ in range(users)]
        self.logged_in = [-math.inf] * users
        self.tickets: dict[int, list[Any]] = {}
        weights = [1.0 if u in self.agents else min(rng.lognormvariate(0.0, 1.0), MAX_ACTIVITY) for u in range(users)]
        self.user_cum = cumulative(weights)
        self.ips = {w: [f"10.244.{i + 1}.{rng.randrange(2, 250)}" for _ in range(rng.randint(2, 3))]
                    for i, w in enumerate(sorted(CALLS))}
        extra = random.Random(f"{seed}:extra-pods")
        self.ips.update({w: [f"10.244.{100 + i}.{extra.randrange(2, 250)}" for _ in range(2)]
                         for i, w in enumerate(EXTRA_WORKLOADS)})
        self.heavy = self._heavy(random.Random(f"{seed}:heavy"), users)

    def _heavy(self, rng: random.Random, users: int) -> dict[int, dict[str, list[str]]]:
        """A few ordinary users owning many orders, invoices and documents, their ids interleaved."""
        candidates = [u for u in range(users) if u not in self.agents]
        chosen = rng.sample(candidates, min(len(candidates), rng.randint(*_HEAVY_USERS)))
        slots = [(u, kind) for u in chosen for kind in HEAVY_FIRST_ID for _ in range(rng.randint(*_HEAVY_OBJECTS) // 3)]
        rng.shuffle(slots)  # interleaved: one user's ids are dense but not contiguous
        heavy: dict[int, dict[str, list[str]]] = {u: {kind: [] for kind in HEAVY_FIRST_ID} for u in chosen}
        next_id = dict(HEAVY_FIRST_ID)
        for u, kind in slots:
            next_id[kind] += 1 + int(rng.random() * 2)
            oid = str(next_id[kind])
            heavy[u][kind].append(oid)
            self.exists.add(oid)
        return heavy

    def new_id(self, kind: str) -> str:
        """Allocate the next id of a kind (dense sequences with small gaps, as databases do)."""
        n = self.next_id[kind] + 1 + int(self.rng.random() * 3)
        self.next_id[kind] = n
        oid = str(n)
        self.pool[kind].append(oid)
        self.exists.add(oid)
        return oid

    def _own(self, rng: random.Random) -> dict[str, list[str]]:
        counts = {"profile": 1, "account": 1, "cart": 1, "order": rng.choice((1, 1, 2, 2, 3, 4)),
                  "invoice": rng.choice((1, 1, 2, 3)), "payment_method": rng.choice((1, 1, 2)),
                  "document": rng.choice((1, 1, 2, 3))}
        return {kind: [self.new_id(kind) for _ in range(n)] for kind, n in counts.items()}

    def random_id(self, kind: str) -> str:
        """Any existing object of a kind (another user's, for services and agents)."""
        p = self.pool[kind]
        return p[int(self.rng.random() * len(p))]

    def page(self, kind: str, page: int, size: int) -> list[str]:
        """The ids on one page of a kind's listing."""
        p = self.pool[kind]
        start = (page * size) % max(1, len(p) - size)
        return p[start:start + size]
