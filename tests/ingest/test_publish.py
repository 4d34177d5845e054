"""Unit tests of ingest.publish and ingest.envelopebuffer: the pure EnvelopeBuffer, and SummaryPublisher over a fake producer."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future
from kafka.partitioner import DefaultPartitioner
from prometheus_client import REGISTRY

from ingest.envelope import decode_message
from ingest.envelopebuffer import EnvelopeBuffer, default_partition, row_actor
from ingest.errors import PublishError
from ingest.publish import SummaryPublisher
from ingest.schema import Destination, RequestSummary, Source

PARTITIONS = (0, 1, 2, 3)


def make_summary(i: int, actor: int = 0, principal: str | None = "user") -> RequestSummary:
    return RequestSummary(
        id=f"req-{i}", time=1_700_000_000.0 + i,
        source=Source(workload=f"shop/client-{actor}", namespace="shop", ip=f"10.0.0.{actor % 250}"),
        principal=f"{principal}-{actor}" if principal else None,
        destination=Destination(service="orders", namespace="shop"),
        method="GET", path_template="/orders/{id}", status=200, sensitive={"email": 1},
    )


def make_row(i: int, actor: int = 0, principal: str | None = "user") -> dict[str, Any]:
    row = make_summary(i, actor, principal).model_dump()
    row["sensitive"] = list(row["sensitive"].items())
    return row


def rows_for(n: int, actors: int) -> list[dict[str, Any]]:
    return [make_row(i, actor=i % actors) for i in range(n)]


def ids(envelopes: list[Any]) -> list[str]:
    return [row["id"] for env in envelopes for row in env.rows]


# ---------------------------------------------------------------- EnvelopeBuffer


def test_rows_of_one_actor_always_land_in_one_partition() -> None:
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=7)
    envelopes = buf.add(rows_for(1000, actors=40)) + buf.drain()
    seen: dict[str, set[int]] = {}
    for env in envelopes:
        for row in env.rows:
            seen.setdefault(row_actor(row), set()).add(env.partition)
    assert len(seen) == 40
    assert all(len(parts) == 1 for parts in seen.values())
    assert len({p for parts in seen.values() for p in parts}) > 1, "40 actors should spread over partitions"


def test_an_envelope_never_mixes_partitions_and_is_keyed_by_its_first_row() -> None:
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=13)
    for env in buf.add(rows_for(500, actors=25)) + buf.drain():
        assert {buf.partition_for(row_actor(row)) for row in env.rows} == {env.partition}
        assert env.key == row_actor(env.rows[0])


def test_envelopes_are_cut_at_envelope_rows() -> None:
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=4)
    full = buf.add([make_row(i, actor=1) for i in range(10)])
    assert [len(env.rows) for env in full] == [4, 4]
    assert ids(full) == [f"req-{i}" for i in range(8)]
    assert len(buf) == 2
    assert [len(env.rows) for env in buf.drain()] == [2]


def test_due_respects_linger() -> None:
    now = [100.0]
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=100, linger_ms=5.0, clock=lambda: now[0])
    buf.add([make_row(0, actor=1)])
    assert buf.due(100.0049) == []
    late_actor = next(a for a in range(2, 50) if buf.partition_for(row_actor(make_row(0, a))) !=
                      buf.partition_for(row_actor(make_row(0, 1))))
    buf.add([make_row(1, actor=late_actor)], now=100.004)
    assert ids(buf.due(100.0051)) == ["req-0"]
    assert buf.due(100.0051) == []
    now[0] = 100.0091
    assert ids(buf.due()) == ["req-1"]
    assert len(buf) == 0


def test_the_oldest_row_sets_the_deadline_of_a_partition() -> None:
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=100, linger_ms=5.0)
    buf.add([make_row(0, actor=1)], now=0.0)
    buf.add([make_row(1, actor=1)], now=0.004)
    assert buf.due(0.0049) == []
    assert ids(buf.due(0.0051)) == ["req-0", "req-1"]


def test_drain_returns_everything_exactly_once() -> None:
    buf = EnvelopeBuffer(PARTITIONS, envelope_rows=9, linger_ms=1.0)
    rows = rows_for(301, actors=17)
    out = buf.add(rows[:150], now=0.0) + buf.due(now=1.0) + buf.add(rows[150:], now=1.0) + buf.drain()
    assert sorted(ids(out)) == sorted(row["id"] for row in rows)
    assert len(ids(out)) == len(rows)
    assert buf.drain() == [] and len(buf) == 0


class _Cluster:
    """The part of kafka-python's ClusterMetadata that DefaultPartitioner reads."""

    def __init__(self, topic: str, partitions: set[int]) -> None:
        self._topic, self._partitions = topic, partitions

    def topics(self) -> set[str]:
        return {self._topic}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


