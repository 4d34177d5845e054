"""enforcement.fasttier: enumeration and inline-repeat signals acted on in the shim, bounded, lifted by signed lifts,
never aimed at a subject a client can name for someone else."""

from __future__ import annotations

from typing import Any

import pytest

from enforcement import inspection
from enforcement.decision import ALLOW, Decision, RequestView
from enforcement.fasttier import ENUMERATION, INLINE_REPEAT, NOT_ATTACKS, FastTier, FastTierConfig
from enforcement.settings import ShimSettings
from enforcement.shim import Shim
from ingest import Policy
from tests.conftest import T0

ENFORCE = Policy(default_mode="enforce")
OBSERVE = Policy()
FLAGGED = Decision(403, "deny", True, "inline:sqli", None, ("sqli",))


def _req(path: str, principal: str | None = "mallory", ip: str | None = "10.0.0.9", **kw: Any) -> RequestView:
    view = RequestView("GET", path, kw.get("workload", "shop/web"), principal, ip, kw.get("service", "orders"), kw.get("namespace", "shop"))
    view.auth_type = kw.get("auth_type", "jwt" if principal else "none")
    return view


def _walk(tier: FastTier, n: int, policy: Policy = ENFORCE, start: float = T0, step: float = 0.01, first: int = 1000,
          **kw: Any) -> list[Decision]:
    return [tier.check(_req(f"/orders/{first + i}", **kw), ALLOW, policy, start + i * step) for i in range(n)]


def test_the_request_that_completes_an_enumeration_is_refused_and_so_are_the_principals_next() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20))
    out = _walk(tier, 25)
    assert all(d is ALLOW for d in out[:19])
    assert [d.status for d in out[19:]] == [403] * 6
    assert out[19].reason == ENUMERATION and out[19].findings == (ENUMERATION,) and out[19].verdict_id.startswith("local:")
    # every request of the principal now, object or not, any service, any address
    assert tier.check(_req("/profile", service="accounts", ip="10.7.7.7"), ALLOW, ENFORCE, T0 + 1).status == 403
    assert tier.check(_req("/orders/1", principal="alice"), ALLOW, ENFORCE, T0 + 1) is ALLOW
    assert tier.stats()["tripped_enumeration"] == 1 and tier.stats()["local_verdicts"] == 1


def test_objects_count_per_service_and_across_the_principals_addresses() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20))
    assert all(d is ALLOW for d in _walk(tier, 15, service="orders"))
    assert all(d is ALLOW for d in _walk(tier, 15, service="users", first=5000))  # 15 + 15 over two services: none reaches 20
    out = [tier.check(_req(f"/orders/{2000 + i}", ip=f"10.0.{i}.1"), ALLOW, ENFORCE, T0 + 1 + i * 0.01) for i in range(5)]
    assert out[-1].status == 403, "rotating addresses does not start the principal's count again"


def test_repeated_reads_of_the_same_objects_and_static_files_are_not_an_enumeration() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20))
    assert all(tier.check(_req(f"/orders/{1000 + i % 19}"), ALLOW, ENFORCE, T0 + i * 0.01) is ALLOW for i in range(500))
    assets = [f"/assets/index-{i:08x}3f4a9c1b.js" for i in range(100)] + [f"/img/{i}.png" for i in range(100)]
    assert all(tier.check(_req(p, principal="bob"), ALLOW, ENFORCE, T0) is ALLOW for p in assets)


def test_encoded_and_parameterised_ids_are_the_same_objects() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=10))
    paths = [f"/orders/%3{i % 10}%3{i // 10}" for i in range(5)] + [f"/orders/{i}{j};x=1" for i, j in [(0, 9), (1, 9), (2, 9), (3, 9), (4, 9)]]
    out = [tier.check(_req(p), ALLOW, ENFORCE, T0 + i * 0.01) for i, p in enumerate(paths)]
    assert out[-1].status == 403 and all(d is ALLOW for d in out[:-1])


def test_a_window_ends_and_counting_starts_again() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=20, window_s=10.0))
    assert all(d is ALLOW for d in _walk(tier, 19, step=0.5))  # 19 in 9 s
    assert all(d is ALLOW for d in _walk(tier, 19, start=T0 + 10.0, step=0.5, first=9000))  # 19 new ones: the next window


