"""The demo API's own behaviour (pure handler): ownership, personal data, deprecated routes, login outcome."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.runtime.demoapi import DemoApi, DemoDb, mint_jwt, openapi_specs

SECRET = b"demo"


def _api() -> DemoApi:
    db = DemoDb()
    db.add("order", "310001", "user-00001")
    db.add("order", "310002", "user-00002")
    db.add("invoice", "520001", "user-00002")
    for i in range(60):
        db.add("profile", str(100000 + i), f"user-{i:05d}")
    return DemoApi(db, SECRET)


def _auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {mint_jwt(user, SECRET)}"}


ORDERS = "orders.shop.svc.cluster.local"
POD = {"x-forwarded-for": "127.244.3.7"}


def test_users_read_own_objects_and_are_refused_others() -> None:
    api = _api()
    status, body = api.handle(ORDERS, "GET", "/orders/310001", _auth("user-00001"), b"")
    assert status == 200 and json.loads(body)["id"] == "310001" and "address" in json.loads(body)
    assert api.handle(ORDERS, "GET", "/orders/310002", _auth("user-00001"), b"")[0] == 403
    assert api.handle(ORDERS, "GET", "/orders/399999", _auth("user-00001"), b"")[0] == 404
    assert api.handle(ORDERS, "GET", "/orders/310002", _auth("support-00007"), b"")[0] == 200
    assert api.handle(ORDERS, "GET", "/orders/310002", POD, b"")[0] == 200  # in-cluster service, no user token
    assert api.handle(ORDERS, "GET", "/orders/310002", {"x-forwarded-for": "127.203.113.9"}, b"")[0] == 401


def test_forged_token_is_not_a_user() -> None:
    api = _api()
    forged = {"authorization": f"Bearer {mint_jwt('user-00002', b'wrong')}", "x-forwarded-for": "127.0.3.4"}
    assert api.handle(ORDERS, "GET", "/orders/310002", forged, b"")[0] == 401
    assert api.handle(ORDERS, "GET", "/orders/310002", _auth("user-00001"), b"")[0] == 403


def test_invoices_are_the_vulnerable_endpoint() -> None:
    api = _api()
    status, body = api.handle("invoices.payments.svc.cluster.local", "GET", "/invoices/520001", _auth("user-00001"), b"")
    assert status == 200 and "iban" in json.loads(body)


def test_pages_carry_personal_data_per_record() -> None:
    api = _api()
    status, body = api.handle("profiles.identity.svc.cluster.local", "GET", "/profiles?page=0&size=20", POD, b"")
    items = json.loads(body)["items"]
    assert status == 200 and len(items) == 20 and all("@" in i["email"] for i in items)


def test_login_answers_200_with_an_error_body_on_failure() -> None:
    api = _api()
    ok = api.handle("auth.identity.svc.cluster.local", "POST", "/login", {}, json.dumps({"username": "user-00003", "password": DemoDb.password("user-00003")}).encode())
    bad = api.handle("auth.identity.svc.cluster.local", "POST", "/login", {}, b'{"username": "user-00003", "password": "x"}')
    assert ok[0] == 200 and json.loads(ok[1])["ok"] is True
    assert bad[0] == 200 and json.loads(bad[1]) == {"ok": False, "error": "invalid_credentials"}


def test_injection_payloads_get_400() -> None:
    api = _api()
    assert api.handle("catalog.shop.svc.cluster.local", "GET", "/search?q=' OR 1=1--", {}, b"")[0] == 400


def test_specs_mark_deprecated_routes(tmp_path: Path) -> None:
    paths = openapi_specs(tmp_path)
    docs = {p.name: json.loads(p.read_text()) for p in paths}
    users = docs["identity.profiles.json"]["paths"]["/v1/users/{id}"]["get"]
    assert users["deprecated"] is True
    assert "deprecated" not in docs["identity.profiles.json"]["paths"]["/profiles/{id}"]["get"]
    assert not any(".example." in name for name in docs)