@pytest.mark.parametrize("partitions", [{0}, {0, 1, 2, 3}, {3, 0, 2, 1, 5, 4}, set(range(12)), {7, 2, 9}])
def test_partition_matches_kafka_python_default_partitioner(partitions: set[int]) -> None:
    cluster, partitioner = _Cluster("l7.summaries.v1", partitions), DefaultPartitioner()
    buf = EnvelopeBuffer(partitions)
    keys = [f"shop/client-{i}|user-{i % 7}" for i in range(300)] + ["-|-", "10.0.0.1|-", "ns/ünïcødé|ключ"]
    for key in keys:
        raw = key.encode("utf-8")
        expected = partitioner.partition("l7.summaries.v1", raw, raw, b"v", b"v", cluster)
        assert buf.partition_for(key) == expected == default_partition(raw, sorted(partitions))


def test_row_actor_falls_back_to_ip_and_dashes() -> None:
    row = make_row(0, actor=3, principal=None)
    row["source"]["workload"] = None
    assert row_actor(row) == "10.0.0.3|-"
    assert row_actor(make_row(0, actor=3)) == make_summary(0, actor=3).actor


def test_buffer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="partitions"):
        EnvelopeBuffer([])
    with pytest.raises(ValueError, match="envelope_rows"):
        EnvelopeBuffer(PARTITIONS, envelope_rows=0)


# ---------------------------------------------------------------- SummaryPublisher over a fake producer


class FakeProducer:
    """Records sends; ``flush`` resolves pending futures (success, or ``fail_with``)."""

    def __init__(self, partitions: tuple[int, ...] = PARTITIONS) -> None:
        self._partitions = set(partitions)
        self.sent: list[tuple[bytes, bytes, int | None]] = []
        self.pending: list[Future] = []
        self.flushes = 0
        self.fail_with: KafkaError | None = None
        self.raise_on_send: KafkaError | None = None
        self.closed = False

    def partitions_for(self, topic: str) -> set[int]:
        return self._partitions

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> Future:
        if self.raise_on_send is not None:
            raise self.raise_on_send
        self.sent.append((key, value, partition))
        future = Future()
        self.pending.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        for future in self.pending:
            if self.fail_with is None:
                future.success(None)
            else:
                future.failure(self.fail_with)
        self.pending.clear()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def publisher(fake: FakeProducer, **kwargs: Any) -> SummaryPublisher:
    return SummaryPublisher("fake:9092", producer=fake, **kwargs)


def test_publisher_sends_one_envelope_per_partition_keyed_by_first_actor() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=50)
    pub.publish_rows(rows_for(1000, actors=20))
    pub.flush()
    got: list[str] = []
    for key, value, partition in fake.sent:
        table = decode_message(value, max_bytes=64 << 20)
        assert partition in PARTITIONS
        assert key == row_actor(table.slice(0, 1).to_pylist()[0]).encode()
        assert {pub._buffer.partition_for(row_actor(r)) for r in table.to_pylist()} == {partition}
        got += table.column("id").to_pylist()
    assert sorted(got) == sorted(f"req-{i}" for i in range(1000))


def test_stats_count_acknowledged_rows_only() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=10)
    before = REGISTRY.get_sample_value("kubeward_publish_rows_total", {"result": "sent"}) or 0.0
    pub.publish_rows([make_row(i, actor=1) for i in range(25)])
    assert pub.stats() == {"rows_sent": 0, "rows_failed": 0, "envelopes_sent": 0, "bytes_sent": 0,
                           "rows_spooled": 0, "rows_replayed": 0, "rows_dropped": 0, "rows_in_spool": 0,
                           "spool_bytes": 0, "rows_buffered": 5}
    assert pub.rows_in_flight == 20
    pub.flush()
    stats = pub.stats()
    assert (stats["rows_sent"], stats["rows_failed"], stats["envelopes_sent"], stats["rows_buffered"]) == (25, 0, 3, 0)
    assert stats["bytes_sent"] == sum(len(value) for _, value, _ in fake.sent)
    assert REGISTRY.get_sample_value("kubeward_publish_rows_total", {"result": "sent"}) == before + 25


