"""The project's local broker really stores and serves messages and applies topic configs."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType

from deploy.runtime import broker
from deploy.runtime.brokercli import main
from ingest.topics import VERDICTS, TopicSpec


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


def test_kafka_topics_leaves_existing_topics_and_a_cluster_refusal_is_named(kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kafka", "topics", "--bootstrap", kafka_bootstrap, "--replication-factor", "1"]) == 0
    assert "every topic exists already" in capsys.readouterr().out
    spec = TopicSpec(f"kw-topics-{uuid.uuid4().hex[:8]}", config={"retention.ms": "600000"})
    # a single broker cannot hold three replicas: refused with the broker's reason, nothing created
    with pytest.raises(broker.BrokerError, match=f"{spec.name}: InvalidReplicationFactor"):
        broker.ensure_topics(kafka_bootstrap, [spec], replication_factor=3)
    assert broker.ensure_topics(kafka_bootstrap, [spec]) == [spec.name]
    with KafkaAdminClient(bootstrap_servers=kafka_bootstrap) as admin:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, spec.name)])["topic"][spec.name]
    assert configs["retention.ms"]["value"] == "600000"
    assert "min.insync.replicas" not in configs  # not set on the topic at one replica (it would refuse every write)
