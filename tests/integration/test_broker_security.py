"""The local broker in secured mode really authenticates and authorizes (issue 9, verdict integrity).

One secured broker for the module (SCRAM on SASL_PLAINTEXT, plus mutual-TLS and SASL_SSL
listeners), started by ``deploy.runtime.broker.start(..., security=Secured(...))``. The
expectations below are written out by hand, not derived from ``role_grants``, so that a change
of the role table has to change this file too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import kafka.errors as kafka_errors
import pytest
from pydantic import ValidationError
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import errors as aio_errors
from aiokafka.structs import TopicPartition as AioTopicPartition
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import UserScramCredentialUpsertion

from deploy.runtime import broker, brokersecurity
from deploy.runtime.broker import Broker, Principal, Secured
from deploy.runtime.brokersecurity import ClientProtocol
from ingest import Verdict, actor_key, encode_rows, summary_row
from ingest.kafkaauth import KafkaSecurity
from ingest.topics import ALL_TOPICS, DLQ, FINDINGS, INVENTORY, POLICY, SUMMARIES, VERDICTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOPICS = [spec.name for spec in ALL_TOPICS]
MAY_WRITE = {
    "collector": {SUMMARIES.name, DLQ.name},
    "shim": {SUMMARIES.name},
    "worker": {VERDICTS.name, FINDINGS.name, DLQ.name, INVENTORY.name},
    "operator": {POLICY.name},
}
MAY_READ = {
    "collector": set(),
    "shim": {VERDICTS.name, POLICY.name},
    "worker": {SUMMARIES.name, POLICY.name},
    "operator": {POLICY.name},
}
FAST_FAIL = {"bootstrap_timeout_ms": 1500, "request_timeout_ms": 3000}


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A secured broker with the project's topics, each holding one record written by the admin."""
    libs = broker.fetch_jars()
    port, controller_port, tls_port, sasl_ssl_port = _free_ports(4)
    data_dir = tmp_path_factory.mktemp("kafka-secured")
    started = broker.start(data_dir, port, controller_port, libs=libs,
                           security=Secured(tls_port=tls_port, sasl_ssl_port=sasl_ssl_port))
    try:
        broker.ensure_topics(started.bootstrap, security=started.client())
        producer = KafkaProducer(bootstrap_servers=started.bootstrap, acks="all", **started.client().kafka_python())
        try:
            for topic in TOPICS:
                producer.send(topic, key=b"seed", value=b"seed").get(timeout=30)
        finally:
            producer.close()
        yield started
    finally:
        broker.stop(data_dir)


def _produce(bootstrap: str, security: KafkaSecurity, topics: list[str]) -> dict[str, bool]:
    """Whether one record could be written to each topic (False: the broker said not authorized).

    One producer per topic: kafka-python's producer treats an authorization error as fatal and
    fails every later send.
    """
    allowed = {}
    for topic in topics:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_block_ms=5000, **FAST_FAIL,
                                 **security.kafka_python())
        try:
            producer.send(topic, key=b"test", value=uuid.uuid4().bytes).get(timeout=10)
            allowed[topic] = True
        except kafka_errors.TopicAuthorizationFailedError:
            allowed[topic] = False
        finally:
            producer.close(timeout=5)
    return allowed


