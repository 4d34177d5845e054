"""A real single-node Apache Kafka 4.x broker (KRaft), run by the project itself.

No Docker and no Kafka tarball: the broker's jars come from Maven Central through
``mvn`` (``deploy/runtime/kafka/pom.xml``) and it runs as ``java -cp 'libs/*' kafka.Kafka``,
exactly what the distribution's ``bin/kafka-server-start.sh`` does.

Contract
--------
* :func:`fetch_jars` collects the jars once into ``<repo>/.cache/kafka/libs``
  (needs ``java`` 17+ and ``mvn``; raises :class:`BrokerError` saying what to install).
* :func:`start` writes ``<data_dir>/server.properties`` (combined broker+controller,
  standalone quorum, PLAINTEXT on 127.0.0.1 only), formats the storage once
  (``<data_dir>/logs/meta.properties`` marks a formatted dir), launches the broker
  detached in its own session (output in ``<data_dir>/broker.log``, pid in
  ``<data_dir>/broker.pid``) and returns only when a metadata request succeeds.
  A formatted data dir keeps its cluster id and controller endpoint: reuse it with
  the same ports, or wipe it (``kafka up --fresh``).
* :func:`ensure_topics` creates the project's topics (``ingest.topics.ALL_TOPICS``)
  with their configs; :func:`stop` and :func:`status` work from the data dir alone,
  so another process (or the CLI) can stop a broker it did not start.
* Secured mode (``start(..., security=Secured())``, ``kafka up --secure``): SCRAM on a
  ``SASL_PLAINTEXT`` listener (optionally mutual TLS and ``SASL_SSL`` listeners too), ACLs per
  role with ``StandardAuthorizer`` and nothing allowed without an ACL; see
  :mod:`deploy.runtime.brokersecurity`. :meth:`Broker.client` then hands out each
  principal's :class:`ingest.kafkaauth.KafkaSecurity`. The PLAINTEXT default is unchanged.
* The data dir's files (``server.properties``, pid, log), whether its pid is a live broker and
  whether a bootstrap answers are ``deploy.runtime.brokerstate``.
* The command line (``kafka up|down|status|credentials``) is ``deploy.runtime.brokercli``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient

from deploy.runtime import brokersecurity
from deploy.runtime.brokersecurity import Principal, Secured, SecurityError, SecurityState
from deploy.runtime.brokerstate import (CHILDREN, HOST, accepts, alive, configured_ports, log_tail, read_pid, reachable,
                                        server_properties, signal_group)
from ingest.kafkaauth import KafkaSecurity
from ingest.topics import ALL_TOPICS, TopicSpec

__all__ = [
    "Broker",
    "BrokerError",
    "Principal",
    "Secured",
    "SecurityState",
    "ensure_topics",
    "fetch_jars",
    "security_state",
    "start",
    "status",
    "stop",
    "wait_ready",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG4J_CONFIG = KAFKA_DIR / "log4j2.properties"
DEFAULT_CACHE = REPO_ROOT / ".cache" / "kafka"
DEFAULT_DATA_DIR = DEFAULT_CACHE / "run"
KAFKA_VERSIONS = ("4.1.2", "4.1.1")  # the pom's default first, then the fallback
INSTALL_HINT = "install them with: apt-get install openjdk-17-jre-headless maven"


class BrokerError(RuntimeError):
    """The local broker cannot be fetched, started, reached or stopped."""


@dataclass
class Broker:
    """A broker process started by :func:`start`."""

    host: str
    port: int
    controller_port: int
    data_dir: Path
    log_path: Path
    pid: int
    security: SecurityState | None = None  # secured mode: principals, passwords, TLS listeners

    @property
    def bootstrap(self) -> str:
        """The ``bootstrap_servers`` string for clients (the SASL_PLAINTEXT listener in secured mode)."""
        return f"{self.host}:{self.port}"

    def client(self, name: str = brokersecurity.ADMIN, protocol: brokersecurity.ClientProtocol = "SASL_PLAINTEXT") -> KafkaSecurity:
        """Secured mode: the ``KafkaSecurity`` of principal ``name`` (default the broker's admin)."""
        if self.security is None:
            raise BrokerError("this broker runs without security (PLAINTEXT); start it with security=Secured()")
        return self.security.client(name, protocol)


# --------------------------------------------------------------------------- jars


def _has_broker_jar(libs: Path) -> bool:
    return any(libs.glob("kafka_2.13-*.jar"))


def _java_major(java: str) -> int:
    """Major version of ``java`` (``java -version`` prints e.g. ``"17.0.15"`` or ``"1.8.0_392"``)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise BrokerError(f"cannot parse `java -version` output: {out.stderr.strip()!r}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _require_tools(*tools: str) -> dict[str, str]:
    """Resolve tools on PATH; raise BrokerError naming every missing one (and Java < 17)."""
    found = {tool: shutil.which(tool) for tool in tools}
    missing = [tool for tool, path in found.items() if path is None]
    if missing:
        raise BrokerError(f"{' and '.join(missing)} not found on PATH; the local Kafka broker needs "
                          f"Java 17+ and Maven: {INSTALL_HINT}")
    paths = {tool: path for tool, path in found.items() if path is not None}
    if "java" in paths and (major := _java_major(paths["java"])) < 17:
        raise BrokerError(f"java {major} found at {paths['java']}, Kafka 4.x needs Java 17+; {INSTALL_HINT}")
    return paths


def fetch_jars(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """Collect the broker jars into ``<cache_dir>/libs`` once (idempotent); return that dir.

    Runs ``mvn dependency:copy-dependencies`` on ``deploy/runtime/kafka/pom.xml`` into a temporary
    dir that is renamed at the end, so an interrupted fetch never looks complete.
    """
    libs = Path(cache_dir) / "libs"
    if _has_broker_jar(libs):
        return libs
    tools = _require_tools("java", "mvn")
    staging = Path(cache_dir) / "libs.partial"
    errors = []
    for version in KAFKA_VERSIONS:
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [tools["mvn"], "-B", "-q", "-f", str(POM), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={staging}", f"-Dkafka.version={version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode == 0 and _has_broker_jar(staging):
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
            return libs
        errors.append(f"kafka {version}: " + "\n".join((proc.stdout + proc.stderr).splitlines()[-15:]))
    raise BrokerError("mvn could not collect the Kafka jars:\n" + "\n".join(errors))


# ------------------------------------------------------------------------ storage


def _jvm_opts(heap: str) -> list[str]:
    return [f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{LOG4J_CONFIG}"]


def _format_storage(java: str, libs: Path, props: Path, log_path: Path, extra: Sequence[str] = ()) -> None:
    """``StorageTool random-uuid`` then ``format --standalone`` (once per data dir), plus ``extra`` arguments."""
    base = [java, *_jvm_opts("256m"), "-cp", f"{libs}/*", "kafka.tools.StorageTool"]
    uuid = subprocess.run([*base, "random-uuid"], capture_output=True, text=True, check=False)
    if uuid.returncode != 0:
        raise BrokerError(f"StorageTool random-uuid failed:\n{uuid.stdout}{uuid.stderr}")
    cluster_id = uuid.stdout.strip().splitlines()[-1]
    fmt = subprocess.run([*base, "format", "--standalone", "-t", cluster_id, "-c", str(props), *extra],
                         capture_output=True, text=True, check=False)
    with log_path.open("a") as log:
        log.write(fmt.stdout + fmt.stderr)
    if fmt.returncode != 0:
        raise BrokerError(f"StorageTool format failed:\n{fmt.stdout}{fmt.stderr}")


# -------------------------------------------------------------------- public API


def wait_ready(bootstrap: str, timeout: float = 60, *, pid: int | None = None,
               log_path: Path | None = None, security: KafkaSecurity | None = None) -> None:
    """Poll until ``list_topics`` on ``bootstrap`` succeeds (as ``security``'s principal on a secured broker).

    Raises BrokerError (with the last 30 lines of ``log_path``) if ``pid`` dies first
    or on timeout.
    """
    deadline = time.monotonic() + timeout

    def tail() -> str:
        return log_tail(log_path) if log_path else ""

    while time.monotonic() < deadline:
        if pid is not None and not alive(pid):
            raise BrokerError(f"broker process {pid} exited before becoming ready:\n{tail()}")
        # cheap TCP probe first: a refused bootstrap makes the admin client wait its full timeout
        if accepts(bootstrap) and reachable(bootstrap, min(5.0, max(deadline - time.monotonic(), 1.0)), security):
            return
        time.sleep(0.25)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f}s:\n{tail()}")


def _check_mode(data_dir: Path, formatted: bool, security: Secured | None) -> SecurityState | None:
    """The stored secured-mode state; refuse to switch a formatted dir between PLAINTEXT and secured mode."""
    stored = brokersecurity.load_state(data_dir)
    if formatted and (stored is None) != (security is None):
        was, now = ("secured", "without security") if stored else ("PLAINTEXT", "secured")
        raise BrokerError(f"{data_dir} was formatted {was}; it cannot start {now}: "
                          f"start it as it was or wipe the dir (kafka up --fresh)")
    return stored


def _secure(data_dir: Path, security: Secured, stored: SecurityState | None, port: int,
            controller_port: int) -> tuple[SecurityState, dict[str, str], list[str]]:
    """Secured mode: (state, server.properties overrides, StorageTool format arguments)."""
    try:
        state = brokersecurity.resolve(security, stored, data_dir, HOST, port)
    except SecurityError as exc:
        raise BrokerError(str(exc)) from exc
    return state, brokersecurity.listener_properties(state, controller_port), brokersecurity.format_arguments(state)


def start(data_dir: Path, port: int = 9092, controller_port: int = 9093, heap: str = "512m",
          *, libs: Path | None = None, timeout: float = 60, security: Secured | None = None) -> Broker:
    """Format ``data_dir`` if needed, launch the broker detached and wait until it is ready.

    ``libs`` defaults to ``<repo>/.cache/kafka/libs`` (see :func:`fetch_jars`). With ``security``
    the broker authenticates every client and authorizes by role (see
    :mod:`deploy.runtime.brokersecurity`); the returned broker's ``client(name)`` gives each
    principal's credentials. A data dir keeps the mode it was formatted in.
    """
    data_dir = Path(data_dir).resolve()
    libs = Path(libs) if libs else DEFAULT_CACHE / "libs"
    if not _has_broker_jar(libs):
        raise BrokerError(f"no Kafka jars in {libs}; run fetch_jars() (or `kafka up`) first")
    java = _require_tools("java")["java"]
    if (pid := read_pid(data_dir)) and alive(pid):
        raise BrokerError(f"a broker (pid {pid}) already runs on {data_dir}; stop it first")
    formatted = (data_dir / "logs" / "meta.properties").exists()
    previous = configured_ports(data_dir)
    if formatted and previous and previous[1] != controller_port:
        raise BrokerError(f"{data_dir} was formatted for controller port {previous[1]}, not "
                          f"{controller_port}; reuse that port or wipe the dir (kafka up --fresh)")
    stored = _check_mode(data_dir, formatted, security)
    extra_ports = [p for p in (security.tls_port, security.sasl_ssl_port) if p is not None] if security else []
    for p in (port, controller_port, *extra_ports):
        if accepts(f"{HOST}:{p}"):
            raise BrokerError(f"port {p} on {HOST} is already in use")

    data_dir.mkdir(parents=True, exist_ok=True)
    state, overrides, format_args = _secure(data_dir, security, stored, port, controller_port) if security else (None, {}, [])
    props, log_path = data_dir / "server.properties", data_dir / "broker.log"
    props.write_text(server_properties(data_dir, port, controller_port, overrides))
    if state is not None:
        os.chmod(props, 0o600)  # it holds the admin password (JAAS lines)
    if not formatted:
        _format_storage(java, libs, props, log_path, format_args)
    broker = _launch(java, libs, heap, data_dir, props, log_path, port, controller_port, state)
    try:
        wait_ready(broker.bootstrap, timeout=timeout, pid=broker.pid, log_path=log_path,
                   security=state.admin if state else None)
        if state is not None:
            brokersecurity.apply_grants(state)
    except (SecurityError, kafka_errors.KafkaError) as exc:
        stop(data_dir)
        raise BrokerError(f"could not set the principals and ACLs of {data_dir}: {exc}") from exc
    except BaseException:
        stop(data_dir)
        raise
    return broker


def _launch(java: str, libs: Path, heap: str, data_dir: Path, props: Path, log_path: Path, port: int,
            controller_port: int, state: SecurityState | None) -> Broker:
    cmd = [java, *_jvm_opts(heap), f"-Dkafka.logs.dir={data_dir}", "-cp", f"{libs}/*",
           "kafka.Kafka", str(props)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=data_dir, start_new_session=True)
    CHILDREN[proc.pid] = proc
    (data_dir / "broker.pid").write_text(f"{proc.pid}\n")
    return Broker(HOST, port, controller_port, data_dir, log_path, proc.pid, state)


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec] = ALL_TOPICS,
                  partitions_override: dict[str, int] | None = None, *,
                  security: KafkaSecurity | None = None, replication_factor: int = 1) -> list[str]:
    """Create the missing topics of ``specs`` with their configs; return the names created.

    Idempotent: existing topics are left alone (their configs are not altered).
    Waits until every created topic has a leader. On a secured broker pass the admin's
    ``security`` (``broker.client()``). On a cluster, ``replication_factor`` > 1 also sets
    ``min.insync.replicas`` to one less (every producer here sends with ``acks=all``), so a
    write is acknowledged only once it is on two brokers at least and one broker may be lost.
    """
    if replication_factor < 1:
        raise BrokerError(f"replication_factor={replication_factor} must be >= 1")
    overrides = partitions_override or {}
    auth = security.kafka_python() if security else {}
    durable = {"min.insync.replicas": str(replication_factor - 1)} if replication_factor > 2 else {}
    with KafkaAdminClient(bootstrap_servers=bootstrap, client_id="kubeward-ensure-topics", **auth) as admin:
        existing = set(admin.list_topics())
        wanted = {spec.name: {"num_partitions": overrides.get(spec.name, spec.partitions),
                              "replication_factor": replication_factor, "configs": {**durable, **spec.config}}
                  for spec in specs if spec.name not in existing}
        if not wanted:
            return []
        result = admin.create_topics(wanted, raise_errors=False)
        created, failures = [], []
        for topic in result["topics"]:
            error = kafka_errors.for_code(topic["error_code"])
            if error is kafka_errors.NoError:
                created.append(topic["name"])
            elif error is not kafka_errors.TopicAlreadyExistsError:
                failures.append(f"{topic['name']}: {error.__name__} {topic.get('error_message') or ''}")
        if failures:
            raise BrokerError("could not create topics: " + "; ".join(failures))
        admin.wait_for_topics(created, timeout_ms=30000)
    return created


def stop(data_dir: Path, timeout: float = 30) -> bool:
    """SIGTERM the broker's process group, SIGKILL after ``timeout`` s; remove the pid file.

    Returns whether a running broker was stopped.
    """
    data_dir = Path(data_dir)
    pid_file = data_dir / "broker.pid"
    pid = read_pid(data_dir)
    stopped = False
    if pid is not None and alive(pid):
        signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
            while alive(pid) and time.monotonic() < deadline + 10:
                time.sleep(0.1)
        stopped = True
    if pid is not None and not alive(pid):
        CHILDREN.pop(pid, None)  # alive() already reaped it through Popen.poll()
    pid_file.unlink(missing_ok=True)
    return stopped


def status(data_dir: Path) -> dict[str, Any]:
    """``{"running": bool, "pid": int | None, "bootstrap": str | None, "protocol": str}`` for ``data_dir``.

    ``bootstrap`` is set only when the process runs and answers a metadata request (as the
    admin principal on a secured broker); ``protocol`` is that listener's security protocol.
    """
    data_dir = Path(data_dir)
    pid = read_pid(data_dir)
    running = pid is not None and alive(pid)
    ports = configured_ports(data_dir) if running else None
    state = brokersecurity.load_state(data_dir)
    bootstrap = f"{HOST}:{ports[0]}" if ports else None
    if bootstrap and not reachable(bootstrap, security=state.admin if state else None):
        bootstrap = None
    return {"running": running, "pid": pid if running else None, "bootstrap": bootstrap,
            "protocol": "SASL_PLAINTEXT" if state else "PLAINTEXT"}


def security_state(data_dir: Path) -> SecurityState | None:
    """The principals and credentials of a broker data dir formatted in secured mode (None for PLAINTEXT)."""
    return brokersecurity.load_state(Path(data_dir))
