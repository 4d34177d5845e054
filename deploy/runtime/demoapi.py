"""The demo API: a small multi-tenant shop behind Envoy, the system Kubeward protects in the demo.

Eighteen services in five namespaces answer on one port, routed by the Host
header (``orders.shop.svc.cluster.local``); external hosts (a payment provider,
a mailer, a paste site) answer too, as an egress gateway would see them. Users
own orders, invoices, documents, carts, payment methods and profiles; responses
carry personal data (names, emails, phones, addresses, IBANs, dates of birth,
and on the retired ``/v1/users/{id}`` social security numbers); admin exports
and pages return many records; ``/v1/...`` routes are deprecated but still
answer (zombies); ``POST /login`` answers 200 with ``{"ok": false}`` for a
wrong password, as many real APIs do.

Authorisation is the API's own: a user may read their own objects, support
agents anyone's, in-cluster services (no user token) anything; invoices are the
deliberately vulnerable endpoint (no ownership check: a BOLA target). A call
without a valid user token is a service call only when it comes from the pod
network (the address Envoy appends to ``x-forwarded-for``); otherwise it gets 401.

``DemoApi.handle`` is pure (the database is in memory and seeded); ``serve``
runs it under aiohttp. ``openapi_specs`` writes the declared OpenAPI document of
each service from the same route table, with its deprecated routes marked: that
is what a team would publish, and what Kubeward's inventory compares traffic with.
Kubeward never reads this module: it sees only the HTTP that passes through Envoy.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DemoApi", "DemoDb", "Route", "mint_jwt", "openapi_specs", "serve"]

_FIRST = ("Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kofi", "Lena", "Mateo", "Nadia", "Omar", "Priya")
_LAST = ("Abbott", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski", "Lopez", "Moreau", "Novak", "Okafor", "Patel")
_STREETS = ("Maple Street", "Harbour Road", "Linden Allee", "Rue des Lilas", "Elm Avenue", "Kings Road")
_CITIES = ("Springfield", "Rotterdam", "Lyon", "Leipzig", "Porto", "Dublin")
_ID = "{id}"


@dataclass(frozen=True)
class Route:
    """One route of a service: method, template, what it returns, whether it is deprecated."""

    service: str  # namespace/name, or an external host
    method: str
    template: str
    kind: str | None = None  # the object kind named by {id}
    shape: str = "object"  # object | own_list | page | export | create | login | blob | ok
    deprecated: bool = False
    checks_owner: bool = True
    records: int = 1
    fields: tuple[str, ...] = ()
    status: int = 200
    admin_only: bool = False  # sim-A: only services (no user token) and ``admin-*`` principals may call it
    documented: bool = True  # sim-B: False = served but declared in no spec (shadow and debug routes)


def _r(service: str, method: str, template: str, kind: str | None = None, shape: str = "object", **kw: Any) -> Route:
    return Route(service, method, template, kind, shape, **kw)


_PERSON = ("name", "email", "phone", "address")
ROUTES: tuple[Route, ...] = (
    _r("shop/catalog", "GET", "/products", shape="ok"),
    _r("shop/catalog", "GET", "/search", shape="ok"),
    _r("shop/orders", "GET", "/orders/{id}", "order", fields=("address",)),
    _r("shop/orders", "GET", "/orders", "order", "own_list", fields=("address",)),
    _r("shop/orders", "POST", "/orders", "order", "create", status=201),
    _r("shop/orders", "GET", "/orders/{id}/items", "order"),
    _r("shop/orders", "GET", "/orders/export", "order", "export", records=50, fields=("address",)),
    _r("shop/orders", "GET", "/internal/debug/vars", shape="blob", deprecated=True, fields=("secret",)),
    _r("shop/carts", "GET", "/carts/{id}", "cart"),
    _r("shop/carts", "PUT", "/carts/{id}/items", "cart"),
    _r("shop/notifications", "POST", "/notifications/email", shape="ok", status=202),
    _r("payments/checkout", "POST", "/checkout", shape="ok"),
    _r("payments/checkout", "POST", "/webhooks/psp", shape="ok"),
    _r("payments/payment-methods", "GET", "/payment-methods", "payment_method", "own_list", fields=("card_last4",)),
    _r("payments/payment-methods", "GET", "/payment-methods/{id}", "payment_method", fields=("card_last4",)),
    _r("payments/invoices", "GET", "/invoices/{id}", "invoice", checks_owner=False, fields=("name", "address", "iban")),
    _r("payments/invoices", "GET", "/invoices/{id}/pdf", "invoice", fields=("name", "address")),
    _r("payments/invoices", "GET", "/invoices/export", "invoice", "export", records=50, fields=("name", "address", "iban")),
    _r("payments/invoices", "GET", "/v1/invoices/{id}", "invoice", deprecated=True, checks_owner=False, fields=("name", "address", "iban")),
    _r("payments/ledger", "POST", "/ledger/entries", shape="ok", status=201),
    _r("payments/ledger", "GET", "/ledger/accounts/{id}", "account"),
    _r("payments/ledger-admin", "GET", "/admin/balances", shape="ok"),
    _r("payments/ledger-admin", "POST", "/admin/adjustments", shape="ok"),
    _r("identity/auth", "POST", "/login", shape="login"),
    _r("identity/auth", "POST", "/token/refresh", shape="ok"),
    _r("identity/auth", "POST", "/introspect", shape="ok"),
    _r("identity/profiles", "GET", "/profiles/{id}", "profile", fields=(*_PERSON, "dob")),
    _r("identity/profiles", "PATCH", "/profiles/{id}", "profile", fields=("email", "phone")),
    _r("identity/profiles", "GET", "/profiles/{id}/contact", "profile", fields=("email", "phone")),
    _r("identity/profiles", "GET", "/profiles", "profile", "page", records=50, fields=("email", "phone")),
    _r("identity/profiles", "GET", "/customers/{id}/export", "profile", "export", records=35, checks_owner=False, fields=("email", "phone", "address")),
    _r("identity/profiles", "GET", "/v1/users/{id}", "profile", deprecated=True, checks_owner=False, fields=(*_PERSON, "ssn")),
    _r("identity/accounts", "GET", "/accounts/{id}", "account", fields=("email",)),
    _r("identity/accounts", "GET", "/v1/admin/export", shape="export", deprecated=True, records=200, fields=("email", "phone")),
    _r("identity/secrets-broker", "GET", "/secrets/{name}", "secret", checks_owner=False, fields=("secret",)),
    _r("data/documents", "GET", "/documents/{id}", "document", fields=("name",)),
    _r("data/documents", "GET", "/documents/{id}/download", "document", shape="blob", fields=("name", "address")),
    _r("data/documents", "POST", "/documents", "document", "create", status=201),
    _r("data/warehouse", "POST", "/ingest/events", shape="ok", status=202),
    _r("data/warehouse", "POST", "/query", shape="ok"),
    _r("ml/recommender", "GET", "/recommendations", shape="ok"),
    _r("ml/fraud-scorer", "POST", "/score", shape="ok"),
    _r("ml/feature-store", "GET", "/features/{id}", "account"),
    _r("ml/feature-store", "POST", "/features/batch", shape="ok"),
    _r("api.psp.example.com", "POST", "/v1/charges", shape="ok"),
    _r("api.mailer.example.com", "POST", "/v3/mail/send", shape="ok", status=202),
    _r("paste.example.net", "POST", "/api/pastes", shape="create", status=201),
)
# -- sim-A (issue 7 hard variants): a login answering 401 on failure, admin functions (some missing their
# -- check: BFLA targets), credential changes, a rollout's v2 routes, a new service shop/shipping
ROUTES += (
    _r("identity/sso", "POST", "/login", shape="login_401"),
    _r("identity/accounts", "DELETE", "/admin/users/{id}", "account", admin_only=True),
    _r("identity/accounts", "GET", "/admin/users/export", "account", "export", records=100, fields=("email", "phone")),
    _r("identity/accounts", "PUT", "/users/{id}/password", "account"),
    _r("identity/accounts", "PUT", "/users/{id}/email", "account", checks_owner=False, fields=("email",)),
    _r("shop/orders", "DELETE", "/admin/orders/{id}", "order", admin_only=True),
    _r("shop/orders", "GET", "/v2/orders/{id}", "order", fields=("address",)),
    _r("identity/profiles", "GET", "/v2/profiles/{id}", "profile", fields=(*_PERSON, "dob")),
    _r("payments/checkout", "POST", "/v2/checkout", shape="ok"),
    _r("shop/shipping", "GET", "/shipments/{id}", "order", fields=("address",)),
    _r("shop/shipping", "POST", "/shipments/quote", shape="ok"),
)
# -- end of sim-A's routes
# -- sim-B (issue 7 OWASP variants, ingest/simulator/owasp_catalog.py): product details, reservations, signup,
# -- URL-taking routes (SSRF targets), shadow routes and debug endpoints (undocumented), zombies (deprecated),
# -- third-party feeds whose items carry payloads
ROUTES += (
    _r("shop/catalog", "GET", "/products/{id}", "product", checks_owner=False),
    _r("shop/orders", "POST", "/reservations", "reservation", "create", status=201),
    _r("identity/accounts", "POST", "/accounts", "account", "create", status=201),
    _r("shop/notifications", "POST", "/webhooks", shape="ok", status=201),
    _r("data/documents", "POST", "/documents/import", "document", "create", status=201),
    _r("shop/catalog", "GET", "/images/proxy", shape="ok"),
    _r("identity/profiles", "GET", "/profiles/{id}/full", "profile", checks_owner=False, documented=False, fields=(*_PERSON, "dob", "ssn")),
    _r("shop/orders", "POST", "/orders/{id}/refund", "order", documented=False),
    _r("payments/checkout", "POST", "/checkout/express", shape="ok", documented=False),
    _r("shop/orders", "GET", "/v1/orders/{id}", "order", deprecated=True, checks_owner=False, fields=("name", "address")),
    _r("payments/payment-methods", "GET", "/v1/payment-methods/{id}", "payment_method", deprecated=True, checks_owner=False, fields=("name", "card_last4")),
    _r("shop/catalog", "GET", "/actuator/env", shape="debug", documented=False),
    _r("ml/recommender", "GET", "/debug/pprof/heap", shape="debug", documented=False),
    _r("data/warehouse", "GET", "/server-status", shape="debug", documented=False),
    _r("identity/profiles", "GET", "/swagger.json", shape="debug", documented=False),
    _r("api.partner-feed.example.com", "GET", "/v2/feed", shape="feed"),
    _r("api.geo.example.com", "GET", "/v1/geocode", shape="feed"),
)


def _sim_b_answer(route: Route, query: str) -> bytes:
    """sim-B: a debug endpoint's dump (with the planted honeytoken credentials in it) or a third-party feed item."""
    from ingest.simulator.owasp_catalog import FEED_ITEMS, HONEYTOKENS

    if route.shape == "debug":
        env = {f"{c['account'].upper().replace('-', '_')}_{c['kind'].upper()}": c["value"] for c in HONEYTOKENS["credentials"]}
        return json.dumps({"service": route.service, "profiles": ["prod"], "env": {"LOG_LEVEL": "debug", **env}}).encode()
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    n = int(params["item"]) if params.get("item", "").isdigit() else 0
    _, value = FEED_ITEMS[n % len(FEED_ITEMS)]
    link = value if value.startswith("http://") else None
    return json.dumps({"items": [{"id": f"it-{n}", "description": None if link else value}], "next": link}).encode()


