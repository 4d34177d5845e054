"""Joining observations of one call by request id (ingest.collectors.join)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.collectors.join import Joiner
from ingest.observation import HttpObservation

BOTH = frozenset({"shim", "access_log"})


def obs(reporter: str, request_id: str | None = "r1", **fields: Any) -> HttpObservation:
    return HttpObservation(fields.pop("time", 1.0), "GET", "/a", reporter, request_id=request_id, **fields)


def test_an_observation_without_request_id_is_released_at_once() -> None:
    joiner = Joiner(BOTH, hold_s=2.0, max_pending=10)
    out = joiner.add(obs("shim", None), now=0.0)
    assert [o.reporter for o in out] == ["shim"]
    assert len(joiner) == 0 and joiner.stats.passed == 1


def test_two_reporters_are_merged_as_soon_as_both_arrived() -> None:
    joiner = Joiner(BOTH, hold_s=2.0, max_pending=10)
    assert joiner.add(obs("access_log", status=200, response_bytes=5), now=0.0) == []
    (merged,) = joiner.add(obs("shim", decision="deny", status=403), now=0.1)
    # the shim ranks first by default, so its status wins; the access log fills what the shim did not see
    assert (merged.reporter, merged.decision, merged.status, merged.response_bytes) == ("shim+access_log", "deny", 403, 5)
    assert joiner.stats.joined == 1 and joiner.stats.complete == 1 and len(joiner) == 0


def test_precedence_is_configurable() -> None:
    joiner = Joiner(BOTH, hold_s=2.0, max_pending=10, precedence=("access_log", "shim"))
    joiner.add(obs("shim", status=403), now=0.0)
    (merged,) = joiner.add(obs("access_log", status=200), now=0.0)
    assert merged.status == 200 and merged.reporter == "access_log+shim"


def test_an_observation_covering_every_expected_reporter_is_not_held() -> None:
    joiner = Joiner(frozenset({"access_log"}), hold_s=2.0, max_pending=10)
    assert len(joiner.add(obs("access_log"), now=0.0)) == 1
    assert len(joiner) == 0


def test_an_incomplete_call_is_released_after_hold_s_and_not_before() -> None:
    joiner = Joiner(BOTH, hold_s=2.0, max_pending=10)
    joiner.add(obs("shim"), now=10.0)
    assert joiner.expire(11.9) == []
    (released,) = joiner.expire(12.0)
    assert released.reporter == "shim"
    assert joiner.stats.expired == 1 and joiner.stats.joined == 0


def test_expire_releases_in_arrival_order_and_stops_at_the_first_young_one() -> None:
    joiner = Joiner(BOTH, hold_s=1.0, max_pending=10)
    for i, now in enumerate((0.0, 0.5, 2.0)):
        joiner.add(obs("shim", f"r{i}"), now=now)
    assert [o.request_id for o in joiner.expire(1.6)] == ["r0", "r1"]
    assert len(joiner) == 1


def test_a_late_partner_after_expiry_is_released_alone() -> None:
    joiner = Joiner(BOTH, hold_s=1.0, max_pending=10)
    joiner.add(obs("shim"), now=0.0)
    joiner.expire(5.0)
    assert len(joiner.add(obs("access_log"), now=5.1)) == 0  # held again, waiting for a shim that already left
    (late,) = joiner.expire(6.1)
    assert late.reporter == "access_log"


def test_a_reused_request_id_never_folds_two_calls_into_one() -> None:
    joiner = Joiner(BOTH, hold_s=5.0, max_pending=10)
    assert joiner.add(obs("shim", time=1.0), now=0.0) == []
    (first,) = joiner.add(obs("shim", time=2.0), now=0.1)
    assert first.time == 1.0 and joiner.stats.reused == 1
    (second,) = joiner.add(obs("access_log", time=2.0, status=200), now=0.2)
    assert second.time == 2.0 and second.reporter == "shim+access_log"


def test_memory_is_bounded_and_the_oldest_is_evicted() -> None:
    joiner = Joiner(BOTH, hold_s=60.0, max_pending=3)
    released = []
    for i in range(5):
        released += joiner.add(obs("shim", f"r{i}"), now=float(i))
    assert [o.request_id for o in released] == ["r0", "r1"]
    assert len(joiner) == 3 and joiner.stats.evicted == 2


def test_drain_releases_everything_held() -> None:
    joiner = Joiner(BOTH, hold_s=60.0, max_pending=10)
    joiner.add(obs("shim", "a"), now=0.0)
    joiner.add(obs("ext_proc", "a"), now=0.0)
    joiner.add(obs("shim", "b"), now=0.0)
    out = joiner.drain()
    assert [(o.request_id, o.reporter) for o in out] == [("a", "shim+ext_proc"), ("b", "shim")]
    assert len(joiner) == 0


def test_three_reporters_join_when_all_expected_arrived() -> None:
    joiner = Joiner(frozenset({"shim", "ext_proc", "access_log"}), hold_s=2.0, max_pending=10)
    assert joiner.add(obs("access_log", status=200), now=0) == []
    assert joiner.add(obs("ext_proc", response_body=b"{}"), now=0) == []
    (merged,) = joiner.add(obs("shim", decision="allow"), now=0)
    assert merged.reporter == "shim+ext_proc+access_log"
    assert (merged.decision, merged.response_body, merged.status) == ("allow", b"{}", 200)


@pytest.mark.parametrize(("hold_s", "max_pending"), [(-1.0, 10), (1.0, 0)])
def test_bad_arguments_are_named(hold_s: float, max_pending: int) -> None:
    with pytest.raises(ValueError, match="hold_s|max_pending"):
        Joiner(BOTH, hold_s=hold_s, max_pending=max_pending)


events = st.lists(st.tuples(st.sampled_from(["shim", "access_log", "ext_proc"]), st.sampled_from(["a", "b", "c", None]),
                            st.floats(0, 0.5)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(events, st.integers(1, 4))
def test_every_observation_leaves_exactly_once(seq: list[tuple[str, str | None, float]], max_pending: int) -> None:
    joiner = Joiner(BOTH, hold_s=1.0, max_pending=max_pending)
    now, released = 0.0, []
    for reporter, request_id, step in seq:
        now += step
        released += joiner.add(obs(reporter, request_id), now)
        released += joiner.expire(now)
        assert len(joiner) <= max_pending
    released += joiner.drain()
    parts = sorted(part for o in released for part in o.reporter.split("+"))
    assert parts == sorted(reporter for reporter, _, _ in seq)
