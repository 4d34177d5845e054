"""Replaying HAR 1.2 and JSONL recordings as observations (ingest.collectors.replay)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from ingest.collectors.accesslog import Rejected
from ingest.collectors.replay import (
    HarSource,
    JsonlSource,
    observation_from_dict,
    observation_from_har_entry,
    observation_to_dict,
    observations_from_har,
)
from ingest.observation import HttpObservation


def har_entry(started: str = "2024-05-01T12:00:00.250+02:00", **overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "startedDateTime": started,
        "time": 48.5,
        "request": {
            "method": "post", "url": "https://api.example.com/v1/orders?dry=1", "httpVersion": "HTTP/1.1",
            "headers": [{"name": "Host", "value": "api.example.com"}, {"name": "Authorization", "value": "Bearer t"},
                        {"name": "X-Request-Id", "value": "rid-1"}, {"name": "Accept", "value": "a/b"},
                        {"name": "accept", "value": "c/d"},
                        {"name": "traceparent", "value": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}],
            "cookies": [{"name": "session", "value": "s1"}],
            "postData": {"mimeType": "application/json", "text": '{"item": 5}'},
            "headersSize": -1, "bodySize": 11,
        },
        "response": {
            "status": 201, "statusText": "Created", "httpVersion": "HTTP/1.1",
            "headers": [{"name": "Content-Type", "value": "application/json"}],
            "content": {"size": 15, "mimeType": "application/json", "text": base64.b64encode(b'{"id": "o-77"}\n').decode(),
                        "encoding": "base64"},
            "redirectURL": "", "headersSize": -1, "bodySize": -1,
        },
        "cache": {}, "timings": {"send": 1, "wait": 40, "receive": 7.5},
    }
    entry.update(overrides)
    return entry


def test_a_har_entry_with_bodies_headers_timings_and_status() -> None:
    o = observation_from_har_entry(har_entry())
    assert (o.reporter, o.method, o.path, o.authority) == ("har", "POST", "/v1/orders?dry=1", "api.example.com")
    assert o.time == 1714557600.25 and o.duration_ms == 48.5 and o.status == 201
    assert o.headers["authorization"] == "Bearer t" and o.headers["accept"] == "a/b, c/d"
    assert o.headers["cookie"] == "session=s1" and o.request_id == "rid-1"
    assert o.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert (o.request_body, o.response_body) == (b'{"item": 5}', b'{"id": "o-77"}\n')
    assert (o.request_bytes, o.response_bytes) == (11, 15)
    assert o.response_headers == {"content-type": "application/json"}
    assert not o.request_body_truncated and not o.response_body_truncated


def test_har_bodies_are_capped_and_flagged() -> None:
    entry = har_entry()
    entry["response"]["content"] = {"size": 100, "mimeType": "text/plain", "text": "x" * 100}
    o = observation_from_har_entry(entry, body_cap=10)
    assert o.response_body == b"x" * 10 and o.response_body_truncated and o.response_bytes == 100


def test_har_form_params_pseudo_headers_and_no_response() -> None:
    entry = har_entry()
    entry["request"]["postData"] = {"mimeType": "application/x-www-form-urlencoded", "params": [{"name": "a", "value": "1 2"}]}
    entry["request"]["headers"] = [{"name": ":authority", "value": "h2.example"}, {"name": ":path", "value": "/x"}]
    entry["response"] = {"status": 0, "headers": [], "content": {"size": 0}, "bodySize": -1}
    o = observation_from_har_entry(entry)
    assert o.request_body == b"a=1+2" and o.authority == "h2.example" and o.status is None
    assert ":path" not in o.headers and o.response_body is None


def test_bad_har_entries_are_rejected_one_by_one() -> None:
    doc = {"log": {"version": "1.2", "entries": [har_entry(), {"request": {"method": "GET"}}, har_entry(started="soon")]}}
    items = observations_from_har(doc, "x.har")
    assert [type(i).__name__ for i in items] == ["HttpObservation", "Rejected", "Rejected"]
    rejected = items[1]
    assert isinstance(rejected, Rejected) and rejected.reason == "bad_har_entry" and rejected.offset == 1
    assert "request.url" in rejected.detail
    (only,) = observations_from_har({"no": "log"})
    assert isinstance(only, Rejected) and only.reason == "bad_har"


def test_jsonl_records_round_trip() -> None:
    original = HttpObservation(1.5, "PUT", "/a/1", "ext_proc", request_id="r", headers={"x-api-key": "k"}, status=200,
                               request_body=b"\x00\x01", response_body=b"{}", response_body_truncated=True,
                               inline_findings=("sqli",), duration_ms=3.0)
    record = json.loads(json.dumps(observation_to_dict(original)))
    assert observation_from_dict(record) == original


def test_jsonl_text_bodies_defaults_and_unknown_keys() -> None:
    o = observation_from_dict({"time": 2, "method": "GET", "path": "/", "request_body": "hé", "future_field": 1,
                               "headers": {"User-Agent": "x"}})
    assert (o.reporter, o.request_body, o.headers, o.time) == ("jsonl", "hé".encode(), {"user-agent": "x"}, 2.0)


@pytest.mark.parametrize(("record", "message"), [
    ({"method": "GET", "path": "/"}, "time"),
    ({"time": "noon", "method": "GET", "path": "/"}, "time="),
    ({"time": 1, "method": "GET", "path": "/", "status": "200"}, "status="),
    ({"time": 1, "method": "GET", "path": "/", "headers": ["a"]}, "headers"),
    ({"time": 1, "method": "GET", "path": "/", "request_body_b64": "!!"}, "request_body_b64"),
    ([1], "not an object"),
])
def test_bad_jsonl_records_name_the_field(record: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        observation_from_dict(record)


class Sink:
    def __init__(self) -> None:
        self.batches: list[list[HttpObservation]] = []
        self.rejected: list[Rejected] = []

    def emit(self, batch: Sequence[HttpObservation]) -> None:
        self.batches.append(list(batch))

    @property
    def observations(self) -> list[HttpObservation]:
        return [o for b in self.batches for o in b]


def test_har_source_emits_in_time_order_as_fast_as_possible(tmp_path: Path) -> None:
    doc = {"log": {"entries": [har_entry("2024-05-01T10:00:02Z"), har_entry("2024-05-01T10:00:00Z"), {"bad": 1}]}}
    (tmp_path / "a.har").write_text(json.dumps(doc))
    sink = Sink()
    source = HarSource([tmp_path / "a.har"], batch=1, on_reject=sink.rejected.append)
    source.run(sink.emit, threading.Event())
    assert [o.time for o in sink.observations] == [1714557600.0, 1714557602.0]
    assert [r.reason for r in sink.rejected] == ["bad_har_entry"] and source.counters() == {"observations": 2, "rejected": 1}


class FakeTime:
    """A clock that moves only when the replay waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now


