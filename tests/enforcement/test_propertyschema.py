"""Request validation against declared and learned endpoint schemas: mass assignment, type changes, bounds, cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from enforcement.cache import VerdictCache
from enforcement.decision import RequestView, decide
from enforcement.propertyschema import LEARNED_CAP, PropertySchemaValidator, SchemaValidationSettings, build_property_validator
from enforcement.ratelimit import TokenBuckets
from enforcement.schemacheck import context_of, is_privileged
from ingest import Policy, SpecIndex

JSON = {"content-type": "application/json"}


class Clock:
    """A settable clock for the learning window."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _req(method: str, path: str, body: Any = None, *, who: str = "p1", service: str = "accounts", raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> RequestView:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    return RequestView(method, path, principal=who, ip="10.0.0.9", service=service, namespace="shop",
                       headers=JSON if headers is None else headers, body=data)


def _validator(clock: Clock | None = None, **kw: Any) -> PropertySchemaValidator:
    settings = SchemaValidationSettings(**{"learn_requests": 20, "min_principals": 3, **kw})
    return PropertySchemaValidator(settings, clock=clock or Clock())


def _teach(v: PropertySchemaValidator, method: str, path: str, bodies: list[Any], principals: int = 5) -> None:
    """Requests the shim allowed: inspected, then learned, from several principals."""
    for i, body in enumerate(bodies):
        req = _req(method, path, body, who=f"user-{i % principals}")
        assert v.inspect(req) is None, body
        v.learn(req)


def _categories(v: PropertySchemaValidator, req: RequestView) -> tuple[str, ...]:
    found = v.evaluate(req)
    return found.categories if found else ()


SIGNUP = [{"email": f"u{i}@example.org", "password": "correct horse"} for i in range(20)]


def test_a_role_added_to_a_learned_signup_is_mass_assignment_and_denied_in_enforce_mode() -> None:
    v = _validator()
    _teach(v, "POST", "/signup", SIGNUP)
    attack = _req("POST", "/signup", {"email": "eve@example.org", "password": "x", "role": "admin"}, who="eve")
    found = v.inspect(attack)
    assert found is not None and found.categories[0] == "mass-assignment" and found.score >= 5
    enforce, observe = Policy(default_mode="enforce"), Policy(default_mode="observe")
    denied = decide(attack, VerdictCache(), TokenBuckets(), v, enforce, 0.0)
    assert (denied.status, denied.would, denied.reason) == (403, "deny", "inline:mass-assignment")
    watched = decide(attack, VerdictCache(), TokenBuckets(), v, observe, 0.0)
    assert (watched.status, watched.would) == (200, "deny")
    benign = _req("POST", "/signup", {"email": "ann@example.org", "password": "y"}, who="ann")
    assert decide(benign, VerdictCache(), TokenBuckets(), v, enforce, 0.0).status == 200


def test_is_admin_on_an_update_is_flagged_even_while_learning() -> None:
    v = _validator(learn_requests=1000)
    _teach(v, "PATCH", "/users/81231", [{"name": "Ann"}, {"name": "Bo", "bio": "hi"}])
    found = v.inspect(_req("PATCH", "/users/81232", {"name": "Eve", "is_admin": True}, who="eve"))
    assert found is not None and found.categories == ("mass-assignment",) and "mass-assignment:never-seen" in found.rules
    # nested and camel-cased names are privileged too; an owner change only on an update
    assert v.inspect(_req("PATCH", "/users/81232", {"profile": {"isAdmin": True}}, who="eve")) is not None
    assert v.inspect(_req("PATCH", "/users/81232", {"owner_id": "u9"}, who="eve")) is not None


def test_one_actor_cannot_teach_a_privileged_property_but_several_principals_can() -> None:
    v = _validator(learn_requests=1000, min_principals=3)
    body = {"email": "a@example.org", "plan": "pro"}
    for _ in range(10):  # the same actor again and again: never learned
        req = _req("POST", "/subscriptions", body, who="eve")
        assert v.inspect(req) is not None
    assert v.inspect(_req("POST", "/subscriptions", body, who="ann")) is not None  # second principal still flagged
    assert v.inspect(_req("POST", "/subscriptions", body, who="bob")) is None  # the third makes it learned
    assert v.inspect(_req("POST", "/subscriptions", body, who="eve")) is None


