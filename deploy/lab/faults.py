"""Faults on the real broker, every summary and every verdict counted end to end (issue 9, item 5).

One scenario runs a fresh local Kafka broker (``deploy.runtime.broker``), worker
processes (``kubeward worker``), a shim (``kubeward shim``) and a traffic driver
that hands summaries to a ``SummaryPublisher`` with its disk spool on, like a
collector. While traffic flows the scenario injects its fault at fixed times
(a broker restart, a worker ``kill -9``, workers joining and leaving, a shim
restart, the broker stopped with ``SIGSTOP`` for 30 s, the broker away while the
publisher itself restarts). Then traffic stops, the publisher flushes its spool,
and the counts are read back from Kafka:

* **sent**: summaries handed to the publisher, plus the undecodable probes the
  driver writes to the topic once a second (each one message, one summary).
* **processed**: distinct summary ids in messages below the worker group's
  committed offsets (Faust commits an offset only after the agent has handled
  the message and the producer has flushed what it published), probes excluded.
* **dead_lettered**: distinct probes found in ``l7.summaries.dlq.v1``.
* **lost** = sent - processed - dead_lettered, computed on ids, not on totals.

Duplicates are reported apart from loss: ``duplicates_on_topic`` (rows the
publisher sent twice: a send the broker wrote but never acknowledged is
replayed), ``reprocessed`` (rows the workers' ``kubeward_worker_summaries_total``
counters saw beyond the committed rows; the counter of a killed or stopped
worker is its last scrape, so then it is a lower bound, ``reprocessed_exact``
false) and ``dead_letters_repeated`` (probes dead-lettered twice: exact).

Verdicts: every record of ``enforcement.verdicts.v1`` is followed live (before
compaction can fold repeats); **sent** is the distinct entry keys, **processed**
the entries of the shim's cache (``/stats``), **dead_lettered** the records the
shim refused (bad signature, invalid, unsigned tombstone), **lost** the rest.
Each attacker (one row with an inline injection finding, one a second) must be
denied by the shim at the end.

Idempotent effects, as defined here: a verdict's effect is the shim's cache entry
of its entry key (subject, plus the edge for a scoped verdict). A verdict issued
again for the same key after a replay (``repeated``) must carry the same subject,
scope, action and mode (``same_effect``), and so replaces the entry with an equal
one; a record delivered twice (``redelivered``: every record is sent once more at
the end) is taken again, applied or counted stale when a newer one of its key
stands, and leaves the cache as it was (same entries, every attacker still denied).
Rows processed twice fold twice into the per-actor windows (a row's id repeated
by the same reporter is not filtered, ``streams.repeats``): counted, not hidden.

``run_fault(name)`` returns the counts and ``record`` merges them into
``build/faults.json``. Command line: ``python -m deploy.lab.faults [names...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaTimeoutError

from deploy.runtime import broker
from deploy.runtime.process import free_port, spawn_worker, start_shim, stop_process, wait_worker
from ingest import DLQ, SUMMARIES, VERDICTS, DeadLetter, Policy, Verdict, actor_key, summary_row
from ingest.envelope import EnvelopeError, decode_message
from ingest.publish import SummaryPublisher

__all__ = ["FAULTS", "Scenario", "add_cli", "main", "record", "run", "run_fault"]

REPO = Path(__file__).resolve().parents[2]
REPORT = REPO / "build" / "faults.json"
APP_ID = "kubeward-faults"
KEY = "kubeward-faults-verdict-key"  # not the development key: the worker and shim may refuse that one
POLICY = Policy(default_mode="enforce", verdict_ttl_s=3600)
WORKLOAD = "shop/frontend"
RATE_EPS = 400.0
TICK_S = 0.05
ACTORS = 200
#: seconds of traffic after the last step at least, whatever ``stream_s`` says
TAIL_S = 5.0


@dataclass(frozen=True)
class Scenario:
    """A fault: traffic for ``stream_s`` seconds (and ``TAIL_S`` after the last step), ``steps`` at their times
    (``verb`` or ``verb:worker``, methods of ``Lab``), one after the other."""

    name: str
    description: str
    stream_s: float
    steps: tuple[tuple[float, str], ...]
    partitions: int = SUMMARIES.partitions
    workers: tuple[str, ...] = ("w1",)


FAULTS: dict[str, Scenario] = {s.name: s for s in (
    # away 9 s, past the driver's 8 s delivery timeout, so sends fail and go to the spool whatever the machine's speed
    # (a quick restart alone let every buffered send wait out the outage in the producer: nothing to spool)
    Scenario("broker-restart", "broker stopped (SIGTERM) mid-stream and started again on its data dir 9 s later", 24.0,
             ((4.0, "broker_stop"), (13.0, "broker_start"))),
    Scenario("worker-kill", "the only worker killed with SIGKILL mid-stream, then started again", 20.0,
             ((4.0, "worker_kill:w1"), (4.0, "worker_start:w1"))),
    Scenario("workers-2", "a second worker joins mid-stream, then the first leaves (two rebalances)", 22.0,
             ((3.0, "worker_start:w2"), (12.0, "worker_stop:w1")), partitions=3),
    Scenario("workers-3", "a second and a third worker join, then the first leaves (three rebalances)", 28.0,
             ((3.0, "worker_start:w2"), (7.0, "worker_start:w3"), (16.0, "worker_stop:w1")), partitions=3),
    Scenario("shim-restart", "the shim stopped and started again mid-stream (cache rebuilt from the topic)", 16.0,
             ((4.0, "shim_stop"), (7.0, "shim_start"))),
    Scenario("broker-pause", "the broker paused with SIGSTOP for 30 s, then SIGCONT", 40.0,
             ((3.0, "broker_pause"), (33.0, "broker_resume"))),
    Scenario("publisher-spool", "broker stopped; the publisher spools to disk, is itself restarted while the broker "
             "is away, and replays when it is back", 26.0,
             ((3.0, "broker_stop"), (8.0, "publisher_close"), (10.0, "broker_start"), (11.0, "publisher_open"))),
)}


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


# ------------------------------------------------------------------------ reading back


def _get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError):
        return None


def _metric(text: str, name: str, labels: str = "") -> float:
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.e+-]+)$", text, re.M):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


def scrape(run: WorkerRun) -> None:
    """Remember a live worker's processed-rows counter (it dies with the process)."""
    text = _get(f"http://127.0.0.1:{run.web_port}/metrics")
    if text is not None:
        run.processed = max(run.processed, _metric(text, "kubeward_worker_summaries_total"))


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