def _can_read(bootstrap: str, security: KafkaSecurity, topic: str) -> bool:
    """Whether the seed record of ``topic`` can be fetched without a group (as the shim and policy readers do)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **FAST_FAIL,
                             **security.kafka_python())
    try:
        if not consumer.partitions_for_topic(topic):  # not even DESCRIBE: the topic is invisible
            return False
        consumer.assign([TopicPartition(topic, 0)])
        consumer.seek_to_beginning()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if consumer.poll(timeout_ms=200):
                return True
        raise AssertionError(f"{topic}: neither a record nor an authorization error within 10 s")
    except kafka_errors.TopicAuthorizationFailedError:
        return False
    finally:
        consumer.close()


# ------------------------------------------------------------------ authentication


def test_a_client_without_credentials_is_refused(secured: Broker) -> None:
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=secured.bootstrap, **FAST_FAIL).list_topics()

    async def plaintext_producer() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, request_timeout_ms=3000)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(aio_errors.KafkaConnectionError):
        asyncio.run(plaintext_producer())


def test_the_mutual_tls_listener_refuses_a_client_without_certificate(secured: Broker) -> None:
    assert secured.security is not None
    ca_only = KafkaSecurity(protocol="SSL", ca_file=secured.client("collector", "SSL").ca_file)
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=secured.security.bootstrap("SSL"), **FAST_FAIL, **ca_only.kafka_python()).list_topics()


@pytest.mark.parametrize("username", ["collector", "nobody"])
def test_a_wrong_password_fails_authentication(secured: Broker, caplog: pytest.LogCaptureFixture, username: str) -> None:
    wrong = KafkaSecurity(protocol="SASL_PLAINTEXT", username=username, password="not-the-password")
    caplog.set_level(logging.ERROR)
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=secured.bootstrap, **FAST_FAIL, **wrong.kafka_python()).list_topics()

    async def aio_producer() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, request_timeout_ms=3000, **wrong.aiokafka())
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(aio_errors.KafkaConnectionError):
        asyncio.run(aio_producer())
    assert "SaslAuthenticationFailed" in caplog.text  # refused for the credentials, not for a dead broker


# ------------------------------------------------------------------- authorization


@pytest.mark.parametrize("role", sorted(MAY_WRITE))
def test_each_role_writes_only_its_topics(secured: Broker, role: str) -> None:
    allowed = _produce(secured.bootstrap, secured.client(role), TOPICS)
    assert {topic for topic, ok in allowed.items() if ok} == MAY_WRITE[role]


@pytest.mark.parametrize("role", sorted(MAY_READ))
def test_each_role_reads_only_its_topics(secured: Broker, role: str) -> None:
    readable = {topic for topic in TOPICS if _can_read(secured.bootstrap, secured.client(role), topic)}
    assert readable == MAY_READ[role]


def test_collector_writes_summaries_but_not_verdicts_on_every_listener(secured: Broker) -> None:
    assert secured.security is not None
    protocols: tuple[ClientProtocol, ...] = ("SASL_PLAINTEXT", "SSL", "SASL_SSL")
    for protocol in protocols:
        bootstrap = secured.security.bootstrap(protocol)
        collector = _produce(bootstrap, secured.client("collector", protocol), [SUMMARIES.name, VERDICTS.name])
        worker = _produce(bootstrap, secured.client("worker", protocol), [VERDICTS.name])
        assert collector == {SUMMARIES.name: True, VERDICTS.name: False}, protocol
        assert worker == {VERDICTS.name: True}, protocol


def test_only_the_worker_joins_the_worker_group(secured: Broker) -> None:
    def join(role: str) -> bool:
        consumer = KafkaConsumer(POLICY.name, bootstrap_servers=secured.bootstrap, group_id="kubeward-worker",
                                 auto_offset_reset="earliest", **FAST_FAIL, **secured.client(role).kafka_python())
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if consumer.poll(timeout_ms=200):
                    return True
            raise AssertionError(f"{role}: neither a record nor a group authorization error within 15 s")
        except kafka_errors.GroupAuthorizationFailedError:
            return False
        finally:
            consumer.close()

    assert join("worker")
    assert not join("operator")  # it may read the policy topic, but not as a member of the worker's group


def test_an_authenticated_principal_without_a_role_gets_nothing(secured: Broker) -> None:
    with KafkaAdminClient(bootstrap_servers=secured.bootstrap, **secured.client().kafka_python()) as admin:
        assert secured.security is not None
        result = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion("stranger", secured.security.mechanism, "stranger-password")])
    assert result == {"stranger": None}
    stranger = KafkaSecurity(protocol="SASL_PLAINTEXT", username="stranger", password="stranger-password")
    with KafkaAdminClient(bootstrap_servers=secured.bootstrap, **FAST_FAIL, **stranger.kafka_python()) as admin:
        assert admin.list_topics() == []  # authenticated, but no topic is even visible
    assert _produce(secured.bootstrap, stranger, [SUMMARIES.name, VERDICTS.name]) == {SUMMARIES.name: False, VERDICTS.name: False}


def test_start_reconciles_users_and_acls_to_the_declared_principals(secured: Broker) -> None:
    """What ``start`` does after the broker is up: a principal added gets its role's ACLs, one no longer
    declared loses its credential and every ACL."""
    declared = secured.security
    assert declared is not None
    extra = Principal("collector-2", "collector", password="collector-2-password")
    added, _ = brokersecurity.apply_grants(replace(declared, principals=(*declared.principals, extra)))
    security = KafkaSecurity(protocol="SASL_PLAINTEXT", username=extra.name, password=extra.password)
    try:
        assert added == 2  # WRITE on the summaries and on the dead-letter topic
        assert _produce(secured.bootstrap, security, [SUMMARIES.name, VERDICTS.name]) == {SUMMARIES.name: True, VERDICTS.name: False}
    finally:
        added, removed = brokersecurity.apply_grants(declared)
    assert (added, removed) == (0, 2)
    with pytest.raises(kafka_errors.KafkaError):
        KafkaAdminClient(bootstrap_servers=secured.bootstrap, **FAST_FAIL, **security.kafka_python()).list_topics()


# ------------------------------------------------- kafkaauth with the aiokafka client


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SSL", "SASL_SSL"])
def test_kafkaauth_aiokafka_kwargs_carry_a_verdict_from_worker_to_shim(secured: Broker, protocol: ClientProtocol) -> None:
    assert secured.security is not None
    bootstrap = secured.security.bootstrap(protocol)
    value = f"verdict {uuid.uuid4()}".encode()

    async def round_trip() -> bytes | None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                    **secured.client("worker", protocol).aiokafka())
        await producer.start()
        try:
            sent = await producer.send_and_wait(VERDICTS.name, value, key=b"actor:test")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                    **secured.client("shim", protocol).aiokafka())
        await consumer.start()
        try:
            tp = AioTopicPartition(VERDICTS.name, sent.partition)
            consumer.assign([tp])
            consumer.seek(tp, sent.offset)
            record = await asyncio.wait_for(consumer.getone(), timeout=15)
            received: bytes | None = record.value
            return received
        finally:
            await consumer.stop()

    assert asyncio.run(round_trip()) == value


def test_aiokafka_collector_is_refused_the_verdict_topic(secured: Broker) -> None:
    async def forge() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=secured.bootstrap, **secured.client("collector").aiokafka())
        await producer.start()
        try:
            await producer.send_and_wait(VERDICTS.name, b'{"action": "block"}', key=b"actor:victim")
        finally:
            await producer.stop()

    with pytest.raises(aio_errors.TopicAuthorizationFailedError):
        asyncio.run(forge())


# ------------------------------------------- the real worker with only the worker's ACLs


def _revealed(security: KafkaSecurity) -> str:
    fields = security.model_dump(mode="json", exclude_none=True)
    if security.password is not None:
        fields["password"] = security.password.get_secret_value()
    return json.dumps(fields)


def _row(principal: str, object_id: str, created: bool = False) -> dict[str, Any]:
    shape: dict[str, Any] = ({"method": "POST", "path_template": "/orders", "status": 201, "object_ids_created": [object_id]} if created
                             else {"method": "GET", "path_template": "/orders/{id}", "status": 200, "object_ids": [object_id]})
    return summary_row(id=uuid.uuid4().hex, time=time.time(), reporter="test", principal=principal, auth_type="jwt",
                       source={"workload": "shop/frontend", "namespace": "shop", "ip": "10.0.0.7"},
                       destination={"service": "orders", "namespace": "shop"}, **shape)


def _wait_for_line(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        if needle in log.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"{needle!r} not in the worker log within {timeout} s:\n{log.read_text()[-3000:]}")


def _verdict_subjects(secured: Broker, wait_for: str, timeout: float) -> set[str]:
    """Subjects of the verdicts on the verdict topic, read as the shim principal (other tests' raw records skipped)."""
    consumer = KafkaConsumer(VERDICTS.name, bootstrap_servers=secured.bootstrap, group_id=None,
                             auto_offset_reset="earliest", **secured.client("shim").kafka_python())
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    try:
        while wait_for not in seen and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=300).values():
                for record in records:
                    try:
                        seen.add(Verdict.model_validate_json(record.value).subject.value)
                    except ValidationError:
                        continue
    finally:
        consumer.close()
    return seen


