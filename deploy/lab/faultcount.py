"""The counts of one fault scenario (``deploy.lab.faults``), read back from the topics, the group offsets and the shim.

``VerdictWatcher`` follows ``enforcement.verdicts.v1`` live, before compaction
can fold repeats. When the traffic has stopped, ``settle`` waits for the worker
group to commit every message and the shim to hold every verdict key;
``account`` then counts summaries and verdicts on ids (sent, processed,
dead-lettered, lost, and the repeats apart, as the ``deploy.lab.faults``
docstring defines them), and ``redeliver`` sends every verdict record once more
to show that a replay leaves the shim's cache as it was.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from deploy.lab.faultlab import APP_ID, WORKLOAD, Driver, Lab, fetch, metric
from ingest import DLQ, SUMMARIES, VERDICTS, DeadLetter, Verdict, actor_key
from ingest.envelope import EnvelopeError, decode_message

__all__ = ["VerdictWatcher", "account", "redeliver", "settle"]


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
    stats = fetch(f"http://127.0.0.1:{lab.shim_admin}/stats")
    metrics = fetch(f"http://127.0.0.1:{lab.shim_admin}/metrics") or ""
    refused = sum(metric(metrics, "kubeward_shim_verdicts_applied_total", f'result="{r}"')
                  for r in ("bad_signature", "invalid", "unsigned_tombstone"))
    return (json.loads(stats)["cache_entries"] if stats else -1), refused


def _applied(lab: Lab) -> dict[str, float]:
    """The shim's verdict records by result: ``applied`` (into the cache) and ``stale`` (older than the entry it holds)."""
    text = fetch(f"http://127.0.0.1:{lab.shim_admin}/metrics") or ""
    return {r: metric(text, "kubeward_shim_verdicts_applied_total", f'result="{r}"') for r in ("applied", "stale")}


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


def settle(lab: Lab, watcher: VerdictWatcher, driver: Driver, timeout: float) -> float:
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