class VerdictWatcher(threading.Thread):
    """Every record of the verdict topic, read as it comes (compaction may fold repeats later)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="faults-verdicts", daemon=True)
        self.records: list[Verdict] = []
        self.raw: list[tuple[bytes | None, bytes]] = []
        self.stop_event = threading.Event()
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                      auto_offset_reset="earliest", reconnect_backoff_max_ms=1000)
        self.consumer.assign([TopicPartition(VERDICTS.name, 0)])

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                batches = self.consumer.poll(timeout_ms=200)
            except Exception:  # noqa: BLE001 - the broker is away during a fault; keep following
                time.sleep(0.5)
                continue
            for records in batches.values():
                for r in records:
                    if r.value:
                        self.raw.append((r.key, r.value))
                        self.records.append(Verdict.model_validate_json(r.value))

    def close(self) -> None:
        self.stop_event.set()
        self.join(10)
        self.consumer.close()


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic, all partitions, from the beginning to the end offsets of now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=16 << 20)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        end = consumer.end_offsets(parts)
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in parts) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += records
        return out
    finally:
        consumer.close()


def _committed(bootstrap: str) -> tuple[dict[int, int], dict[int, int]]:
    """(committed offset, end offset) per summaries partition for the worker group."""
    with KafkaAdminClient(bootstrap_servers=bootstrap, client_id="faults-admin") as admin:
        offsets = admin.list_group_offsets({APP_ID: None}).get(APP_ID, {})
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    try:
        parts = [TopicPartition(SUMMARIES.name, p) for p in consumer.partitions_for_topic(SUMMARIES.name) or ()]
        end = {tp.partition: off for tp, off in consumer.end_offsets(parts).items()}
    finally:
        consumer.close()
    committed = {tp.partition: max(meta.offset, 0) for tp, meta in offsets.items() if tp.topic == SUMMARIES.name}
    return {p: committed.get(p, 0) for p in end}, end


def _shim_stats(lab: Lab) -> tuple[int, float]:
    """(verdict cache entries, verdict records refused) of the running shim."""
    stats = _get(f"http://127.0.0.1:{lab.shim_admin}/stats")
    metrics = _get(f"http://127.0.0.1:{lab.shim_admin}/metrics") or ""
    refused = sum(_metric(metrics, "kubeward_shim_verdicts_applied_total", f'result="{r}"')
                  for r in ("bad_signature", "invalid", "unsigned_tombstone"))
    return (json.loads(stats)["cache_entries"] if stats else -1), refused


def _applied(lab: Lab) -> dict[str, float]:
    """The shim's verdict records by result: ``applied`` (into the cache) and ``stale`` (older than the entry it holds)."""
    text = _get(f"http://127.0.0.1:{lab.shim_admin}/metrics") or ""
    return {r: _metric(text, "kubeward_shim_verdicts_applied_total", f'result="{r}"') for r in ("applied", "stale")}


