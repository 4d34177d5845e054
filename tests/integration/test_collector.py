"""The collector against the real broker: files written, rotated and partly malformed while it runs,
a restart in the middle, and a real Envoy writing the shipped JSON access-log format.

Every summary must arrive on ``l7.summaries.v1`` exactly once; unusable lines on ``l7.summaries.dlq.v1``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.collect import build_sources, build_summarizer
from ingest import DLQ, SUMMARIES, DeadLetter, decode_message
from ingest.collectors.runner import Collector
from ingest.collectors.settings import CollectorSettings
from ingest.publish import SummaryPublisher

sys.path.insert(0, str(Path(__file__).parent))
from envoy_util import Envoy, Upstream, free_ports, request, retarget  # noqa: E402

pytestmark = pytest.mark.integration


def read_topic(bootstrap: str, topic: str, keep: Callable[[bytes], list[Any]]) -> list[Any]:
    """Everything ``keep`` picks from every message now on ``topic`` (read up to the end offsets)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        ends = consumer.end_offsets(parts)
        found: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                for message in messages:
                    found += keep(message.value)
        return found
    finally:
        consumer.close()


def summary_ids(run: str) -> Callable[[bytes], list[str]]:
    def keep(value: bytes) -> list[str]:
        return [i for i in decode_message(value, 64 << 20).column("id").to_pylist() if i.startswith(run)]

    return keep


class Running:
    """One collector process's worth of parts, built the way ``kubeward collect`` builds them."""

    def __init__(self, settings: CollectorSettings) -> None:
        self.publisher = SummaryPublisher(settings.bootstrap, envelope_rows=200, linger_ms=20)
        self.dlq = KafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
        self.collector = Collector(settings, build_sources(settings), build_summarizer(settings), self.publisher,
                                   lambda key, value: self.dlq.send(DLQ.name, key=key, value=value))
        self.collector.start()

    def entries(self) -> int:
        (files,) = self.collector.sources
        return int(files.counters()["entries"])  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.collector.stop()
        self.publisher.close()
        self.dlq.flush()
        self.dlq.close()
        assert self.collector.failed == []


def cri_entry(run: str, n: int) -> bytes:
    doc = {"start_time": "2024-05-01T10:00:00.123Z", "method": "GET", "path": f"/api/orders/{n}",
           "authority": "orders.shop.svc.cluster.local", "request_id": f"{run}-{n}", "response_code": 200,
           "bytes_sent": 120, "duration": 4, "downstream_peer_address": f"10.1.{n % 7}.9:4000",
           "authorization": f"Bearer user-{n % 13}", "user_agent": "okhttp"}
    text = json.dumps(doc).encode()
    stamp = b"2024-05-01T10:00:00.200000000Z stdout "
    if n % 97 == 0:  # long lines come in CRI partial chunks
        return stamp + b"P " + text[:40] + b"\n" + stamp + b"F " + text[40:] + b"\n"
    return stamp + b"F " + text + b"\n"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def settings_for(bootstrap: str, logs: Path, state: Path) -> CollectorSettings:
    return CollectorSettings(bootstrap=bootstrap, metrics_port=None, tick_s=0.02, checkpoint_s=0.3,
                             join={"hold_s": 0.1},
                             files={"paths": [str(logs / "*.log")], "state_path": state, "initial_position": "beginning",
                                    "poll_s": 0.05, "rotate_wait_s": 1.0})