def test_after_learning_a_privileged_name_is_never_learned_from_traffic() -> None:
    v = _validator()
    _teach(v, "POST", "/orders", [{"sku": "A1", "qty": 1}] * 20)
    for who in ("a", "b", "c", "d"):
        req = _req("POST", "/orders", {"sku": "A1", "qty": 1, "discount": 100}, who=who)
        assert v.inspect(req) is not None
        v.learn(req)  # even if a caller learns it by mistake
    assert v.inspect(_req("POST", "/orders", {"sku": "A1", "qty": 1, "discount": 100}, who="e")) is not None


def test_a_type_change_is_a_schema_violation_that_does_not_deny_alone() -> None:
    v = _validator()
    _teach(v, "PUT", "/carts/81231/items", [{"sku": f"S{i}", "qty": i + 1} for i in range(20)])
    found = v.evaluate(_req("PUT", "/carts/81232/items", {"sku": "S1", "qty": "1 OR 1=1"}))
    assert found is not None and found.categories == ("schema-violation",) and found.rules == ("schema:learned-type",)
    assert found.score < 5 and v.inspect(_req("PUT", "/carts/81232/items", {"sku": "S1", "qty": "x"})) is None
    # an object where a value was learned is a type change too
    assert v.evaluate(_req("PUT", "/carts/81232/items", {"sku": {"$ne": ""}, "qty": 1})).rules == ("schema:learned-type",)  # type: ignore[union-attr]


def test_learned_evidence_alone_is_capped_below_the_threshold() -> None:
    v = _validator()
    _teach(v, "POST", "/notes", [{"title": "t", "n": 1}] * 20)
    found = v.evaluate(_req("POST", "/notes", {"title": 5, "n": 1, "color": "red", "pinned": True}))
    assert found is not None and set(found.rules) == {"schema:learned-type", "schema:learned-unknown"}
    assert found.score == LEARNED_CAP


def test_a_known_optional_property_seen_from_many_principals_gives_no_finding() -> None:
    v = _validator()
    bodies = [{"email": f"u{i}@example.org", "password": "pw", **({"nickname": "n"} if i % 4 == 0 else {})} for i in range(20)]
    _teach(v, "POST", "/signup", bodies)
    assert v.evaluate(_req("POST", "/signup", {"email": "z@example.org", "password": "pw", "nickname": "zed"}, who="new")) is None
    assert v.evaluate(_req("POST", "/signup", {"email": "z@example.org", "password": "pw", "nickname": None}, who="new")) is None


def test_never_seen_properties_are_notices_after_learning_only() -> None:
    clock = Clock()
    v = _validator(clock, learn_requests=10_000, learn_seconds=60)
    _teach(v, "POST", "/comments", [{"text": "hi"}] * 3)
    assert v.evaluate(_req("POST", "/comments", {"text": "hi", "lang": "en"})) is None  # still learning
    clock.now += 61
    found = v.evaluate(_req("POST", "/comments", {"text": "hi", "lang": "en"}))
    assert found is not None and found.rules == ("schema:learned-unknown",) and found.score == 2


def test_a_new_property_is_adopted_after_learning_once_several_principals_sent_it() -> None:
    v = _validator()
    _teach(v, "POST", "/comments", [{"text": "hi"}] * 20)
    for who in ("a", "b", "c"):
        req = _req("POST", "/comments", {"text": "hi", "lang": "en"}, who=who)
        assert v.evaluate(req) is not None
        v.learn(req)
    assert v.evaluate(_req("POST", "/comments", {"text": "hi", "lang": "de"}, who="d")) is None


def test_query_names_are_learned_and_only_assigning_methods_check_privileged_names() -> None:
    v = _validator()
    for i in range(20):
        req = RequestView("GET", f"/users?page={i}&role=admin", principal=f"p{i % 5}", service="accounts")
        assert v.inspect(req) is None  # a filter on GET, not an assignment
        v.learn(req)
    assert v.evaluate(RequestView("GET", "/users?page=abc", principal="x", service="accounts")).rules == ("schema:learned-type",)  # type: ignore[union-attr]
    assert v.inspect(RequestView("POST", "/users?role=admin", principal="x", service="accounts")) is not None


