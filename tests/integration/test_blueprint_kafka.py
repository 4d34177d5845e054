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


def test_two_namespaces_stay_apart_through_the_topic_and_an_old_key_still_reads(kafka_bootstrap: str) -> None:
    from deploy.blueprintmodel import build_blueprint

    shop = EndpointRecord(service="api-ns", namespace="shop", method="GET", path_template="/x", first_seen=1.0, last_seen=5.0)
    billing = shop.model_copy(update={"namespace": "billing", "last_seen": 6.0})
    before = shop.model_copy(update={"last_seen": 2.0})  # published before the key carried the namespace
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(INVENTORY.name, key=b"api-ns GET /x", value=before.model_dump_json().encode())
    for record in (shop, billing):
        producer.send(INVENTORY.name, key=record.key.encode(), value=record.model_dump_json().encode())
    producer.flush()
    producer.close()
    records, _ = read_topic(kafka_bootstrap, INVENTORY.name, "record", timeout_s=20)
    bp = build_blueprint(r for r in records if getattr(r, "service", None) == "api-ns")
    assert sorted(bp.services) == ["billing/api-ns", "shop/api-ns"]
    assert [e.key for e in bp.endpoints] == ["billing/api-ns GET /x", "shop/api-ns GET /x"]


def test_findings_since_reads_only_the_recent_findings(kafka_bootstrap: str) -> None:
    import time

    from ingest import FINDINGS
    from ingest.schema import Finding, FindingInfo

    now = time.time()

    def finding(uid: str) -> bytes:
        return Finding(time=int(now * 1000), severity_id=3, confidence_score=50, message=uid,
                       finding_info=FindingInfo(uid=uid, title="t")).model_dump_json().encode()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(FINDINGS.name, key=b"old", value=finding("since-old"), timestamp_ms=int((now - 2 * 86400) * 1000))
    producer.send(FINDINGS.name, key=b"new", value=finding("since-new"), timestamp_ms=int((now - 60) * 1000))
    producer.flush()
    producer.close()
    recent, _ = read_topic(kafka_bootstrap, FINDINGS.name, "finding", timeout_s=20, since=now - 86400)
    everything, _ = read_topic(kafka_bootstrap, FINDINGS.name, "finding", timeout_s=20)
    assert [f.message for f in recent if f.message.startswith("since-")] == ["since-new"]
    assert [f.message for f in everything if f.message.startswith("since-")] == ["since-old", "since-new"]
