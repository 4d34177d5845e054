"""A local broker as its data dir and the operating system show it (``deploy.runtime.broker`` starts and stops it).

* Files of the data dir: ``server.properties`` (``server_properties`` writes a combined broker+controller with a
  standalone KRaft quorum, PLAINTEXT on ``HOST`` only; ``configured_ports`` reads the ports back), ``broker.pid``
  (``read_pid``) and ``broker.log`` (``log_tail``).
* The process: ``alive`` says whether a pid is a live, non-zombie Kafka broker (a stale pid file's pid may have
  been reused by something else); ``CHILDREN`` holds the ``Popen`` of brokers this process started, so they are
  reaped; ``signal_group`` signals a broker's session.
* The network: ``accepts`` (a TCP connection to ``host:port``) and ``reachable`` (a metadata request succeeds, as a
  given principal on a secured broker).

The secured-mode state of a data dir (principals, credentials) is ``deploy.runtime.brokersecurity``'s.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path
from typing import Mapping

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from ingest.kafkaauth import KafkaSecurity

__all__ = ["CHILDREN", "HOST", "accepts", "alive", "configured_ports", "log_tail", "read_pid", "reachable",
           "server_properties", "signal_group"]

HOST = "127.0.0.1"

# Popen objects of brokers started by this process, so they are reaped (no zombies).
CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# ------------------------------------------------------------------- config/files


def server_properties(data_dir: Path, port: int, controller_port: int,
                      overrides: Mapping[str, str] | None = None) -> str:
    """server.properties of a combined broker+controller with a standalone KRaft quorum."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir / "logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
        "log.cleaner.backoff.ms": "1000",
    }
    settings.update(overrides or {})
    header = "# written by deploy/runtime/broker.py on every start; edit the code, not this file\n"
    return header + "".join(f"{key}={value}\n" for key, value in settings.items())


def _read_properties(path: Path) -> dict[str, str]:
    props = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def configured_ports(data_dir: Path) -> tuple[int, int] | None:
    """(port, controller_port) from an existing server.properties, if any."""
    path = data_dir / "server.properties"
    if not path.exists():
        return None
    listeners = _read_properties(path).get("listeners", "")
    ports = dict(re.findall(r"(\w+)://[^:,]*:(\d+)", listeners))
    client = ports.get("PLAINTEXT") or ports.get("SASL_PLAINTEXT")
    if client is None or "CONTROLLER" not in ports:
        return None
    return int(client), int(ports["CONTROLLER"])


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a broker log, for error messages."""
    try:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no broker log)"


# ------------------------------------------------------------------ process state


def read_pid(data_dir: Path) -> int | None:
    """The pid in ``<data_dir>/broker.pid``; None when there is none or it is unreadable."""
    try:
        return int((data_dir / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) Kafka broker process."""
    child = CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _looks_like_broker(pid)


def _looks_like_broker(pid: int) -> bool:
    """Guard against a stale pid file whose pid was reused (Linux /proc; True elsewhere).

    /proc/<pid>/cmdline can read empty while the JVM maps its heap, so fall back to
    the command name there.
    """
    proc = Path(f"/proc/{pid}")
    try:
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
        cmdline = (proc / "cmdline").read_bytes()
        return b"kafka.Kafka" in cmdline if cmdline else (proc / "comm").read_text().strip() == "java"
    except FileNotFoundError:
        return not proc.parent.joinpath("self").exists()
    except OSError:
        return True


def reachable(bootstrap: str, timeout_s: float = 5.0, security: KafkaSecurity | None = None) -> bool:
    """Whether a metadata request (``list_topics``) to ``bootstrap`` succeeds (as ``security``'s principal)."""
    ms = max(int(timeout_s * 1000), 1000)
    auth = security.kafka_python() if security else {}
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kubeward-probe",
                                 bootstrap_timeout_ms=ms, request_timeout_ms=ms, **auth)
    except (kafka_errors.KafkaError, OSError):
        return False
    try:
        admin.list_topics()
        return True
    except (kafka_errors.KafkaError, OSError):
        return False
    finally:
        admin.close()


def accepts(address: str) -> bool:
    """Whether ``host:port`` accepts a TCP connection."""
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the broker's session (started with start_new_session, so pgid == pid)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)

