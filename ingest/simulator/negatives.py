"""Hard negatives: legitimate traffic that looks like an attack. Every call is benign (``attack_id=None``).

* ``support-staff``: a surge of support agents, each reading many customers'
  objects and resetting some customers' credentials (the API lets ``support-*``
  read and change anyone's);
* ``nightly-batch``: a batch job paging through every collection;
* ``rollout``: a service's new version mid-run, with new routes its users
  call and new dependencies it calls;
* ``traffic-spike``: all benign traffic x3-x6 for a minute or two;
* ``new-dependency``: a workload starting to call a service it never called,
  and keeping on;
* ``own-heavy``: users owning many objects (``World.heavy``) reading them.
"""

from __future__ import annotations

import copy
from operator import attrgetter

from ingest.simulator.benign import Benign
from ingest.simulator.call import SimCall
from ingest.simulator.catalog import AGENT_READS, BY_KEY, Endpoint
from ingest.simulator.variants import Variant, VariantRun, register

__all__ = ["NEW_DEPENDENCIES", "RELEASES"]

# a release: the service rolled out, what its users call on the new version, the new edges of its workload
RELEASES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("shop/orders", ("shop/orders GET /v2/orders/{id}",),
     ("shop/shipping GET /shipments/{id}", "identity/profiles GET /profiles/{id}/contact")),
    ("identity/profiles", ("identity/profiles GET /v2/profiles/{id}",), ("ml/feature-store GET /features/{id}",)),
    ("payments/checkout", ("payments/checkout POST /v2/checkout",),
     ("shop/shipping POST /shipments/quote", "identity/profiles GET /profiles/{id}/contact")),
)
# caller workload -> an endpoint it does not call today and may legitimately start calling
NEW_DEPENDENCIES: tuple[tuple[str, str], ...] = (
    ("shop/notifications", "shop/orders GET /orders/{id}"),
    ("ml/recommender", "shop/orders GET /orders/{id}/items"),
    ("payments/invoices", "shop/shipping GET /shipments/{id}"),
    ("ml/fraud-scorer", "payments/ledger GET /ledger/accounts/{id}"),
    ("identity/auth", "ml/fraud-scorer POST /score"),
    ("shop/carts", "payments/payment-methods GET /payment-methods/{id}"),
)
_BATCH_PAGES = ("identity/profiles GET /profiles", "shop/orders GET /orders/export", "payments/invoices GET /invoices/export",
                "identity/accounts GET /admin/users/export")
_RESETS = ("identity/accounts PUT /users/{id}/password", "identity/accounts PUT /users/{id}/email")


def _ids(run: VariantRun, ep: Endpoint) -> list[str]:
    return [run.pick(ep.kind)] if ep.kind else []


def _support(run: VariantRun) -> list[SimCall]:
    """3-8 agents (all if fewer), each working tickets at 0.1-0.5 calls/s for the whole run.

    A ticket is one customer: 2-8 reads of their objects, a credential reset 15% of
    the time (a password, sometimes the e-mail).
    """
    agents = sorted(run.world.agents)
    out: list[SimCall] = []
    for k, u in enumerate(run.rng.sample(agents, min(len(agents), run.rng.randint(3, 8)))):
        actor = run.gateway(run.world.principals[u], k)
        left, owned = 0, run.world.owned[0]
        for t in run.ticks(run.rng.uniform(0.1, 0.5), run.t0, run.t1):
            if left == 0:
                left, owned = run.rng.randint(2, 8), run.world.owned[int(run.rng.random() * len(run.world.owned))]
                if run.rng.random() < 0.15:
                    ep = BY_KEY[_RESETS[0] if run.rng.random() < 0.8 else _RESETS[1]]
                    out.append(run.emit(t, actor, ep, [owned["account"][0]], 200))
                    continue
            left -= 1
            ep = BY_KEY[AGENT_READS[int(run.rng.random() * len(AGENT_READS))]]
            out.append(run.emit(t, actor, ep, [owned[ep.kind or ""][0]], ep.ok_status))
    return out


