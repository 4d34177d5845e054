"""Generators of the OWASP variants on objects, third parties and deception: API3, API10, honeytokens.

Same contract as ``owasp_flows``: each public function takes a run and
returns the labelled calls of ``owasp_catalog.PER_VARIANT`` attackers, each with its own
parameters drawn from ranges with its own rng; cover calls are
``malicious=False``; every request is one the demo API answers. What the demo
API holds for these variants (the leaky query flags, the third-party feed
items, the planted honeytokens) is in ``owasp_catalog``. Pure.
"""

from __future__ import annotations

import random
from typing import Any

from ingest.simulator.call import SimCall
from ingest.simulator.catalog import CALLS, Endpoint
from ingest.simulator.owasp_catalog import (
    FEED_ITEMS,
    HONEYTOKENS,
    LEAK_FLAGS,
    OWASP_BY_KEY,
    Attacker,
    OwaspCall,
    Caller,
    RunLike,
    attackers,
    browse,
    encode,
    endpoint,
    json_body,
    pick,
    raw_of,
)
from ingest.simulator.world import World

__all__ = ["data_exposure", "honeytoken", "mass_assignment", "unsafe_consumption"]


def _user(world: World, rng: random.Random) -> Caller:
    return Caller.user(world, rng)


# -- API3 broken object property level authorization: mass assignment -------------------------------------

# form -> (endpoint key, the body a client sends, the privileged properties it must never set)
_FORMS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "signup": ("identity/accounts POST /accounts", {"email": "new.customer@mail.example.net", "password": "s3cret-Passw0rd", "name": "New Customer"},
               {"role": "admin", "is_admin": True, "verified": True, "credit": 10000, "plan": "enterprise", "tenant_id": "t-0001"}),
    "order": ("shop/orders POST /orders", {"items": [{"sku": "SKU-1042", "qty": 1}]},
              {"price": 0.01, "total": 0, "status": "paid", "discount": 100, "owner": "user-00012"}),
    "document": ("data/documents POST /documents", {"name": "note.txt", "content": "hello"},
                 {"owner": "user-00031", "acl": "public", "owner_id": 100023, "retention": "forever"}),
    "checkout": ("payments/checkout POST /checkout", {"cart_id": "c-1", "payment_method": "pm_4f1a"},
                 {"amount": 0.01, "discount_pct": 100, "currency": "XXX", "captured": True}),
    "profile": ("identity/profiles PATCH /profiles/{id}", {"phone": "+1 415 555 0199"},
                {"role": "admin", "is_admin": True, "email_verified": True, "tenant_id": "t-0001"}),
}


def mass_assignment(run: RunLike) -> list[SimCall]:
    """Create and update bodies carrying properties a client may not set (role, is_admin, price, owner...)."""
    return attackers(run, "mass-assignment", _user, 60, 240, _assign)


