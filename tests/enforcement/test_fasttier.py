"""enforcement.fasttier: enumeration and inline-repeat signals acted on in the shim, bounded, lifted by signed lifts."""

from __future__ import annotations

from typing import Any

from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.fasttier import ENUMERATION, INLINE_REPEAT, FastTier, FastTierConfig
from enforcement.settings import ShimSettings
from enforcement.shim import Shim
from ingest import Policy
from tests.conftest import T0

ENFORCE = Policy(default_mode="enforce")
OBSERVE = Policy()
FLAGGED = Decision(403, "deny", True, "inline:sqli", None, ("sqli",))


def _req(path: str, principal: str | None = "mallory", ip: str = "10.0.0.9", **kw: Any) -> RequestView:
    return RequestView("GET", path, kw.get("workload", "shop/web"), principal, ip, kw.get("service", "orders"), "shop")


def _walk(tier: FastTier, n: int, policy: Policy = ENFORCE, start: float = T0, step: float = 0.01, **kw: Any) -> list[Decision]:
    return [tier.check(_req(f"/orders/{1000 + i}", **kw), ALLOW, policy, start + i * step) for i in range(n)]


def test_the_request_that_completes_an_enumeration_is_refused_and_so_are_the_actors_next() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20))
    out = _walk(tier, 25)
    assert all(d is ALLOW for d in out[:19])
    assert [d.status for d in out[19:]] == [403] * 6
    assert out[19].reason == ENUMERATION and out[19].findings == (ENUMERATION,) and out[19].verdict_id.startswith("local:")
    # every request of the actor now, object or not, any service
    assert tier.check(_req("/profile", service="accounts"), ALLOW, ENFORCE, T0 + 1).status == 403
    # another actor is not touched
    assert tier.check(_req("/orders/1", principal="alice"), ALLOW, ENFORCE, T0 + 1) is ALLOW
    assert tier.stats()["tripped_enumeration"] == 1 and tier.stats()["local_verdicts"] == 1


def test_repeated_reads_of_the_same_objects_are_not_an_enumeration() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20))
    out = [tier.check(_req(f"/orders/{1000 + i % 19}"), ALLOW, ENFORCE, T0 + i * 0.01) for i in range(500)]
    assert all(d is ALLOW for d in out)


def test_a_window_ends_and_counting_starts_again() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20, window_s=10.0))
    assert all(d is ALLOW for d in _walk(tier, 19, step=0.5))  # 19 in 9 s
    assert all(d is ALLOW for d in _walk(tier, 19, start=T0 + 10.0, step=0.5))  # the next window: from zero


def test_observe_mode_reports_what_would_have_happened() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    out = _walk(tier, 6, policy=OBSERVE)
    assert (out[4].status, out[4].would, out[4].enforced) == (200, "deny", False)
    # a namespace in enforce mode gets the same local verdict enforced
    mixed = Policy(modes={"shop": "enforce"})
    assert tier.check(_req("/x"), ALLOW, mixed, T0 + 1).status == 403


def test_the_policy_action_of_the_class_is_taken() -> None:
    throttle = Policy(default_mode="enforce", actions={"bola": "throttle"}, throttle_rate_per_s=1.0, throttle_burst=2)
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    out = _walk(tier, 10, policy=throttle, step=0.001)
    assert [d.status for d in out] == [200] * 6 + [429] * 4  # trips on the 5th object; the burst of 2 passes first
    assert out[-1].status == 429 and out[-1].retry_after >= 1 and out[-1].would == "throttle"
    redact = Policy(default_mode="enforce", actions={"bola": "redact"})
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    assert all(d is ALLOW for d in _walk(tier, 10, policy=redact))  # no local action: left to the worker
    assert tier.stats()["tripped_enumeration"] == 0


def test_workloads_are_left_to_the_worker_unless_configured() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    assert all(d is ALLOW for d in _walk(tier, 50, principal=None))
    tier = FastTier(FastTierConfig(max_distinct_objects=5, enumeration_users_only=False))
    assert _walk(tier, 6, principal=None)[-1].status == 403


def test_an_inline_finding_refuses_the_actors_next_requests() -> None:
    tier = FastTier(FastTierConfig(inline_hits=2))
    assert tier.check(_req("/search?q=1' or 1=1"), FLAGGED, ENFORCE, T0) is FLAGGED
    assert tier.check(_req("/search?q=shoes"), ALLOW, ENFORCE, T0 + 0.1) is ALLOW  # one hit: not yet
    second = tier.check(_req("/search?q=1 union select"), FLAGGED, ENFORCE, T0 + 0.2)
    assert second is FLAGGED  # an enforced refusal stands as it is
    evasive = tier.check(_req("/search?q=%2531%2527"), ALLOW, ENFORCE, T0 + 0.3)
    assert (evasive.status, evasive.reason, evasive.findings) == (403, INLINE_REPEAT, (INLINE_REPEAT,))
    # observe-mode findings count too (they are reported as would-deny)
    tier = FastTier(FastTierConfig(inline_hits=1))
    seen = Decision(200, "deny", False, "inline:sqli", None, ("sqli",))
    tier.check(_req("/a"), seen, OBSERVE, T0)
    assert tier.check(_req("/b"), ALLOW, OBSERVE, T0 + 0.1).would == "deny"


def test_a_local_verdict_expires_and_a_signed_lift_lifts_it() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5, block_s=60.0))
    _walk(tier, 5)
    actor = _req("/x").subject_keys()[0]
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 30).status == 403
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 61) is ALLOW
    _walk(tier, 5, start=T0 + 100)
    # a lift issued before the local verdict does not lift it; one issued after does (any subject key of the request)
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 101, {actor: (T0 + 50, T0 + 9e5)}).status == 403
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 102, {"principal:mallory": (T0 + 101.5, T0 + 9e5)}) is ALLOW
    assert tier.stats()["lifted"] == 1


def test_state_is_bounded_oldest_window_first() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5, max_actors=100))
    for i in range(1000):
        tier.check(_req(f"/orders/{i}", principal=f"user-{i}"), ALLOW, ENFORCE, T0 + i * 0.001)
    assert len(tier) == 100 and tier.stats()["evicted"] == 900
    # the newest are the ones kept: user-999 still counts its first object
    for i in range(4):
        tier.check(_req(f"/orders/{5000 + i}", principal="user-999"), ALLOW, ENFORCE, T0 + 2)
    assert tier.check(_req("/orders/6000", principal="user-999"), ALLOW, ENFORCE, T0 + 2).status == 403


def test_the_shim_applies_the_fast_tier_before_and_after_sync() -> None:
    settings = ShimSettings(bootstrap=None, report="none", policy=ENFORCE, fast_tier={"max_distinct_objects": 10})
    shim = Shim(settings)
    walk = [RequestView("GET", f"/orders/{i}", "shop/web", "mallory", "10.0.0.9", "orders", "shop") for i in range(12)]
    assert shim.decide_view(walk[0]).status == 200  # unsynced, failure_mode allow
    for view in walk[1:9]:
        shim.decide_view(view)
    assert shim.decide_view(walk[9]).status == 403  # counted before sync too
    shim.synced.set()
    assert shim.decide_view(walk[10]).status == 403
    assert shim.decision_counts()["deny:enforce"] == 2
    off = Shim(ShimSettings(bootstrap=None, report="none", policy=ENFORCE, fast_tier={"enabled": False}))
    off.synced.set()
    assert all(off.decide_view(v) is ALLOW for v in walk * 20)