def test_summaries_arrive_exactly_once_through_rotation_restart_and_bad_lines(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    logs = tmp_path / "logs"
    logs.mkdir()
    settings = settings_for(kafka_bootstrap, logs, tmp_path / "state" / "offsets.json")
    total, restarted = 3000, threading.Event()
    first = Running(settings)
    progress = {"written": 0}

    def write() -> None:
        handle = open(logs / "0.log", "ab")
        for n in range(total):
            handle.write(cri_entry(run, n))
            if n in (500, 1700, 2400):
                handle.write(b"2024-05-01T10:00:00.2Z stdout F {this is not json\n")
            if n in (1000, 2000):  # rotate: rename, a last write to the old file, then a new file
                handle.flush()
                (logs / "0.log").rename(logs / f"0.log.{n}")
                handle.write(cri_entry(run, total + n))
                handle.close()
                handle = open(logs / "0.log", "ab")
            if n % 50 == 0:
                handle.flush()
                progress["written"] = n
                time.sleep(0.005)
            if n == 1600:  # 1500..1600 are written while the first collector stops
                restarted.wait(30)
        handle.close()
        progress["written"] = total

    writer = threading.Thread(target=write)
    writer.start()
    wait_until(lambda: progress["written"] >= 1500, 60, "the writer to reach the restart point")
    first.stop()  # a graceful restart in the middle of the stream
    second = Running(settings)
    restarted.set()
    writer.join(60)
    expected = sorted([f"{run}-{n}" for n in range(total)] + [f"{run}-{total + 1000}", f"{run}-{total + 2000}"])
    try:
        wait_until(lambda: first.entries() + second.entries() >= len(expected), 60, "the collectors to read everything")
        time.sleep(1.5)  # past rotate_wait_s: the rotated files are finished and closed
    finally:
        second.stop()

    found = read_topic(kafka_bootstrap, SUMMARIES.name, summary_ids(run))
    assert len(found) == len(set(found)), f"{len(found) - len(set(found))} duplicates"
    assert sorted(found) == expected
    letters = read_topic(kafka_bootstrap, DLQ.name, lambda v: [DeadLetter.model_validate_json(v)])
    ours = [d for d in letters if d.topic.startswith(str(logs))]
    assert len(ours) == 3 and {d.error.split(":")[0] for d in ours} == {"bad_json"}


def test_a_real_envoy_writing_the_shipped_format_is_summarised(kafka_bootstrap: str, tmp_path: Path) -> None:
    run = uuid.uuid4().hex
    logs = tmp_path / "logs"
    logs.mkdir()
    upstream = Upstream().start()
    listener, admin = free_ports(2)
    config = retarget("access-log-file.yaml", listener, admin, {"app": upstream.port})
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"][0]["typed_config"]["path"] = str(logs / "envoy.log")
    envoy = Envoy(config, tmp_path, admin).start()
    running = Running(settings_for(kafka_bootstrap, logs, tmp_path / "offsets.json"))
    try:
        for n in range(20):
            status, _, _ = request(listener, "GET", f"/api/orders/{1000 + n}?expand=items",
                                   {"x-request-id": f"{run}-{n}", "authorization": f"Bearer user-{n % 4}"})
            assert status == 200
        wait_until(lambda: running.entries() >= 20, 30, "Envoy's access log to be read")
    finally:
        running.stop()
        envoy.stop()
        upstream.stop()

    rows: list[dict[str, Any]] = read_topic(kafka_bootstrap, SUMMARIES.name, lambda v: [
        r for r in decode_message(v, 64 << 20).to_pylist() if r["id"].startswith(run)])
    assert sorted(r["id"] for r in rows) == sorted(f"{run}-{n}" for n in range(20))
    row = rows[0]
    assert (row["reporter"], row["method"], row["path_template"], row["status"]) == ("access_log", "GET", "/api/orders/{id}", 200)
    assert row["source"]["ip"] == "127.0.0.1" and row["auth_type"] == "bearer" and row["principal"].startswith("bearer:")
    assert row["destination"]["service"] == "app" and row["duration_ms"] is not None and row["response_bytes"] > 0
    assert len({r["principal"] for r in rows}) == 4


_CLI = ("import argparse, sys; from deploy import collect; p = argparse.ArgumentParser(prog='kubeward'); "
        "collect.add_cli(p.add_subparsers()); a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")


def test_the_command_replays_jsonl_and_exits_when_the_replay_ends(tmp_path: Path) -> None:
    import subprocess

    records = tmp_path / "calls.jsonl"
    records.write_text("".join(json.dumps({"time": 1714557600.0 + n, "method": "GET", "path": f"/api/orders/{n}",
                                           "request_id": f"cli-{n}", "authority": "orders.shop.svc.cluster.local"}) + "\n"
                               for n in range(3)) + "not json\n")
    help_text = subprocess.run([sys.executable, "-c", _CLI, "collect", "--help"], capture_output=True, text=True, check=True).stdout
    for flag in ("--files", "--otlp", "--als", "--extproc", "--har", "--jsonl", "--join-expected", "--dry-run"):
        assert flag in help_text
    done = subprocess.run([sys.executable, "-c", _CLI, "collect", "--jsonl", str(records), "--dry-run", "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    rows = [json.loads(text) for text in done.stdout.splitlines()]
    assert [r["id"] for r in rows] == ["cli-0", "cli-1", "cli-2"]
    assert {r["path_template"] for r in rows} == {"/api/orders/{id}"}
    assert '"dead letter"' in done.stderr and "bad_jsonl" in done.stderr