def test_the_mode_where_it_tripped_and_where_the_request_goes_must_both_enforce() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    out = _walk(tier, 6, policy=OBSERVE)
    assert (out[4].status, out[4].would, out[4].enforced) == (200, "deny", False)
    mixed = Policy(modes={"shop": "enforce"})
    assert tier.check(_req("/x"), ALLOW, mixed, T0 + 1).would == "deny"
    assert tier.check(_req("/x"), ALLOW, mixed, T0 + 1).status == 200, "tripped in observe mode: reported, not enforced"
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    _walk(tier, 5, policy=mixed)
    assert tier.check(_req("/x"), ALLOW, mixed, T0 + 1).status == 403
    assert tier.check(_req("/x", namespace="labs"), ALLOW, mixed, T0 + 1).status == 200  # observed where the policy observes


def test_the_policy_action_of_the_class_is_taken() -> None:
    throttle = Policy(default_mode="enforce", actions={"bola": "throttle"}, throttle_rate_per_s=1.0, throttle_burst=2)
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    out = _walk(tier, 10, policy=throttle, step=0.001)
    assert [d.status for d in out] == [200] * 6 + [429] * 4  # trips on the 5th object; the burst of 2 passes first
    assert out[-1].retry_after >= 1 and out[-1].would == "throttle"
    for action in ("redact", "quarantine"):
        tier = FastTier(FastTierConfig(max_distinct_objects=5))
        assert all(d is ALLOW for d in _walk(tier, 50, policy=Policy(default_mode="enforce", actions={"bola": action})))
        assert tier.stats()["tripped_enumeration"] == 0 and len(tier) == 0, "nothing is counted for a signal it will not act on"


def test_subjects_a_client_can_name_for_someone_else_are_never_counted() -> None:
    for auth in ("basic", "jwt-unverified"):
        tier = FastTier(FastTierConfig(max_distinct_objects=5))
        assert all(d is ALLOW for d in _walk(tier, 50, auth_type=auth))
        assert all(tier.check(_req("/s", auth_type=auth), FLAGGED, ENFORCE, T0) is FLAGGED for _ in range(5))
        assert tier.check(_req("/s", auth_type=auth), ALLOW, ENFORCE, T0) is ALLOW and len(tier) == 0
    # a workload without principal: only with workloads on; an address without either: inline repeats, not objects
    tier = FastTier(FastTierConfig(max_distinct_objects=5))
    assert all(d is ALLOW for d in _walk(tier, 50, principal=None))
    for _ in range(3):
        tier.check(_req("/s", principal=None), FLAGGED, ENFORCE, T0)
    assert tier.check(_req("/t", principal=None), ALLOW, ENFORCE, T0) is ALLOW
    tier = FastTier(FastTierConfig(workloads=True))
    for _ in range(3):
        tier.check(_req("/s", principal=None), FLAGGED, ENFORCE, T0)
    assert tier.check(_req("/t", principal=None), ALLOW, ENFORCE, T0).reason == INLINE_REPEAT
    tier = FastTier(FastTierConfig())
    for _ in range(3):
        tier.check(_req("/s", principal=None, workload=None), FLAGGED, ENFORCE, T0)
    assert tier.check(_req("/t", principal=None, workload=None), ALLOW, ENFORCE, T0).reason == INLINE_REPEAT
    assert tier.check(_req("/t", principal=None, workload=None, ip="10.0.0.10"), ALLOW, ENFORCE, T0) is ALLOW


