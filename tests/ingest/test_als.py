"""ingest.collectors.als without sockets: protobuf entries in, observations out, nothing crashes.

Also the throughput figure: ``.venv/bin/python -m tests.ingest.test_als`` prints
access-log entries parsed into ``HttpObservation`` per CPU-second (pre-serialized
``StreamAccessLogsMessage`` batches of 100 entries through ``decode``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from ingest.collectors.accesslog import Rejected
from ingest.collectors.als import AccessLogServiceSource, AlsStats, observation_from_entry, observations_from_message
from ingest.observation import HttpObservation
from ingest.proto import envoy_accesslog_pb2 as data
from ingest.proto import envoy_als_pb2 as als
from ingest.proto import envoy_core_pb2 as core

T0 = 1_700_000_000

EntryFactory = Callable[..., data.HTTPAccessLogEntry]


def make_entry(i: int = 0, **overrides: Any) -> data.HTTPAccessLogEntry:
    """A complete HTTP access-log entry as Envoy sends it; ``a__b=v`` sets ``entry.a.b``, ``None`` clears it."""
    e = data.HTTPAccessLogEntry()
    c, r, p = e.common_properties, e.request, e.response
    c.start_time.seconds, c.start_time.nanos = T0 + i, 250_000_000
    c.time_to_last_downstream_tx_byte.nanos = 3_500_000
    c.duration.nanos = 4_000_000
    c.downstream_remote_address.socket_address.address = "203.0.113.9"
    c.downstream_direct_remote_address.socket_address.address = "10.1.2.3"
    c.upstream_cluster = "outbound|8080||orders.shop.svc.cluster.local"
    c.route_name = "orders-route"
    r.request_method = core.POST
    r.authority = "orders.shop.svc.cluster.local:8080"
    r.path = f"/api/orders/{i}?expand=items"
    r.user_agent = "kw-test/1"
    r.forwarded_for = "198.51.100.1"
    r.request_id = f"rid-{i}"
    r.request_body_bytes = 42
    r.request_headers["authorization"] = "Bearer a.b.c"
    r.request_headers["x-forwarded-client-cert"] = "By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/shop/sa/web"
    p.response_code.value = 201
    p.response_body_bytes = 812
    p.response_headers["content-type"] = "application/json"
    for path, value in overrides.items():
        target: Any = e
        *parents, leaf = path.split("__")
        for name in parents:
            target = getattr(target, name)
        if value is None:
            target.ClearField(leaf)
        else:
            setattr(target, leaf, value)
    return e


@pytest.fixture
def entry_factory() -> EntryFactory:
    """``entry_factory(i, **overrides)``: see ``make_entry``."""
    return make_entry


def message(*entries: data.HTTPAccessLogEntry) -> als.StreamAccessLogsMessage:
    m = als.StreamAccessLogsMessage()
    m.http_logs.log_entry.extend(entries)
    return m


def test_an_entry_maps_onto_every_field_it_carries(entry_factory: EntryFactory) -> None:
    raw = message(entry_factory(7)).SerializeToString()
    (obs,) = AccessLogServiceSource().decode(raw)
    assert obs == HttpObservation(
        time=T0 + 7.25,
        method="POST",
        path="/api/orders/7?expand=items",
        reporter="access_log",
        request_id="rid-7",
        authority="orders.shop.svc.cluster.local:8080",
        headers={
            "authorization": "Bearer a.b.c",
            "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/shop/sa/orders;URI=spiffe://cluster.local/ns/shop/sa/web",
            "user-agent": "kw-test/1",
            "x-forwarded-for": "198.51.100.1",
        },
        peer_ip="10.1.2.3",
        route="outbound|8080||orders.shop.svc.cluster.local",
        status=201,
        duration_ms=pytest.approx(3.5),
        request_bytes=42,
        response_bytes=812,
        response_headers={"content-type": "application/json"},
    )


def test_fallbacks_when_envoy_leaves_fields_out(entry_factory: EntryFactory) -> None:
    e = entry_factory(
        request__original_path="/before/rewrite",
        request__request_method=core.METHOD_UNSPECIFIED,
        common_properties__time_to_last_downstream_tx_byte=None,
        common_properties__downstream_direct_remote_address=None,
        common_properties__upstream_cluster="",
        response__response_code=None,
    )
    obs = observation_from_entry(e)
    assert obs is not None
    assert (obs.path, obs.method, obs.peer_ip, obs.route, obs.status) == ("/before/rewrite", "_OTHER", "203.0.113.9", "orders-route", None)
    assert obs.duration_ms == pytest.approx(4.0)  # total duration when the last-byte time is missing


def test_traceparent_gives_the_trace_id(entry_factory: EntryFactory) -> None:
    e = entry_factory()
    e.request.request_headers["traceparent"] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    obs = observation_from_entry(e)
    assert obs is not None and obs.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert observation_from_entry(entry_factory()).trace_id is None  # type: ignore[union-attr]


def test_tcp_intermediate_and_malformed_entries_are_counted_and_skipped(entry_factory: EntryFactory) -> None:
    stats = AlsStats()
    tcp = als.StreamAccessLogsMessage()
    tcp.tcp_logs.log_entry.add()
    tcp.tcp_logs.log_entry.add()
    assert observations_from_message(tcp, stats) == []
    periodic = entry_factory(1)
    periodic.common_properties.intermediate_log_entry = True
    batch = message(entry_factory(0), periodic, entry_factory(2, common_properties__start_time=None), entry_factory(3, request__path=""), entry_factory(4))
    found = observations_from_message(batch, stats)
    assert [o.request_id for o in found] == ["rid-0", "rid-4"]
    assert stats == AlsStats(messages=2, entries=5, observations=2, tcp_entries=2, intermediate_entries=1, malformed_entries=2)


def test_undecodable_bytes_count_as_a_malformed_message_and_the_next_one_still_decodes(entry_factory: EntryFactory) -> None:
    source = AccessLogServiceSource()
    assert source.decode(b"\xff\xff\xff\xff") == []
    assert source.stats.malformed_messages == 1
    assert [o.request_id for o in source.decode(message(entry_factory(9)).SerializeToString())] == ["rid-9"]


def test_what_cannot_be_used_goes_to_on_reject_without_credentials(entry_factory: EntryFactory) -> None:
    source = AccessLogServiceSource()
    rejected: list[Rejected] = []
    source.on_reject = rejected.append
    source.decode(b"\xff\xff", origin="als:ipv4:10.0.0.1:5000")
    broken = entry_factory(3, request__path="")
    source.decode(message(entry_factory(1), broken).SerializeToString(), origin="als:x")
    assert [(r.reason, r.origin) for r in rejected] == [("als_undecodable", "als:ipv4:10.0.0.1:5000"), ("als_entry_incomplete", "als:x")]
    assert rejected[0].raw == b"" and "2 bytes" in rejected[0].detail  # undecodable: cannot strip tokens, so no bytes
    dead = data.HTTPAccessLogEntry.FromString(rejected[1].raw)
    assert dead.request.request_id == "rid-3" and not dead.request.request_headers and not dead.response.response_headers
    assert b"Bearer" not in rejected[1].raw


def test_the_first_message_of_a_stream_carries_the_identifier_and_still_parses(entry_factory: EntryFactory) -> None:
    m = message(entry_factory(1))
    m.identifier.node.id = "sidecar~10.1.2.3~web-7d9~shop.svc.cluster.local"
    m.identifier.log_name = "kubeward"
    assert len(AccessLogServiceSource().decode(m.SerializeToString())) == 1


def test_run_serves_until_stopped() -> None:
    """``run`` is the Source protocol: it returns once ``stop`` is set (port 0: any free port)."""
    import threading

    source = AccessLogServiceSource(port=0)
    stop = threading.Event()
    runner = threading.Thread(target=source.run, args=(lambda batch: None, stop))
    runner.start()
    deadline = time.monotonic() + 10
    while source.port == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert source.port > 0
    stop.set()
    runner.join(10)
    assert not runner.is_alive()


# ------------------------------------------------------------------ throughput


def measure_throughput(batches: int = 50, rounds: int = 5) -> float:
    """Best entries/CPU-second over ``rounds`` passes of ``batches`` pre-serialized 100-entry messages."""
    raw = [message(*(make_entry(b * 100 + i) for i in range(100))).SerializeToString() for b in range(batches)]
    source = AccessLogServiceSource()
    best = 0.0
    for _ in range(rounds):
        started = time.process_time()
        parsed = sum(len(source.decode(r)) for r in raw)
        best = max(best, parsed / max(time.process_time() - started, 1e-9))
    assert source.stats.malformed_entries == 0
    return best


def test_throughput_floor() -> None:
    """A guard against order-of-magnitude regressions (the figure itself: run this module)."""
    assert measure_throughput(batches=10, rounds=3) > 10_000


if __name__ == "__main__":
    print(f"{measure_throughput():,.0f} access-log entries per CPU-second (batches of 100)")
