"""`kubeward blueprint` reads the compacted inventory topic of a real broker to its end: records, tombstones, garbage."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from deploy.blueprint import read_topic
from ingest import INVENTORY
from ingest.schema import EndpointRecord

pytestmark = pytest.mark.integration


def test_read_topic_returns_records_skips_tombstones_and_counts_garbage(kafka_bootstrap: str) -> None:
    record = EndpointRecord(service="orders-bp", namespace="shop", method="GET", path_template="/orders/{id}", first_seen=1.0, last_seen=2.0)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(INVENTORY.name, key=record.key.encode(), value=record.model_dump_json().encode())
    producer.send(INVENTORY.name, key=b"gone", value=None)
    producer.send(INVENTORY.name, key=b"bad", value=b"{not json")
    producer.flush()
    producer.close()
    records, bad = read_topic(kafka_bootstrap, INVENTORY.name, "record", timeout_s=20)
    assert record in records and bad >= 1
