"""enforcement.ratelimit.TokenBuckets: rate tokens per second up to burst, per key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from enforcement.ratelimit import TokenBuckets


def test_a_new_bucket_starts_full() -> None:
    buckets = TokenBuckets()
    assert [buckets.take("k", 1.0, 3, 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("k", 1.0, 3, 100.0) == pytest.approx(1.0)


def test_refills_at_rate() -> None:
    buckets = TokenBuckets()
    buckets.take("k", 2.0, 1, 0.0)
    assert buckets.take("k", 2.0, 1, 0.25) == pytest.approx(0.25)  # half a token back, half a token short
    assert buckets.take("k", 2.0, 1, 0.5) == 0.0
    assert buckets.take("k", 2.0, 1, 0.5) == pytest.approx(0.5)


def test_wait_is_time_to_the_next_token() -> None:
    buckets = TokenBuckets()
    buckets.take("k", 0.1, 1, 0.0)
    assert buckets.take("k", 0.1, 1, 4.0) == pytest.approx(6.0)
    assert buckets.take("k", 0.1, 1, 10.0) == 0.0


def test_refill_is_capped_at_burst() -> None:
    buckets = TokenBuckets()
    for _ in range(2):
        buckets.take("k", 10.0, 2, 0.0)
    granted = sum(buckets.take("k", 10.0, 2, 3600.0) == 0.0 for _ in range(5))
    assert granted == 2


def test_keys_are_independent() -> None:
    buckets = TokenBuckets()
    assert buckets.take("a", 1.0, 1, 0.0) == 0.0
    assert buckets.take("a", 1.0, 1, 0.0) > 0.0
    assert buckets.take("b", 1.0, 1, 0.0) == 0.0
    assert len(buckets) == 2


@given(
    rate=st.floats(min_value=0.1, max_value=100.0),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0.0, max_value=2.0), min_size=1, max_size=200),
)
def test_never_grants_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, gaps: list[float]) -> None:
    buckets, now, granted = TokenBuckets(), 1000.0, 0
    times = []
    for gap in gaps:
        now += gap
        times.append(now)
        granted += buckets.take("k", rate, burst, now) == 0.0
    assert granted <= burst + rate * (times[-1] - times[0]) + 1e-6


@given(rate=st.floats(min_value=0.1, max_value=100.0), burst=st.integers(min_value=1, max_value=20), n=st.integers(1, 100))
def test_requests_spaced_by_one_token_are_all_granted(rate: float, burst: int, n: int) -> None:
    buckets = TokenBuckets()
    assert all(buckets.take("k", rate, burst, i * (1.0001 / rate)) == 0.0 for i in range(n))