def test_a_form_body_without_a_content_type_header_is_read_too() -> None:
    v = _validator()
    found = v.inspect(_req("POST", "/register", raw=b"email=a%40b.org&password=x&is_admin=1", headers={}))
    assert found is not None and found.categories == ("mass-assignment",)


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "paths": {
        "/users": {"post": {"requestBody": {"$ref": "#/components/requestBodies/NewUser"}}},
        "/users/{id}": {"patch": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/User"}}}}},
                        "get": {"parameters": [{"name": "fields", "in": "query", "schema": {"type": "string", "maxLength": 20}}]}},
    },
    "components": {
        "requestBodies": {"NewUser": {"content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False,
            "properties": {"email": {"type": "string", "maxLength": 64}, "age": {"type": "integer"},
                           "tags": {"type": "array", "items": {"type": "string"}}}}}}}},
        "schemas": {"User": {"type": "object", "properties": {
            "id": {"type": "string", "readOnly": True}, "name": {"type": "string"},
            "address": {"type": "object", "properties": {"city": {"type": "string"}}},
            "meta": {"type": "object", "additionalProperties": {"type": "string"}},
            "role": {"type": "string", "readOnly": True}}}},
    },
}


@pytest.fixture
def declared() -> PropertySchemaValidator:
    return PropertySchemaValidator(SchemaValidationSettings(), {"shop/accounts": SpecIndex.from_documents(SPEC)})


@pytest.mark.parametrize(("method", "path", "body", "rule", "category"), [
    ("POST", "/users", {"email": "a@b.org", "nickname": "x"}, "schema:declared-unknown", "schema-violation"),
    ("POST", "/users", {"email": "a@b.org", "role": "admin"}, "schema:declared-unknown", "mass-assignment"),
    ("POST", "/users", {"email": "a@b.org", "age": "forty"}, "schema:declared-type", "schema-violation"),
    ("POST", "/users", {"email": "a@b.org", "age": 4.5}, "schema:declared-type", "schema-violation"),
    ("POST", "/users", {"email": {"$gt": ""}}, "schema:declared-type", "schema-violation"),
    ("POST", "/users", {"email": "a" * 65}, "schema:declared-max-length", "schema-violation"),
    ("POST", "/users", {"tags": [{"x": 1}]}, "schema:declared-type", "schema-violation"),
    ("PATCH", "/users/7", {"name": "n", "id": "u2"}, "schema:declared-read-only", "schema-violation"),
    ("PATCH", "/users/7", {"role": "admin"}, "mass-assignment:read-only", "mass-assignment"),
    ("PATCH", "/users/7", {"name": "n", "is_admin": True}, "mass-assignment:undeclared", "mass-assignment"),
    ("PATCH", "/users/7", {"address": {"city": "x", "verified": True}}, "mass-assignment:undeclared", "mass-assignment"),
    ("GET", "/users/7?fields=" + "f" * 21, None, "schema:declared-max-length", "schema-violation"),
])
def test_declared_schema_violations(declared: PropertySchemaValidator, method: str, path: str, body: Any, rule: str, category: str) -> None:
    found = declared.evaluate(_req(method, path, body))
    assert found is not None and rule in found.rules and found.categories[0] == category


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/users", {"email": "a@b.org", "age": 40, "tags": ["a", "b"]}),
    ("POST", "/users", {"email": "a@b.org", "age": None}),
    ("PATCH", "/users/7", {"name": "n", "address": {"city": "x", "zip": "1"}, "meta": {"role": "any key is data"}}),
    ("GET", "/users/7?fields=name&extra=1", None),
])
def test_declared_schema_accepts_conforming_requests(declared: PropertySchemaValidator, method: str, path: str, body: Any) -> None:
    assert declared.evaluate(_req(method, path, body)) is None


def test_declared_endpoints_are_not_learned_and_undeclared_ones_are(declared: PropertySchemaValidator) -> None:
    req = _req("POST", "/users", {"email": "a@b.org"})
    declared.inspect(req)
    declared.learn(req)
    assert declared.stats()["endpoints"] == 0
    other = _req("POST", "/teams", {"name": "t"})
    declared.inspect(other)
    declared.learn(other)
    assert declared.stats()["endpoints"] == 1


def test_build_reads_a_spec_dir(tmp_path: Path) -> None:
    (tmp_path / "shop.accounts.json").write_text(json.dumps(SPEC))
    v = build_property_validator(tmp_path, SchemaValidationSettings())
    assert v.inspect(_req("POST", "/users", {"email": "a@b.org", "admin": True})) is not None
    assert build_property_validator(None).specs == {}


