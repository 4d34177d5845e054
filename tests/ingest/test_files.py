"""Access-log entries as observations (ingest.collectors.accesslog) and the file tailer (ingest.collectors.files)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.collectors.accesslog import AccessLogError, Rejected, observation_from_envoy, parse_rfc3339
from ingest.collectors.files import AccessLogFileSource
from ingest.observation import HttpObservation

T = "2024-05-01T10:00:00.250Z"
T_UNIX = 1714557600.25


def entry(n: int = 0, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"start_time": T, "method": "GET", "path": f"/api/orders/{n}", "authority": "orders.shop.svc:8080",
                           "request_id": f"req-{n}", "response_code": 200, "bytes_received": 0, "bytes_sent": 10, "duration": 3,
                           "upstream_cluster": "outbound|8080||orders.shop.svc.cluster.local",
                           "downstream_remote_address": "10.1.0.5:41000", "user_agent": "okhttp", "x_forwarded_for": None,
                           "authorization": "Bearer abc"}
    doc.update(overrides)
    return doc


def line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def cri(message: bytes, tag: str = "F", stream: str = "stdout", time: str = "2024-05-01T10:00:01.000000001Z") -> bytes:
    return f"{time} {stream} {tag} ".encode() + message + b"\n"


# ---------------------------------------------------------------------- mapping


def test_our_json_format_maps_to_an_observation() -> None:
    o = observation_from_envoy(entry(7, downstream_peer_address="10.1.0.9:5000", cookie="session=s", trace_id="ab" * 16,
                                     response_content_type="application/json"))
    assert (o.time, o.method, o.path, o.reporter, o.request_id, o.authority) == (T_UNIX, "GET", "/api/orders/7", "access_log", "req-7", "orders.shop.svc:8080")
    assert (o.status, o.duration_ms, o.request_bytes, o.response_bytes) == (200, 3.0, 0, 10)
    assert o.peer_ip == "10.1.0.9"  # the direct peer wins over downstream_remote_address
    assert o.route == "outbound|8080||orders.shop.svc.cluster.local"
    assert o.headers == {"authorization": "Bearer abc", "cookie": "session=s", "user-agent": "okhttp"}
    assert o.response_headers == {"content-type": "application/json"} and o.trace_id == "ab" * 16


def test_istio_default_keys_with_dashes_and_strings() -> None:
    doc = {"start_time": "2024-05-01T10:00:00.250Z", "method": "POST", "path": "/login", "protocol": "HTTP/1.1",
           "response_code": "401", "response_flags": "-", "bytes_received": "12", "bytes_sent": "0", "duration": "7",
           "upstream_service_time": "-", "x_forwarded_for": "-", "user_agent": "-", "request_id": "-", "authority": "-",
           "upstream_cluster": "inbound|8080||", "downstream_remote_address": "[fd00::7]:5000", "route_name": "default"}
    o = observation_from_envoy(doc)
    assert (o.status, o.request_bytes, o.response_bytes, o.duration_ms) == (401, 12, 0, 7.0)
    assert o.request_id is None and o.authority is None and o.headers == {} and o.peer_ip == "fd00::7"


def test_envoy_gateway_key_aliases() -> None:
    doc = {"start_time": T, "method": "GET", "x-envoy-origin-path": "/v1/x", ":authority": "api.example.com",
           "x-request-id": "gw-1", "user-agent": "curl/8", "x-forwarded-for": "203.0.113.9", "response_code": 200}
    o = observation_from_envoy(doc)
    assert (o.path, o.authority, o.request_id) == ("/v1/x", "api.example.com", "gw-1")
    assert o.headers == {"user-agent": "curl/8", "x-forwarded-for": "203.0.113.9"}


def test_no_response_is_no_status() -> None:
    assert observation_from_envoy(entry(response_code=0)).status is None


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"method": None}, "missing_field"),
    ({"path": "-"}, "missing_field"),
    ({"method": 5}, "bad_type"),
    ({"response_code": "two hundred"}, "bad_number"),
    ({"bytes_sent": [1]}, "bad_number"),
    ({"duration": "slow"}, "bad_number"),
    ({"start_time": "yesterday"}, "bad_time"),
    ({"start_time": "2024-05-01T10:00:00"}, "bad_time"),
    ({"request_id": 5}, "bad_type"),
])
def test_unusable_entries_raise_with_a_reason(overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(AccessLogError) as caught:
        observation_from_envoy(entry(**overrides))
    assert caught.value.reason == reason


def test_without_start_time_the_line_time_minus_duration_is_used() -> None:
    doc = entry(duration=250)
    del doc["start_time"]
    assert observation_from_envoy(doc, line_time="2024-05-01T10:00:00.5Z").time == pytest.approx(T_UNIX)
    assert observation_from_envoy(doc, now=42.0).time == 42.0


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T10:00:00Z", 1714557600.0),
    ("2024-05-01T10:00:00.123456789Z", 1714557600.123456789),
    ("2024-05-01T12:00:00.5+02:00", 1714557600.5),
    ("2024-05-01T10:00:00.5z", 1714557600.5),
])
def test_rfc3339_times(text: str, expected: float) -> None:
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)
    assert parse_rfc3339(text) == pytest.approx(expected, abs=1e-6)  # second call goes through the cache


def test_an_offset_time_does_not_poison_the_cache_of_utc_times() -> None:
    assert parse_rfc3339("2024-05-01T12:00:00.000+02:00") == 1714557600.0
    assert parse_rfc3339("2024-05-01T12:00:00.000Z") == 1714557600.0 + 7200


# ---------------------------------------------------------------------- tailer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.observations: list[HttpObservation] = []
        self.rejected: list[Rejected] = []

    def emit(self, batch: Sequence[HttpObservation]) -> None:
        self.observations.extend(batch)

    @property
    def ids(self) -> list[str | None]:
        return [o.request_id for o in self.observations]


def source(tmp_path: Path, sink: Sink, clock: Clock, pattern: str = "*.log", **kwargs: Any) -> AccessLogFileSource:
    kwargs.setdefault("initial_position", "beginning")
    kwargs.setdefault("state_path", tmp_path / "state" / "offsets.json")
    return AccessLogFileSource([str(tmp_path / "logs" / pattern)], poll_s=0.0, rotate_wait_s=5.0, clock=clock,
                               on_reject=sink.rejected.append, **kwargs)


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as handle:
        handle.write(data)


def test_plain_json_lines_are_read(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)) + line(entry(2)))
    src = source(tmp_path, sink, clock)
    assert src.poll_once(sink.emit) == len(line(entry(1)) + line(entry(2)))
    assert sink.ids == ["req-1", "req-2"]


def test_cri_partial_lines_are_joined_per_stream(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    text = line(entry(1))[:-1]
    head, middle, tail = text[:20], text[20:50], text[50:]
    append(logs / "a.log", cri(head, "P") + cri(b"plain text on stderr", "F", "stderr") + cri(middle, "P") + cri(tail, "F"))
    src = source(tmp_path, sink, clock, text_lines="skip")
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1"]
    assert sink.observations[0].path == "/api/orders/1"
    assert src.counters()["skipped_text"] == 1 and sink.rejected == []


def test_an_unfinished_cri_group_is_not_committed(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    text = line(entry(1))[:-1]
    append(logs / "a.log", cri(line(entry(0))[:-1]) + cri(text[:30], "P"))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    (offset,) = [f["offset"] for f in src.snapshot().values()]
    assert sink.ids == ["req-0"]
    assert offset == len(cri(line(entry(0))[:-1]))  # the group's first chunk is re-read after a restart
    append(logs / "a.log", cri(text[30:], "F"))
    src.poll_once(sink.emit)
    assert sink.ids == ["req-0", "req-1"]


def test_a_line_without_newline_waits_for_its_end(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    data = line(entry(1))
    append(logs / "a.log", data[:25])
    src = source(tmp_path, sink, clock)
    assert src.poll_once(sink.emit) == 25 and sink.ids == []
    append(logs / "a.log", data[25:])
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1"] and sink.rejected == []


def test_malformed_lines_go_to_the_dead_letter_callback_and_the_tail_goes_on(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", b"{not json\n" + b"[1, 2]\n" + line({"method": "GET"}) + cri(b"starting envoy") + b"garbage\n" + line(entry(9)))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    assert sink.ids == ["req-9"]
    assert [r.reason for r in sink.rejected] == ["bad_json", "not_json", "missing_field", "not_json", "not_json"]
    first = sink.rejected[0]
    assert first.raw == b"{not json" and first.offset == 0 and first.origin.endswith("a.log")
    assert sink.rejected[2].offset == len(b"{not json\n[1, 2]\n")


def test_an_overlong_line_is_rejected_and_skipped(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", b'{"x": "' + b"a" * 5000)
    src = source(tmp_path, sink, clock, max_line_bytes=1024, chunk_bytes=2048)
    src.poll_once(sink.emit)
    append(logs / "a.log", b"a" * 3000 + b'"}\n' + line(entry(1)))
    src.poll_once(sink.emit)
    assert [r.reason for r in sink.rejected] == ["line_too_long"]
    assert sink.ids == ["req-1"]


def test_rotation_by_rename_finishes_the_old_file_then_reads_the_new_one(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    current = logs / "0.log"
    append(current, line(entry(1)))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    append(current, line(entry(2)))
    rotated = logs / "0.log.20240501-100000"  # the kubelet's name: no longer matched by *.log
    current.rename(rotated)
    append(rotated, line(entry(3)))  # the writer still had the old file open
    append(current, line(entry(4)))
    clock.now = 1.0
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1", "req-2", "req-3", "req-4"]
    append(rotated, line(entry(5)))
    clock.now = 2.0
    src.poll_once(sink.emit)
    assert sink.ids[-1] == "req-5"  # still read within rotate_wait_s
    clock.now = 7.0
    src.poll_once(sink.emit)
    assert src.counters()["rotated"] == 1 and len(src.snapshot()) == 1


def test_a_deleted_file_is_read_to_its_end(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    current = logs / "0.log"
    append(current, line(entry(1)))
    src = source(tmp_path, sink, clock)
    src._drain = lambda tracked, emit: 0  # type: ignore[method-assign]  # open it without reading
    src.poll_once(sink.emit)
    del src._drain
    current.unlink()
    clock.now = 1.0
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1"]


def test_copytruncate_is_detected_and_the_file_reread_from_the_start(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    current = logs / "0.log"
    append(current, line(entry(1)) + line(entry(2)))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    with open(current, "r+b") as handle:
        handle.truncate(0)
    append(current, line(entry(3)))
    clock.now = 1.0
    src.poll_once(sink.emit)
    # rewritten past the old offset before the next scan: caught by the fingerprint, not the size
    with open(current, "r+b") as handle:
        handle.truncate(0)
    append(current, line(entry(4, path="/x" * 200)) + line(entry(5)))
    clock.now = 2.0
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1", "req-2", "req-3", "req-4", "req-5"]
    assert src.counters()["truncated"] == 2


def test_restart_resumes_from_committed_offsets_without_duplicates_or_loss(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)) + line(entry(2)))
    append(logs / "b.log", cri(line(entry(10))[:-1]))
    first = source(tmp_path, sink, clock)
    first.poll_once(sink.emit)
    first.commit(first.snapshot())
    first.close()
    append(logs / "a.log", line(entry(3)))  # written while the collector was down
    append(logs / "c.log", line(entry(20)))  # a file that appeared meanwhile starts at 0, whatever initial_position says
    second = source(tmp_path, sink, clock, initial_position="end")
    second.poll_once(sink.emit)
    assert sorted(sink.ids) == sorted(["req-1", "req-2", "req-10", "req-3", "req-20"])  # type: ignore[type-var]


def test_a_saved_offset_whose_fingerprint_differs_restarts_at_zero(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)))
    first = source(tmp_path, sink, clock)
    first.poll_once(sink.emit)
    snapshot = first.snapshot()
    for record in snapshot.values():
        record["fingerprint"] = b"another file".hex()
    first.commit(snapshot)
    second = source(tmp_path, sink, clock)
    second.poll_once(sink.emit)
    assert sink.ids == ["req-1", "req-1"]


def test_state_is_written_atomically_and_survives_a_garbled_file(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    src.commit(src.snapshot())
    state = tmp_path / "state" / "offsets.json"
    assert json.loads(state.read_text())["version"] == 1
    assert [p.name for p in state.parent.iterdir()] == ["offsets.json"]  # no temporary file left behind
    state.write_text("{garbled")
    again = source(tmp_path, sink, clock, initial_position="end")
    again.poll_once(sink.emit)
    assert sink.ids == ["req-1", "req-1"]  # unreadable state: read again rather than skip


def test_initial_position_end_skips_history_on_first_deployment_only(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)) + line(entry(2))[:30])  # the writer is in the middle of line 2
    src = source(tmp_path, sink, clock, initial_position="end")
    src.poll_once(sink.emit)
    append(logs / "a.log", line(entry(2))[30:] + line(entry(3)))
    src.poll_once(sink.emit)
    assert sink.ids == ["req-2", "req-3"] and sink.rejected == []  # starts after the last complete line, not mid-line


def test_a_file_matched_twice_through_a_symlink_is_read_once(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)))
    os.symlink(logs / "a.log", logs / "link-to-a.log")
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1"]


def test_run_stops_when_told_and_keeps_offsets(tmp_path: Path, logs: Path) -> None:
    import threading

    sink = Sink()
    append(logs / "a.log", line(entry(1)))
    src = AccessLogFileSource([str(logs / "*.log")], initial_position="beginning", poll_s=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(sink.emit, stop))
    thread.start()
    try:
        for _ in range(500):
            if sink.ids:
                break
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert sink.ids == ["req-1"] and not thread.is_alive()
    assert [f["offset"] for f in src.snapshot().values()] == [len(line(entry(1)))]


def test_patterns_are_required() -> None:
    with pytest.raises(ValueError, match="patterns"):
        AccessLogFileSource([])


def test_a_second_run_of_the_same_source_resumes_where_the_first_stopped(tmp_path: Path, logs: Path) -> None:
    sink, clock = Sink(), Clock()
    append(logs / "a.log", line(entry(1)))
    src = source(tmp_path, sink, clock)
    src.poll_once(sink.emit)
    src.close()
    append(logs / "a.log", line(entry(2)))
    src.poll_once(sink.emit)
    assert sink.ids == ["req-1", "req-2"]


@settings(max_examples=40, deadline=None)
@given(st.integers(16, 700), st.lists(st.integers(1, 900), min_size=1, max_size=30), st.integers(0, 5))
def test_every_entry_is_emitted_once_whatever_the_chunk_and_write_boundaries(chunk: int, cuts: list[int], partial_every: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        tmp_path = Path(folder)
        (tmp_path / "logs").mkdir()
        data = b"".join(cri(line(entry(n))[:-1]) if not partial_every or n % partial_every else
                        cri(line(entry(n))[:15], "P") + cri(line(entry(n))[15:-1]) for n in range(12))
        sink, clock = Sink(), Clock()
        src = source(tmp_path, sink, clock, chunk_bytes=chunk)
        position = 0
        for cut in cuts + [len(data)]:
            append(tmp_path / "logs" / "a.log", data[position:position + cut])
            position += cut
            src.poll_once(sink.emit)
            snapshot_offset = [f["offset"] for f in src.snapshot().values()]
            assert all(0 <= o <= position for o in snapshot_offset)
        while src.poll_once(sink.emit):
            pass
        assert sink.ids == [f"req-{n}" for n in range(12)] and sink.rejected == []
        assert [f["offset"] for f in src.snapshot().values()] == [len(data)]
