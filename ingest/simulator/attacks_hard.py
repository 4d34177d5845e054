"""Hard attack variants: low-and-slow and distributed BOLA, paged exfiltration, a compromised exporter, BFLA.

Every parameter is drawn from a range with the variant's own rng (see each
generator's docstring); statuses are the simulator's model of the demo API's
answer (invoices check no owner, so a foreign invoice leaks; orders, profiles
and documents answer 403 to a foreign user; admin deletes answer 403 to users;
``/admin/users/export`` and ``PUT /users/{id}/email`` lack their checks).
"""

from __future__ import annotations

from ingest.simulator.call import SimCall
from ingest.simulator.catalog import BY_KEY, CALLS, PASTE, Endpoint
from ingest.simulator.variants import Actor, Variant, VariantRun, register

__all__ = ["BOLA_TARGETS", "PRIVILEGED"]

# BOLA targets: endpoint key -> does the API check the owner (403) or not (the object leaks, 200)
BOLA_TARGETS: dict[str, bool] = {
    "payments/invoices GET /invoices/{id}": False,
    "shop/orders GET /orders/{id}": True,
    "identity/profiles GET /profiles/{id}": True,
    "data/documents GET /documents/{id}": True,
}
# privileged endpoints a compromised workload may export from (object kind, page size or 0)
PRIVILEGED = ("identity/profiles GET /customers/{id}/export", "shop/orders GET /orders/export",
              "payments/invoices GET /invoices/export", "identity/accounts GET /admin/users/export",
              "payments/ledger-admin GET /admin/balances", "identity/secrets-broker GET /secrets/{name}")
_COMPROMISABLE = ("ml/recommender", "shop/carts", "shop/notifications", "ml/fraud-scorer", "payments/checkout")
_BROWSE = ("shop/catalog GET /products", "shop/catalog GET /search")
_PAGED = ("identity/profiles GET /profiles", "payments/invoices GET /invoices/export",
          "shop/orders GET /orders/export", "identity/accounts GET /admin/users/export")


def _foreign(run: VariantRun, ep: Endpoint, oid: str, checks_owner: bool) -> int:
    if oid not in run.world.exists:
        return 404
    return 403 if checks_owner else ep.ok_status


def _browse(run: VariantRun, actor: Actor, attack_id: str, rate: float, start: float, end: float) -> list[SimCall]:
    """An attacker's ordinary calls (catalog browsing): its attack id, ``malicious=False``."""
    eps = [BY_KEY[k] for k in _BROWSE]
    return [run.emit(t, actor, eps[int(run.rng.random() * 2)], [], 200, attack_id, query="?q=tent")
            for t in run.ticks(rate, start, end)]


def _low_slow(run: VariantRun) -> list[SimCall]:
    """1-3 users each reading a foreign object every 30-90 s (rate uniform in [1/90, 1/30]) to the end of the run.

    The first read is at the attacker's start (so even a short run has one), the
    rest Poisson. Targets: 1-2 of ``BOLA_TARGETS``; ids walked upward from a
    random one or drawn at random (per attacker); plus catalog browsing at
    [1/40, 1/8] calls/s.
    """
    out: list[SimCall] = []
    for k in range(1, 1 + run.rng.randint(1, 3)):
        actor, aid = run.attacker(k), run.attack_id(k)
        start, end = run.start + run.rng.uniform(0.0, 60.0), run.t1 - run.rng.uniform(1.0, 30.0)
        keys = run.rng.sample(sorted(BOLA_TARGETS), run.rng.randint(1, 2))
        walk, cursor = run.rng.random() < 0.5, {key: int(run.pick(BY_KEY[key].kind or "")) for key in keys}
        for t in [start, *run.ticks(run.rng.uniform(1 / 90, 1 / 30), start, end)]:
            key = keys[int(run.rng.random() * len(keys))]
            ep = BY_KEY[key]
            cursor[key] += 1
            oid = str(cursor[key]) if walk else run.pick(ep.kind or "")
            out.append(run.emit(t, actor, ep, [oid], _foreign(run, ep, oid, BOLA_TARGETS[key]), aid, True))
        out += _browse(run, actor, aid, run.rng.uniform(1 / 40, 1 / 8), start, end)
    return out


