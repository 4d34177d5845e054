"""enforcement.honeytokens: any use of a honeytoken in a request is the inline finding ``honeytoken``."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from enforcement.cache import VerdictCache
from enforcement.decision import RequestView, decide
from enforcement.honeytokens import CATEGORY, SCORE, HoneytokenInspector
from enforcement.inspection import Inspectors, WafInspector
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import InspectionSettings
from enforcement.shim import summary_row
from enforcement.signatures import load_signatures
from ingest import Policy, hash_object_id
from ingest.honeytokens import HoneytokenKeys, Honeytokens, load_honeytokens, parse_honeytokens

FIXTURE = Path(__file__).resolve().parents[1] / "ingest" / "data" / "honeytokens.yaml"
API_KEY, PASSWORD, ACCOUNT, BEARER = "kw-honey-3f9c2d1e7a", "Winter2024!honey", "ops.admin@example.com", "hny.eyJ0b2tlbiI6ImRlY295In0.sig"
ENFORCE = Policy(default_mode="enforce")


@pytest.fixture(scope="module")
def inspector() -> HoneytokenInspector:
    return HoneytokenInspector(load_honeytokens(FIXTURE))


def _req(path: str = "/orders/81231", headers: dict[str, str] | None = None, body: object = None, service: str | None = "orders",
         content_type: str = "application/json") -> RequestView:
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        headers["content-type"] = content_type
    return RequestView("POST" if body is not None else "GET", path, principal="alice", ip="10.0.0.7", service=service,
                       namespace="shop", headers=headers, body=data)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


USES = {
    "bearer": (_req(headers={"authorization": f"Bearer {BEARER}"}), "credential"),
    "basic decoy login": (_req(headers={"authorization": _basic(ACCOUNT, PASSWORD)}), "account+password"),
    "api key header": (_req(headers={"x-api-key": API_KEY}), "credential"),
    "api-key header": (_req(headers={"api-key": f" {API_KEY} "}), "credential"),
    "cookie": (_req(headers={"cookie": f"theme=dark; session={API_KEY}"}), "credential"),
    "path segment": (_req("/orders/900017"), "object"),
    "path with extension": (_req("/orders/900017.json"), "object"),
    "encoded path": (_req("/orders/%39%30%30%30%31%37/items"), "object"),
    "query value": (_req("/orders?id=900017&expand=1"), "object"),
    "query credential": (_req("/export?api_key=" + API_KEY.replace("-", "%2D")), "credential"),
    "json decoy login": (_req("/login", body={"username": ACCOUNT, "password": PASSWORD}), "account+password"),
    "json number": (_req("/carts", body={"items": [{"order": 900017, "qty": 1}]}), "object"),
    "form decoy login": (_req("/login", body=f"user={ACCOUNT}&password={PASSWORD.replace('!', '%21')}",
                              content_type="application/x-www-form-urlencoded"), "account+password"),
    "unknown service": (_req("/orders/900017", service=None), "object"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(USES))
def test_each_place_a_honeytoken_can_travel_is_a_finding(inspector: HoneytokenInspector, name: str) -> None:
    req, kind = USES[name]
    found = inspector.inspect(req)
    assert found is not None
    assert (found.categories, found.rules, found.score) == ((CATEGORY,), tuple(f"honeytoken:{k}" for k in kind.split("+")), SCORE)


CLEAN = {
    "plain get": _req("/orders/81231?expand=items", {"authorization": "Bearer abc.def.ghi", "cookie": "session=s-1234567890"}),
    "other service's object": _req("/payments/900017", service="payments"),
    "near miss": _req("/orders/900018", {"x-api-key": API_KEY + "x"}),
    "json body": _req("/orders", body={"items": [{"sku": "A-1", "qty": 2, "price": 9.5, "gift": True}], "note": "9000 17"}),
    "bad basic": _req(headers={"authorization": "Basic ###"}),
    # a decoy password or account name alone may be a real user's: only the pair (a decoy login) is a hit
    "decoy password alone": _req(headers={"authorization": _basic("someone", PASSWORD)}),
    "decoy account alone": _req(headers={"authorization": _basic(ACCOUNT, "guess-1234")}),
    "decoy account in a path": _req(f"/users/{ACCOUNT}/profile"),
    "decoy password in a json body": _req("/login", body={"username": "bob", "password": PASSWORD}),
    "binary body": _req("/upload", body="\x00\x01\x02", content_type="application/octet-stream"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CLEAN))
def test_requests_without_honeytokens_are_not_findings(inspector: HoneytokenInspector, name: str) -> None:
    assert inspector.inspect(CLEAN[name]) is None


def test_a_probe_collision_is_confirmed_away() -> None:
    """A value whose ``hash()`` is in the probes but which is no honeytoken (a collision) is not a finding."""
    declared = parse_honeytokens({"object_ids": [{"service": "orders", "id": "900017"}]})
    colliding = Honeytokens(object_ids=declared.object_ids, probes=declared.probes | {hash("81231")}, keys=declared.keys)
    assert HoneytokenInspector(colliding).inspect(_req("/orders/81231")) is None
    assert HoneytokenInspector(colliding).inspect(_req("/orders/900017")) is not None


def test_nothing_declared_finds_nothing() -> None:
    assert HoneytokenInspector(Honeytokens()).inspect(USES["path segment"][0]) is None


def test_keys_must_match_the_deployment() -> None:
    declared = parse_honeytokens({"object_ids": [{"service": "orders", "id": "900017"}]}, HoneytokenKeys(object_id_key=b"k1"))
    assert declared.object_ids["orders"] == {hash_object_id("900017", b"k1")}
    assert HoneytokenInspector(declared).inspect(_req("/orders/900017")) is not None


WORDY = {"credentials": [{"kind": "password", "value": "correct horse battery", "account": "decoy-1"}],
         "object_ids": [{"service": "orders", "id": "900017"}]}


@pytest.mark.parametrize("declared", [{"object_ids": WORDY["object_ids"]}, WORDY], ids=["json words", "parsed json"])
def test_json_bodies_are_read_whole_either_way(declared: dict[str, Any]) -> None:
    tokens = parse_honeytokens(declared)
    assert tokens.words is ("credentials" not in declared)
    inspector = HoneytokenInspector(tokens)
    for body in ({"ids": [str(i) for i in range(100)] + ["900017"]}, [{"n": 900017}], {"a": {"b": [[{"c": "900017"}]]}}):
        assert inspector.inspect(_req("/carts", body=body)) is not None
    escaped = _req("/carts", body='{"note": "say \\"hi\\"", "id": "\\u0039\\u0030\\u0030\\u0030\\u0031\\u0037"}')
    assert json.loads(escaped.body or b"")["id"] == "900017"
    assert inspector.inspect(escaped) is not None  # escapes: the parsed document is walked
    assert inspector.inspect(_req("/carts", body={"note": "order 9000171", "n": 900016})) is None


def test_a_credential_with_spaces_is_found_in_a_json_body() -> None:
    inspector = HoneytokenInspector(parse_honeytokens(WORDY))
    assert inspector.inspect(_req("/login", body={"user": "decoy-1", "password": "correct horse battery"})) is not None
    assert inspector.inspect(_req("/login", body={"user": "decoy-1", "password": "correct horse"})) is None


def test_the_value_cap_bounds_a_walked_body_and_the_byte_cap_every_body() -> None:
    tokens = parse_honeytokens(WORDY)
    late = _req("/carts", body={"ids": [str(i) for i in range(100)] + ["900017"]})
    assert HoneytokenInspector(tokens, max_values=50).inspect(late) is None
    assert HoneytokenInspector(tokens, max_values=512).inspect(late) is not None
    for declared in (WORDY, {"object_ids": WORDY["object_ids"]}):
        assert HoneytokenInspector(parse_honeytokens(declared), max_body_bytes=0).inspect(late) is None
        assert HoneytokenInspector(parse_honeytokens(declared), max_body_bytes=100).inspect(late) is None
    prefix = _req("/form", body="id=900017&pad=" + "x" * 500, content_type="application/x-www-form-urlencoded")
    assert HoneytokenInspector(tokens, max_body_bytes=100).inspect(prefix) is not None  # the prefix of a long body is read


def test_the_hit_counter_counts_requests(inspector: HoneytokenInspector) -> None:
    before = inspector.hits
    inspector.inspect(USES["cookie"][0])
    inspector.inspect(CLEAN["plain get"])
    assert inspector.hits == before + 1


@pytest.fixture(scope="module")
def composed(inspector: HoneytokenInspector) -> Inspectors:
    return Inspectors(WafInspector(load_signatures(), InspectionSettings()), inspector)


def _decide(inspect: Any, req: RequestView, policy: Policy = ENFORCE) -> Any:
    return decide(req, VerdictCache(), TokenBuckets(), inspect, policy, 0.0)


def test_a_honeytoken_is_denied_and_named_first_next_to_an_injection(composed: Inspectors) -> None:
    req = _req("/orders/900017?q=1'%20OR%201=1--")
    decision = _decide(composed, req)
    assert (decision.status, decision.reason) == (403, "inline:honeytoken")
    assert decision.findings[0] == CATEGORY and len(decision.findings) >= 2


def test_the_shim_reports_the_hit_in_inline_findings(composed: Inspectors) -> None:
    req = _req(headers={"x-api-key": API_KEY})
    decision = _decide(composed, req)
    row = summary_row(1.0, req, decision, b"kubeward-dev-object-key")
    assert decision.status == 403 and row["inline_findings"] == [CATEGORY]


def test_observe_mode_reports_without_denying(composed: Inspectors) -> None:
    decision = _decide(composed, _req("/orders/900017"), Policy())
    assert (decision.status, decision.would, decision.findings) == (200, "deny", (CATEGORY,))


def test_a_clean_request_is_allowed_through_the_composed_inspector(composed: Inspectors) -> None:
    assert _decide(composed, CLEAN["plain get"]).status == 200
