"""The project's local broker really stores and serves messages and applies topic configs."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from ingest.topics import VERDICTS


def test_produce_then_consume_round_trip(kafka_bootstrap: str) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex}"  # auto-created on first produce
    key, value = b"pod-1", f"hello {uuid.uuid4()}".encode()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=f"test-{uuid.uuid4().hex}",
                             auto_offset_reset="earliest", consumer_timeout_ms=30_000)
    try:
        message = next(iter(consumer))
    finally:
        consumer.close()
    assert (message.key, message.value) == (key, value)


def test_verdicts_topic_is_compacted(kafka_bootstrap: str) -> None:
    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, VERDICTS.name)])
    # kafka-python 3.x: {"topic": {name: {config_name: {"value": ..., ...}}}}
    configs = described["topic"][VERDICTS.name]
    assert configs["cleanup.policy"]["value"] == "compact"
