"""ingest.signing: HMAC-SHA256 over every verdict field but the signature."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest
from hypothesis import given, settings

from ingest import Reason, Scope, Subject, Verdict, sign_verdict, verify_verdict
from tests.strategies import verdicts

KEY = b"kubeward-test-verdict-key"


@settings(max_examples=50, deadline=None)
@given(verdicts)
def test_a_signed_verdict_verifies(verdict: Verdict) -> None:
    signed = sign_verdict(verdict, KEY)
    assert verify_verdict(signed, KEY)
    assert len(signed.signature) == 64 and int(signed.signature, 16) >= 0


@settings(max_examples=50, deadline=None)
@given(verdicts)
def test_signature_survives_the_json_wire(verdict: Verdict) -> None:
    signed = sign_verdict(verdict, KEY)
    assert verify_verdict(Verdict.model_validate_json(signed.model_dump_json()), KEY)


def test_signature_is_hmac_sha256_of_the_json_without_signature(verdict_factory: Any) -> None:
    verdict = verdict_factory(signature="ignored")
    body = verdict.model_dump_json(exclude={"signature", "key_id"}).encode()  # an empty key_id is left out (older releases)
    assert sign_verdict(verdict, KEY).signature == hmac.new(KEY, body, hashlib.sha256).hexdigest()
    with_id = verdict.model_copy(update={"key_id": "k2"})
    body = with_id.model_dump_json(exclude={"signature"}).encode()  # a key id is signed with the rest
    assert sign_verdict(verdict, KEY, "k2").signature == hmac.new(KEY, body, hashlib.sha256).hexdigest()


def test_signing_does_not_change_the_original(verdict_factory: Any) -> None:
    verdict = verdict_factory()
    sign_verdict(verdict, KEY)
    assert verdict.signature == ""


def test_signing_is_deterministic_and_ignores_an_old_signature(verdict_factory: Any) -> None:
    verdict = verdict_factory()
    once = sign_verdict(verdict, KEY)
    assert sign_verdict(once, KEY) == once


def test_an_unsigned_verdict_does_not_verify(verdict_factory: Any) -> None:
    assert not verify_verdict(verdict_factory(), KEY)


def test_a_wrong_key_does_not_verify(verdict_factory: Any) -> None:
    assert not verify_verdict(sign_verdict(verdict_factory(), KEY), b"another-key")


@pytest.mark.parametrize(
    "update",
    [
        {"mode": "observe"},
        {"action": "throttle"},
        {"subject": Subject(kind="actor", value="shop/web|bob")},
        {"scope": Scope(service="payments")},
        {"expires_at": 4_102_444_800.0},
        {"reasons": [Reason(detector="x", score=0.1, evidence="forged")]},
        {"finding_ids": ["other"]},
        {"policy_version": "999"},
        {"signature": "0" * 64},
    ],
    ids=lambda u: next(iter(u)),
)
def test_any_tampered_field_fails_verification(verdict_factory: Any, update: dict[str, Any]) -> None:
    signed = sign_verdict(verdict_factory(), KEY)
    assert not verify_verdict(signed.model_copy(update=update), KEY)