def _sim_b_expose(answer: tuple[int, bytes], query: str) -> tuple[int, bytes]:
    """sim-B: an object answer leaking extra properties when the query asks for a full view (the API3 bug)."""
    from ingest.simulator.owasp_catalog import LEAK_FLAGS

    leaked = [f for flag, fields in LEAK_FLAGS.items() if flag in query.split("&") for f in fields]
    if answer[0] != 200 or not leaked:
        return answer
    record = json.loads(answer[1])
    h = hashlib.sha256(str(record.get("id")).encode()).hexdigest()
    values = {"password_hash": "$2b$12$" + h[:53], "api_token": "tok_" + h[:32], "ssn": _ssn(int(h[:8], 16)),
              "mfa_secret": h[:32].upper(), "reset_token": "rst_" + h[32:64]}
    return 200, json.dumps({**record, **{f: values[f] for f in leaked}}).encode()
# -- end of sim-B's routes


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(subject: str, secret: bytes, issued_at: int = 1_800_000_000) -> str:
    """An HS256 JWT for ``subject`` (what the demo's identity provider would issue)."""
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = _b64url(json.dumps({"sub": subject, "iat": issued_at, "iss": "https://id.shop.example"}, separators=(",", ":")).encode())
    sig = _b64url(hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def _verified_subject(authorization: str | None, secret: bytes) -> str | None:
    if not authorization or not authorization.startswith("Bearer "):
        return None
    token = authorization[7:].strip()
    parts = token.split(".")
    if len(parts) != 3:
        return None
    expected = _b64url(hmac.new(secret, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    import base64

    claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


@dataclass
class DemoDb:
    """The API's in-memory database: objects by kind and id, their owners, users' passwords."""

    owners: dict[str, str] = field(default_factory=dict)  # object id -> owner principal
    kinds: dict[str, str] = field(default_factory=dict)  # object id -> kind
    by_kind: dict[str, list[str]] = field(default_factory=dict)
    by_owner: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    next_id: int = 9_000_000

    def add(self, kind: str, oid: str, owner: str | None) -> None:
        """Store one object."""
        self.kinds[oid] = kind
        self.by_kind.setdefault(kind, []).append(oid)
        if owner is not None:
            self.owners[oid] = owner
            self.by_owner.setdefault((owner, kind), []).append(oid)

    def create(self, kind: str, owner: str | None) -> str:
        """Store a new object and return its id."""
        self.next_id += 1
        oid = str(self.next_id)
        self.add(kind, oid, owner)
        return oid

    @staticmethod
    def password(principal: str) -> str:
        """The demo password of a user (the driver knows it; the API checks it)."""
        return "pw-" + hashlib.sha256(principal.encode()).hexdigest()[:10]


def _iban(n: int) -> str:
    bban = f"{n % 10**8:08d}{(n * 7919) % 10**10:010d}"  # NL-style: 4 letters replaced by digits for simplicity
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    check = 98 - int(digits) % 97
    return f"DE{check:02d}{bban}"


def _ssn(n: int) -> str:
    return f"{100 + n % 600:03d}-{10 + n % 89:02d}-{1000 + n % 8999:04d}"


def _record(oid: str, kind: str | None, fields: Iterable[str]) -> dict[str, Any]:
    n = int(hashlib.blake2b(oid.encode(), digest_size=6).hexdigest(), 16)
    first, last = _FIRST[n % len(_FIRST)], _LAST[(n >> 4) % len(_LAST)]
    out: dict[str, Any] = {"id": oid, "type": kind or "item"}
    values = {
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower()}{n % 1000}@mail.example.com",
        "phone": f"+1 415 555 {n % 10000:04d}",
        "address": f"{1 + n % 180} {_STREETS[n % len(_STREETS)]}, {_CITIES[(n >> 3) % len(_CITIES)]}",
        "dob": f"19{50 + n % 50}-{1 + n % 12:02d}-{1 + n % 28:02d}",
        "ssn": _ssn(n),
        "iban": _iban(n),
        "card_last4": f"{n % 10000:04d}",
        "secret": "sk_live_" + hashlib.sha256(oid.encode()).hexdigest()[:24],
    }
    for f in fields:
        out[f] = values[f]
    return out


def _match(template: str, path: str) -> str | None:
    """The id when ``path`` matches ``template`` (one ``{...}`` segment at most), '' for a static match."""
    t, p = template.split("/"), path.split("/")
    if len(t) != len(p):
        return None
    found = ""
    for a, b in zip(t, p):
        if a.startswith("{"):
            if not b:
                return None
            found = b
        elif a != b:
            return None
    return found


_SAFE_QUERY = re.compile(r"^[\w .,+=&%-]*$")


class DemoApi:
    """The shop's API: ``handle`` answers one request from its routes and database."""

    def __init__(self, db: DemoDb, jwt_secret: bytes, pod_network_prefix: str = "127.244."):
        self.db, self.secret, self.pod_prefix = db, jwt_secret, pod_network_prefix
        self.routes: dict[str, list[Route]] = {}
        for route in ROUTES:
            self.routes.setdefault(route.service, []).append(route)
        for routes in self.routes.values():  # sim-A: a static route wins over a parametric one (/orders/export
            routes.sort(key=lambda r: "{" in r.template)  # was answered by /orders/{id}: 404 "export")

    def service_of(self, host: str) -> str:
        """``orders.shop.svc.cluster.local`` -> ``shop/orders``; external hosts stay as they are."""
        host = host.split(":", 1)[0]
        labels = host.split(".")
        if len(labels) >= 3 and labels[2] == "svc":
            return f"{labels[1]}/{labels[0]}"
        return host

    def handle(self, host: str, method: str, target: str, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        """Status and JSON body for one request."""
        service = self.service_of(host)
        path, _, query = target.partition("?")
        for route in self.routes.get(service, ()):
            if route.method != method:
                continue
            oid = _match(route.template, path)
            if oid is not None:
                caller = _verified_subject(headers.get("authorization"), self.secret)
                peer = headers.get("x-forwarded-for", "").rpartition(",")[2].strip()
                if caller is None and route.kind and route.kind != "secret" and not peer.startswith(self.pod_prefix):
                    return 401, b'{"error":"unauthenticated"}'
                return self._answer(route, oid, caller, query, body)
        return 404, b'{"error":"not_found"}'

    def _answer(self, route: Route, oid: str, caller: str | None, query: str, body: bytes) -> tuple[int, bytes]:
        if not _SAFE_QUERY.match(query) or ".." in oid or "'" in oid:
            return 400, b'{"error":"invalid_request"}'
        shape = route.shape
        if shape in ("debug", "feed"):  # sim-B
            return route.status, _sim_b_answer(route, query)
        if route.admin_only and caller is not None and not caller.startswith("admin-"):  # sim-A
            return 403, b'{"error":"forbidden"}'
        if shape == "login_401":  # sim-A: a login that answers a failure with 401, not 200 + error body
            answer = self._login(body)
            return (200, answer) if b'"token"' in answer else (401, b'{"error":"invalid_credentials"}')
        if shape == "login":
            return 200, self._login(body)
        if shape == "create":
            new = self.db.create(route.kind or "item", caller)
            return route.status, json.dumps({"id": new, "status": "created"}).encode()
        if shape in ("ok", "blob") and not route.kind:
            data = _record("0", None, route.fields) if route.fields else {"ok": True}
            return route.status, json.dumps(data).encode()
        if shape == "own_list":
            ids = self.db.by_owner.get((caller or "", route.kind or ""), [])[:20]
            return 200, json.dumps({"items": [_record(i, route.kind, route.fields) for i in ids]}).encode()
        if shape in ("page", "export"):
            return 200, self._page(route, query, oid)
        return _sim_b_expose(self._object(route, oid, caller), query)  # sim-B: the leaky full view

    def _object(self, route: Route, oid: str, caller: str | None) -> tuple[int, bytes]:
        if route.kind == "secret":
            return 200, json.dumps(_record(oid, "secret", route.fields)).encode()
        if self.db.kinds.get(oid) != route.kind:
            return 404, b'{"error":"not_found"}'
        owner = self.db.owners.get(oid)
        allowed = caller is None or caller == owner or caller.startswith("support-") or not route.checks_owner
        if not allowed:
            return 403, b'{"error":"forbidden"}'
        return route.status, json.dumps(_record(oid, route.kind, route.fields)).encode()

    def _page(self, route: Route, query: str, oid: str) -> bytes:
        params = dict(p.partition("=")[::2] for p in query.split("&") if p)
        size = min(int(params.get("size", route.records)) if params.get("size", "").isdigit() else route.records, 200)
        page = int(params["page"]) if params.get("page", "").isdigit() else 0
        pool = self.db.by_kind.get(route.kind or "profile", [])
        start = (page * size + (int(oid) if oid.isdigit() else 0)) % max(1, len(pool) - size)
        items = [_record(i, route.kind, route.fields) for i in pool[start : start + size]]
        return json.dumps({"items": items, "page": page, "size": size}).encode()

    def _login(self, body: bytes) -> bytes:
        try:
            creds = json.loads(body or b"{}")
        except ValueError:
            creds = {}
        user, password = str(creds.get("username", "")), str(creds.get("password", ""))
        if user and hmac.compare_digest(password, DemoDb.password(user)):
            return json.dumps({"ok": True, "token": mint_jwt(user, self.secret)}).encode()
        return b'{"ok":false,"error":"invalid_credentials"}'


def openapi_specs(out_dir: Path, base_host: str = "svc.cluster.local") -> list[Path]:
    """Write each in-cluster service's declared OpenAPI 3 document (deprecated routes marked)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    by_service: dict[str, list[Route]] = {}
    for route in ROUTES:
        if "/" in route.service and route.documented:  # sim-B: shadow and debug routes are in no spec
            by_service.setdefault(route.service, []).append(route)
    written = []
    for service, routes in sorted(by_service.items()):
        namespace, name = service.split("/")
        paths: dict[str, dict[str, Any]] = {}
        for r in routes:
            op: dict[str, Any] = {"responses": {str(r.status): {"description": "ok"}}}
            if r.deprecated:
                op["deprecated"] = True
            if _ID in r.template or "{name}" in r.template:
                param = "name" if "{name}" in r.template else "id"
                op["parameters"] = [{"name": param, "in": "path", "required": True, "schema": {"type": "string"}}]
            paths.setdefault(r.template, {})[r.method.lower()] = op
        doc = {"openapi": "3.0.3", "info": {"title": service, "version": "1.0.0"},
               "servers": [{"url": f"http://{name}.{namespace}.{base_host}"}],
               "x-kubeward-service": service, "paths": paths}
        path = out_dir / f"{namespace}.{name}.json"
        path.write_text(json.dumps(doc, indent=1))
        written.append(path)
    return written


def serve(host: str, port: int, db: DemoDb, jwt_secret: bytes) -> None:
    """Run the API under aiohttp until interrupted."""
    from aiohttp import web

    api = DemoApi(db, jwt_secret)

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        status, payload = api.handle(request.host, request.method, request.path_qs, headers, body)
        return web.Response(status=status, body=payload, content_type="application/json")

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handler)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


def seed_db(seed: int, users: int) -> DemoDb:
    """The API's database at the start of a demo run: the simulated world's users and the objects they own."""
    from ingest.simulator.world import World

    world = World(seed, users)
    db = DemoDb()
    owner_of = {oid: world.principals[u] for u, owned in enumerate(world.owned) for ids in owned.values() for oid in ids}
    for kind, ids in world.pool.items():
        for oid in ids:
            db.add(kind, oid, owner_of.get(oid))
    for u, heavy in world.heavy.items():  # sim-A: the few users owning many objects (World.heavy)
        for kind, ids in heavy.items():
            for oid in ids:
                db.add(kind, oid, world.principals[u])
    _sim_b_plant(db)
    return db


def _sim_b_plant(db: DemoDb) -> None:
    """sim-B: the catalog's products, and the honeytoken objects (owned by a decoy account, in no listing or page)."""
    from ingest.simulator.owasp_catalog import HONEYTOKENS, PRODUCT_COUNT, PRODUCT_FIRST

    for n in range(PRODUCT_FIRST, PRODUCT_FIRST + PRODUCT_COUNT):
        db.add("product", str(n), None)
    kinds = {"payments/invoices": "invoice", "data/documents": "document", "shop/orders": "order"}
    for planted in HONEYTOKENS["object_ids"]:
        db.kinds[planted["id"]] = kinds[planted["service"]]  # not db.add: pages and exports never return them
        db.owners[planted["id"]] = HONEYTOKENS["credentials"][1]["account"]


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.runtime.demoapi --port N --seed S --users U --jwt-secret K``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deploy.runtime.demoapi", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated world whose users and objects fill the database")
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--jwt-secret", default="kubeward-demo-idp-secret", help="HS256 secret of the demo identity provider")
    args = parser.parse_args(argv)
    serve(args.host, args.port, seed_db(args.seed, args.users), args.jwt_secret.encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