def redeliver(lab: Lab, records: list[tuple[bytes | None, bytes]], attackers: list[str], timeout: float = 30.0) -> dict[str, Any]:
    """Deliver every verdict record once more, as a replay would: the shim takes each again (applied, or stale
    when a newer record of its key stands) and its cache (entries, every attacker denied) must come out the same."""
    entries_before, _ = _shim_stats(lab)
    before = _applied(lab)
    producer = KafkaProducer(bootstrap_servers=lab.bootstrap, acks="all", enable_idempotence=False)
    for key, value in records:
        producer.send(VERDICTS.name, key=key, value=value)
    producer.flush(timeout=30)
    producer.close(timeout=5)
    deadline = time.monotonic() + timeout
    while sum(_applied(lab).values()) < sum(before.values()) + len(records) and time.monotonic() < deadline:
        time.sleep(0.2)
    after = _applied(lab)
    entries_after, _ = _shim_stats(lab)
    return {"records": len(records), "applied_again": int(after["applied"] - before["applied"]),
            "stale": int(after["stale"] - before["stale"]), "cache_entries_before": entries_before,
            "cache_entries_after": entries_after, "attackers_denied_after": sum(_check(lab, a) == 403 for a in attackers)}


def _check(lab: Lab, principal: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{lab.shim_port}/orders/1234", headers={
        "x-kubeward-source-workload": WORKLOAD, "x-kubeward-principal": principal, "host": "orders"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def _settle(lab: Lab, watcher: VerdictWatcher, driver: Driver, timeout: float) -> float:
    """Wait until the group has committed every message, the probes are dead-lettered and the shim holds every
    verdict key; the seconds it took (the caller accounts for whatever did not settle)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        committed, end = _committed(lab.bootstrap)
        keys = {v.entry_key for v in watcher.records}
        entries, _ = _shim_stats(lab)
        attackers_in = {v.subject.value for v in watcher.records}
        if committed == end and entries == len(keys) and all(actor_key(WORKLOAD, a) in attackers_in for a in driver.attackers):
            return time.monotonic() - started
        time.sleep(1.0)
    return time.monotonic() - started


def account(lab: Lab, driver: Driver, watcher: VerdictWatcher) -> dict[str, Any]:
    """The counts of one scenario, read back from the topics, the group offsets and the shim."""
    committed, end = _committed(lab.bootstrap)
    rows_on_topic: Counter[str] = Counter()
    processed: set[str] = set()
    committed_rows = 0
    probes_on_topic: set[tuple[int, int]] = set()
    for rec in _read_all(lab.bootstrap, SUMMARIES.name):
        try:
            ids = decode_message(rec.value, 16 << 20).column("id").to_pylist()
        except EnvelopeError:
            probes_on_topic.add((rec.partition, rec.offset))
            continue
        rows_on_topic.update(ids)
        if rec.offset < committed[rec.partition]:
            processed.update(ids)
            committed_rows += len(ids)
    letters = [DeadLetter.model_validate_json(r.value) for r in _read_all(lab.bootstrap, DLQ.name)]
    lettered = Counter((d.partition, d.offset) for d in letters)
    sent_ids = set(driver.ids)
    probes = driver.probes_acked
    dead = probes & set(lettered)
    counted = sum(r.processed for r in lab.runs)
    exact = all(not r.ended for r in lab.runs)
    keys: dict[str, set[tuple[Any, ...]]] = {}
    for v in watcher.records:
        keys.setdefault(v.entry_key, set()).add((v.subject.kind, v.subject.value, v.scope, v.action, v.mode))
    entries, refused = _shim_stats(lab)
    denied = sum(_check(lab, a) == 403 for a in driver.attackers)
    verdicts_processed = max(min(entries, len(keys)), 0)
    return {
        "sent": len(sent_ids) + len(probes),
        "processed": len(processed & sent_ids),
        "dead_lettered": len(dead),
        "lost": len(sent_ids - processed) + len(probes - dead),
        "duplicates_on_topic": sum(rows_on_topic.values()) - len(rows_on_topic),
        "reprocessed": max(int(counted) - committed_rows, 0),
        "reprocessed_exact": exact,
        "dead_letters_repeated": sum(n - 1 for n in lettered.values()),
        "not_on_topic": len(sent_ids - set(rows_on_topic)),
        "uncommitted_messages": sum(end[p] - committed[p] for p in end),
        "probes_unacknowledged": driver.probes_failed + driver.probes_stuck,
        "probes_unacknowledged_but_written": len(probes_on_topic - probes),
        "probes_missing": [{"partition": p, "offset": o, "on_topic": (p, o) in probes_on_topic,
                            "committed": o < committed[p]} for p, o in sorted(probes - dead)[:10]],
        "publisher": _publisher_totals(driver.publisher_stats),
        "verdicts": {
            "sent": len(keys), "processed": verdicts_processed, "dead_lettered": int(refused),
            "lost": len(keys) - verdicts_processed - int(refused), "records": len(watcher.records),
            "repeated": len(watcher.records) - len(keys), "same_effect": all(len(e) == 1 for e in keys.values()),
            "shim_cache_entries": entries,
        },
        "attackers": {"sent": len(driver.attackers), "denied": denied},
    }


def _publisher_totals(stats: list[dict[str, int]]) -> dict[str, Any]:
    """The driver's publishers' counters summed; ``left_in_spool`` is what each left on disk when it closed."""
    names = ("rows_sent", "rows_failed", "rows_spooled", "rows_replayed", "rows_dropped")
    return {n: sum(s.get(n, 0) for s in stats) for n in names} | {
        "publishers": len(stats), "left_in_spool": [s.get("rows_in_spool", 0) for s in stats]}


# ------------------------------------------------------------------------ running


def run_fault(name: str, workdir: Path | None = None, settle_s: float = 120.0) -> dict[str, Any]:
    """Run one scenario of ``FAULTS`` on fresh parts and return its counts (see the module docstring).

    Without ``workdir`` a temporary one is used and removed, unless something was lost (then ``workdir`` in
    the counts names it: logs of the broker, workers and shim, and the spool).
    """
    scenario = FAULTS[name]
    own = workdir is None
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"kubeward-fault-{name}-"))
    lab = Lab(scenario, workdir)
    began = time.monotonic()
    scraper: Scraper | None = None
    watcher: VerdictWatcher | None = None
    keep = True
    try:
        lab.start()
        watcher, scraper = VerdictWatcher(lab.bootstrap), Scraper(lab)
        watcher.start()
        scraper.start()
        driver = lab.driver = Driver(lab)
        t0 = time.monotonic()
        driver.start()
        for at, step in scenario.steps:
            time.sleep(max(at - (time.monotonic() - t0), 0.0))
            _step(lab, step, t0)
        # a step that took long (a worker start on a busy machine) pushes the end: traffic goes on after the last one
        time.sleep(max(scenario.stream_s - (time.monotonic() - t0), TAIL_S))
        driver.finish(timeout=settle_s)
        settled = _settle(lab, watcher, driver, settle_s)
        scraper.stop_event.set()
        scraper.join()
        for run in lab.runs:
            if not run.ended:
                scrape(run)
        counts = account(lab, driver, watcher)
        counts["verdicts"]["redelivered"] = redeliver(lab, list(watcher.raw), driver.attackers)
        counts.update(fault=name, description=scenario.description, partitions=scenario.partitions, stream_s=scenario.stream_s,
                      rate_eps=RATE_EPS, timeline=lab.timeline, settle_seconds=round(settled, 1),
                      seconds=round(time.monotonic() - began, 1),
                      workers=[{"name": r.name, "processed": int(r.processed), "ended": r.ended or "running"} for r in lab.runs])
        keep = bool(counts["lost"] or counts["verdicts"]["lost"])
        if keep:
            counts["workdir"] = str(workdir)
        return counts
    finally:
        if scraper is not None:
            scraper.stop_event.set()
        if watcher is not None:
            watcher.close()
        lab.stop()
        if own and not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _step(lab: Lab, step: str, t0: float) -> None:
    verb, _, arg = step.partition(":")
    started = time.monotonic()
    action: Callable[..., None] = getattr(lab, verb)
    action(*([arg] if arg else []))
    lab.timeline.append({"step": step, "at_s": round(started - t0, 1), "took_s": round(time.monotonic() - started, 1)})


def record(counts: dict[str, Any], path: Path = REPORT, command: str | None = None) -> None:
    """Merge one fault's counts into ``build/faults.json`` (one entry per fault, the newest run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    report.setdefault("faults", {})[counts["fault"]] = counts | {"command": command or " ".join(sys.argv), "finished_at": time.time()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run(names: list[str], out: Path = REPORT, command: str | None = None) -> int:
    """Run faults one at a time (all when ``names`` is empty), record each; 1 if any lost a summary or a verdict."""
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown faults {unknown}; valid names: {', '.join(FAULTS)}")
    failed = 0
    for name in names or list(FAULTS):
        counts = run_fault(name)
        record(counts, out, command)
        print(json.dumps({k: counts[k] for k in ("fault", "sent", "processed", "dead_lettered", "lost", "duplicates_on_topic",
                                                 "reprocessed", "verdicts", "attackers", "seconds")}), flush=True)
        failed += bool(counts["lost"] or counts["verdicts"]["lost"])
    return 1 if failed else 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("faults", nargs="*", metavar="FAULT", help=f"faults to run, one at a time (default: all): {', '.join(FAULTS)}")
    p.add_argument("--out", type=Path, default=REPORT, help="the report to merge the counts into (default build/faults.json)")


def add_cli(sub: Any) -> None:
    """Register ``kubeward faults``."""
    p = sub.add_parser("faults", help="faults on the real broker, every summary and verdict counted (build/faults.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(p)
    p.set_defaults(func=lambda args: run(args.faults, args.out, "kubeward faults " + " ".join(args.faults)))


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.lab.faults [FAULT...] [--out FILE]``."""
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _arguments(parser)
    args = parser.parse_args(argv)
    return run(args.faults, args.out, "python -m deploy.lab.faults " + " ".join(args.faults))


if __name__ == "__main__":
    sys.exit(main())