def _assign(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    forms = rng.sample(sorted(_FORMS), rng.randint(2, len(_FORMS)))
    extra = {f: dict(rng.sample(sorted(_FORMS[f][2].items()), rng.randint(1, 3))) for f in forms}
    rate, ordinary = rng.uniform(0.2, 2.0), rng.uniform(0.1, 0.5)
    out: list[OwaspCall] = []
    for t in a.ticks(rate):
        form = pick(rng, forms)
        key, body, _ = _FORMS[form]
        ep = endpoint(key)
        honest = rng.random() < ordinary
        oid = pick(rng, a.ids(ep.kind)) if "{" in ep.template and ep.kind else ""
        sent = body if honest else {**body, **extra[form]}
        out.append(a.call(t, ep, raw_of(ep, oid), (oid,) if oid else (), body=json_body(sent), malicious=not honest))
    return out


# -- API3 excessive data exposure -------------------------------------------------------------------------

_ACCOUNT_READERS = ("identity/auth", "payments/ledger", "identity/profiles", "ml/fraud-scorer")


def _reader(world: World, rng: random.Random) -> Caller:
    if rng.random() < 0.5:
        return Caller.workload_of(world, rng.choice(_ACCOUNT_READERS))
    return Caller.user(world, rng)


def data_exposure(run: RunLike) -> list[SimCall]:
    """Reads with a query flag that makes an endpoint start returning password hashes, tokens and SSNs."""
    return attackers(run, "excessive-data-exposure", _reader, 60, 240, _expose)


def _expose(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    # a workload reads accounts on its usual edge; a user reads invoices (the route checks no owner)
    key = "identity/accounts GET /accounts/{id}" if a.caller.workload != "shop/frontend" else "payments/invoices GET /invoices/{id}"
    ep, flag = endpoint(key), rng.choice(sorted(LEAK_FLAGS))
    rate, share = rng.uniform(0.5, 5.0), rng.uniform(0.5, 1.0)
    out: list[OwaspCall] = []
    for t in a.ticks(rate):
        oid, leaky = pick(rng, a.ids(ep.kind or "")), rng.random() < share
        out.append(a.call(t, ep, raw_of(ep, oid, flag if leaky else ""), (oid,), malicious=leaky))
    return out


# -- API10 unsafe consumption of APIs ---------------------------------------------------------------------

_CONSUMERS = ("shop/orders", "ml/recommender", "payments/checkout", "payments/invoices")
_FEEDS = ("api.partner-feed.example.com GET /v2/feed", "api.geo.example.com GET /v1/geocode")


def _consumer(world: World, rng: random.Random) -> Caller:
    return Caller.workload_of(world, rng.choice(_CONSUMERS))


def unsafe_consumption(run: RunLike) -> list[SimCall]:
    """A service fetching a third-party API whose answers carry payloads, then passing them on to internal APIs."""
    return attackers(run, "unsafe-consumption", _consumer, 60, 240, _consume)


def _redirect_target(url: str) -> tuple[Endpoint, str]:
    """The call a service makes when it follows a third party's link (metadata or an internal service)."""
    host, _, path = url.removeprefix("http://").partition("/")
    labels = host.split(".")
    if len(labels) >= 3 and labels[2] == "svc":
        service = f"{labels[1]}/{labels[0]}"
        for key in (f"{service} GET /{path}", f"{service} GET /secrets/{{name}}"):
            found = OWASP_BY_KEY.get(key) or _maybe(key)
            if found is not None:
                return found, "/" + path
    return Endpoint(host, None, "GET", "/" + path, ok_status=404), "/" + path


def _maybe(key: str) -> Endpoint | None:
    try:
        return endpoint(key)
    except KeyError:
        return None


def _consume(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    assert a.caller.workload is not None
    targets = [endpoint(k) for k in CALLS[a.caller.workload][1] if not endpoint(k).external]
    feed, poisoned = OWASP_BY_KEY[pick(rng, _FEEDS)], rng.uniform(0.2, 0.8)
    delay, param = rng.uniform(0.05, 2.0), rng.choice(("q", "note", "ref", "filter"))
    bad = [i for i, (kind, _) in enumerate(FEED_ITEMS) if kind != "clean"]
    kinds = set(rng.sample(sorted({FEED_ITEMS[i][0] for i in bad}), rng.randint(1, 5)))
    bad = [i for i in bad if FEED_ITEMS[i][0] in kinds]
    clean = [i for i, (kind, _) in enumerate(FEED_ITEMS) if kind == "clean"]
    out: list[OwaspCall] = []
    for t in a.ticks(rng.uniform(0.2, 2.0)):
        poison = rng.random() < poisoned
        item = pick(rng, bad if poison else clean)
        out.append(a.call(t, feed, f"{feed.template}?item={item}&since={int(t)}", malicious=poison))
        if poison:
            out += _pass_on(a, t + delay * rng.uniform(0.5, 1.5), item, targets, param)
    return out


def _pass_on(a: Attacker, t: float, item: int, targets: list[Endpoint], param: str) -> list[OwaspCall]:
    """What the consuming service does with a poisoned answer: follow its link, or forward its text."""
    kind, value = FEED_ITEMS[item]
    if kind == "redirect":
        ep, raw = _redirect_target(value)
        return [a.call(t, ep, raw)]
    out: list[OwaspCall] = []
    for n in range(a.rng.randint(1, 3)):
        ep = pick(a.rng, targets)
        oid = pick(a.rng, a.ids(ep.kind)) if ep.kind and "{" in ep.template else ""
        if ep.method == "GET":
            out.append(a.call(t + 0.01 * n, ep, raw_of(ep, oid, f"{param}={encode(value)}"), (oid,) if oid else ()))
        else:
            body = json_body({"event": "catalog.sync", "description": value})
            out.append(a.call(t + 0.01 * n, ep, raw_of(ep, oid), (oid,) if oid else (), body=body))
    return out


# -- deception: honeytokens -------------------------------------------------------------------------------

def _holder(world: World, rng: random.Random) -> Caller:
    return Caller.internet(rng) if rng.random() < 0.6 else Caller.user(world, rng)


def honeytoken(run: RunLike) -> list[SimCall]:
    """Use of a planted API key, a planted account's login, or a planted object id, amid ordinary browsing."""
    return attackers(run, "honeytoken", _holder, 30, 240, _lure)


_KEY_TARGETS = ("shop/orders GET /orders/export", "identity/accounts GET /v1/admin/export",
                "payments/ledger-admin GET /admin/balances", "shop/catalog GET /products")
_OBJECT_ROUTES = {"payments/invoices": "payments/invoices GET /invoices/{id}",
                  "data/documents": "data/documents GET /documents/{id}", "shop/orders": "shop/orders GET /orders/{id}"}


def _lure(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    choices = ("api_key", "login", "object") if a.caller.principal is None else ("object",)
    forms = rng.sample(choices, rng.randint(1, len(choices)))
    times = sorted(rng.uniform(a.start, a.end) for _ in range(rng.randint(1, 8)))
    out = [browse(a, rng.uniform(a.start, a.end)) for _ in range(rng.randint(0, 20))]
    creds = {c["kind"]: c for c in HONEYTOKENS["credentials"]}
    for t in times:
        form = pick(rng, forms)
        if form == "api_key":
            ep = endpoint(pick(rng, _KEY_TARGETS))
            out.append(a.call(t, ep, ep.template, headers=(("x-api-key", creds["api_key"]["value"]),)))
        elif form == "login":
            cred, ep = creds["password"], endpoint("identity/auth POST /login")
            out.append(a.call(t, ep, ep.template, body=json_body({"username": cred["account"], "password": cred["value"]})))
        else:
            planted = pick(rng, HONEYTOKENS["object_ids"])
            ep = endpoint(_OBJECT_ROUTES[planted["service"]])
            out.append(a.call(t, ep, raw_of(ep, planted["id"]), (planted["id"],)))
    return sorted(out, key=lambda c: c.time)