def test_memory_bounds_hold_and_what_did_not_fit_is_counted() -> None:
    v = _validator(max_endpoints=5, max_properties=8)
    for i in range(50):
        req = _req("POST", f"/things{i}", {f"p{j}": j for j in range(6 + i % 10)}, who=f"u{i}")
        v.inspect(req)
        v.learn(req)
    stats = v.stats()
    assert stats["endpoints"] == 5 and stats["endpoints_dropped"] > 0
    assert all(len(ep.props) <= 8 for ep in v._endpoints.values()) and stats["properties_dropped"] > 0
    many = {f"k{j}": j for j in range(200)}
    for i in range(30):
        req = _req("POST", "/things0", {**many, "role": "x"}, who=f"x{i}")
        v.inspect(req)
        v.learn(req)
    assert all(len(ep.props) <= 8 for ep in v._endpoints.values())


def test_map_keys_that_look_like_ids_are_folded() -> None:
    v = _validator()
    _teach(v, "PUT", "/prefs", [{"flags": {str(81230 + i): True}} for i in range(20)])
    assert v.evaluate(_req("PUT", "/prefs", {"flags": {"99999": False}})) is None


def test_privileged_names_and_contexts() -> None:
    assert is_privileged("email_verified") and is_privileged("?scope") and is_privileged("data.permissions[]")
    assert not is_privileged("description") and not is_privileged("owner_id") and is_privileged("owner_id", "update")
    assert (context_of("POST", "/api/v1/signup"), context_of("PATCH", "/users/{id}"), context_of("POST", "/orders")) == ("signup", "update", "other")


def test_requests_without_body_or_query_cost_nothing(declared: PropertySchemaValidator) -> None:
    assert declared.inspect(RequestView("GET", "/users/7")) is None and declared.stats()["checked"] == 0


def test_the_validator_reads_the_body_the_rule_engines_already_parsed() -> None:
    from enforcement.schemacheck import request_values

    req = RequestView("POST", "/signup", headers={"content-type": "application/json"}, body=b'{"name": "x"}')
    req.body_json = (True, {"name": "x", "is_admin": True})  # left by the first inspector of the request
    body, _ = request_values(req)
    assert [v.path for v in body] == ["name", "is_admin"]
    req.body_json = (False, None)
    assert request_values(req) == ([], [])


def test_list_records_share_their_paths_and_the_leaf_cap_holds() -> None:
    from enforcement.schemacheck import STR, request_values

    records: list[dict[str, object]] = [{"id": i, "price": 1.5 if i % 2 else 2.0, "tags": ["x" * i]} for i in range(300)]
    records[100]["seen"], records[200]["late"] = 1, 1  # leaves 300 and 600: only the first 512 leaves are read
    req = RequestView("POST", "/orders", headers={"content-type": "application/json"}, body=json.dumps({"items": records}).encode())
    body, _ = request_values(req)
    assert [v.path for v in body] == ["items[].id", "items[].price", "items[].tags[]", "items[].price", "items[].seen"]
    assert [v.raw for v in body[:2]] == [0, 2.0] and body[3].raw == 1.5 and body[1].key == "items[].price"
    tags = body[2]  # record 170's tags would be leaf 513
    assert (tags.length, tags.first, tags.bit) == (169, 0, STR)


def test_a_commercial_field_is_normal_during_learning_and_flagged_once_learning_says_it_never_comes() -> None:
    clock = [0.0]
    validator = PropertySchemaValidator(SchemaValidationSettings(learn_requests=3, min_principals=2), clock=lambda: clock[0])
    order = {"items": [{"sku": "A-1", "qty": 1, "price": 9.5}]}
    first = _req("POST", "/api/v1/orders", order, who="p1")
    assert validator.inspect(first) is None  # one principal sent a price: normal for an order API until learned otherwise
    for i in range(3):
        req = _req("POST", "/api/v2/carts", {"items": [{"sku": "A-1", "qty": 1}]}, who=f"p{i}")
        assert validator.inspect(req) is None
        validator.learn(req)
    late = validator.inspect(_req("POST", "/api/v2/carts", {"items": [{"sku": "A-1", "qty": 1, "price": 0.01}]}, who="p9"))
    assert late is not None and late.categories == ("mass-assignment",)
    assert validator.inspect(_req("POST", "/api/v1/orders", {"role": "admin"}, who="p1")) is not None  # an authorization name is never normal


