"""Unit tests of the publisher's disk spool (ingest.publish.DiskSpool, SummaryPublisher with spool_dir) over a fake producer."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future
from prometheus_client import REGISTRY

from ingest.envelope import decode_message, encode_rows, summary_row
from ingest.envelopebuffer import row_actor
from ingest.errors import PublishError
from ingest.publish import DiskSpool, SpooledEnvelope, SummaryPublisher

PARTITIONS = (0, 1, 2)


def row(i: int, actor: int = 0) -> dict[str, Any]:
    return summary_row(id=f"req-{i:05d}", time=1_700_000_000.0 + i, principal=f"user-{actor}",
                       source={"workload": "shop/web", "namespace": "shop", "ip": "10.0.0.1"},
                       destination={"service": "orders", "namespace": "shop"}, method="GET", path_template="/orders/{id}", status=200)


def rows(start: int, stop: int, actors: int = 5) -> list[dict[str, Any]]:
    return [row(i, actor=i % actors) for i in range(start, stop)]


class OutageProducer:
    """A producer whose broker can go away: sends settle at ``flush``, acknowledged while ``up``, else timed out."""

    def __init__(self) -> None:
        self.up = True
        self.raise_when_down = False
        self.acked: list[tuple[bytes, bytes, int | None]] = []
        self.pending: list[tuple[Future, bytes, bytes, int | None]] = []
        self.closed = False

    def partitions_for(self, topic: str) -> set[int]:
        return set(PARTITIONS)

    def send(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> Future:
        if self.raise_when_down and not self.up:
            raise KafkaTimeoutError("Failed to update metadata")
        future = Future()
        self.pending.append((future, key, value, partition))
        return future

    def flush(self, timeout: float | None = None) -> None:
        pending, self.pending = self.pending, []
        for future, key, value, partition in pending:
            if self.up:
                self.acked.append((key, value, partition))
                future.success(None)
            else:
                future.failure(KafkaTimeoutError("Expiring records: delivery timed out"))

    def close(self, timeout: float | None = None) -> None:
        self.closed = True

    def ids(self) -> list[str]:
        return [i for _, value, _ in self.acked for i in decode_message(value, 1 << 24).column("id").to_pylist()]

    def ids_by_partition(self) -> dict[int | None, list[str]]:
        out: dict[int | None, list[str]] = {}
        for _, value, partition in self.acked:
            out.setdefault(partition, []).extend(decode_message(value, 1 << 24).column("id").to_pylist())
        return out


def spooling(fake: OutageProducer, directory: Path, **kwargs: Any) -> SummaryPublisher:
    kwargs.setdefault("envelope_rows", 10)
    kwargs.setdefault("spool_retry_s", 0.0)
    return SummaryPublisher("fake:9092", producer=fake, spool_dir=directory, **kwargs)


def accounted(pub: SummaryPublisher) -> int:
    """Every row handed in is in exactly one of these places."""
    s = pub.stats()
    return s["rows_sent"] + s["rows_failed"] + s["rows_dropped"] + s["rows_in_spool"] + pub.rows_in_flight + s["rows_buffered"]


def in_order_per_partition(got: dict[int | None, list[str]]) -> bool:
    return all(ids == sorted(ids) for ids in got.values())


def item(seq: int, rows: int = 3, payload: bytes = b"x" * 100, partition: int | None = 1) -> SpooledEnvelope:
    return SpooledEnvelope(seq, partition, f"key-{seq}".encode(), payload, rows, True)


# ---------------------------------------------------------------- DiskSpool


def test_spool_hands_envelopes_back_oldest_first_and_keeps_them_until_removed(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    for seq in (5, 2, 9, 7):
        assert spool.put(item(seq))
    assert (len(spool), spool.rows) == (4, 12)
    assert [e.seq for e in spool.peek(max_rows=100)] == [2, 5, 7, 9]
    assert [e.seq for e in spool.peek(max_rows=6)] == [2, 5]
    assert [e.seq for e in spool.peek(max_rows=1)] == [2], "at least one envelope, whatever its size"
    got = spool.peek(max_rows=3)[0]
    assert got == item(2)
    spool.remove(2)
    spool.remove(2)  # twice is harmless
    assert [e.seq for e in spool.peek(max_rows=100)] == [5, 7, 9] and spool.rows == 9
    assert sorted(p.name for p in tmp_path.glob("*.env")) == [f"{s:020d}.env" for s in (5, 7, 9)]


def test_spool_survives_a_restart_and_numbers_new_envelopes_after_the_old(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path)
    spool.put(item(3, partition=None))
    spool.put(item(4, rows=7))
    (tmp_path / f"{5:020d}.tmp").write_bytes(b"half a write")
    spool.close()
    again = DiskSpool(tmp_path)
    assert [(e.seq, e.partition, e.rows) for e in again.peek(100)] == [(3, None, 3), (4, 1, 7)]
    assert again.next_seq() == 5 and again.bytes == spool.bytes
    assert not list(tmp_path.glob("*.tmp")), "an interrupted write is not an envelope"


def test_one_publisher_per_spool_directory(tmp_path: Path) -> None:
    first = DiskSpool(tmp_path)
    with pytest.raises(PublishError, match="in use"):
        DiskSpool(tmp_path)
    first.close()
    DiskSpool(tmp_path).close()


def test_spool_refuses_past_its_cap(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, max_bytes=300)
    assert spool.put(item(0)) and spool.put(item(1))
    assert not spool.put(item(2)), "a third file of 133 bytes passes 300"
    assert len(spool) == 2 and spool.bytes <= 300


def test_a_corrupt_spool_file_is_set_aside_and_counted_never_replayed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = DiskSpool(tmp_path)
    spool.put(item(0))
    spool.put(item(1))
    path = tmp_path / f"{0:020d}.env"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR, logger="kubeward.publish"):
        assert [e.seq for e in spool.peek(100)] == [1]
    assert spool.corrupt == 1 and spool.rows_corrupt == 3 and (tmp_path / f"{0:020d}.bad").exists()
    assert "set aside" in caplog.text
    (tmp_path / f"{1:020d}.env").write_bytes(b"KWS1")  # truncated header: found at open
    spool.close()
    assert DiskSpool(tmp_path).corrupt == 1


# ---------------------------------------------------------------- SummaryPublisher with a spool


def test_an_outage_sends_envelopes_to_disk_and_they_are_replayed_in_order(tmp_path: Path) -> None:
    fake = OutageProducer()
    pub = spooling(fake, tmp_path)
    before = {r: REGISTRY.get_sample_value("kubeward_publish_spool_rows_total", {"result": r}) or 0.0 for r in ("spooled", "replayed")}
    pub.publish_rows(rows(0, 100))
    pub.flush()
    fake.up = False
    pub.publish_rows(rows(100, 200))
    fake.flush()  # the broker is away: these sends time out and go to disk
    pub.publish_rows(rows(200, 300))  # behind them, on disk too, whatever the broker does now
    stats = pub.stats()
    assert stats["rows_in_spool"] == 200 and stats["rows_sent"] == 100 and accounted(pub) == 300
    assert len(list(tmp_path.glob("*.env"))) == 20
    fake.up = True
    pub.flush()
    stats = pub.stats()
    assert (stats["rows_sent"], stats["rows_replayed"], stats["rows_in_spool"], stats["rows_dropped"]) == (300, 200, 0, 0)
    assert stats["rows_spooled"] == 200 and stats["spool_bytes"] == 0 and not list(tmp_path.glob("*.env"))
    assert sorted(fake.ids()) == [f"req-{i:05d}" for i in range(300)] and len(fake.ids()) == 300
    assert in_order_per_partition(fake.ids_by_partition())
    for result, added in (("spooled", 200), ("replayed", 200)):
        assert REGISTRY.get_sample_value("kubeward_publish_spool_rows_total", {"result": result}) == before[result] + added
    pub.close()


def test_a_send_refused_at_once_goes_to_disk_too(tmp_path: Path) -> None:
    fake = OutageProducer()
    fake.up, fake.raise_when_down = False, True
    pub = spooling(fake, tmp_path, spool_retry_s=60.0)
    pub.publish_rows(rows(0, 50))
    assert pub.stats()["rows_in_spool"] == 50 and pub.rows_in_flight == 0
    with pytest.raises(PublishError, match="50 rows still in the spool"):
        pub.flush(timeout=0.2)  # the broker is taken as away for 60 s: no replay is even tried
    pub.spool_retry_s = 0.0
    pub._away_until = 0.0
    fake.up = True
    pub.flush()
    assert sorted(fake.ids()) == [f"req-{i:05d}" for i in range(50)]


def test_a_full_memory_buffer_spills_to_disk_instead_of_waiting(tmp_path: Path) -> None:
    fake = OutageProducer()
    pub = spooling(fake, tmp_path, max_buffered_rows=30)
    pub.publish_rows(rows(0, 100))  # the broker acknowledges nothing until flush: 30 rows in flight, the rest on disk
    assert pub.rows_in_flight == 30 and pub.stats()["rows_in_spool"] == 70
    assert len(fake.pending) == 3
    pub.flush()
    assert in_order_per_partition(fake.ids_by_partition())
    assert sorted(fake.ids()) == [f"req-{i:05d}" for i in range(100)]
    assert pub.stats()["rows_replayed"] == 70 and accounted(pub) == 100


def test_past_the_cap_envelopes_are_dropped_and_counted_never_silently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fake = OutageProducer()
    fake.up = False
    cap = 3 * (len(encode_rows(rows(0, 10))) + 100)  # room for three envelopes of 10 rows (an Arrow envelope is ~13 KB)
    pub = spooling(fake, tmp_path, spool_max_bytes=cap)
    dropped_before = REGISTRY.get_sample_value("kubeward_publish_spool_rows_total", {"result": "dropped"}) or 0.0
    with caplog.at_level(logging.WARNING, logger="kubeward.publish"):
        pub.publish_rows(rows(0, 200))
        fake.flush()
    stats = pub.stats()
    assert (stats["rows_dropped"], stats["rows_in_spool"]) == (170, 30) and stats["spool_bytes"] <= cap
    assert stats["rows_dropped"] + stats["rows_in_spool"] == 200 and accounted(pub) == 200
    assert REGISTRY.get_sample_value("kubeward_publish_spool_rows_total", {"result": "dropped"}) == dropped_before + stats["rows_dropped"]
    assert "envelopes dropped" in caplog.text
    fake.up = True
    pub.flush()
    assert len(fake.ids()) == stats["rows_in_spool"]


def test_a_restarted_publisher_replays_what_the_previous_one_left_first(tmp_path: Path) -> None:
    fake = OutageProducer()
    first = spooling(fake, tmp_path)
    first.publish_rows(rows(0, 100))
    first.flush()
    fake.up = False
    first.publish_rows(rows(100, 140))  # unacknowledged when the publisher closes: on disk after it
    first.close(timeout=0.1)
    assert first.stats()["rows_in_spool"] == 40 and accounted(first) == 140 and first.rows_in_flight == 0
    fake.flush()  # late failures of the handed-over sends change nothing
    assert first.stats()["rows_in_spool"] == 40 and first.stats()["rows_failed"] == 0
    fake.up = True
    second = spooling(fake, tmp_path)
    second.publish_rows(rows(140, 200))  # new rows wait behind the old ones
    assert second.stats()["rows_in_spool"] + second.stats()["rows_buffered"] == 100 and second.rows_in_flight == 0
    second.flush()
    assert sorted(fake.ids()) == [f"req-{i:05d}" for i in range(200)] and len(fake.ids()) == 200
    assert in_order_per_partition(fake.ids_by_partition())
    second.close()


def test_a_late_acknowledgement_after_close_removes_the_disk_copy(tmp_path: Path) -> None:
    fake = OutageProducer()
    pub = spooling(fake, tmp_path)
    pub.publish_rows(rows(0, 20, actors=1))
    assert pub.rows_in_flight == 20
    pub._stop.set()
    with pub._lock:  # close without its flush: the two sends are still in flight
        pub._closed = pub._closing = True
        pub._close_producer(0.0)
    assert pub.stats()["rows_in_spool"] == 20
    fake.flush()  # the broker acknowledges them after all
    stats = pub.stats()
    assert (stats["rows_in_spool"], stats["rows_sent"]) == (0, 20) and not list(tmp_path.glob("*.env"))
    assert accounted(pub) == 20


def test_a_record_the_broker_refuses_is_counted_failed_not_spooled(tmp_path: Path) -> None:
    class Refusing(OutageProducer):
        def flush(self, timeout: float | None = None) -> None:
            pending, self.pending = self.pending, []
            for future, *_ in pending:
                future.failure(KafkaError("MessageSizeTooLarge"))  # not retriable

    fake = Refusing()
    pub = spooling(fake, tmp_path)
    pub.publish_rows(rows(0, 30))
    pub.flush()
    stats = pub.stats()
    assert (stats["rows_failed"], stats["rows_spooled"], stats["rows_in_spool"]) == (30, 0, 0)


def test_without_a_spool_nothing_changes(tmp_path: Path) -> None:
    fake = OutageProducer()
    fake.up = False
    pub = SummaryPublisher("fake:9092", producer=fake, envelope_rows=10)
    pub.publish_rows(rows(0, 20))
    pub.flush()
    assert pub.stats()["rows_failed"] == 20 and pub.stats()["rows_spooled"] == 0
    assert not list(tmp_path.iterdir())


def test_single_json_summaries_are_spooled_and_replayed_too(tmp_path: Path) -> None:
    from ingest.envelope import row_to_summary

    fake = OutageProducer()
    fake.up = False
    pub = spooling(fake, tmp_path)
    summary = row_to_summary(row(1, actor=2))
    pub.publish_json(summary)
    fake.flush()
    assert pub.stats()["rows_in_spool"] == 1
    fake.up = True
    pub.flush()
    key, value, partition = fake.acked[0]
    assert (key, partition) == (summary.actor.encode(), None) and b'"req-00001"' in value
    assert pub.stats()["envelopes_sent"] == 0 and pub.stats()["rows_replayed"] == 1
    assert row_actor(row(1, actor=2)) == summary.actor


def test_a_spool_file_spoiled_on_disk_is_counted_dropped_in_the_publisher(tmp_path: Path) -> None:
    fake = OutageProducer()
    fake.up = False
    pub = spooling(fake, tmp_path)
    pub.publish_rows(rows(0, 30, actors=1))
    fake.flush()
    first = sorted(tmp_path.glob("*.env"))[0]
    first.write_bytes(first.read_bytes()[:-1] + b"?")
    fake.up = True
    pub.flush()
    stats = pub.stats()
    assert (stats["rows_sent"], stats["rows_dropped"], stats["rows_in_spool"]) == (20, 10, 0) and accounted(pub) == 30
