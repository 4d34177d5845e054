"""Generators of the OWASP variants on flows and surface: API4, API6, API7, API8, API9.

Each public function takes a run (``owasp_catalog.RunLike``: world, seed, rng,
t0, t1, warm-up) and returns the calls of ``owasp_catalog.PER_VARIANT`` attackers, each with
parameters of its own drawn from ranges with its own rng (drawn from the
run's), so two seeds never share a setting. Every call carries its ground
truth (``scenario`` = the variant name, ``attack_id`` = name-k); cover traffic
(ordinary catalog reads, legitimate URLs) is labelled ``malicious=False``.
Every request is one the demo API answers (``deploy/runtime/demoapi.py``).
Pure.
"""

from __future__ import annotations

import itertools
import random

from ingest.simulator.call import SimCall
from ingest.simulator.catalog import Endpoint, build_catalog
from ingest.simulator.owasp_catalog import (
    CATEGORIES,
    DEBUG_KEYS,
    OWASP_BY_KEY,
    PRODUCT_COUNT,
    PRODUCT_FIRST,
    SHADOW_KEYS,
    Attacker,
    OwaspCall,
    Caller,
    RunLike,
    attackers,
    big_body,
    browse,
    encode,
    endpoint,
    json_body,
    pick,
    raw_of,
)
from ingest.simulator.world import World

__all__ = ["bulk_purchase", "misconfiguration", "resource_consumption", "scraping", "shadow_api",
           "ssrf", "zombie_api"]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_SORTS = ("price", "price_desc", "newest", "rating")


def _user(world: World, rng: random.Random) -> Caller:
    return Caller.user(world, rng)


def _user_or_internet(world: World, rng: random.Random) -> Caller:
    return Caller.internet(rng) if rng.random() < 0.3 else Caller.user(world, rng)


# -- API6 sensitive business flows ------------------------------------------------------------------------

def scraping(run: RunLike) -> list[SimCall]:
    """Walk the catalog systematically: category pages in order, product ids in sequence, search prefixes aa, ab..."""
    return attackers(run, "scraping", _user_or_internet, 60, 240, _scrape)


