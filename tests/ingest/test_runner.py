"""The collector process without a broker (ingest.collectors.runner): a recording publisher stands in for Kafka."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ingest import DeadLetter
from ingest.collectors.base import Emit
from ingest.collectors.files import AccessLogFileSource
from ingest.collectors.replay import JsonlSource
from ingest.collectors.runner import Collector
from ingest.collectors.settings import CollectorSettings
from ingest.errors import PublishError
from ingest.observation import HttpObservation
from ingest.summarize import Summarizer


class RecordingPublisher:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.flushes = 0
        self.fail_flush = False

    def publish_rows(self, rows: list[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def flush_due(self) -> None:
        pass

    def flush(self, timeout: float = 30) -> None:
        if self.fail_flush:
            raise PublishError("broker away")
        self.flushes += 1

    def stats(self) -> dict[str, int]:
        return {"rows_sent": len(self.rows), "rows_failed": 0, "rows_buffered": 0}


def settings(**overrides: Any) -> CollectorSettings:
    overrides.setdefault("metrics_port", None)
    overrides.setdefault("tick_s", 0.01)
    return CollectorSettings(**overrides)


def jsonl(path: Path, records: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def record(request_id: str | None, reporter: str, **fields: Any) -> dict[str, Any]:
    return {"time": 1714557600.0, "method": "GET", "path": "/api/orders/42", "reporter": reporter, "request_id": request_id,
            "authority": "orders.shop.svc.cluster.local", "headers": {"x-api-key": "k1"}, **fields}


def test_replayed_observations_are_summarised_and_published_then_the_collector_ends(tmp_path: Path) -> None:
    source = JsonlSource([jsonl(tmp_path / "a.jsonl", [record(f"r{i}", "access_log", status=200) for i in range(5)])])
    publisher = RecordingPublisher()
    collector = Collector(settings(), [source], Summarizer(), publisher)
    collector.run()
    assert sorted(r["id"] for r in publisher.rows) == [f"r{i}" for i in range(5)]
    row = publisher.rows[0]
    assert (row["path_template"], row["destination"]["service"], row["auth_type"], row["status"]) == ("/api/orders/{id}", "orders", "api_key", 200)
    assert collector.failed == [] and publisher.flushes >= 1


def test_two_sources_are_joined_by_request_id_into_one_summary(tmp_path: Path) -> None:
    shim = JsonlSource([jsonl(tmp_path / "s.jsonl", [record("r1", "shim", decision="deny"), record(None, "shim")])], name="shim-replay")
    log = JsonlSource([jsonl(tmp_path / "l.jsonl", [record("r1", "access_log", status=403, response_bytes=9)])], name="log-replay")
    publisher = RecordingPublisher()
    collector = Collector(settings(join={"expected": ["shim", "access_log"], "hold_s": 5.0}, checkpoint_s=10.0), [shim, log],
                          Summarizer(), publisher)
    collector.run()
    joined = [r for r in publisher.rows if r["id"] == "r1"]
    assert len(joined) == 1 and len(publisher.rows) == 2
    assert (joined[0]["reporter"], joined[0]["decision"], joined[0]["status"], joined[0]["response_bytes"]) == ("shim+access_log", "deny", 403, 9)
    assert collector.joiner.stats.joined == 1 and collector.joiner.stats.passed == 1


def test_unusable_inputs_become_dead_letters_with_their_reason(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(record("r1", "access_log")) + "\n{broken\n")
    letters: list[tuple[bytes | None, bytes]] = []
    collector = Collector(settings(dlq_raw_cap=4), [JsonlSource([path])], Summarizer(), RecordingPublisher(),
                          lambda key, value: letters.append((key, value)))
    collector.run()
    (key, value), = letters
    letter = DeadLetter.model_validate_json(value)
    assert letter.error.startswith("bad_jsonl: line 2") and letter.source == "collector/jsonl"
    assert (letter.topic, letter.offset, letter.raw_bytes, letter.raw_b64) == (str(path), len(path.read_text().splitlines()[0]) + 1, 8, "e2Jybw==")
    assert key == str(path).encode()
    assert collector.metrics.registry.get_sample_value("kubeward_collector_dead_letters_total", {"reason": "bad_jsonl"}) == 1


class Exploding:
    name = "boom"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        raise RuntimeError("a bug")


def test_a_failing_source_stops_the_collector(tmp_path: Path) -> None:
    never_ending = AccessLogFileSource([str(tmp_path / "*.log")], poll_s=0.01)
    collector = Collector(settings(), [never_ending, Exploding()], Summarizer(), RecordingPublisher())
    collector.run()
    assert collector.failed == ["boom"]


class HalfBroken(Summarizer):
    def summarize_many(self, observations: Sequence[HttpObservation]) -> list[dict[str, Any]]:  # type: ignore[override]
        raise RuntimeError("batch path broken")

    def summarize(self, obs: HttpObservation) -> dict[str, Any]:
        if obs.request_id == "bad":
            raise ValueError("cannot summarise this one")
        return super().summarize(obs)


def test_a_summariser_error_dead_letters_only_the_observation_that_caused_it(tmp_path: Path) -> None:
    source = JsonlSource([jsonl(tmp_path / "a.jsonl", [record("ok", "access_log"), record("bad", "access_log")])])
    letters: list[tuple[bytes | None, bytes]] = []
    publisher = RecordingPublisher()
    Collector(settings(), [source], HalfBroken(), publisher, lambda k, v: letters.append((k, v))).run()
    assert [r["id"] for r in publisher.rows] == ["ok"]
    (_, value), = letters
    assert DeadLetter.model_validate_json(value).error.startswith("summarize_error")


def _entry(n: int) -> bytes:
    return json.dumps({"start_time": "2024-05-01T10:00:00Z", "method": "GET", "path": f"/a/{n}", "request_id": f"f{n}"}).encode() + b"\n"


def test_offsets_are_committed_one_interval_late_after_a_flush_and_at_stop(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(_entry(1))
    state = tmp_path / "offsets.json"
    files = AccessLogFileSource([str(tmp_path / "*.log")], state_path=state, initial_position="beginning", poll_s=0.01)
    now = [0.0]
    publisher = RecordingPublisher()
    collector = Collector(settings(checkpoint_s=5.0), [files], Summarizer(), publisher, clock=lambda: now[0])
    emit = collector.emit_for(files.name)
    files.poll_once(emit)
    collector.checkpoint()  # takes the first snapshot, commits nothing yet
    assert not state.exists()
    (tmp_path / "a.log").open("ab").write(_entry(2))
    files.poll_once(emit)
    publisher.fail_flush = True
    collector.checkpoint()  # the broker did not acknowledge: nothing is committed
    assert not state.exists()
    publisher.fail_flush = False
    collector.checkpoint()  # commits the snapshot taken before the failed round
    offsets = [f["offset"] for f in json.loads(state.read_text())["files"].values()]
    assert offsets == [2 * len(_entry(1))]
    collector.stop()
    assert [f["offset"] for f in json.loads(state.read_text())["files"].values()] == [2 * len(_entry(1))]
    assert [r["id"] for r in publisher.rows] == ["f1", "f2"]


def test_metrics_are_served_on_their_own_port(tmp_path: Path) -> None:
    source = JsonlSource([jsonl(tmp_path / "a.jsonl", [record("r1", "access_log")])])
    collector = Collector(settings(metrics_port=0, metrics_host="127.0.0.1"), [source], Summarizer(), RecordingPublisher())
    collector.start()
    try:
        collector.wait()
        text = urllib.request.urlopen(f"http://127.0.0.1:{collector.metrics_port}/metrics", timeout=5).read().decode()
    finally:
        collector.stop()
    assert 'kubeward_collector_observations_total{source="jsonl"} 1.0' in text
    assert "kubeward_collector_published_total 1.0" in text
    assert 'kubeward_collector_source_events_total{event="observations",source="jsonl"} 1.0' in text
    for name in ("kubeward_collector_joined_total", "kubeward_collector_join_expired_total", "kubeward_collector_join_pending",
                 "kubeward_collector_lag_seconds", "kubeward_collector_publish_buffered_rows"):
        assert name in text


def test_checkpoint_must_outlast_the_join_hold() -> None:
    from ingest.config import build_settings
    from ingest.errors import SettingsError

    with pytest.raises(SettingsError, match="checkpoint_s"):
        build_settings(CollectorSettings, checkpoint_s=1.0, join={"hold_s": 2.0})


def test_source_names_must_be_unique(tmp_path: Path) -> None:
    sources = [JsonlSource([tmp_path / "a"]), JsonlSource([tmp_path / "b"])]
    with pytest.raises(ValueError, match="unique"):
        Collector(settings(), sources, Summarizer(), RecordingPublisher())