class WaitingEvent(threading.Event):
    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.clock.waits.append(round(timeout, 6))
        self.clock.now += timeout
        return False


def _jsonl(path: Path, times: Sequence[float]) -> None:
    path.write_text("".join(json.dumps({"time": t, "method": "GET", "path": f"/{t}"}) + "\n" for t in times) + "not json\n")


@pytest.mark.parametrize(("speed", "waits"), [(1.0, [1.0, 2.0]), (2.0, [0.5, 1.0])])
def test_real_time_pacing_keeps_the_recorded_gaps(tmp_path: Path, speed: float, waits: list[float]) -> None:
    _jsonl(tmp_path / "a.jsonl", [10.0, 11.0, 13.0])
    clock, sink = FakeTime(), Sink()
    source = JsonlSource([tmp_path / "a.jsonl"], speed=speed, rebase_time=True, on_reject=sink.rejected.append,
                         clock=clock, wall=lambda: 5000.0)
    source.run(sink.emit, WaitingEvent(clock))
    assert clock.waits == waits
    assert [o.time for o in sink.observations] == [5000.0, 5000.0 + 1 / speed, 5000.0 + 3 / speed]  # rebased
    assert [b[0].path for b in sink.batches] == ["/10.0", "/11.0", "/13.0"]  # each flushed before its wait
    assert [r.reason for r in sink.rejected] == ["bad_jsonl"]


def test_a_replay_stops_when_told(tmp_path: Path) -> None:
    _jsonl(tmp_path / "a.jsonl", [0.0, 100.0])
    sink, stop = Sink(), threading.Event()
    source = JsonlSource([tmp_path / "a.jsonl"], speed=1.0)
    thread = threading.Thread(target=source.run, args=(sink.emit, stop))
    thread.start()
    for _ in range(500):
        if sink.observations:
            break
        threading.Event().wait(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and len(sink.observations) == 1


def test_negative_speed_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="speed"):
        JsonlSource([tmp_path / "a.jsonl"], speed=-1)