def test_the_real_worker_runs_on_the_worker_acls_alone(secured: Broker, tmp_path: Path) -> None:
    """Faust's group, its changelog topic, the policy topic and every output topic work as ``worker``:
    a BOLA thief published by a collector gets a verdict that a shim principal reads."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWARD_")}
    env.update(PYTHONUNBUFFERED="1", KUBEWARD_WORKER_KAFKA=_revealed(secured.client("worker")),
               KUBEWARD_WORKER_BOOTSTRAP=secured.bootstrap, KUBEWARD_WORKER_WEB_PORT=str(_free_ports(1)[0]),
               KUBEWARD_WORKER_WINDOW_S="30", KUBEWARD_WORKER_STATE_FLUSH_S="0.5", KUBEWARD_WORKER_ENRICHER_FLUSH_S="0.5",
               KUBEWARD_WORKER_POLICY=json.dumps({"default_mode": "enforce", "verdict_ttl_s": 600}))
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.cli", "worker", "--dev", "--loglevel", "info"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    try:
        _wait_for_line(log, "Worker]: Ready", proc, timeout=90)
        orders = [f"secured-{i:04d}" for i in range(150)]
        producer = KafkaProducer(bootstrap_servers=secured.bootstrap, acks="all", **secured.client("collector").kafka_python())
        try:
            producer.send(SUMMARIES.name, key=b"owners", value=encode_rows([_row(f"customer-{o}", o, created=True) for o in orders])).get(timeout=30)
            time.sleep(1.0)  # the owners are learned before the thief reads
            producer.send(SUMMARIES.name, key=b"thief", value=encode_rows([_row("thief", o) for o in orders])).get(timeout=30)
        finally:
            producer.close()
        thief = actor_key("shop/frontend", "thief")
        assert thief in _verdict_subjects(secured, thief, timeout=60)
        with KafkaAdminClient(bootstrap_servers=secured.bootstrap, **secured.client().kafka_python()) as admin:
            assert "kubeward-worker-actor-state-changelog" in admin.list_topics()  # created by the worker itself
        text = log.read_text(errors="replace")
        assert "AuthorizationFailed" not in text and "not authorized" not in text.lower(), text[-3000:]
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the worker's process group, SIGKILL after 20 s (nothing to do if it already exited)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
