"""ingest.collectors.extproc without sockets: ProcessingRequest messages in, one observation out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

import pytest

from ingest.collectors.extproc import ExchangeTap, ExtProcTapSource, TapStats
from ingest.observation import HttpObservation
from ingest.proto import envoy_core_pb2 as core
from ingest.proto import envoy_ext_proc_pb2 as ep

BODY = json.dumps({"id": 7, "owner": "alice@example.com", "items": [1, 2, 3]}).encode()


def headers(pairs: dict[str, str], end_of_stream: bool = False, raw: bool = True) -> ep.HttpHeaders:
    values = [core.HeaderValue(key=k, raw_value=v.encode()) if raw else core.HeaderValue(key=k, value=v) for k, v in pairs.items()]
    return ep.HttpHeaders(headers=core.HeaderMap(headers=values), end_of_stream=end_of_stream)


def exchange(observe: bool, response_chunks: Sequence[bytes] = (BODY,), request_body: bytes | None = b'{"q": 1}') -> list[ep.ProcessingRequest]:
    """The messages Envoy sends for one POST, as serialized bytes parsed back (a protobuf round trip)."""
    request = {":method": "POST", ":path": "/orders/7?x=1", ":authority": "shop.example", "x-request-id": "rid-1", "authorization": "Bearer t"}
    msgs = [ep.ProcessingRequest(request_headers=headers(request, end_of_stream=request_body is None), observability_mode=observe)]
    if request_body is not None:
        msgs.append(ep.ProcessingRequest(request_body=ep.HttpBody(body=request_body, end_of_stream=True), observability_mode=observe))
    msgs.append(ep.ProcessingRequest(response_headers=headers({":status": "200", "content-type": "application/json"}, end_of_stream=not response_chunks), observability_mode=observe))
    for n, chunk in enumerate(response_chunks):
        msgs.append(ep.ProcessingRequest(response_body=ep.HttpBody(body=chunk, end_of_stream=n == len(response_chunks) - 1), observability_mode=observe))
    return [ep.ProcessingRequest.FromString(m.SerializeToString()) for m in msgs]


def test_buffered_mode_answers_every_message_with_the_matching_empty_continue() -> None:
    tap = ExchangeTap(65536, started=100.0)
    replies = [tap.feed(m) for m in exchange(observe=False)]
    assert [r.WhichOneof("response") if r else None for r in replies] == ["request_headers", "request_body", "response_headers", "response_body"]
    for reply in replies:
        assert reply is not None
        wire = ep.ProcessingResponse.FromString(reply.SerializeToString())
        which = wire.WhichOneof("response")
        assert which is not None
        assert not getattr(wire, which).ListFields()  # nothing to mutate: Envoy continues unchanged
    assert tap.complete


def test_observability_mode_expects_no_answers() -> None:
    tap = ExchangeTap(65536, started=100.0)
    assert [tap.feed(m) for m in exchange(observe=True)] == [None, None, None, None]
    assert tap.complete


def test_the_observation_carries_both_sides_of_the_exchange() -> None:
    tap = ExchangeTap(65536, started=100.0)
    for m in exchange(observe=True, response_chunks=(BODY[:10], BODY[10:])):
        tap.feed(m)
    obs = tap.observation(finished=100.012)
    assert obs == HttpObservation(
        time=100.0,
        method="POST",
        path="/orders/7?x=1",
        reporter="ext_proc",
        request_id="rid-1",
        authority="shop.example",
        headers={"x-request-id": "rid-1", "authorization": "Bearer t"},
        status=200,
        duration_ms=pytest.approx(12.0),
        request_bytes=8,
        response_bytes=len(BODY),
        response_headers={"content-type": "application/json"},
        request_body=b'{"q": 1}',
        response_body=BODY,
    )


def test_bodies_are_capped_and_flagged_while_every_byte_is_counted() -> None:
    tap = ExchangeTap(16, started=0.0)
    for m in exchange(observe=True, response_chunks=(BODY[:10], BODY[10:30], BODY[30:])):
        tap.feed(m)
    obs = tap.observation(1.0)
    assert obs is not None
    assert obs.response_body == BODY[:16] and obs.response_body_truncated and obs.response_bytes == len(BODY)
    assert obs.request_body == b'{"q": 1}' and not obs.request_body_truncated


def test_a_body_cut_short_is_truncated_and_no_body_is_none() -> None:
    tap = ExchangeTap(65536, started=0.0)
    for m in exchange(observe=True, response_chunks=(BODY,), request_body=None)[:-1] + [ep.ProcessingRequest(response_body=ep.HttpBody(body=BODY[:5]))]:
        tap.feed(m)
    obs = tap.observation(1.0)
    assert obs is not None and not tap.complete
    assert (obs.request_body, obs.request_body_truncated) == (None, False)
    assert (obs.response_body, obs.response_body_truncated) == (BODY[:5], True)


def test_headers_as_value_strings_and_repeated_names_are_joined() -> None:
    tap = ExchangeTap(10, started=0.0)
    hm = core.HeaderMap(headers=[core.HeaderValue(key=":method", value="GET"), core.HeaderValue(key=":path", value="/a"), core.HeaderValue(key="X-Tag", value="a"), core.HeaderValue(key="x-tag", raw_value=b"b")])
    tap.feed(ep.ProcessingRequest(request_headers=ep.HttpHeaders(headers=hm, end_of_stream=True)))
    tap.feed(ep.ProcessingRequest(response_headers=headers({":status": "204"}, end_of_stream=True)))
    obs = tap.observation(0.5)
    assert obs is not None and tap.complete
    assert (obs.method, obs.path, obs.status, obs.headers, obs.response_body) == ("GET", "/a", 204, {"x-tag": "a,b"}, None)


def test_no_request_headers_no_observation() -> None:
    tap = ExchangeTap(10, started=0.0)
    tap.feed(ep.ProcessingRequest(response_headers=headers({":status": "200"})))
    assert tap.observation(1.0) is None


async def _drive(source: ExtProcTapSource, messages: list[ep.ProcessingRequest], emitted: list[HttpObservation]) -> tuple[list[ep.ProcessingResponse], int]:
    consumed = 0

    async def requests() -> AsyncIterator[ep.ProcessingRequest]:
        nonlocal consumed
        for m in messages:
            consumed += 1
            yield m

    replies = [r async for r in source.process(requests(), emitted.extend)]
    return replies, consumed


def test_the_stream_closes_after_the_final_message_and_emits_once() -> None:
    source = ExtProcTapSource(max_body_bytes=1024)
    emitted: list[HttpObservation] = []
    trailing = ep.ProcessingRequest(response_trailers=ep.HttpTrailers(), observability_mode=True)
    replies, consumed = asyncio.run(_drive(source, exchange(observe=True) + [trailing], emitted))
    assert replies == [] and consumed == 4  # the trailing message was never read: the tap closed the stream
    assert len(emitted) == 1 and emitted[0].response_body == BODY
    assert source.stats == TapStats(streams=1, observations=1)


def test_a_stream_that_ends_early_is_emitted_as_incomplete() -> None:
    source = ExtProcTapSource()
    emitted: list[HttpObservation] = []
    replies, _ = asyncio.run(_drive(source, exchange(observe=False)[:2], emitted))
    assert [r.WhichOneof("response") for r in replies] == ["request_headers", "request_body"]
    assert len(emitted) == 1 and emitted[0].status is None
    assert source.stats == TapStats(streams=1, observations=1, incomplete=1)


def test_an_emit_that_raises_does_not_break_the_stream() -> None:
    source = ExtProcTapSource()

    def failing(batch: Sequence[HttpObservation]) -> None:
        raise RuntimeError("publisher down")

    async def run() -> list[ep.ProcessingResponse]:
        async def requests() -> AsyncIterator[ep.ProcessingRequest]:
            for m in exchange(observe=False):
                yield m

        return [r async for r in source.process(requests(), failing)]

    assert len(asyncio.run(run())) == 4
    assert source.stats.observations == 1


def test_a_negative_cap_is_rejected_naming_the_value() -> None:
    with pytest.raises(ValueError, match="-1"):
        ExtProcTapSource(max_body_bytes=-1)
