"""The summariser: every detector input derived from what the data plane saw."""

from __future__ import annotations

import json

from deploy.runtime.demoapi import mint_jwt
from ingest import HttpObservation, IdentityConfig, OutcomeRule, PathTemplater, SpecIndex, Summarizer, SummarizerConfig, decode_message, encode_rows, hash_object_id, summaries_from_table
from ingest.principal import hash_principal

PKEY, OKEY, SECRET = b"p", b"o", b"idp"


def _summarizer(**kw: object) -> Summarizer:
    config = SummarizerConfig(identity=IdentityConfig(principal_key=PKEY, jwt_hs256_secret=SECRET, trusted_hops=1), object_id_key=OKEY, **kw)  # type: ignore[arg-type]
    return Summarizer(config, pods={"10.244.0.9": ("shop/frontend", "shop", "frontend-abc")}.get)


def _obs(**kw: object) -> HttpObservation:
    base: dict[str, object] = dict(time=100.0, method="GET", path="/orders/310001?expand=items", reporter="access_log", request_id="r1",
                                   authority="orders.shop.svc.cluster.local", peer_ip="10.0.0.1",
                                   headers={"authorization": f"Bearer {mint_jwt('user-1', SECRET)}", "x-forwarded-for": "6.6.6.6, 10.244.0.9"},
                                   status=200, response_headers={"content-type": "application/json"})
    base.update(kw)
    return HttpObservation(**base)  # type: ignore[arg-type]


def test_identity_destination_template_and_ids_come_from_the_request() -> None:
    row = _summarizer().summarize(_obs())
    assert row["id"] == "r1" and row["principal"] == hash_principal("jwt", "user-1", PKEY) and row["auth_type"] == "jwt"
    assert (row["source"]["workload"], row["source"]["ip"], row["source"]["pod"]) == ("shop/frontend", "10.244.0.9", "frontend-abc")
    assert (row["destination"]["service"], row["destination"]["namespace"]) == ("orders", "shop")
    assert row["path_template"] == "/orders/{id}" and row["raw_path"] is None
    assert row["object_ids"] == [hash_object_id("310001", OKEY)]


def test_response_body_gives_sensitive_counts_and_object_ids_never_values() -> None:
    body = json.dumps({"items": [{"id": "100001", "email": "ada.berg@mail.example.com", "phone": "+1 415 555 0101"},
                                 {"id": "100002", "email": "ben.costa@mail.example.com", "phone": "+1 415 555 0102"}]}).encode()
    row = _summarizer().summarize(_obs(path="/profiles?page=1", authority="profiles.identity.svc.cluster.local", response_body=body))
    assert dict(row["sensitive"]) == {"email": 2, "phone": 2}
    assert set(row["object_ids"]) == {hash_object_id("100001", OKEY), hash_object_id("100002", OKEY)}
    assert "ada" not in json.dumps(row)


def test_created_ids_are_kept_apart() -> None:
    row = _summarizer().summarize(_obs(method="POST", path="/orders", status=201, response_body=b'{"id": "9000001", "status": "created"}'))
    assert row["object_ids_created"] == [hash_object_id("9000001", OKEY)] and row["object_ids"] == []


def test_login_answered_200_with_error_body_is_an_auth_failure() -> None:
    s = _summarizer()
    login = dict(method="POST", path="/login", authority="auth.identity.svc.cluster.local", headers={})
    assert s.summarize(_obs(**login, response_body=b'{"ok":false,"error":"invalid_credentials"}'))["outcome"] == "auth_failure"
    assert s.summarize(_obs(**login, response_body=b'{"ok":true,"token":"abc"}'))["outcome"] is None
    assert s.summarize(_obs(**login, status=401, response_body=b""))["outcome"] == "auth_failure"


def test_declared_outcome_rule_wins() -> None:
    rule = OutcomeRule("auth", "POST", "/v2/sessions", body_pattern='"result":"denied"')
    s = _summarizer(outcome_rules=(rule,))
    obs = _obs(method="POST", path="/v2/sessions", authority="auth.identity.svc.cluster.local", headers={})
    assert s.summarize(obs)["outcome"] == "ok"
    assert s.summarize(_obs(method="POST", path="/v2/sessions", authority="auth.identity.svc.cluster.local", headers={}, response_body=b'{"result":"denied"}'))["outcome"] == "auth_failure"


def test_declared_spec_template_wins_over_learning() -> None:
    spec = SpecIndex.from_documents({"openapi": "3.0.0", "paths": {"/secrets/{name}": {"get": {"responses": {}}}}})
    s = Summarizer(SummarizerConfig(), templater=PathTemplater(specs={"identity/secrets-broker": spec}))
    row = s.summarize(_obs(path="/secrets/db-password", authority="secrets-broker.identity.svc.cluster.local", headers={}))
    assert row["path_template"] == "/secrets/{name}"


def test_response_properties_are_names_never_values_with_map_ids_folded_and_capped() -> None:
    body = json.dumps({"user": {"id": "u1", "email": "ada.berg@mail.example.com", "password_hash": "$2b$12$abc"},
                       "items": [{"price": 3}, {"price": 4}], "by_id": {"81231": {"ok": True}, "81232": {"ok": False}}}).encode()
    row = _summarizer().summarize(_obs(response_body=body))
    assert row["response_properties"] == ["user.id", "user.email", "user.password_hash", "items[].price", "by_id.*.ok"]
    assert not any("ada" in p or "$2b" in p for p in row["response_properties"])
    wide = json.dumps({f"field_{i}": i for i in range(200)}).encode()
    assert len(_summarizer().summarize(_obs(response_body=wide))["response_properties"]) == 64


def test_text_and_missing_bodies_have_no_response_properties() -> None:
    assert _summarizer().summarize(_obs())["response_properties"] == []
    html = _obs(response_body=b"<html>password</html>", response_headers={"content-type": "text/html"})
    assert _summarizer().summarize(html)["response_properties"] == []


def test_response_properties_survive_the_envelope_round_trip() -> None:
    row = _summarizer().summarize(_obs(response_body=b'{"a": {"b": 1}}'))
    table = decode_message(encode_rows([row]), 1 << 20)
    assert summaries_from_table(table)[0].response_properties == ["a.b"]


def test_calls_from_one_pod_share_one_source_row() -> None:
    """An identity matched to a pod by address is a new object per call; the source row is still built once."""
    s = _summarizer()
    rows = [s.summarize(_obs(request_id=f"r{i}")) for i in range(500)]
    assert {r["source"]["pod"] for r in rows} == {"frontend-abc"} and len(s._sources) == 1
    rows[0]["source"]["pod"] = "changed"  # each row gets its own copy
    assert s.summarize(_obs(request_id="r-last"))["source"]["pod"] == "frontend-abc"
