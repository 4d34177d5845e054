"""enforcement.decision.decide: verdict cache, token bucket, inline signatures, in that order."""

from __future__ import annotations

from typing import Any

import pytest

from enforcement.cache import VerdictCache
from enforcement.decision import ALLOW, Decision, RequestView, decide
from enforcement.ratelimit import TokenBuckets
from enforcement.decision import Inspector
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import SignatureSet, load_signatures
from ingest import Policy, Subject
from tests.conftest import T0

NOW = T0 + 10


@pytest.fixture(scope="module")
def signatures() -> Inspector:
    return WafInspector(load_signatures(), InspectionSettings())


def _req(**overrides: Any) -> RequestView:
    fields: dict[str, Any] = {"method": "GET", "path": "/orders/81231", "source_workload": "shop/web", "principal": "alice",
                              "ip": "10.0.0.7", "service": "orders", "namespace": "shop"}
    fields.update(overrides)
    return RequestView(**fields)


def _cache(*verdicts: Any) -> VerdictCache:
    cache = VerdictCache()
    for v in verdicts:
        cache.apply(v)
    return cache


def _decide(req: RequestView, cache: VerdictCache, signatures: Inspector, policy: Policy | None = None,
            buckets: TokenBuckets | None = None, now: float = NOW) -> Decision:
    return decide(req, cache, TokenBuckets() if buckets is None else buckets, signatures, policy or Policy(), now)


def test_nothing_known_allows(signatures: Inspector) -> None:
    assert _decide(_req(), VerdictCache(), signatures) is ALLOW
    assert ALLOW == Decision(200, "allow", False)


def test_block_verdict_in_enforce_mode_denies(signatures: Inspector, verdict_factory: Any) -> None:
    verdict = verdict_factory(mode="enforce")
    got = _decide(_req(), _cache(verdict), signatures)
    assert got == Decision(403, "deny", True, "bola_breadth", None, (), verdict.id)


def test_block_verdict_in_observe_mode_answers_200_with_would_deny(signatures: Inspector, verdict_factory: Any) -> None:
    verdict = verdict_factory(mode="observe")
    got = _decide(_req(), _cache(verdict), signatures, policy=Policy(default_mode="enforce"))
    assert (got.status, got.would, got.enforced, got.verdict_id) == (200, "deny", False, verdict.id)


@pytest.mark.parametrize(
    ("subject", "req"),
    [
        (Subject(kind="actor", value="shop/web|alice"), {}),
        (Subject(kind="principal", value="alice"), {"source_workload": "shop/other"}),
        (Subject(kind="workload", value="shop/web"), {"principal": "bob"}),
        (Subject(kind="ip", value="10.0.0.7"), {"source_workload": None, "principal": None}),
        (Subject(kind="actor", value="10.0.0.7|-"), {"source_workload": None, "principal": None}),
    ],
    ids=["actor", "principal", "workload", "ip", "ip-actor"],
)
def test_a_block_verdict_on_any_subject_of_the_request_denies(signatures: Inspector, verdict_factory: Any,
                                                               subject: Subject, req: dict[str, Any]) -> None:
    assert _decide(_req(**req), _cache(verdict_factory(subject=subject)), signatures).status == 403


@pytest.mark.parametrize(
    "subject",
    [Subject(kind="actor", value="shop/web|bob"), Subject(kind="principal", value="bob"), Subject(kind="workload", value="shop/api"),
     Subject(kind="ip", value="10.0.0.8"), Subject(kind="endpoint", value="shop/web|alice")],
)
def test_a_verdict_on_another_subject_does_not_match(signatures: Inspector, verdict_factory: Any, subject: Subject) -> None:
    assert _decide(_req(), _cache(verdict_factory(subject=subject)), signatures) is ALLOW


def test_subject_keys_most_specific_first() -> None:
    assert _req().subject_keys() == ("actor:shop/web|alice", "principal:alice", "workload:shop/web", "ip:10.0.0.7")
    assert _req(source_workload=None, principal=None, ip=None).subject_keys() == ("actor:-|-",)


