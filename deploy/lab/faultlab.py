"""The running parts of one fault scenario (``deploy.lab.faults``) and the traffic through them.

``Lab`` starts a fresh local Kafka broker (``deploy.runtime.broker``), the worker
processes (``kubeward worker``) and a shim (``kubeward shim``) in a work dir, and
holds the fault verbs a ``Scenario``'s steps name (``broker_stop``,
``worker_kill:w1``, ``shim_start``, ``publisher_close``...). ``Driver`` is the
traffic: summaries at ``RATE_EPS`` through a ``SummaryPublisher`` with its disk
spool on, like a collector, an attacker a second (a row with an inline injection
finding) and an undecodable probe a second written straight to the topic.
``Scraper`` keeps each live worker's processed-rows counter (``scrape``), so a
killed one leaves a recent count. Reading the counts back is
``deploy.lab.faultcount``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from deploy.runtime import broker
from deploy.runtime.process import free_port, spawn_worker, start_shim, stop_process, wait_worker
from ingest import SUMMARIES, Policy, summary_row
from ingest.publish import SummaryPublisher

__all__ = ["ACTORS", "APP_ID", "KEY", "POLICY", "RATE_EPS", "TICK_S", "WORKLOAD", "Driver", "Lab", "Scenario", "Scraper",
           "WorkerRun", "fetch", "metric", "scrape"]

APP_ID = "kubeward-faults"
KEY = "kubeward-faults-verdict-key"  # not the development key: the worker and shim may refuse that one
POLICY = Policy(default_mode="enforce", verdict_ttl_s=3600)
WORKLOAD = "shop/frontend"
RATE_EPS = 400.0
TICK_S = 0.05
ACTORS = 200


@dataclass(frozen=True)
class Scenario:
    """A fault: traffic for ``stream_s`` seconds (and ``deploy.lab.faults.TAIL_S`` after the last step), ``steps`` at
    their times (``verb`` or ``verb:worker``, methods of ``Lab``), one after the other."""

    name: str
    description: str
    stream_s: float
    steps: tuple[tuple[float, str], ...]
    partitions: int = SUMMARIES.partitions
    workers: tuple[str, ...] = ("w1",)


# ------------------------------------------------------------------------ the traffic


class Driver(threading.Thread):
    """Summaries at ``RATE_EPS`` through a spooling publisher, an attacker a second, an undecodable probe a second.

    While the publisher is closed (``publisher_close``) rows wait in a backlog, as log lines wait for a
    collector that is down, and are published when it opens again.
    """

    def __init__(self, lab: Lab) -> None:
        super().__init__(name="faults-driver", daemon=True)
        self.lab = lab
        self.ids: list[str] = []
        self.attackers: list[str] = []
        self.probes_acked: set[tuple[int, int]] = set()
        self.probes_failed = 0
        self.backlog: list[dict[str, Any]] = []
        self.stop_event = threading.Event()
        self.pub_lock = threading.Lock()
        self.publisher: SummaryPublisher | None = None
        self.publisher_stats: list[dict[str, int]] = []
        # not idempotent: kafka-python 3.0.12's idempotent producer never sends again after a delivery timeout
        self._probe_producer = KafkaProducer(bootstrap_servers=lab.bootstrap, acks="all", linger_ms=5, retries=5,
                                             delivery_timeout_ms=60000, request_timeout_ms=30000, reconnect_backoff_max_ms=1000,
                                             max_block_ms=1000, enable_idempotence=False)
        self._probes_sent = 0
        self.probes_stuck = 0
        self.open_publisher()

    def open_publisher(self) -> None:
        with self.pub_lock:
            self.publisher = SummaryPublisher(self.lab.bootstrap, envelope_rows=200, linger_ms=20.0, max_buffered_rows=4000,
                                              client_id="faults-driver", spool_dir=self.lab.workdir / "spool",
                                              delivery_timeout_ms=8000)
            self.publisher.start_background_flush(0.05)

    def close_publisher(self) -> None:
        with self.pub_lock:
            if self.publisher is not None:
                self.publisher.close(timeout=2.0)
                self.publisher_stats.append(self.publisher.stats())
                self.publisher = None

    def _rows(self, seq: int, n: int, now: float) -> list[dict[str, Any]]:
        out = []
        for i in range(seq, seq + n):
            user = f"user-{i % ACTORS}"
            out.append(summary_row(id=f"{self.lab.scenario.name}-{i:07d}", time=now, reporter="access_log", principal=user,
                                   auth_type="jwt", source={"workload": WORKLOAD, "namespace": "shop", "ip": "10.0.0.7"},
                                   destination={"service": "orders", "namespace": "shop"}, method="GET",
                                   path_template="/orders/{id}", status=200, object_ids=[f"{user}-order-{i % 3}"]))
        return out

    def _attacker(self, k: int, now: float) -> dict[str, Any]:
        principal = f"attacker-{k:03d}"
        self.attackers.append(principal)
        return summary_row(id=f"{self.lab.scenario.name}-attack-{k:03d}", time=now, reporter="shim", principal=principal,
                           auth_type="jwt", source={"workload": WORKLOAD, "namespace": "shop", "ip": "10.0.0.9"},
                           destination={"service": "orders", "namespace": "shop"}, method="GET",
                           path_template="/orders/{id}", status=403, decision="deny", inline_findings=["sqli"])

    def _probe(self) -> None:
        k = self._probes_sent
        self._probes_sent += 1
        try:
            future = self._probe_producer.send(SUMMARIES.name, key=f"probe-{k}".encode(), value=b"\x00probe %d: not a summary" % k)
        except KafkaTimeoutError:  # no metadata within max_block_ms: the broker is away
            self.probes_failed += 1
            return
        future.add_callback(lambda md: self.probes_acked.add((md.partition, md.offset)))
        future.add_errback(lambda exc: setattr(self, "probes_failed", self.probes_failed + 1))

    def run(self) -> None:
        start = next_tick = time.monotonic()
        seq = attackers = 0
        while not self.stop_event.is_set():
            now = time.time()
            n = int((time.monotonic() - start) * RATE_EPS) - seq
            batch = self._rows(seq, max(n, 0), now)
            seq += len(batch)
            if (time.monotonic() - start) >= attackers + 0.5:
                batch.append(self._attacker(attackers, now))
                attackers += 1
                self._probe()
            self.ids.extend(r["id"] for r in batch)
            self.backlog.extend(batch)
            with self.pub_lock:
                if self.publisher is not None and self.backlog:
                    self.publisher.publish_rows(self.backlog)
                    self.backlog = []
            next_tick += TICK_S
            time.sleep(max(next_tick - time.monotonic(), 0.0))

    def finish(self, timeout: float) -> None:
        """Stop the traffic, publish the backlog, replay the spool and close the publisher."""
        self.stop_event.set()
        self.join()
        if self.publisher is None:
            self.open_publisher()
        assert self.publisher is not None
        with self.pub_lock:
            if self.backlog:
                self.publisher.publish_rows(self.backlog)
                self.backlog = []
            self.publisher.flush(timeout=timeout)
        self.close_publisher()
        try:  # a probe the broker never acknowledged is not counted as sent (probes_unacknowledged)
            self._probe_producer.flush(timeout=30)
        except KafkaTimeoutError:
            self.probes_stuck = self._probes_sent - len(self.probes_acked) - self.probes_failed
        try:
            self._probe_producer.close(timeout=1)
        except KafkaTimeoutError:  # not with a non-idempotent producer: every probe settles within its delivery timeout (60 s: a probe outlives the 30 s pause)
            pass


# ------------------------------------------------------------------------ the parts


@dataclass
class WorkerRun:
    """One worker process (an incarnation): its last scraped counters and how it ended."""

    name: str
    web_port: int
    proc: subprocess.Popen[bytes]
    processed: float = 0.0
    ended: str = ""  # "", "killed", "stopped"


class Lab:
    """The running parts of one scenario and the fault verbs the steps call."""

    def __init__(self, scenario: Scenario, workdir: Path) -> None:
        self.scenario, self.workdir = scenario, workdir
        self.data_dir = workdir / "kafka"
        self.port, self.controller_port = free_port(), free_port()
        self.broker: broker.Broker | None = None
        self.paused = False
        self.runs: list[WorkerRun] = []
        self.shim: subprocess.Popen[bytes] | None = None
        self.shim_port, self.shim_admin = free_port(), free_port()
        self.timeline: list[dict[str, Any]] = []
        self.driver: Driver | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # parts

    def start(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        broker.fetch_jars()
        self.broker = broker.start(self.data_dir, port=self.port, controller_port=self.controller_port, heap="384m")
        broker.ensure_topics(self.bootstrap, partitions_override={SUMMARIES.name: self.scenario.partitions})
        self._changelog_topic()
        shim = threading.Thread(target=self._timed, args=("shim_start",), name="faults-shim-start")
        shim.start()  # the shim and the first worker start side by side (each waits for its own readiness)
        for name in self.scenario.workers:
            self._timed("worker_start", name)
        shim.join()
        if self.shim is None:
            raise RuntimeError(f"the shim did not start; see {self.workdir / 'shim.log'}")

    def _timed(self, verb: str, arg: str = "") -> None:
        started = time.monotonic()
        getattr(self, verb)(*([arg] if arg else []))
        self.timeline.append({"step": f"{verb}:{arg}" if arg else verb, "at_s": None, "took_s": round(time.monotonic() - started, 1)})

    def _changelog_topic(self) -> None:
        """The worker's table changelog, made ahead with the summaries' partition count (Faust would make one)."""
        with KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="faults-admin") as admin:
            admin.create_topics([NewTopic(f"{APP_ID}-actor-state-changelog", self.scenario.partitions, 1,
                                          topic_configs={"cleanup.policy": "compact"})])

    def worker_start(self, name: str) -> None:
        port = free_port()
        settings = {"bootstrap": self.bootstrap, "app_id": APP_ID, "web_port": port, "state_flush_s": 0.5,
                    "enricher_flush_s": 1.0, "policy": POLICY.model_dump(), "verdict_key": KEY, "policy_sync_timeout_s": 2.0}
        log = self.workdir / f"worker-{name}-{len(self.runs)}.log"
        run = WorkerRun(name, port, spawn_worker(log, settings))
        self.runs.append(run)  # held from the start, so a worker that never gets ready is still torn down
        wait_worker(run.proc, log, timeout=120)

    def _live(self, name: str) -> WorkerRun:
        return next(r for r in reversed(self.runs) if r.name == name and not r.ended)

    def worker_kill(self, name: str) -> None:
        run = self._live(name)
        scrape(run)
        stop_process(run.proc, sig=signal.SIGKILL)
        run.ended = "killed"

    def worker_stop(self, name: str) -> None:
        run = self._live(name)
        scrape(run)
        stop_process(run.proc, timeout=60)
        run.ended = "stopped"

    def shim_start(self) -> None:
        settings = {"bootstrap": self.bootstrap, "port": self.shim_port, "admin_port": self.shim_admin, "report": "none",
                    "policy": POLICY.model_dump(), "verdict_key": KEY}
        self.shim = start_shim(self.workdir / "shim.log", settings, timeout=90)

    def shim_stop(self) -> None:
        stop_process(self.shim)
        self.shim = None

    def broker_stop(self) -> None:
        broker.stop(self.data_dir)

    def broker_start(self) -> None:
        self.broker = broker.start(self.data_dir, port=self.port, controller_port=self.controller_port, heap="384m")

    def broker_pause(self) -> None:
        assert self.broker is not None
        os.kill(self.broker.pid, signal.SIGSTOP)
        self.paused = True

    def broker_resume(self) -> None:
        assert self.broker is not None
        os.kill(self.broker.pid, signal.SIGCONT)
        self.paused = False

    def publisher_close(self) -> None:
        assert self.driver is not None
        self.driver.close_publisher()

    def publisher_open(self) -> None:
        assert self.driver is not None
        self.driver.open_publisher()

    def stop(self) -> None:
        """Tear everything down; the counts are taken, so the processes are killed, not asked to stop."""
        if self.paused:
            self.broker_resume()
        procs = [p for p in (self.shim, *(r.proc for r in self.runs)) if p is not None and p.poll() is None]
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=30)
        broker.stop(self.data_dir, timeout=10)


# ------------------------------------------------------------------------ the workers' counters


def fetch(url: str, timeout: float = 2.0) -> str | None:
    """The body of a GET on one of the parts' HTTP ports, or None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def metric(text: str, name: str, labels: str = "") -> float:
    """The sum of a Prometheus metric's samples in ``text`` whose labels contain ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def scrape(run: WorkerRun) -> None:
    """Remember a live worker's processed-rows counter (it dies with the process)."""
    text = fetch(f"http://127.0.0.1:{run.web_port}/metrics")
    if text is not None:
        run.processed = max(run.processed, metric(text, "kubeward_worker_summaries_total"))


class Scraper(threading.Thread):
    """Scrapes every live worker a few times a second, so a killed one leaves a recent count."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(name="faults-scraper", daemon=True)
        self.lab, self.stop_event = lab, threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.2):
            for run in list(self.lab.runs):
                if not run.ended:
                    scrape(run)

