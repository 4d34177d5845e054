"""OTLP/HTTP traces as observations (ingest.collectors.otlp): decoding, and the receiver on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from ingest.collectors.otlp import OtlpHttpSource, OtlpStats, observations_from_json, observations_from_proto
from ingest.observation import HttpObservation
from ingest.proto.google_rpc_pb2 import Status

START_NS = 1_714_557_600_250_000_000
TRACE = bytes(range(16))

NEW_SEMCONV = {"http.request.method": "POST", "url.path": "/api/orders", "url.query": "dry=1", "http.route": "/api/orders",
               "http.response.status_code": 201, "server.address": "orders.shop.svc", "server.port": 8080,
               "network.peer.address": "10.1.0.7", "client.address": "203.0.113.5", "user_agent.original": "okhttp",
               "http.request.header.authorization": ["Bearer abc"], "http.request.header.x-request-id": ["rid-9"],
               "http.request.body.size": 42, "http.response.body.size": 7}
OLD_SEMCONV = {"http.method": "GET", "http.target": "/users/7?x=1", "http.status_code": 404, "http.host": "users:80",
               "net.peer.ip": "10.1.0.8", "http.user_agent": "curl/8", "http.response_content_length": 99}


def _any(value: Any) -> AnyValue:
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=str(value))


def _kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in attrs.items()]


def proto_request(spans: Sequence[tuple[int, dict[str, Any]]], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(_kvs(resource or {"service.name": "orders", "k8s.namespace.name": "shop"}))
    scope = resource_spans.scope_spans.add()
    for kind, attrs in spans:
        scope.spans.add(trace_id=TRACE, span_id=b"\x01" * 8, name="span", kind=kind, start_time_unix_nano=START_NS,
                        end_time_unix_nano=START_NS + 12_500_000, attributes=_kvs(attrs))
    return request


def _json_any(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"arrayValue": {"values": [_json_any(v) for v in value]}}
    if isinstance(value, int):
        return {"intValue": str(value)}  # OTLP/JSON writes 64-bit integers as strings
    return {"stringValue": value}


def json_request(spans: Sequence[tuple[Any, dict[str, Any]]]) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "users"}}]},
        "scopeSpans": [{"spans": [{"traceId": TRACE.hex(), "spanId": "01" * 8, "name": "s", "kind": kind,
                                   "startTimeUnixNano": str(START_NS), "endTimeUnixNano": str(START_NS + 2_000_000),
                                   "attributes": [{"key": k, "value": _json_any(v)} for k, v in attrs.items()]}
                                  for kind, attrs in spans]}]}]}


def test_a_server_span_with_current_conventions() -> None:
    stats = OtlpStats()
    (o,) = observations_from_proto(proto_request([(Span.SPAN_KIND_SERVER, NEW_SEMCONV)]), stats)
    assert (o.reporter, o.method, o.path, o.status) == ("otlp", "POST", "/api/orders?dry=1", 201)
    assert o.time == pytest.approx(1714557600.25) and o.duration_ms == pytest.approx(12.5)
    assert (o.authority, o.peer_ip, o.route) == ("orders.shop.svc:8080", "10.1.0.7", "shop/orders")
    assert o.headers == {"authorization": "Bearer abc", "x-request-id": "rid-9", "user-agent": "okhttp"}
    assert (o.request_id, o.trace_id, o.request_bytes, o.response_bytes) == ("rid-9", TRACE.hex(), 42, 7)
    assert stats.observations == 1 and stats.spans == 1


def test_a_server_span_with_older_conventions() -> None:
    (o,) = observations_from_proto(proto_request([(Span.SPAN_KIND_SERVER, OLD_SEMCONV)]), OtlpStats())
    assert (o.method, o.path, o.status, o.authority, o.peer_ip) == ("GET", "/users/7?x=1", 404, "users:80", "10.1.0.8")
    assert o.headers == {"user-agent": "curl/8"} and o.response_bytes == 99


def test_client_address_written_from_x_forwarded_for_is_never_the_peer() -> None:
    """``client.address``/``http.client_ip`` come from headers the client writes: a span without a socket peer has no address."""
    attrs = {k: v for k, v in NEW_SEMCONV.items() if k != "network.peer.address"} | {"http.client_ip": "198.51.100.9"}
    (o,) = observations_from_proto(proto_request([(Span.SPAN_KIND_SERVER, attrs)]), OtlpStats())
    assert o.peer_ip is None


def test_url_full_gives_path_and_authority_and_other_method_uses_the_original() -> None:
    attrs = {"http.request.method": "_OTHER", "http.request.method_original": "purge", "url.full": "https://cdn.example/a/b?c=d"}
    (o,) = observations_from_proto(proto_request([(Span.SPAN_KIND_SERVER, attrs)]), OtlpStats())
    assert (o.method, o.path, o.authority) == ("PURGE", "/a/b?c=d", "cdn.example")


def test_client_internal_and_non_http_spans_are_skipped_and_counted() -> None:
    stats = OtlpStats()
    spans = [(Span.SPAN_KIND_CLIENT, NEW_SEMCONV), (Span.SPAN_KIND_INTERNAL, NEW_SEMCONV),
             (Span.SPAN_KIND_SERVER, {"rpc.system": "grpc"}), (Span.SPAN_KIND_SERVER, {"http.request.method": "GET"}),
             (Span.SPAN_KIND_SERVER, NEW_SEMCONV)]
    assert len(observations_from_proto(proto_request(spans), stats)) == 1
    assert stats.skipped == {"not_server": 2, "not_http": 1, "no_path": 1} and stats.spans == 5


def test_otlp_json_with_hex_ids_string_integers_and_named_kinds() -> None:
    stats = OtlpStats()
    doc = json_request([(2, OLD_SEMCONV), ("SPAN_KIND_SERVER", NEW_SEMCONV), ("SPAN_KIND_CLIENT", OLD_SEMCONV)])
    first, second = observations_from_json(doc, stats)
    assert (first.path, first.status, first.trace_id, first.route) == ("/users/7?x=1", 404, TRACE.hex(), "users")
    assert first.duration_ms == pytest.approx(2.0)
    assert (second.status, second.headers["authorization"], second.request_bytes) == (201, "Bearer abc", 42)
    assert stats.skipped == {"not_server": 1}


def test_json_that_is_not_otlp_is_refused() -> None:
    with pytest.raises(ValueError, match="resourceSpans"):
        observations_from_json([1, 2], OtlpStats())


# ---------------------------------------------------------------------- the receiver


class Sink:
    def __init__(self) -> None:
        self.observations: list[HttpObservation] = []

    def emit(self, batch: Sequence[HttpObservation]) -> None:
        self.observations.extend(batch)


@pytest.fixture
def served() -> Iterator[tuple[OtlpHttpSource, Sink]]:
    sink = Sink()
    source = OtlpHttpSource("127.0.0.1", 0)
    source.start(sink.emit)
    try:
        yield source, sink
    finally:
        source.stop()


def post(port: int, body: bytes, content_type: str, encoding: str | None = None) -> tuple[int, str, bytes]:
    headers = {"content-type": content_type, **({"content-encoding": encoding} if encoding else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("content-type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("content-type", ""), err.read()


def test_protobuf_export_is_answered_with_an_empty_response(served: tuple[OtlpHttpSource, Sink]) -> None:
    source, sink = served
    body = proto_request([(Span.SPAN_KIND_SERVER, NEW_SEMCONV), (Span.SPAN_KIND_CLIENT, OLD_SEMCONV)]).SerializeToString()
    assert post(source.port, body, "application/x-protobuf") == (200, "application/x-protobuf", b"")
    assert [o.path for o in sink.observations] == ["/api/orders?dry=1"]
    assert source.counters()["skipped_not_server"] == 1


def test_json_and_gzip_exports(served: tuple[OtlpHttpSource, Sink]) -> None:
    source, sink = served
    body = json.dumps(json_request([(2, OLD_SEMCONV)])).encode()
    assert post(source.port, body, "application/json") == (200, "application/json", b"{}")
    assert post(source.port, gzip.compress(body), "application/json", "gzip")[0] == 200
    assert [o.method for o in sink.observations] == ["GET", "GET"]


def test_undecodable_bodies_get_400_with_a_status(served: tuple[OtlpHttpSource, Sink]) -> None:
    source, sink = served
    code, content_type, body = post(source.port, b"\xff\xff\xff not protobuf", "application/x-protobuf")
    assert (code, content_type) == (400, "application/x-protobuf")
    assert "undecodable" in Status.FromString(body).message
    code, _, body = post(source.port, b"{nope", "application/json")
    assert code == 400 and json.loads(body)["code"] == 3
    assert post(source.port, b"x", "text/plain")[0] == 415
    assert sink.observations == [] and source.counters()["bad_requests"] == 3


def test_run_serves_until_stop() -> None:
    sink, stop = Sink(), threading.Event()
    source = OtlpHttpSource("127.0.0.1", 0)
    thread = threading.Thread(target=source.run, args=(sink.emit, stop))
    thread.start()
    try:
        assert source.ready.wait(10)
        body = proto_request([(Span.SPAN_KIND_SERVER, OLD_SEMCONV)]).SerializeToString()
        assert post(source.port, body, "application/x-protobuf")[0] == 200
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive() and len(sink.observations) == 1