def _nightly(run: VariantRun) -> list[SimCall]:
    """A batch job (``data/nightly-batch`` or ``data/reporting``) paging every collection once, 1-5 pages/s.

    Page size 50, 100 or 200; starts at a random time after the warmup.
    """
    workload = run.rng.choice(("data/nightly-batch", "data/reporting"))
    actor, size, rate = run.service(workload), run.rng.choice((50, 100, 200)), run.rng.uniform(1.0, 5.0)
    t, _ = run.window(60.0, 60.0)
    out: list[SimCall] = []
    for key in run.rng.sample(_BATCH_PAGES, len(_BATCH_PAGES)):
        ep = BY_KEY[key]
        for page in range(len(run.world.pool[ep.kind or ""]) // size + 1):
            t += run.rng.expovariate(rate)
            if t >= run.t1:
                return out
            ids = run.world.page(ep.kind or "", page, size)
            out.append(run.emit(t, actor, ep, ids, 200, query=f"?page={page}&size={size}"))
    return out


def _rollout(run: VariantRun) -> list[SimCall]:
    """One of ``RELEASES`` rolled out mid-run; from then on 2-8% of the benign rate goes to its new routes
    (users' own objects) and its workload calls its new dependencies at 0.3-2 calls/s."""
    service, routes, edges = run.rng.choice(RELEASES)
    span = run.t1 - run.start
    at = run.start + run.rng.uniform(0.1, 0.5) * span
    out: list[SimCall] = []
    for t in run.ticks(run.rng.uniform(0.02, 0.08) * run.rate, at, run.t1):
        ep = BY_KEY[run.rng.choice(routes)]
        u = int(run.rng.random() * len(run.world.owned))
        ids = [run.world.owned[u][ep.kind][0]] if ep.kind else []
        out.append(run.emit(t, run.gateway(run.world.principals[u], u), ep, ids, ep.ok_status))
    actor = run.service(service)
    for t in run.ticks(run.rng.uniform(0.3, 2.0), at, run.t1):
        ep = BY_KEY[run.rng.choice(edges)]
        out.append(run.emit(t, actor, ep, _ids(run, ep), ep.ok_status))
    return out


def _spike(run: VariantRun) -> list[SimCall]:
    """1-2 spikes after the warmup, 60-120 s each, adding (x3-x6 - 1) times the benign rate.

    The extra calls are the benign generator's own (users, agents, services,
    partners) on a copy of the world, relabelled ``traffic-spike``.
    """
    out: list[SimCall] = []
    for _ in range(run.rng.randint(1, 2)):
        begin, end = run.window(60.0, 120.0)
        extra = run.rate * (run.rng.uniform(3.0, 6.0) - 1.0)
        world = copy.deepcopy(run.world)
        for call in Benign(world, run.rng.randrange(1 << 30), begin, end, extra):
            call.scenario = run.name
            out.append(call)
    return out


def _new_dependency(run: VariantRun) -> list[SimCall]:
    """1-2 workloads (distinct) starting, after the warmup, to call one of ``NEW_DEPENDENCIES`` at 0.2-2 calls/s."""
    out: list[SimCall] = []
    pairs = run.rng.sample(NEW_DEPENDENCIES, run.rng.randint(1, 2))
    for k, (workload, key) in enumerate(pairs):
        ep, actor = BY_KEY[key], run.service(workload, k)
        at = run.start + run.rng.uniform(0.0, 0.5) * (run.t1 - run.start)
        for t in run.ticks(run.rng.uniform(0.2, 2.0), at, run.t1):
            out.append(run.emit(t, actor, ep, _ids(run, ep), ep.ok_status))
    return out


_HEAVY_READS = {"order": "shop/orders GET /orders/{id}", "invoice": "payments/invoices GET /invoices/{id}",
                "document": "data/documents GET /documents/{id}"}


def _own_heavy(run: VariantRun) -> list[SimCall]:
    """3 to all of ``World.heavy``'s users, each reading 30-100% of their own objects at 0.2-1.5 calls/s.

    Each reads in one session after the warmup, in id order or shuffled.
    """
    heavy = sorted(run.world.heavy)
    out: list[SimCall] = []
    for u in run.rng.sample(heavy, run.rng.randint(min(3, len(heavy)), len(heavy))):
        actor = run.gateway(run.world.principals[u], u)
        objects = [(kind, oid) for kind, ids in run.world.heavy[u].items() for oid in ids]
        objects = run.rng.sample(objects, max(1, int(len(objects) * run.rng.uniform(0.3, 1.0))))
        if run.rng.random() < 0.5:
            objects.sort(key=lambda o: (o[0], int(o[1])))
        rate = run.rng.uniform(0.2, 1.5)
        t, _ = run.window(len(objects) / rate, len(objects) / rate)
        for kind, oid in objects:
            t += run.rng.expovariate(rate)
            if t < run.t1:
                out.append(run.emit(t, actor, BY_KEY[_HEAVY_READS[kind]], [oid], 200))
    return sorted(out, key=attrgetter("time"))


for _variant in (
    Variant("support-staff", "benign", "negative", "", "support agents reading many customers' objects", _support),
    Variant("nightly-batch", "benign", "negative", "", "a batch job paging through every collection", _nightly),
    Variant("rollout", "benign", "negative", "", "a new version mid-run: new routes, new dependencies", _rollout),
    Variant("traffic-spike", "benign", "negative", "", "benign traffic x3-x6 for a minute or two", _spike),
    Variant("new-dependency", "benign", "negative", "", "a workload starting to call a new service, and staying",
            _new_dependency),
    Variant("own-heavy", "benign", "negative", "", "users reading many of their own objects", _own_heavy),
):
    register(_variant)
