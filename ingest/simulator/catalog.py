"""The simulated shop's catalog: services, their endpoints, the dependency graph and end-user actions.

Static data only, no randomness: eighteen services in five namespaces (``shop``,
``payments``, ``identity``, ``data``, ``ml``) plus two external hosts, each
``Endpoint`` with its object kind, sizes, latency and PII profile;
``CALLS``, which workload calls which endpoints (the service-to-service
dependency graph and its traffic weights); ``USER_ACTIONS``, what end users do
through the gateway, grouped by task. ``build_catalog`` and ``dependencies``
derive the per-service view and the per-workload dependencies from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "AGENT_READS",
    "BY_KEY",
    "CALLS",
    "ENDPOINTS",
    "PASTE",
    "TASKS",
    "TASK_CUM",
    "TASK_SWITCH",
    "USER_ACTIONS",
    "Endpoint",
    "Service",
    "build_catalog",
    "dependencies",
    "qualified",
]


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


def qualified(e: Endpoint) -> str:
    """The endpoint's service as ``namespace/name`` (bare host name if external)."""
    return f"{e.namespace}/{e.service}" if e.namespace else e.service


def _ep(qualified: str, method: str, template: str, kind: str | None = None, size: int = 800, lat: float = 15.0,
        items: int = 1, retired: bool = False, ok: int = 200, req: int = 0, **sensitive: int) -> Endpoint:
    namespace, _, name = qualified.rpartition("/")
    return Endpoint(name, namespace or None, method, template, kind, size, lat, items, retired, ok, req,
                    tuple(sensitive.items()))


ENDPOINTS: tuple[Endpoint, ...] = (
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
# the routes above are the catalog of issue 6; the easy lateral attacker keeps to them (``BASE_ENDPOINTS``)
BASE_ENDPOINTS = len(ENDPOINTS)

# -- hard variants, sim-A (issue 7): a login answering 401, admin functions, credential changes, a rollout's
# -- v2 routes and a new service (shop/shipping). No benign share in CALLS: only variants call them.
ENDPOINTS += (
    _ep("identity/sso", "POST", "/login", None, 700, 60, req=300),
    _ep("identity/accounts", "DELETE", "/admin/users/{id}", "account", 120, 30),
    _ep("identity/accounts", "GET", "/admin/users/export", "account", 900, 200, items=100, email=1, phone=1),
    _ep("identity/accounts", "PUT", "/users/{id}/password", "account", 120, 40, req=200),
    _ep("identity/accounts", "PUT", "/users/{id}/email", "account", 300, 30, req=200, email=1),
    _ep("shop/orders", "DELETE", "/admin/orders/{id}", "order", 120, 25),
    _ep("shop/orders", "GET", "/v2/orders/{id}", "order", 2000, 15, address=1),
    _ep("identity/profiles", "GET", "/v2/profiles/{id}", "profile", 1200, 8, email=1, phone=1, address=1),
    _ep("payments/checkout", "POST", "/v2/checkout", None, 1500, 150, req=1200, card_last4=1),
    _ep("shop/shipping", "GET", "/shipments/{id}", "order", 700, 10, address=1),
    _ep("shop/shipping", "POST", "/shipments/quote", None, 300, 20, req=600),
)
# -- end of sim-A's block
# ``namespace/service METHOD /template`` -> endpoint
BY_KEY: dict[str, Endpoint] = {f"{qualified(e)} {e.method} {e.template}": e for e in ENDPOINTS}
# the exfiltration's upload target: in no service's catalog, called by no benign workload
PASTE = _ep("paste.example.net", "POST", "/api/pastes", None, 300, 350, ok=201, req=2_500_000)

# caller workload -> (weight in the service-to-service mix, endpoints it calls)
CALLS: dict[str, tuple[float, tuple[str, ...]]] = {
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
USER_ACTIONS: tuple[tuple[str, str, float, str, tuple[str, ...]], ...] = (
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
# the tasks, the cumulative share of users starting on each, and the chance per call of switching task
TASKS, TASK_CUM, TASK_SWITCH = "SOAD", (0.45, 0.70, 0.85, 1.0), 0.08
# what support agents read of the customer on their ticket
AGENT_READS = ("identity/profiles GET /profiles/{id}", "identity/accounts GET /accounts/{id}",
               "shop/orders GET /orders/{id}", "payments/invoices GET /invoices/{id}")


def build_catalog() -> tuple[Service, ...]:
    """Every destination service (in-cluster and external) with its endpoints, in catalog order."""
    grouped: dict[str, list[Endpoint]] = {}
    for e in ENDPOINTS:
        grouped.setdefault(qualified(e), []).append(e)
    return tuple(Service(es[0].namespace, es[0].service, tuple(es)) for es in grouped.values())


def dependencies() -> dict[str, list[str]]:
    """Workload (``namespace/name``) -> the services it calls (``namespace/name``, or host if external)."""
    return {w: sorted({k.split(" ")[0] for k in keys}) for w, (_, keys) in CALLS.items()}
