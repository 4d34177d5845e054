"""streams.policy.decide: the action the policy names per attack class, signed."""

from __future__ import annotations

import pytest

from ingest import Policy, Reason, verify_verdict
from streams.detection import Detection
from streams.policy import decide, to_finding

KEY = b"test-key"


def _detection(attack_class: str) -> Detection:
    reason = Reason(detector="pii_volume", score=0.8, evidence="120 emails returned")
    return Detection("shop/web|u1", attack_class, 0.8, (reason,), 100.0, "shop", "orders", {})


def test_an_attack_class_the_policy_does_not_name_is_blocked() -> None:
    verdict = decide(_detection("bola"), Policy(actions={"exfiltration": "redact"}), 200.0, KEY)
    assert (verdict.action, verdict.rate_per_s, verdict.burst) == ("block", None, None)
    assert verify_verdict(verdict, KEY)


@pytest.mark.parametrize("action", ["redact", "quarantine", "block"])
def test_the_policy_chooses_the_action_per_attack_class(action: str) -> None:
    verdict = decide(_detection("exfiltration"), Policy(actions={"exfiltration": action}), 200.0, KEY)
    assert verdict.action == action and verify_verdict(verdict, KEY)
    assert to_finding(_detection("exfiltration"), verdict).unmapped["verdict_id"] == verdict.id


def test_a_throttle_verdict_carries_the_policy_rate_and_burst() -> None:
    policy = Policy(actions={"credential_abuse": "throttle"}, throttle_rate_per_s=2.0, throttle_burst=3)
    verdict = decide(_detection("credential_abuse"), policy, 200.0, KEY)
    assert (verdict.action, verdict.rate_per_s, verdict.burst) == ("throttle", 2.0, 3)


def test_an_unknown_action_is_refused_with_the_key_and_value() -> None:
    with pytest.raises(ValueError, match="actions.exfiltration"):
        Policy.model_validate({"actions": {"exfiltration": "mask"}})
