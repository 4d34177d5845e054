"""enforcement.redaction: structural JSON masking, per-type actions, formats, limits and skips."""

from __future__ import annotations

import json

import pytest

from enforcement.redaction import RedactionLimits, RedactionPolicy, RedactionSettings, redact_body, redact_text, redactable

POLICY = RedactionPolicy()


def test_json_masks_only_the_span_and_keeps_shape_and_key_order() -> None:
    body = json.dumps({"b": {"note": "write to bob@example.org today", "n": 1.5}, "a": [1, "x"], "ok": True}).encode()
    out = redact_body(body, "application/json; charset=utf-8", POLICY)
    assert json.loads(out.body) == {"b": {"note": "write to [email] today", "n": 1.5}, "a": [1, "x"], "ok": True}
    assert list(json.loads(out.body)) == ["b", "a", "ok"] and out.counts == {"email": 1} and out.skipped is None


def test_field_names_are_evidence() -> None:
    body = b'{"password": "hunter2hunter", "ssn": "123456789", "phone": "4155552671", "card_number": "4111 1111 1111 1111", "user_id": 4155552671}'
    out = json.loads(redact_body(body, "application/json", POLICY).body)
    assert out == {"password": "[secret]", "ssn": "[ssn]", "phone": "[phone]", "card_number": "[card]", "user_id": 4155552671}


def test_a_body_without_findings_comes_back_as_the_same_object() -> None:
    body = b'{"id": "3f1c2a4e-8b7d-4c2e-9a1f-000000000001", "created": "2024-03-01T10:11:12Z", "name": "Ann Lee"}'
    out = redact_body(body, "application/json", POLICY)
    assert out.body is body and out.counts == {} and not out.changed


@pytest.mark.parametrize(("action", "expect"), [("mask", "[email]"), ("allow", "a@example.org")])
def test_mask_and_allow(action: str, expect: str) -> None:
    out = redact_body(b'{"e": "a@example.org"}', "application/json", RedactionPolicy({"email": action}))  # type: ignore[dict-item]
    assert json.loads(out.body)["e"] == expect and out.counts == ({"email": 1} if action == "mask" else {})


def test_hash_is_keyed_and_stable() -> None:
    one = RedactionPolicy({"email": "hash"}, hash_key=b"k1")
    other = RedactionPolicy({"email": "hash"}, hash_key=b"k2")
    a = json.loads(redact_body(b'["a@example.org", "a@example.org"]', "application/json", one).body)
    b = json.loads(redact_body(b'["a@example.org"]', "application/json", other).body)
    assert a[0] == a[1] and a[0].startswith("[email:") and len(a[0]) == len("[email:]") + 12 and a[0] != b[0]


def test_drop_removes_the_key_or_the_element() -> None:
    policy = RedactionPolicy({"email": "drop"})
    out = redact_body(b'{"a": 1, "e": "a@example.org", "l": [1, "b@example.org", 3, "c@example.org"]}', "application/json", policy)
    assert json.loads(out.body) == {"a": 1, "l": [1, 3]} and out.counts == {"email": 3}


def test_ndjson_form_and_text() -> None:
    nd = redact_body(b'{"e": "a@example.org"}\n{"ok": 1}\n', "application/x-ndjson", POLICY)
    assert nd.body == b'{"e":"[email]"}\n{"ok": 1}\n'
    form = redact_body(b"email=bob%40example.org&name=Bob&ssn=123-45-6789", "application/x-www-form-urlencoded", POLICY)
    assert form.body == b"email=[email]&name=Bob&ssn=[ssn]" and form.counts == {"email": 1, "ssn": 1}
    text = redact_body("call +1 415 555 2671, ☎".encode(), "text/plain; charset=utf-8", POLICY)
    assert text.body == "call [phone], ☎".encode()


def test_invalid_json_is_redacted_as_text() -> None:
    out = redact_body(b'{"e": "a@example.org", ', "application/json", POLICY)
    assert out.body == b'{"e": "[email]", '


@pytest.mark.parametrize(("ctype", "reason"), [("image/png", "unsupported_type"), ("application/x-protobuf", "unsupported_type"), (None, "unsupported_type")])
def test_unknown_types_pass_untouched(ctype: str | None, reason: str) -> None:
    body = b"\x89PNG a@example.org"
    out = redact_body(body, ctype, POLICY)
    assert out.body is body and out.skipped == reason and not redactable(ctype)


def test_limits() -> None:
    body = b'{"e": "a@example.org", "pad": "' + b"x" * 100 + b'"}'
    assert redact_body(body, "application/json", POLICY, RedactionLimits(max_body_bytes=50)).skipped == "too_large"
    many = json.dumps(["a@example.org"] * 30).encode()
    assert redact_body(many, "application/json", POLICY, RedactionLimits(max_leaves=10)).skipped == "too_many_leaves"
    assert redact_body(b"caf\xe9 a@example.org", "text/plain", POLICY).skipped == "undecodable"
    assert redact_body("café a@example.org".encode("latin-1"), "text/plain; charset=latin-1", POLICY).body == "café [email]".encode("latin-1")


def test_ip_is_off_by_default_and_on_when_asked() -> None:
    assert redact_text("from 10.1.2.3", POLICY) == "from 10.1.2.3"
    assert redact_text("from 10.1.2.3", RedactionPolicy({"ip": "mask"})) == "from [ip]"


def test_policy_and_settings_errors_name_the_key_and_value() -> None:
    with pytest.raises(ValueError, match="'email'.*'scramble'"):
        RedactionPolicy({"email": "scramble"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="hash_key"):
        RedactionPolicy({"email": "hash"})
    with pytest.raises(ValueError, match="max_leaves.*0"):
        RedactionLimits(max_leaves=0)
    settings = RedactionSettings(actions={"email": "hash"}, max_body_bytes=10)
    assert settings.policy().action("email") == "hash" and settings.limits().max_body_bytes == 10


def test_already_masked_secret_fields_are_left_alone() -> None:
    body = b'{"password": "********", "api_key": "[secret]"}'
    assert redact_body(body, "application/json", POLICY).body is body


def test_short_values_and_small_numbers_are_read_only_where_a_field_name_announces_a_type() -> None:
    # plain values (short, a date, a small number) are skipped unless the field's name says what they are
    body = b'{"users": [{"password": "abc12", "ssn": 12345, "dob": "1990-01-01", "id": 7, "n": 4155552671, "tags": ["x", 2.5]}]}'
    out = redact_body(body, "application/json", POLICY)
    assert json.loads(out.body) == {"users": [{"password": "[secret]", "ssn": "[ssn]", "dob": "[dob]", "id": 7, "n": 4155552671, "tags": ["x", 2.5]}]}
    assert out.counts == {"secret": 1, "ssn": 1, "dob": 1}
