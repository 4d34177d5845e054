"""streams.findingdedup: one finding per actor and attack; repeats folded into counted Updates, bounded."""

from __future__ import annotations

import pytest

from ingest import Finding, FindingInfo
from streams.findingdedup import FindingDedup, finding_key
from tests.ocsfcheck import validate

T0 = 1_700_000_000.0
KEY = finding_key("actor", "shop/web|mallory", "bola")


def _finding(uid: str, t: float, severity: int = 3) -> Finding:
    ms = int(t * 1000)
    return Finding(time=ms, start_time=ms, end_time=ms, severity_id=severity, confidence_score=70, message="bola by mallory",
                   finding_info=FindingInfo(uid=uid, title="bola detected", types=["bola"], analytic={"name": "r", "type_id": 1, "type": "Rule"}),
                   unmapped={"actor": "shop/web|mallory"})


def test_the_first_detection_is_published_as_a_create() -> None:
    dedup = FindingDedup(update_s=300)
    first = _finding("f1", T0)
    assert dedup.offer(KEY, first, T0) == [first] and (first.activity_id, first.count, first.type_uid) == (1, 1, 200401)
    assert dedup.uid(KEY, T0 + 10) == "f1" and dedup.counts["created"] == 1


def test_repeats_are_folded_and_published_as_one_update_per_interval() -> None:
    dedup = FindingDedup(update_s=300)
    dedup.offer(KEY, _finding("f1", T0), T0)
    assert dedup.offer(KEY, _finding("f2", T0 + 60, severity=4), T0 + 60) == []
    assert dedup.offer(KEY, _finding("f3", T0 + 120), T0 + 120) == []
    assert dedup.due(T0 + 299) == []
    (update,) = dedup.due(T0 + 300)
    assert (update.activity_id, update.type_uid, update.finding_info.uid, update.count) == (2, 200402, "f1", 3)
    assert (update.start_time, update.end_time, update.time) == (int(T0 * 1000), int((T0 + 120) * 1000), int((T0 + 300) * 1000))
    assert (update.finding_info.first_seen_time, update.finding_info.last_seen_time) == (update.start_time, update.end_time)
    assert update.severity_id == 4  # the highest seen
    validate(update)
    assert dedup.due(T0 + 900) == []  # nothing new since
    (again,) = dedup.offer(KEY, _finding("f4", T0 + 901), T0 + 901)  # interval passed: published at once
    assert (again.count, again.finding_info.uid) == (4, "f1")
    assert dedup.counts == {"created": 1, "updated": 2, "folded": 3, "evicted": 0}


def test_zero_interval_publishes_every_repeat_as_an_update() -> None:
    dedup = FindingDedup(update_s=0)
    dedup.offer(KEY, _finding("f1", T0), T0)
    assert [u.count for t in (1, 2) for u in dedup.offer(KEY, _finding("x", T0 + t), T0 + t)] == [2, 3]


def test_other_actors_and_attacks_are_findings_of_their_own() -> None:
    dedup = FindingDedup()
    other_attack, other_actor = finding_key("actor", "shop/web|mallory", "exfiltration"), finding_key("ip", "10.0.0.9", "bola")
    published = [f for key, uid in ((KEY, "a"), (other_attack, "b"), (other_actor, "c")) for f in dedup.offer(key, _finding(uid, T0), T0)]
    assert [(f.finding_info.uid, f.activity_id) for f in published] == [("a", 1), ("b", 1), ("c", 1)] and len(dedup) == 3


def test_a_finding_closes_after_the_window_and_its_unpublished_count_goes_out() -> None:
    dedup = FindingDedup(update_s=300, window_s=3600)
    dedup.offer(KEY, _finding("f1", T0), T0)
    dedup.offer(KEY, _finding("f2", T0 + 10), T0 + 10)
    assert dedup.uid(KEY, T0 + 3611) is None
    closing, created = dedup.offer(KEY, _finding("g1", T0 + 4000), T0 + 4000)
    assert (closing.finding_info.uid, closing.count, closing.activity_id) == ("f1", 2, 2)
    assert (created.finding_info.uid, created.activity_id) == ("g1", 1) and dedup.uid(KEY, T0 + 4000) == "g1"


def test_the_table_is_bounded_oldest_first_and_counted() -> None:
    dedup = FindingDedup(update_s=300, max_keys=2)
    for i in range(2):
        dedup.offer(f"k{i}", _finding(f"u{i}", T0 + i), T0 + i)
    dedup.offer("k0", _finding("again", T0 + 5), T0 + 5)  # k0 now the most recent; k1 the oldest
    published = dedup.offer("k2", _finding("u2", T0 + 6), T0 + 6)
    assert [f.finding_info.uid for f in published] == ["u2"] and dedup.uid("k1", T0 + 6) is None and len(dedup) == 2
    published = dedup.offer("k3", _finding("u3", T0 + 7), T0 + 7)  # evicts k0, whose repeat was unpublished
    assert [(f.finding_info.uid, f.count) for f in published] == [("u0", 2), ("u3", 1)]
    assert dedup.counts["evicted"] == 2


@pytest.mark.parametrize("kwargs", [{"update_s": -1}, {"window_s": 0}, {"max_keys": 0}])
def test_bad_parameters_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        FindingDedup(**kwargs)  # type: ignore[arg-type]


def test_the_pipeline_publishes_a_create_then_counted_updates_with_the_verdicts_naming_the_finding() -> None:
    from ingest import Policy, RequestSummary, Source, Destination
    from streams.pipeline import Pipeline
    from streams.settings import WorkerSettings

    pipeline = Pipeline(WorkerSettings(verdict_key="k" * 32, policy=Policy(verdict_ttl_s=2), findings_update_s=30), "l7.summaries.v1")
    published, verdicts = [], []
    for i in range(5):
        s = RequestSummary(id=f"r{i}", time=T0 + 3 * i, source=Source(workload="shop/web", ip="10.0.0.7"), principal="mallory",
                           destination=Destination(service="orders", namespace="shop"), method="GET", path_template="/orders/{id}",
                           status=200, inline_findings=["sqli"])
        out = pipeline.handle(0, s.model_dump_json().encode(), i, now=T0 + 10 * i)
        published += out.published
        verdicts += out.verdicts
    published += pipeline.due_findings(T0 + 200)
    # a Create; an Update with the 4th detection (30 s after the Create); the 5th's count from the timer
    assert len(verdicts) == 5 and [(f.activity_id, f.count) for f in published] == [(1, 1), (2, 4), (2, 5)]
    assert {v.finding_ids[0] for v in verdicts} == {published[0].finding_info.uid} == {f.finding_info.uid for f in published}
    for f in published:
        validate(f)
