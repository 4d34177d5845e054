"""Integration fixtures: one real Kafka broker (deploy.runtime.broker) for the whole test session."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from deploy.runtime import broker


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out for bind(0); all sockets are held open together so they differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a fresh single-node broker with the project's topics created."""
    libs = broker.fetch_jars()
    port, controller_port = _free_ports(2)
    data_dir = tmp_path_factory.mktemp("kafka")
    started = broker.start(data_dir, port=port, controller_port=controller_port, libs=libs)
    try:
        broker.ensure_topics(started.bootstrap)
        yield started.bootstrap
    finally:
        broker.stop(data_dir)
