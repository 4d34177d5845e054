"""streams.changelogparts: state values of any size cut into records Kafka takes, and put together at restore."""

from __future__ import annotations

import os
from typing import Any

import pytest

import streams.pipeline
from ingest import encode_envelope
from streams.changelogparts import MAGIC, join, split
from streams.pipeline import Pipeline
from streams.settings import WorkerSettings
from tests.conftest import T0


@pytest.mark.parametrize("size", [0, 1, 99, 100, 101, 250, 1000, 12_345])
def test_every_record_fits_and_join_gives_the_value_back(size: int) -> None:
    value = os.urandom(size)
    records = split([(b"0:enricher:x", value), (b"0:7", b"small")], limit=100)
    assert all(len(v) <= 100 for _, v in records)
    assert (b"0:7", b"small") in records
    whole, broken = join(records)
    assert dict(whole) == {b"0:enricher:x": value, b"0:7": b"small"} and broken == []


def test_a_small_value_is_written_as_it_is() -> None:
    assert split([(b"k", b"abc")], limit=100) == [(b"k", b"abc")]
    # a value that happens to start with the header's magic is framed, so join never misreads it
    tricky = MAGIC + b"\x00\x00\x00\x05rest"
    assert join(split([(b"k", tricky)], limit=100))[0] == [(b"k", tricky)]


def test_parts_left_by_a_larger_earlier_value_are_ignored() -> None:
    old = split([(b"k", b"a" * 1000)], limit=100)
    new = split([(b"k", b"b" * 250)], limit=100)
    merged = dict(old)
    merged.update(dict(new))  # a compacted changelog: the newest value per key, old parts still there
    assert dict(join(merged.items())[0]) == {b"k": b"b" * 250}
    merged.update({b"k": b"whole again"})
    assert dict(join(merged.items())[0]) == {b"k": b"whole again"}


def test_a_value_with_a_part_missing_is_dropped_and_named() -> None:
    records = dict(split([(b"k", b"c" * 500), (b"j", b"ok")], limit=100))
    del records[b"k#3"]
    whole, broken = join(records.items())
    assert dict(whole) == {b"j": b"ok"} and broken == [b"k"]


def test_a_head_whose_parts_were_never_written_is_not_joined_with_an_older_writes_parts() -> None:
    old = dict(split([(b"k", b"A" * 250)], limit=100))
    new = dict(split([(b"k", b"B" * 260)], limit=100))
    crashed = {**old, b"k": new[b"k"]}  # the worker died after the new head, before its parts
    assert join(crashed.items()) == ([], [b"k"])
    shorter = {**old, b"k": dict(split([(b"k", b"C" * 120)], limit=100))[b"k"]}  # as many parts as before, another write
    assert join(shorter.items())[1] == [b"k"]


def test_limits_and_keys_split_cannot_honour_are_refused() -> None:
    with pytest.raises(ValueError, match="no room"):
        split([(b"k", b"x" * 100)], limit=20)
    with pytest.raises(ValueError, match="contains"):
        split([(b"0:enricher:a#1", b"x")], limit=100)


def test_a_pipeline_checkpoint_past_the_limit_is_cut_and_restores(summary_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.pipeline, "PART_BYTES", 2000)
    settings = WorkerSettings(state_flush_s=0.001)
    pipeline = Pipeline(settings, "l7.summaries.v1")
    rows = [summary_factory(principal=f"user-{u}", time=T0 + 1, source={"workload": None, "ip": f"10.1.{u // 250}.{u % 250}"})
            for u in range(3000)]
    out = pipeline.handle(0, encode_envelope(rows), 0, now=T0 + 1)
    assert out.state_writes and max(len(v) for _, v in out.state_writes) <= 2000
    assert any(b"#" in k for k, _ in out.state_writes), "some enricher state is larger than the limit here"
    restored = Pipeline(settings, "l7.summaries.v1").processor(0, out.state_writes)
    original = pipeline.processors[0]
    assert [e.export() for e in restored.enrichers] == [e.export() for e in original.enrichers]


def test_an_unreadable_enricher_value_is_skipped_and_the_worker_comes_up(summary_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    settings = WorkerSettings(state_flush_s=0.001)
    pipeline = Pipeline(settings, "l7.summaries.v1")
    out = pipeline.handle(0, encode_envelope([summary_factory(principal="user-1", time=T0 + 1)]), 0, now=T0 + 1)
    damaged = [(k, b"not an npz" if b":enricher:" in k else v) for k, v in out.state_writes]
    assert any(b":enricher:" in k for k, _ in damaged)
    restored = Pipeline(settings, "l7.summaries.v1").processor(0, damaged)
    assert restored.store is not None and "state value unreadable" in caplog.text
