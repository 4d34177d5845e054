"""SummaryPublisher against the real local broker: every row arrives, one actor stays in one partition."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from ingest.envelope import decode_message
from ingest.envelopebuffer import default_partition, row_actor
from ingest.publish import SummaryPublisher
from ingest.schema import Destination, RequestSummary, Source
from ingest.topics import SUMMARIES

pytestmark = pytest.mark.integration


def make_row(run: str, i: int, actor: int) -> dict[str, Any]:
    row = RequestSummary(
        id=f"{run}-{i}", time=time.time(),
        source=Source(workload=f"shop/client-{actor}", namespace="shop", ip=f"10.1.0.{actor}"),
        principal=f"user-{actor}", destination=Destination(service="orders", namespace="shop"),
        method="GET", path_template="/orders/{id}", status=200, object_ids=[f"obj-{i}"],
        sensitive={"email": i % 3},
    ).model_dump()
    row["sensitive"] = list(row["sensitive"].items())
    return row


def consume_run(bootstrap: str, run: str, expected: int, timeout_s: float = 60) -> list[tuple[int, bytes, dict[str, Any]]]:
    """(partition, message key, row) of every row of this run on the summaries topic, from the beginning."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(SUMMARIES.name, p) for p in sorted(consumer.partitions_for_topic(SUMMARIES.name))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        found: list[tuple[int, bytes, dict[str, Any]]] = []
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            for tp, messages in consumer.poll(timeout_ms=1000).items():
                for message in messages:
                    table = decode_message(message.value, max_bytes=64 << 20)
                    found += [(tp.partition, message.key, row) for row in table.to_pylist()
                              if row["id"].startswith(f"{run}-")]
        return found
    finally:
        consumer.close()


def test_publisher_delivers_every_row_and_keeps_actors_in_one_partition(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex
    rows = [make_row(run, i, actor=i % 50) for i in range(5000)]
    publisher = SummaryPublisher(kafka_bootstrap, envelope_rows=100)
    try:
        assert len(publisher.partitions) == SUMMARIES.partitions
        for start in range(0, len(rows), 700):
            publisher.publish_rows(rows[start:start + 700])
        publisher.flush()
        stats = publisher.stats()
    finally:
        publisher.close()

    assert (stats["rows_sent"], stats["rows_failed"], stats["rows_buffered"]) == (5000, 0, 0)
    assert stats["envelopes_sent"] >= 5000 // 100

    found = consume_run(kafka_bootstrap, run, expected=5000)
    assert sorted(row["id"] for _, _, row in found) == sorted(row["id"] for row in rows)
    partitions_of: dict[str, set[int]] = {}
    for partition, key, row in found:
        partitions_of.setdefault(row_actor(row), set()).add(partition)
        assert default_partition(key, publisher.partitions) == partition  # the key agrees with the partition
    assert len(partitions_of) == 50
    for actor, parts in partitions_of.items():
        assert parts == {default_partition(actor.encode(), publisher.partitions)}, actor


def test_publish_json_lands_where_a_keyed_send_puts_it(kafka_bootstrap: str) -> None:
    run = uuid.uuid4().hex
    summaries = [RequestSummary.model_validate({**make_row(run, i, actor=i), "sensitive": {}}) for i in range(8)]
    with SummaryPublisher(kafka_bootstrap) as publisher:
        for summary in summaries:
            publisher.publish_json(summary)
        publisher.flush()
        assert publisher.stats()["rows_sent"] == 8
    found = consume_run(kafka_bootstrap, run, expected=8)
    assert {(row["id"], partition) for partition, _, row in found} == {
        (s.id, default_partition(s.actor.encode(), publisher.partitions)) for s in summaries}