def test_the_most_specific_verdict_wins(signatures: Inspector, verdict_factory: Any) -> None:
    broad = verdict_factory(subject=Subject(kind="workload", value="shop/web"), mode="observe")
    narrow = verdict_factory(subject=Subject(kind="actor", value="shop/web|alice"), mode="enforce")
    assert _decide(_req(), _cache(broad, narrow), signatures).verdict_id == narrow.id


def test_scope_service_mismatch_does_not_match(signatures: Inspector, verdict_factory: Any) -> None:
    cache = _cache(verdict_factory(scope="payments"))
    assert _decide(_req(service="orders"), cache, signatures) is ALLOW
    assert _decide(_req(service="payments"), cache, signatures).status == 403
    assert _decide(_req(service=None), cache, signatures) is ALLOW


def test_expired_verdict_is_ignored(signatures: Inspector, verdict_factory: Any) -> None:
    cache = _cache(verdict_factory(expires_at=NOW))
    assert _decide(_req(), cache, signatures, now=NOW) is ALLOW
    assert _decide(_req(), cache, signatures, now=NOW - 0.001).status == 403


def test_throttle_allows_the_burst_then_429_with_retry_after(signatures: Inspector, verdict_factory: Any) -> None:
    verdict = verdict_factory(action="throttle", rate_per_s=0.5, burst=3)
    cache, buckets = _cache(verdict), TokenBuckets()
    answers = [_decide(_req(), cache, signatures, buckets=buckets, now=NOW) for _ in range(4)]
    assert answers[:3] == [ALLOW] * 3
    assert answers[3] == Decision(429, "throttle", True, "bola_breadth", 2, (), verdict.id)
    assert _decide(_req(), cache, signatures, buckets=buckets, now=NOW + 2.0) is ALLOW
    assert _decide(_req(), cache, signatures, buckets=buckets, now=NOW + 2.0).status == 429


def test_throttle_retry_after_is_at_least_one_second(signatures: Inspector, verdict_factory: Any) -> None:
    cache, buckets = _cache(verdict_factory(action="throttle", rate_per_s=100.0, burst=1)), TokenBuckets()
    _decide(_req(), cache, signatures, buckets=buckets)
    assert _decide(_req(), cache, signatures, buckets=buckets).retry_after == 1


def test_throttle_in_observe_mode_never_answers_429(signatures: Inspector, verdict_factory: Any) -> None:
    cache, buckets = _cache(verdict_factory(action="throttle", rate_per_s=1.0, burst=1, mode="observe")), TokenBuckets()
    _decide(_req(), cache, signatures, buckets=buckets)
    got = _decide(_req(), cache, signatures, buckets=buckets)
    assert (got.status, got.would, got.enforced, got.retry_after) == (200, "throttle", False, 1)


def test_throttle_without_rate_or_burst_uses_one_per_second(signatures: Inspector, verdict_factory: Any) -> None:
    cache, buckets = _cache(verdict_factory(action="throttle", rate_per_s=None, burst=None)), TokenBuckets()
    assert _decide(_req(), cache, signatures, buckets=buckets) is ALLOW
    assert _decide(_req(), cache, signatures, buckets=buckets).status == 429
    assert _decide(_req(), cache, signatures, buckets=buckets, now=NOW + 1.0) is ALLOW


def test_throttle_buckets_are_per_subject_key(signatures: Inspector, verdict_factory: Any) -> None:
    cache = _cache(verdict_factory(action="throttle", subject=Subject(kind="workload", value="shop/web"), burst=1, rate_per_s=0.1))
    buckets = TokenBuckets()
    assert _decide(_req(principal="alice"), cache, signatures, buckets=buckets) is ALLOW
    assert _decide(_req(principal="bob"), cache, signatures, buckets=buckets).status == 429
    assert len(buckets) == 1


INJECTION = "/search?q=1' OR '1'='1"