def _scrape(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    rate, size, sort = rng.uniform(3.0, 12.0), rng.choice((20, 50, 100, 200)), rng.choice(_SORTS)
    detail = 0.0 if a.caller.principal is None else rng.uniform(0.0, 0.6)  # details need a login
    search = rng.uniform(0.0, 0.3)
    cats, pages = rng.sample(CATEGORIES, rng.randint(2, len(CATEGORIES))), rng.randint(5, 40)
    pid, step = rng.randrange(PRODUCT_COUNT), rng.choice((1, 1, 1, 2, 3))
    listing, finder, details = endpoint("shop/catalog GET /products"), endpoint("shop/catalog GET /search"), OWASP_BY_KEY["shop/catalog GET /products/{id}"]
    out: list[OwaspCall] = []
    n_page = n_term = 0
    for t in a.ticks(rate):
        r = rng.random()
        if r < detail:
            pid = (pid + step) % PRODUCT_COUNT
            oid = str(PRODUCT_FIRST + pid)
            out.append(a.call(t, details, raw_of(details, oid), (oid,)))
        elif r < detail + search:
            q = _LETTERS[(n_term // 26) % 26] + _LETTERS[n_term % 26]
            n_term += 1
            out.append(a.call(t, finder, f"/search?q={q}&page=1&size={size}"))
        else:
            cat, page = cats[(n_page // pages) % len(cats)], 1 + n_page % pages
            n_page += 1
            out.append(a.call(t, listing, f"/products?category={cat}&page={page}&size={size}&sort={sort}"))
    return out


_SKUS = ("LTD-SNEAKER-0917", "LTD-CONSOLE-2031", "LTD-TICKET-FINAL", "LTD-GPU-5090", "LTD-VINYL-0042")
_STREETS = ("Maple Street", "Harbour Road", "Linden Allee", "Rue des Lilas", "Elm Avenue", "Kings Road")


def bulk_purchase(run: RunLike) -> list[SimCall]:
    """One account ordering and reserving limited items far beyond any customer, shipping to many addresses."""
    return attackers(run, "bulk-purchase", _user, 60, 300, _buy)


def _buy(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    rate, skus, most = rng.uniform(0.5, 4.0), rng.sample(_SKUS, rng.randint(1, 3)), rng.randint(2, 10)
    reserve, checkout = rng.uniform(0.0, 0.5), rng.uniform(0.1, 0.4)
    ship_to = [f"{rng.randint(1, 400)} {rng.choice(_STREETS)}" for _ in range(rng.randint(1, 12))]
    order, hold, pay = endpoint("shop/orders POST /orders"), OWASP_BY_KEY["shop/orders POST /reservations"], endpoint("payments/checkout POST /checkout")
    out: list[OwaspCall] = []
    for t in a.ticks(rate):
        r, sku, qty = rng.random(), pick(rng, skus), rng.randint(1, most)
        if r < reserve:
            out.append(a.call(t, hold, hold.template, body=json_body({"sku": sku, "qty": qty})))
        elif r < reserve + checkout:
            body = {"payment_method": f"pm_{rng.randrange(16**8):08x}", "amount": round(qty * rng.uniform(80, 900), 2), "currency": "EUR"}
            out.append(a.call(t, pay, pay.template, body=json_body(body)))
        else:
            body = {"items": [{"sku": sku, "qty": qty}], "ship_to": pick(rng, ship_to)}
            out.append(a.call(t, order, order.template, body=json_body(body)))
    return out


# -- API4 unrestricted resource consumption ---------------------------------------------------------------

_EXPENSIVE = ("*a*e*", "(a|e|i)*(n|s)+", "%%%", "a" * 200, "*" * 64, "boots OR tent OR * OR *~2")


def resource_consumption(run: RunLike) -> list[SimCall]:
    """Huge page sizes, costly searches, very large bodies, at a high rate."""
    return attackers(run, "resource-consumption", _user, 30, 120, _consume)


def _consume(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    rate, size = rng.uniform(15.0, 60.0), rng.choice((5000, 10000, 50000, 100000))
    big, search = rng.uniform(0.01, 0.04), rng.uniform(0.1, 0.6)  # big bodies cost ~70 ms each offline
    bodies = [rng.choice((262_144, 524_288, 1_048_576, 2_097_152)) for _ in range(2)]
    pages = [endpoint("shop/orders GET /orders"), endpoint("shop/catalog GET /products")]
    finder, upload = endpoint("shop/catalog GET /search"), endpoint("data/documents POST /documents")
    out: list[OwaspCall] = []
    for n, t in enumerate(a.ticks(rate)):
        r = rng.random()
        if r < big:
            out.append(a.call(t, upload, upload.template, body=big_body(pick(rng, bodies))))
        elif r < big + search:
            out.append(a.call(t, finder, f"/search?q={encode(pick(rng, list(_EXPENSIVE)))}&size={size}&fuzzy=2"))
        else:
            ep = pick(rng, pages)
            out.append(a.call(t, ep, f"{ep.template}?page={n % 500}&size={size}"))
    return out


# -- API7 server-side request forgery ---------------------------------------------------------------------

_SSRF: dict[str, tuple[str, ...]] = {
    "metadata": ("http://169.254.169.254/latest/meta-data/iam/security-credentials/",
                 "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
                 "http://169.254.170.2/v2/credentials"),
    "loopback": ("http://localhost:8080/admin", "http://127.0.0.1:2379/v2/keys/?recursive=true", "http://[::1]:9200/_cat/indices"),
    "cluster": ("http://kubernetes.default.svc.cluster.local/api/v1/namespaces/kube-system/secrets",
                "http://secrets-broker.identity.svc.cluster.local/secrets/db-password", "http://10.96.0.10:9153/metrics",
                "http://ledger-admin.payments.svc.cluster.local/admin/balances"),
    "file": ("file:///etc/passwd", "file:///var/run/secrets/kubernetes.io/serviceaccount/token", "file:///proc/self/environ"),
    "scheme": ("gopher://127.0.0.1:6379/_FLUSHALL", "dict://localhost:11211/stats"),
    "obfuscated": ("http://2852039166/latest/meta-data/", "http://0xA9FEA9FE/latest/", "http://[::ffff:a9fe:a9fe]/",
                   "http://127.1/", "http://0177.0.0.1/"),
}
_LEGIT_URLS = ("https://hooks.partner.example.com/shop/events", "https://cdn.example-images.com/p/4411.jpg",
               "https://files.example-supplier.com/catalog.csv")


def ssrf(run: RunLike) -> list[SimCall]:
    """URLs to metadata, loopback, cluster services and file:// in a webhook, an import and an image proxy."""
    return attackers(run, "ssrf", _user, 60, 200, _forge)


def _forge(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    rate, legit = rng.uniform(0.3, 3.0), rng.uniform(0.05, 0.35)
    families = rng.sample(sorted(_SSRF), rng.randint(2, len(_SSRF)))
    forms = rng.sample(("webhook", "import", "proxy"), rng.randint(1, 3))
    out: list[OwaspCall] = []
    for t in a.ticks(rate):
        honest = rng.random() < legit
        url = pick(rng, list(_LEGIT_URLS if honest else _SSRF[pick(rng, families)]))
        form = pick(rng, forms)
        if form == "webhook":
            ep, raw, body = OWASP_BY_KEY["shop/notifications POST /webhooks"], "/webhooks", json_body({"url": url, "events": ["order.created"]})
        elif form == "import":
            ep, raw, body = OWASP_BY_KEY["data/documents POST /documents/import"], "/documents/import", json_body({"source_url": url, "name": "catalog.csv"})
        else:
            ep, raw, body = OWASP_BY_KEY["shop/catalog GET /images/proxy"], f"/images/proxy?url={encode(url)}&w=200", None
        out.append(a.call(t, ep, raw, body=body, malicious=not honest))
    return out


# -- API8 security misconfiguration ----------------------------------------------------------------------

_PROBES = ("/actuator/env", "/actuator/health", "/actuator/heapdump", "/actuator/mappings", "/debug/pprof/heap",
           "/debug/pprof/goroutine", "/debug/vars", "/.env", "/server-status", "/swagger.json", "/v2/api-docs",
           "/openapi.json", "/metrics", "/.git/config", "/config.json", "/admin", "/console", "/phpinfo.php",
           "/trace", "/graphql", "/_debug", "/.aws/credentials")


def _prober(world: World, rng: random.Random) -> Caller:
    r = rng.random()
    if r < 0.4:
        return Caller.workload_of(world, rng.choice(sorted(w for w in world.ips if w != "shop/frontend")))
    return Caller.internet(rng) if r < 0.6 else Caller.user(world, rng)


def misconfiguration(run: RunLike) -> list[SimCall]:
    """A scanner (compromised pod, user or internet client) probing debug and admin endpoints of internal services."""
    return attackers(run, "misconfiguration", _prober, 30, 200, _probe)


def _probe(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    services = rng.sample(sorted(s.qualified for s in build_catalog() if s.namespace), rng.randint(2, 8))
    probes = rng.sample(_PROBES, rng.randint(6, 14))
    exposed, _, path = rng.choice(DEBUG_KEYS).partition(" GET ")  # at least one probe finds a live debug endpoint
    services, probes = sorted({*services, exposed}), sorted({*probes, path})
    pairs = list(itertools.product(services, probes))
    rng.shuffle(pairs)
    out: list[OwaspCall] = []
    for t, (service, path) in zip(a.ticks(rng.uniform(0.5, 5.0)), pairs):
        key = f"{service} GET {path}"
        namespace, _, name = service.partition("/")
        ep = OWASP_BY_KEY.get(key) or Endpoint(name, namespace, "GET", path, ok_status=404)
        out.append(a.call(t, ep, path))
    return out


# -- API9 improper inventory management -------------------------------------------------------------------

def shadow_api(run: RunLike) -> list[SimCall]:
    """Calls to routes a service serves but declares in no spec (found in an app binary), amid ordinary browsing."""
    return attackers(run, "shadow-api", _user, 60, 240, _shadow)


def _shadow(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    keys, ordinary = rng.sample(SHADOW_KEYS, rng.randint(1, len(SHADOW_KEYS))), rng.uniform(0.2, 0.6)
    out: list[OwaspCall] = []
    for t in a.ticks(rng.uniform(0.2, 2.0)):
        if rng.random() < ordinary:
            out.append(browse(a, t))
            continue
        ep = OWASP_BY_KEY[pick(rng, keys)]
        oid = pick(rng, a.ids(ep.kind)) if ep.kind else ""
        body = None if ep.method == "GET" else json_body({"reason": "damaged", "amount": round(rng.uniform(5, 400), 2)})
        out.append(a.call(t, ep, raw_of(ep, oid), (oid,) if oid else (), body=body))
    return out


_ZOMBIES = ("shop/orders GET /v1/orders/{id}", "payments/payment-methods GET /v1/payment-methods/{id}",
            "payments/invoices GET /v1/invoices/{id}", "identity/profiles GET /v1/users/{id}")


def zombie_api(run: RunLike) -> list[SimCall]:
    """An old client version calling routes the specs declare deprecated, now and then, amid ordinary browsing."""
    return attackers(run, "zombie-api", _user, 60, 300, _zombie)


def _zombie(a: Attacker) -> list[OwaspCall]:
    rng = a.rng
    keys, ordinary = rng.sample(_ZOMBIES, rng.randint(1, len(_ZOMBIES))), rng.uniform(0.3, 0.7)
    out: list[OwaspCall] = []
    for t in a.ticks(rng.uniform(0.1, 1.5)):
        if rng.random() < ordinary:
            out.append(browse(a, t))
            continue
        ep = endpoint(pick(rng, keys))
        oid = pick(rng, a.ids(ep.kind or ""))
        out.append(a.call(t, ep, raw_of(ep, oid), (oid,)))
    return out
