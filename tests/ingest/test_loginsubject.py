"""login_subject: the account a login request names, from JSON, form, multipart bodies or Basic auth."""

from __future__ import annotations

import base64
import json

import pytest

from ingest.loginsubject import is_login_path, login_subject

JSON = {"content-type": "application/json"}
FORM = {"content-type": "application/x-www-form-urlencoded"}


def _basic(user: str, password: str = "pw") -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize(("body", "expected"), [
    ({"username": "Ada", "password": "x"}, "ada"),
    ({"user": {"email": " Ada@Example.COM ", "password": "x"}}, "ada@example.com"),
    ({"credentials": {"user_name": "bob"}, "password": "x"}, "bob"),
    ({"email": "e@x.org", "username": "nick", "password": "x"}, "nick"),  # a user name wins over an e-mail
    ({"client_id": "app-1", "client_secret": "s"}, "app-1"),
])
def test_json_bodies_on_login_endpoints(body: dict[str, object], expected: str) -> None:
    assert login_subject("POST", "/login", JSON, json.dumps(body).encode()) == expected


def test_form_body_and_oauth_password_grant_prefers_the_user_over_the_basic_client() -> None:
    body = b"grant_type=password&username=carol%40shop.example&password=hunter2"
    assert login_subject("POST", "/oauth/token", {**FORM, **_basic("web-client")}, body) == "carol@shop.example"
    assert login_subject("POST", "/oauth/token", FORM, b"grant_type=client_credentials&client_id=svc-7&client_secret=z") == "svc-7"


def test_multipart_body() -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="login"\r\n\r\ndave\r\n--b\r\nContent-Disposition: form-data; name="pwd"\r\n\r\nx\r\n--b--\r\n'
    assert login_subject("POST", "/signin", {"content-type": "multipart/form-data; boundary=b"}, body) == "dave"


def test_basic_auth_user_on_login_paths_only_unless_asked() -> None:
    assert login_subject("GET", "/v2/token", _basic("Eve"), None) == "eve"
    assert login_subject("GET", "/orders/7", _basic("eve"), None) is None
    assert login_subject("GET", "/orders/7", _basic("eve"), None, basic_anywhere=True) == "eve"
    assert login_subject("GET", "/token", {"authorization": "Basic !!not-base64"}, None) is None
    assert login_subject("GET", "/token", {"authorization": "Basic " + base64.b64encode(b"no-colon").decode()}, None) is None


def test_a_subject_and_a_password_make_any_post_a_login() -> None:
    body = json.dumps({"email": "f@x.org", "password": "p"}).encode()
    assert login_subject("POST", "/api/v2/customers/verify", JSON, body) == "f@x.org"
    assert login_subject("POST", "/api/v2/customers", JSON, json.dumps({"email": "f@x.org"}).encode()) is None
    assert login_subject("PUT", "/api/v2/customers/verify", JSON, body) is None  # PUT counts on login paths only


@pytest.mark.parametrize(("method", "path", "headers", "body"), [
    ("GET", "/orders", {}, None),
    ("POST", "/login", JSON, b'{"password": "only"}'),
    ("POST", "/login", JSON, b"{not json"),
    ("POST", "/login", JSON, json.dumps({"username": "x" * 400, "password": "p"}).encode()),
    ("POST", "/login", JSON, json.dumps({"username": True, "password": "p"}).encode()),
    ("POST", "/login", {"content-type": "image/png"}, b"\x89PNG\r\n"),
    ("DELETE", "/session", JSON, b'{"username": "a"}'),
])
def test_absent_subjects(method: str, path: str, headers: dict[str, str], body: bytes | None) -> None:
    assert login_subject(method, path, headers, body) is None


def test_login_paths() -> None:
    assert [is_login_path(p) for p in ("/login", "/api/auth/", "/oauth/token?scope=a", "/sessions", "/authors", "/tokens", "/blogin")] == [
        True, True, True, True, False, False, False]


@pytest.mark.parametrize("name", ["Alice", "ａｌｉｃｅ", "ＡＬＩＣＥ"])
def test_case_and_width_variants_name_one_account(name: str) -> None:
    """An attacker must not split one target into many subjects by case or width (PRECIS maps both)."""
    body = json.dumps({"username": name, "password": "x"}).encode()
    assert login_subject("POST", "/login", {"content-type": "application/json"}, body) == "alice"