def test_failed_deliveries_are_counted_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeProducer()
    fake.fail_with = KafkaError("broker said no")
    pub = publisher(fake, envelope_rows=10)
    pub.publish_rows([make_row(i, actor=1) for i in range(20)])
    pub.flush()
    fake.raise_on_send = KafkaTimeoutError("no metadata")
    with caplog.at_level("WARNING", logger="kubeward.publish"):
        pub.publish_rows([make_row(i, actor=1) for i in range(10)])
    stats = pub.stats()
    assert (stats["rows_sent"], stats["rows_failed"], pub.rows_in_flight) == (0, 30, 0)
    record = caplog.records[-1]
    assert record.getMessage() == "publish failed" and record.rows == 10  # type: ignore[attr-defined]


def test_backpressure_waits_for_the_broker_before_buffering_more() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=10, max_buffered_rows=30)
    pub.publish_rows([make_row(i, actor=1) for i in range(30)])
    assert fake.flushes == 0 and pub.rows_in_flight == 30
    pub.publish_rows([make_row(30, actor=1)])
    assert fake.flushes == 1 and pub.rows_in_flight == 0
    assert pub.stats()["rows_sent"] == 30


def test_publish_json_sends_one_keyed_record() -> None:
    fake = FakeProducer()
    pub = publisher(fake)
    summary = make_summary(7, actor=2)
    pub.publish_json(summary)
    pub.flush()
    key, value, partition = fake.sent[0]
    assert (key, partition) == (summary.actor.encode(), None)
    assert json.loads(value)["id"] == "req-7"
    assert decode_message(value, max_bytes=1 << 20).column("id").to_pylist() == ["req-7"]
    assert pub.stats()["rows_sent"] == 1 and pub.stats()["envelopes_sent"] == 0


def test_publish_accepts_records() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=2)
    pub.publish([make_summary(i, actor=1) for i in range(2)])
    assert len(fake.sent) == 1


def test_flush_due_sends_lingering_partitions() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=100, linger_ms=0.0)
    pub.publish_rows([make_row(0, actor=1)])
    assert fake.sent == []
    pub.flush_due()
    assert len(fake.sent) == 1 and pub.stats()["rows_buffered"] == 0


def test_background_flush_sends_without_the_caller() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=100, linger_ms=1.0)
    pub.start_background_flush(interval_s=0.005)
    pub.publish_rows([make_row(0, actor=1)])
    deadline = time.monotonic() + 5
    while not fake.sent and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(fake.sent) == 1
    pub.close()
    assert fake.closed and not pub._flusher.is_alive()  # type: ignore[union-attr]


def test_a_closed_publisher_refuses_rows() -> None:
    pub = publisher(FakeProducer())
    pub.close()
    pub.close()
    with pytest.raises(PublishError, match="closed"):
        pub.publish_rows([make_row(0)])


def test_unencodable_rows_are_counted_as_failed() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=1)
    bad = make_row(0, actor=1)
    bad["status"] = "not a number"
    pub.publish_rows([bad, make_row(1, actor=1)])
    pub.flush()
    assert (pub.stats()["rows_failed"], pub.stats()["rows_sent"]) == (1, 1)


def test_an_envelope_over_max_message_bytes_is_split_within_its_partition() -> None:
    fake = FakeProducer()
    pub = publisher(fake, envelope_rows=400, max_message_bytes=20_000)
    pub.publish_rows([make_row(i, actor=1) for i in range(400)])
    pub.flush()
    assert len(fake.sent) > 1 and len({partition for _, _, partition in fake.sent}) == 1
    assert all(len(value) + 4096 <= 20_000 for _, value, _ in fake.sent)
    got = [i for _, value, _ in fake.sent for i in decode_message(value, 1 << 20).column("id").to_pylist()]
    assert got == [f"req-{i}" for i in range(400)]
    assert pub.stats()["rows_sent"] == 400