@pytest.mark.parametrize(
    ("policy", "status", "enforced"),
    [
        (Policy(default_mode="enforce"), 403, True),
        (Policy(modes={"shop": "enforce"}), 403, True),
        (Policy(modes={"shop/orders": "enforce"}), 403, True),
        (Policy(modes={"shop": "enforce", "shop/orders": "observe"}), 200, False),
        (Policy(), 200, False),
        (Policy(modes={"bank": "enforce"}), 200, False),
    ],
    ids=["default-enforce", "namespace-enforce", "service-enforce", "service-observe-over-namespace", "default-observe", "other-namespace"],
)
def test_inline_signature_follows_the_policy_mode(signatures: Inspector, policy: Policy, status: int, enforced: bool) -> None:
    got = _decide(_req(path=INJECTION), VerdictCache(), signatures, policy=policy)
    assert (got.status, got.would, got.enforced) == (status, "deny", enforced)
    assert got.reason == "inline:sqli" and got.findings == ("sqli",) and got.verdict_id is None


def test_a_block_verdict_comes_before_inline_signatures(signatures: Inspector, verdict_factory: Any) -> None:
    verdict = verdict_factory()
    got = _decide(_req(path=INJECTION), _cache(verdict), signatures, policy=Policy(default_mode="enforce"))
    assert (got.reason, got.verdict_id, got.findings) == ("bola_breadth", verdict.id, ())


def test_a_granted_throttle_token_still_runs_inline_signatures(signatures: Inspector, verdict_factory: Any) -> None:
    cache = _cache(verdict_factory(action="throttle", burst=5))
    got = _decide(_req(path=INJECTION), cache, signatures, policy=Policy(default_mode="enforce"))
    assert (got.status, got.reason) == (403, "inline:sqli")


@pytest.mark.parametrize("action", ["block", "throttle"])
def test_an_observe_verdict_does_not_exempt_from_enforced_signatures(signatures: Inspector, verdict_factory: Any, action: str) -> None:
    cache, buckets = _cache(verdict_factory(mode="observe", action=action, burst=1)), TokenBuckets()
    policy = Policy(modes={"shop/orders": "enforce"})
    _decide(_req(), cache, signatures, policy=policy, buckets=buckets)  # uses the only throttle token
    got = _decide(_req(path=INJECTION), cache, signatures, policy=policy, buckets=buckets)
    assert (got.status, got.reason) == (403, "inline:sqli")


def test_decide_with_an_empty_signature_set(verdict_factory: Any) -> None:
    assert _decide(_req(path=INJECTION), VerdictCache(), WafInspector(SignatureSet([]), InspectionSettings()), policy=Policy(default_mode="enforce")) is ALLOW


@pytest.mark.parametrize(("action", "mode", "would", "status"), [("redact", "enforce", "redact", 200), ("block", "observe", "deny", 200)])
def test_a_verdict_answer_that_stands_still_carries_what_observe_mode_inspection_found(
        signatures: Inspector, verdict_factory: Any, action: str, mode: str, would: str, status: int) -> None:
    cache = _cache(verdict_factory(mode=mode, action=action))
    got = _decide(_req(path=INJECTION), cache, signatures, policy=Policy(default_mode="observe"))
    assert (got.status, got.would, got.findings) == (status, would, ("sqli",))
    assert got.verdict_id is not None


def test_the_external_bit_defaults_off_and_leaves_positional_construction_as_it_was() -> None:
    """``external`` is last with a default: every positional caller builds the same view as before, not external."""
    view = RequestView("GET", "/", "shop/web", "alice", "10.0.0.7", "orders", "shop", None, "rid", "jwt", "orders", None, "10.0.0.9")
    assert (view.peer_ip, view.body, view.body_truncated, view.external) == ("10.0.0.9", None, False, False)
    assert RequestView("GET", "/", ip="198.51.100.7", external=True).external is True
    # the bit names the caller for reports and policy suggest only: the verdict-cache keys are the same either way
    assert RequestView("GET", "/", ip="198.51.100.7", external=True).subject_keys() == RequestView("GET", "/", ip="198.51.100.7").subject_keys()
