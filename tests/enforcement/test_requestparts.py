"""enforcement.requestparts: which values of a request are inspected, and where they sit."""

from __future__ import annotations

import json

from enforcement.decision import RequestView
from enforcement.requestparts import body_parts, json_document, request_parts
from enforcement.settings import InspectionSettings

SETTINGS = InspectionSettings()


def test_path_query_headers_and_cookies() -> None:
    req = RequestView("GET", "/items/1'%20or%201=1/x?q=shoes&a%3Cb=1", headers={
        "user-agent": "curl/8", "authorization": "Bearer secret", "cookie": "sid=abc; theme=dark", "x-custom": "v",
        "x-request-id": "r1", "x-kubeward-principal": "alice", "accept": "text/html"})
    parts = request_parts(req, SETTINGS).parts
    assert ("path", "", "/items/1'%20or%201=1/x") in parts and ("path", "", "1'%20or%201=1") in parts
    assert ("query", "q", "shoes") in parts and ("query", "", "q") in parts and ("query", "", "a%3Cb") in parts
    assert ("header", "user-agent", "curl/8") in parts and ("header", "x-custom", "v") in parts
    assert ("cookie", "sid", "abc") in parts and ("cookie", "theme", "dark") in parts
    assert not any(value in ("Bearer secret", "r1", "alice", "text/html") for _, _, value in parts)


def test_a_plain_path_is_one_value() -> None:
    assert request_parts(RequestView("GET", "/api/v1/orders/7"), SETTINGS).parts == [("path", "", "/api/v1/orders/7")]


def test_max_values_caps_and_counts() -> None:
    req = RequestView("GET", "/s?" + "&".join(f"a{i}=v{i}" for i in range(20)))
    found = request_parts(req, InspectionSettings(max_values=5))
    assert len(found.parts) == 5 and found.skipped == 36


def test_oversize_settings() -> None:
    req = RequestView("POST", "/u", headers={"content-type": "application/json"}, body=b'{"a": "b"}', body_truncated=True)
    assert request_parts(req, InspectionSettings(oversize="deny")).oversize
    assert request_parts(req, InspectionSettings(oversize="allow")).body is None
    assert request_parts(req, InspectionSettings()).body == '{"a": "b"}'
    assert request_parts(req, InspectionSettings(max_body_bytes=0)).body is None


def test_json_bodies_give_string_leaves_and_every_key() -> None:
    body = json.dumps({"name": "x", "n": 3, "__proto__": {}, "filter": {"$where": "sleep(1)"}, "tags": ["a", "b"]})
    parts, whole = body_parts(body, "application/json", 100)
    assert not whole
    assert {v for loc, _, v in parts if loc == "body_key"} == {"name", "n", "__proto__", "filter", "$where", "tags"}
    assert {v for loc, _, v in parts if loc == "body"} == {"x", "sleep(1)", "a", "b"}


def test_form_xml_and_broken_json() -> None:
    parts, _ = body_parts("user=bob&role%5B%5D=admin", "application/x-www-form-urlencoded", 100)
    assert ("body", "user", "bob") in parts and ("body_key", "role[]", "role[]") in parts
    xml = '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
    assert body_parts(xml, "application/xml", 100) == ([("body", "", xml)], True)
    assert body_parts('{"a": ', "application/json", 100) == ([("body", "", '{"a": ')], True)


def test_json_document_parses_a_body_once_per_request_and_body_parts_reuses_it() -> None:
    req = RequestView("POST", "/a", headers={"content-type": "application/json"}, body=b'{"q": "one"}')
    assert req.body_json is None
    assert json_document(req) == (True, {"q": "one"}) and req.body_json == (True, {"q": "one"})
    req.body_json = (True, {"q": "kept"})  # what a first inspector left: the next one reads it instead of parsing again
    parts, _ = body_parts('{"q": "one"}', "application/json", 100, req)
    assert ("body", "", "kept") in parts and ("body", "", "one") not in parts
    bad = RequestView("POST", "/a", body=b'{"q": "\xff"}')
    assert json_document(bad) == (False, None)
    # the bytes do not parse (invalid UTF-8), the text with a replacement character does: read as before
    assert ("body", "", "\ufffd") in body_parts(bad.body.decode("utf-8", "replace"), "application/json", 100, bad)[0]  # type: ignore[union-attr]
