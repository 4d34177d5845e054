"""ControlConsumer.apply: what one record of the verdict topic does to the cache (no broker needed)."""

from __future__ import annotations

import time
from typing import Any

from enforcement.cache import VerdictCache
from enforcement.control import ControlConsumer
from ingest import sign_verdict

KEY = b"test-key"


def _consumer() -> ControlConsumer:
    return ControlConsumer("127.0.0.1:1", VerdictCache(), KEY)


def test_a_signed_verdict_is_applied_and_its_latency_recorded(verdict_factory: Any) -> None:
    control = _consumer()
    now = time.time()
    verdict = sign_verdict(verdict_factory(issued_at=now, evidence_time=now - 0.02), KEY)
    control.apply(verdict.subject.cache_key.encode(), verdict.model_dump_json().encode(), now)
    assert verdict.subject.cache_key in control.cache.entries
    assert len(control.latencies_ms) == 1 and 19.0 <= control.latencies_ms[0] <= 21.0


def test_a_verdict_with_a_bad_signature_is_ignored(verdict_factory: Any) -> None:
    control = _consumer()
    forged = sign_verdict(verdict_factory(), b"someone-else")
    control.apply(b"k", forged.model_dump_json().encode(), time.time())
    assert len(control.cache) == 0 and control.rejected == 1


def test_garbage_is_ignored_and_counted() -> None:
    control = _consumer()
    control.apply(b"k", b"{not json", time.time())
    assert len(control.cache) == 0 and control.rejected == 1


def test_a_tombstone_lifts_the_verdict(verdict_factory: Any) -> None:
    control = _consumer()
    verdict = sign_verdict(verdict_factory(), KEY)
    control.apply(b"x", verdict.model_dump_json().encode(), time.time())
    control.apply(verdict.subject.cache_key.encode(), None, time.time())
    assert len(control.cache) == 0


def test_replayed_old_verdicts_do_not_count_as_latency(verdict_factory: Any) -> None:
    control = _consumer()
    old = sign_verdict(verdict_factory(issued_at=control.started_at - 60, evidence_time=control.started_at - 61), KEY)
    control.apply(b"x", old.model_dump_json().encode(), time.time())
    assert len(control.cache) == 1 and not control.latencies_ms
