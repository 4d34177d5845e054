"""enforcement.server without sockets: the HTTP protocol object, the sampled timer, the admin handler, the collector."""

from __future__ import annotations

import json
from typing import Any

import pytest

from enforcement.server import DecisionTimer, HttpConnection, _ShimCollector, admin_handler, check_connection
from enforcement.settings import ShimSettings
from enforcement.shim import Shim


class _Transport:
    """Collects what the connection writes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("10.0.0.7", 40000) if name == "peername" else None


def _connect(conn: HttpConnection) -> _Transport:
    transport = _Transport()
    conn.connection_made(transport)
    return transport


def _shim(**settings: Any) -> Shim:
    shim = Shim(ShimSettings(bootstrap=None, **settings))
    shim.synced.set()
    return shim


def test_pipelined_checks_get_one_answer_each_in_order() -> None:
    shim = _shim(policy={"default_mode": "enforce"})
    conn = check_connection(shim)
    transport = _connect(conn)
    conn.data_received(b"GET /ok HTTP/1.1\r\nhost: orders\r\n\r\nGET /f?x=../../etc/passwd HTTP/1.1\r\nhost: orders\r\n\r\n")
    assert [w.split(b" ", 2)[1] for w in transport.written] == [b"200", b"403"] and not transport.closed


def test_only_the_adapters_headers_are_kept() -> None:
    seen: list[dict[bytes, bytes]] = []

    def handler(method: str, url: str, headers: dict[bytes, bytes], peer: str | None, body: bytes | None) -> bytes:
        seen.append(dict(headers))
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    conn = HttpConnection(handler, frozenset({b"x-request-id"}))
    _connect(conn)
    conn.data_received(b"GET / HTTP/1.1\r\nX-Request-Id: r1\r\nUser-Agent: curl\r\n\r\n")
    assert seen == [{b"x-request-id": b"r1"}]


def test_bodies_are_kept_up_to_the_limit_plus_one_byte_and_prefixed_headers_too() -> None:
    seen: list[tuple[dict[bytes, bytes], bytes | None]] = []

    def handler(method: str, url: str, headers: dict[bytes, bytes], peer: str | None, body: bytes | None) -> bytes:
        seen.append((dict(headers), body))
        return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"

    conn = HttpConnection(handler, frozenset({b"x-request-id"}), wanted_prefixes=(b"x-",), body_limit=4)
    _connect(conn)
    conn.data_received(b"POST / HTTP/1.1\r\nX-Trace: t\r\nAccept: */*\r\nContent-Length: 3\r\n\r\nabc")
    conn.data_received(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123")
    conn.data_received(b"456789GET / HTTP/1.1\r\n\r\n")
    assert seen == [({b"x-trace": b"t"}, b"abc"), ({}, b"01234"), ({}, None)]


@pytest.mark.parametrize(("mode", "status"), [("allow", b"200"), ("deny", b"403")])
def test_bytes_that_are_not_http_are_answered_per_failure_mode_and_counted(mode: str, status: bytes) -> None:
    shim = _shim(failure_mode=mode)
    conn = check_connection(shim)
    transport = _connect(conn)
    conn.data_received(b"\x16\x03\x01\x02\x00 not http\r\n\r\n")
    [answer] = transport.written
    assert answer.split(b" ", 2)[1] == status and b"x-kubeward-decision: unparsed" in answer and b"unparsed:http" in answer
    assert transport.closed and shim.unparsed == 1
    [(_, view, decision)] = shim.take_pending()
    assert (view.ip, decision.would) == ("10.0.0.7", "unparsed")


def test_the_admin_port_still_answers_garbage_with_400() -> None:
    conn = HttpConnection(admin_handler(_shim(), None))
    transport = _connect(conn)
    conn.data_received(b"\x00\x01garbage\r\n\r\n")
    assert transport.written[0].startswith(b"HTTP/1.1 400 ") and transport.closed


@pytest.mark.parametrize(("every", "timed"), [(1, 8), (4, 2), (8, 1)])
def test_the_timer_samples_one_check_in_every(every: int, timed: int) -> None:
    shim, timer = _shim(), DecisionTimer(every)
    conn = check_connection(shim, timer)
    _connect(conn)
    for _ in range(8):
        conn.data_received(b"GET /ok HTTP/1.1\r\nhost: orders\r\n\r\n")
    assert sum(timer.counts) == timed and timer.total > 0 and shim.allowed == 8


@pytest.mark.parametrize("every", [3, 10])
def test_the_timer_wants_a_power_of_two(every: int) -> None:
    with pytest.raises(ValueError, match=f"timing_sample must be 0 or a power of two, got {every}"):
        DecisionTimer(every)


def test_the_collector_exposes_decisions_unparsed_and_the_sampled_histogram() -> None:
    shim, timer = _shim(adapter="nginx"), DecisionTimer(1)
    shim.handle("GET", "/", {}, None)  # no x-original-* headers: unparsed
    timer.observe(30e-6)
    timer.observe(2e-3)
    families = {f.name: f for f in _ShimCollector(shim, timer).collect()}
    assert [s.value for s in families["kubeward_shim_unparsed"].samples if s.name.endswith("_total")] == [1]
    samples = {(s.name, s.labels.get("le")): s.value for s in families["kubeward_authz_decision_duration_seconds"].samples}
    assert samples[("kubeward_authz_decision_duration_seconds_bucket", "2.5e-05")] == 0
    assert samples[("kubeward_authz_decision_duration_seconds_bucket", "5e-05")] == 1
    assert samples[("kubeward_authz_decision_duration_seconds_bucket", "+Inf")] == 2
    assert samples[("kubeward_authz_decision_duration_seconds_count", None)] == 2
    assert all(s.labels.get("adapter") == "nginx" for s in families["kubeward_authz_decision_duration_seconds"].samples)


def _answer(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else None


def test_admin_healthz_readyz_and_stats() -> None:
    shim = Shim(ShimSettings(bootstrap=None, adapter="traefik"))
    handle = admin_handler(shim, None)
    status, state = _answer(handle("GET", "/readyz", {}, None))
    assert (status, state["why"]) == (503, ["warming up", "syncing"])
    assert _answer(handle("GET", "/healthz", {}, None))[0] == 200  # liveness: the shim answers
    shim.warm_up(timeout=0)
    shim.synced.set()
    status, state = _answer(handle("GET", "/readyz", {}, None))
    assert (status, state["ready"], state["stale"]) == (200, True, False)
    shim.handle("GET", "/", {}, None)
    stats = json.loads(handle("GET", "/stats", {}, None).partition(b"\r\n\r\n")[2])
    assert (stats["adapter"], stats["unparsed"], stats["decisions"]) == ("traefik", 1, {"allow": 0})
    assert handle("GET", "/nope", {}, None).startswith(b"HTTP/1.1 404 ")


class _Control:
    """A control consumer whose cache the broker last confirmed ``age`` seconds ago."""

    latencies_ms: list[float] = []
    delivery_ms: list[float] = []

    def __init__(self, age: float) -> None:
        self.age = age

    def cache_age_s(self, now: float) -> float:
        return self.age


@pytest.mark.parametrize("unready", [False, True])
def test_a_stale_cache_is_reported_and_fails_readiness_only_when_asked(unready: bool) -> None:
    shim = _shim(stale_after_s=30, unready_when_stale=unready)
    shim.warm.set()
    fresh, stale = admin_handler(shim, _Control(29.0)), admin_handler(shim, _Control(31.0))
    assert _answer(fresh("GET", "/readyz", {}, None))[0] == 200
    status, state = _answer(stale("GET", "/readyz", {}, None))
    assert (status, state["stale"], state["cache_age_s"]) == ((503, True, 31.0) if unready else (200, True, 31.0))
    assert state["why"] == (["stale"] if unready else [])
    status, state = _answer(stale("GET", "/healthz", {}, None))
    assert (status, state["stale"]) == (200, True)


def test_metrics_and_stats_need_the_admin_token_when_one_is_set() -> None:
    shim = _shim(admin_token="s3cret", admin_host="0.0.0.0")
    handle = admin_handler(shim, None)
    for path in ("/metrics", "/stats"):
        assert handle("GET", path, {}, None).startswith(b"HTTP/1.1 401 ")
        assert handle("GET", path, {b"authorization": b"Bearer wrong"}, None).startswith(b"HTTP/1.1 401 ")
        assert handle("GET", path, {b"authorization": b"Bearer s3cret"}, None).startswith(b"HTTP/1.1 200 ")
    assert _answer(handle("GET", "/healthz", {}, None))[0] == 200  # probes need no token


def test_an_admin_port_off_loopback_needs_a_token() -> None:
    with pytest.raises(ValueError, match="admin_host='0.0.0.0' is not a loopback address: set admin_token"):
        ShimSettings(admin_host="0.0.0.0")
    assert ShimSettings(admin_host="::1").admin_token is None


def test_the_report_queue_is_bounded_and_drops_are_counted() -> None:
    shim = _shim(report="all", report_queue_max=3)
    for i in range(5):
        shim.handle("GET", f"/orders/{i}", {b"host": b"orders", b"x-forwarded-for": b"10.0.0.9"}, "127.0.0.1")
    assert (len(shim.pending), shim.reports_dropped) == (3, 2)
    families = {f.name: f for f in _ShimCollector(shim, DecisionTimer(0)).collect()}
    assert [s.value for s in families["kubeward_shim_reports_dropped"].samples if s.name.endswith("_total")] == [2]
    shim.take_pending()
    shim.handle("GET", "/orders/9", {b"host": b"orders"}, "127.0.0.1")
    assert (len(shim.pending), shim.reports_dropped) == (1, 2)


def test_warm_up_runs_every_inspector_without_learning_or_reporting() -> None:
    shim = _shim(report="all", schema_validation={"enabled": True})
    took = shim.warm_up(timeout=60)
    assert shim.warm.is_set() and took >= 0
    assert not shim.pending and shim.decision_counts() == {"allow": 0}
    assert shim.schema is not None and shim.schema.stats()["endpoints"] == 0  # nothing learned
    assert shim._prompt is not None and shim._prompt.loaded.is_set()


@pytest.mark.parametrize("every", [3, 12])
def test_the_setting_rejects_a_timing_sample_that_is_not_a_power_of_two(every: int) -> None:
    with pytest.raises(ValueError, match=f"timing_sample must be 0 or a power of two, got {every}"):
        ShimSettings(timing_sample=every)