def _distributed(run: VariantRun) -> list[SimCall]:
    """20-60 principals enumerating one endpoint's ids, each a handful (3-8) of the next sequential ids.

    The campaign lasts 5-20 min; each principal's reads are 1-10 s apart at a
    random time in it; 30-70% of the principals sit behind 1-2 shared client
    addresses (calling the API directly), the rest come through the gateway.
    Attack ids: one per principal.
    """
    key = run.rng.choice(sorted(BOLA_TARGETS))
    ep, out = BY_KEY[key], []
    n, cursor = run.rng.randint(20, 60), int(run.pick(BY_KEY[key].kind or ""))
    begin, end = run.window(300.0, 1200.0)
    used: set[str] = set()
    shared = [run.internet_ip(used) for _ in range(run.rng.randint(1, 2))]
    behind = run.rng.uniform(0.3, 0.7)
    for k in range(1, n + 1):
        actor = run.attacker(k)
        if run.rng.random() < behind:
            actor = Actor(None, shared[k % len(shared)], actor.principal, "jwt")
        t = run.rng.uniform(begin, max(begin, end - 90.0))
        for _ in range(run.rng.randint(3, 8)):
            cursor += 1
            oid = str(cursor)
            out.append(run.emit(t, actor, ep, [oid], _foreign(run, ep, oid, BOLA_TARGETS[key]), run.attack_id(k), True))
            t += run.rng.uniform(1.0, 10.0)
    return out


def _paged_actor(run: VariantRun, k: int) -> Actor:
    mode = run.rng.randrange(3)
    principal = run.attacker(k).principal
    if mode == 0:  # a stolen token replayed from a notebook pod
        return Actor("ml/notebook", run.world.ips["ml/notebook"][0], principal, "jwt")
    if mode == 1:
        return run.attacker(k)
    return Actor(None, run.internet_ip(set()), principal, "jwt")