def test_a_long_string_in_any_record_is_a_size_anomaly_and_a_new_type_in_any_record_a_type_change() -> None:
    validator = PropertySchemaValidator(SchemaValidationSettings(learn_requests=3, min_principals=1))
    for who in ("p1", "p2", "p3"):
        validator.learn(_req("POST", "/notes", {"items": [{"text": "short", "n": 1} for _ in range(5)]}, who=who))
    records: list[dict[str, Any]] = [{"text": "short", "n": 1} for _ in range(40)]
    assert validator.evaluate(_req("POST", "/notes", {"items": records})) is None
    records[30]["text"] = "x" * 300
    assert validator.evaluate(_req("POST", "/notes", {"items": records})).rules == ("schema:learned-size",)  # type: ignore[union-attr]
    records[30]["text"], records[35]["n"] = "short", "one"
    assert validator.evaluate(_req("POST", "/notes", {"items": records})).rules == ("schema:learned-type",)  # type: ignore[union-attr]


def test_a_privileged_property_learned_by_this_request_checks_its_later_records_as_learned() -> None:
    validator = PropertySchemaValidator(SchemaValidationSettings(learn_requests=50, min_principals=1))
    validator.learn(_req("POST", "/teams", {"name": "a"}))  # the endpoint is known
    records = [{"role": "dev"}, {"role": "x" * 300}]  # the first record's sighting teaches role (3 characters)
    found = validator.evaluate(_req("POST", "/teams", {"members": records}))
    assert found is not None and found.rules == ("schema:learned-size",)
    assert validator.evaluate(_req("POST", "/other", {"members": records})) is None  # a new endpoint: every record is a sighting


def test_a_full_endpoint_table_leaves_new_endpoints_unvalidated_rather_than_denied() -> None:
    validator = PropertySchemaValidator(SchemaValidationSettings(max_endpoints=2, min_principals=2))
    for path in ("/api/a", "/api/b"):
        validator.learn(_req("POST", path, {"name": "x"}))
    assert validator.inspect(_req("POST", "/api/c/signup", {"email": "a@b.c", "role": "admin"})) is None
    assert validator.stats()["endpoints_dropped"] >= 1
    assert validator.inspect(_req("POST", "/api/a", {"name": "x", "role": "admin"})) is not None  # held endpoints still are


def test_protocol_bodies_are_not_read_as_resources_but_a_jsonrpc_wrapper_hides_nothing() -> None:
    """A model API call's ``messages[].role`` is a chat turn and an MCP tool's ``params.arguments`` follow the tool's
    own schema: neither is mass assignment, even on an endpoint's first request (the demo's agents were denied for it).
    Names outside ``params`` of a JSON-RPC body are still checked, so wrapping a REST body in JSON-RPC evades nothing."""
    v = _validator(learn_requests=1000)
    chat = {"model": "m", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]}
    assert v.inspect(_req("POST", "/v1/chat/completions", chat, service="llm")) is None
    call = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "set_role", "arguments": {"role": "admin"}}}
    assert v.inspect(_req("POST", "/mcp", call, service="mcp")) is None
    assert "mass-assignment" in _categories(v, _req("POST", "/mcp", {**call, "role": "admin"}, service="mcp"))
    _teach(v, "PATCH", "/users/81231", [{"name": "Ann"}, {"name": "Bo"}])
    assert "mass-assignment" in _categories(v, _req("PATCH", "/users/81232", {"messages": [{"role": "admin"}]}))  # REST path: checked


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/forms/7/responses", {"answer": "yes", "role": "admin"}),  # a REST resource that a model API path resembles
    ("POST", "/courses/7/completions", {"grade": 1, "is_admin": True}),
    ("POST", "/rpc", {"jsonrpc": "2.0", "id": 1, "method": "users.update", "params": {"id": 5, "role": "admin"}}),  # not MCP
    ("POST", "/jobs", {"note": '"jsonrpc" "method"', "params": {"role": "admin"}}),  # the markers as values
    ("POST", "/users/5", {"jsonrpc": 1, "method": 1, "params": {"role": "admin"}}),
])
def test_only_real_protocol_bodies_lose_the_check(method: str, path: str, body: Any) -> None:
    """Review F5-F7: a path ending like a model API, or a body mentioning "jsonrpc", is not enough to skip the check."""
    assert "mass-assignment" in _categories(_validator(learn_requests=1000), _req(method, path, body, who="eve"))


def test_mcp_batches_and_late_jsonrpc_keys_are_protocol_bodies() -> None:
    v = _validator(learn_requests=1000)
    batch = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "set", "arguments": {"role": "viewer"}}}]
    assert v.inspect(_req("POST", "/mcp", batch, service="mcp")) is None
    late = {"params": {"name": "set", "arguments": {"role": "viewer", "text": "x" * 400}}, "id": 2, "method": "tools/call", "jsonrpc": "2.0"}
    assert v.inspect(_req("POST", "/mcp", late, service="mcp")) is None