def test_a_burst_of_inline_findings_refuses_the_next_requests() -> None:
    tier = FastTier(FastTierConfig(inline_hits=2))
    assert tier.check(_req("/search?q=1' or 1=1"), FLAGGED, ENFORCE, T0) is FLAGGED
    assert tier.check(_req("/search?q=shoes"), ALLOW, ENFORCE, T0 + 0.1) is ALLOW  # one hit: not yet
    assert tier.check(_req("/search?q=1 union select"), FLAGGED, ENFORCE, T0 + 0.2) is FLAGGED  # an enforced refusal stands
    evasive = tier.check(_req("/search?q=%2531%2527"), ALLOW, ENFORCE, T0 + 0.3)
    assert (evasive.status, evasive.reason, evasive.findings) == (403, INLINE_REPEAT, (INLINE_REPEAT,))
    tier = FastTier(FastTierConfig(inline_hits=1))
    tier.check(_req("/a"), Decision(200, "deny", False, "inline:sqli", None, ("sqli",)), OBSERVE, T0)  # observe-mode findings count
    assert tier.check(_req("/b"), ALLOW, OBSERVE, T0 + 0.1).would == "deny"


def test_findings_that_are_not_attacks_do_not_count() -> None:
    assert NOT_ATTACKS == {inspection.OVERSIZE, inspection.OVER_BUDGET}
    tier = FastTier(FastTierConfig(inline_hits=1))
    for finding in sorted(NOT_ATTACKS):
        tier.check(_req("/upload"), Decision(403, "deny", True, f"inline:{finding}", None, (finding,)), ENFORCE, T0)
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0) is ALLOW and len(tier) == 0


def test_a_local_verdict_expires_and_a_signed_lift_lifts_it() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5, block_s=60.0))
    _walk(tier, 5)
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 30).status == 403
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 61) is ALLOW
    _walk(tier, 5, start=T0 + 100)
    actor = _req("/x").subject_keys()[0]
    # a lift issued before the local verdict does not lift it; one issued after does (any subject key of the request)
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 101, {actor: (T0 + 50, T0 + 9e5)}).status == 403
    assert tier.check(_req("/x"), ALLOW, ENFORCE, T0 + 102, {actor: (T0 + 101.5, T0 + 9e5)}) is ALLOW
    assert tier.stats()["lifted"] == 1


def test_state_is_bounded_oldest_window_first() -> None:
    tier = FastTier(FastTierConfig(max_distinct_objects=5, max_actors=100))
    for i in range(1000):
        tier.check(_req(f"/orders/{i}", principal=f"user-{i}"), ALLOW, ENFORCE, T0 + i * 0.001)
    assert len(tier) == 100 and tier.stats()["evicted"] == 900
    for i in range(3):  # the newest are the ones kept: user-999 has one object already
        tier.check(_req(f"/orders/{5000 + i}", principal="user-999"), ALLOW, ENFORCE, T0 + 2)
    assert tier.check(_req("/orders/6000", principal="user-999"), ALLOW, ENFORCE, T0 + 2).status == 403
    for i in range(300):  # local verdicts are bounded too
        _walk(tier, 5, principal=f"walker-{i}", start=T0 + 3 + i * 0.01)
    assert tier.stats()["local_verdicts"] == 100


@pytest.mark.parametrize("failure_mode", ["allow", "deny"])
def test_the_shim_applies_the_fast_tier_before_and_after_sync(failure_mode: str) -> None:
    settings = ShimSettings(bootstrap=None, report="none", policy=ENFORCE, fast_tier={"max_distinct_objects": 10}, failure_mode=failure_mode)
    shim = Shim(settings)
    walk = [_req(f"/orders/{i}") for i in range(12)]
    unsynced = 403 if failure_mode == "deny" else 200
    assert [shim.decide_view(v).status for v in walk[:9]] == [unsynced] * 9
    assert shim.decide_view(walk[9]).status == 403  # counted before sync too
    shim.synced.set()
    assert shim.decide_view(walk[10]).status == 403
    off = Shim(ShimSettings(bootstrap=None, report="none", policy=ENFORCE, fast_tier={"enabled": False}))
    off.synced.set()
    assert all(off.decide_view(v) is ALLOW for v in walk * 20)


def test_failure_mode_deny_refuses_an_observe_mode_local_verdict_before_sync() -> None:
    shim = Shim(ShimSettings(bootstrap=None, report="none", failure_mode="deny", fast_tier={"max_distinct_objects": 5}))
    answers = [shim.decide_view(_req(f"/orders/{i}")) for i in range(8)]
    assert [a.status for a in answers] == [403] * 8 and {a.reason for a in answers} == {"kubeward-unsynced"}