def _paged(run: VariantRun) -> list[SimCall]:
    """1-2 actors paging a collection in small pages (5-25 records) slowly, 400-3,000 records in all.

    Each runs from just after the warmup to near the end, pages evenly spread
    (jittered); the collection is one of ``_PAGED``; an actor on ``ml/notebook``
    uploads to a paste site at the end half the time.
    """
    out: list[SimCall] = []
    for k in range(1, 1 + run.rng.randint(1, 2)):
        actor, aid = _paged_actor(run, k), run.attack_id(k)
        ep = BY_KEY[run.rng.choice(_PAGED)]
        size, total = run.rng.randint(5, 25), run.rng.randint(400, 3000)
        start, end = run.start + run.rng.uniform(0.0, 120.0), run.t1 - run.rng.uniform(5.0, 60.0)
        pages, page = max(1, total // size), run.rng.randrange(0, 20)
        step = (end - start) / pages
        for i in range(pages):
            t = start + (i + run.rng.uniform(0.1, 0.9)) * step
            ids = run.world.page(ep.kind or "", page + i, size)
            out.append(run.emit(t, actor, ep, ids, 200, aid, True, query=f"?page={page + i}&size={size}"))
        if actor.workload == "ml/notebook" and run.rng.random() < 0.5:
            out.append(run.emit(end + 1.0, Actor("ml/notebook", actor.ip, None, "none"), PASTE, [], 201, aid, True))
    return out


def _privileged_targets(run: VariantRun, workload: str) -> list[Endpoint]:
    deps = {k.split(" ")[0] for k in CALLS[workload][1]} | {workload}
    allowed = [k for k in PRIVILEGED if k.split(" ")[0] not in deps]
    return [BY_KEY[k] for k in run.rng.sample(allowed, run.rng.randint(1, 2))]


def _privileged_ids(run: VariantRun, ep: Endpoint) -> tuple[list[str], str]:
    if ep.kind == "secret":
        return [run.pick("secret")], ""
    if ep.items > 1:
        page = run.rng.randrange(50)
        return run.world.page(ep.kind or "", page, ep.items), f"?page={page}"
    return ([run.pick(ep.kind)] if ep.kind else []), ""


def _now_and_then(run: VariantRun, start: float, end: float) -> list[float]:
    """3-8 times in ``[start, end)``, at most one per 30 s on average (never fewer than 3), one in each equal slice."""
    n = run.rng.randint(3, max(3, min(8, int((end - start) / 30.0))))
    step = (end - start) / n
    return [start + (i + run.rng.random()) * step for i in range(n)]


def _compromised_export(run: VariantRun) -> list[SimCall]:
    """1-2 compromised workloads each calling 1-2 privileged export/admin endpoints now and then, to the end of the run.

    Each starts in the first 30% of the time after the warmup and ends 1-10 s
    before the end of the run; it makes 3-8 privileged calls (at most one per
    30 s of its attack period on average), one at a random point of each equal
    slice of the period: 3-7 calls in a 540 s run, one every few minutes in a
    45 min run. The workload keeps its ordinary calls (the benign stream's,
    tagged with the attack id from its first privileged call).
    """
    out: list[SimCall] = []
    workloads = run.rng.sample(_COMPROMISABLE, run.rng.randint(1, 2))
    for k, workload in enumerate(workloads, 1):
        aid, targets, actor = run.attack_id(k), _privileged_targets(run, workload), run.service(workload, k)
        start = run.start + run.rng.uniform(0.0, 0.3 * (run.t1 - run.start))
        times = _now_and_then(run, start, run.t1 - run.rng.uniform(1.0, 10.0))
        for t in times:
            ep = targets[int(run.rng.random() * len(targets))]
            ids, query = _privileged_ids(run, ep)
            out.append(run.emit(t, actor, ep, ids, ep.ok_status, aid, True, query=query))
        run.compromise(workload, aid, times[0])
    return out


def _admin_call(run: VariantRun, own: str) -> tuple[Endpoint, list[str], int, str]:
    """One admin function with someone else's id: (endpoint, ids, modelled status, query)."""
    r = run.rng.random()
    if r < 0.25:
        return BY_KEY["identity/accounts DELETE /admin/users/{id}"], [run.pick("account")], 403, ""
    if r < 0.45:
        ep, page = BY_KEY["identity/accounts GET /admin/users/export"], run.rng.randrange(20)
        return ep, run.world.page("account", page, ep.items), 200, f"?page={page}"
    if r < 0.7:
        other = run.pick("account")
        return BY_KEY["identity/accounts PUT /users/{id}/password"], [other], 200 if other == own else 403, ""
    if r < 0.85:
        return BY_KEY["identity/accounts PUT /users/{id}/email"], [run.pick("account")], 200, ""
    return BY_KEY["shop/orders DELETE /admin/orders/{id}"], [run.pick("order")], 403, ""


def _bfla(run: VariantRun) -> list[SimCall]:
    """1-3 users calling admin-only functions (delete, export, someone else's credentials) for 5-15 min.

    Admin calls at [1/60, 1/10] per second (the first at the attacker's start, so
    even a short run has one), ordinary browsing at [1/30, 1/5].
    """
    out: list[SimCall] = []
    for k in range(1, 1 + run.rng.randint(1, 3)):
        actor, aid = run.attacker(k), run.attack_id(k)
        start, end = run.window(300.0, 900.0)
        for t in [start, *run.ticks(run.rng.uniform(1 / 60, 1 / 10), start, end)]:
            ep, ids, status, query = _admin_call(run, "")
            out.append(run.emit(t, actor, ep, ids, status, aid, True, query=query))
        out += _browse(run, actor, aid, run.rng.uniform(1 / 30, 1 / 5), start, end)
    return out


for _variant in (
    Variant("bola-low-slow", "bola", "attack", "API1:2023",
            "a foreign object every 30-90 s for the rest of the run, among ordinary browsing", _low_slow),
    Variant("bola-distributed", "bola", "attack", "API1:2023",
            "sequential ids of one endpoint spread over 20-60 principals, some behind one address", _distributed),
    Variant("exfiltration-paged", "exfiltration", "attack", "API3:2023",
            "small pages of a PII collection, slowly, 400-3,000 records over the run", _paged),
    Variant("lateral-compromised-export", "lateral_movement", "attack", "API5:2023",
            "a compromised workload calling a privileged export now and then (3-8 calls), its normal calls continuing",
            _compromised_export),
    Variant("bfla", "bfla", "attack", "API5:2023",
            "an end user calling admin-only functions: delete, export, another user's credentials", _bfla),
):
    register(_variant)
