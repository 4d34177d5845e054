"""enforcement.adapters.envoy_extproc: message handling of one exchange, without Envoy or a network."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from enforcement.adapters.envoy_extproc import ExtProcRedactionServer, RedactionCollector, cache_lookup, host_matches
from enforcement.cache import CachedVerdict, VerdictCache
from enforcement.decision import Decision, RequestView
from enforcement.redaction import RedactionSettings
from ingest.identity import IdentityConfig, IdentityResolver
from ingest.proto import envoy_core_pb2 as core
from ingest.proto import envoy_ext_proc_mode_pb2 as mode
from ingest.proto import envoy_ext_proc_pb2 as ext_proc

PM = mode.ProcessingMode
BODY = json.dumps({"user": {"email": "bob@example.org", "ssn": "123-45-6789"}}).encode()


def _headers(**values: str) -> ext_proc.HttpHeaders:
    return ext_proc.HttpHeaders(headers=core.HeaderMap(headers=[core.HeaderValue(key=k.replace("_", "-").replace("--", ":"), raw_value=v.encode()) for k, v in values.items()]))


def _request(host: str = "orders.shop", eos: bool = True, **extra: str) -> ext_proc.ProcessingRequest:
    h = _headers(__method="GET", __path="/users/1", __authority=host, **extra)
    h.end_of_stream = eos
    return ext_proc.ProcessingRequest(request_headers=h)


def _response(ctype: str = "application/json", length: int | None = len(BODY), **extra: str) -> ext_proc.ProcessingRequest:
    values = {"__status": "200", "content_type": ctype, **extra}
    if length is not None:
        values["content_length"] = str(length)
    return ext_proc.ProcessingRequest(response_headers=_headers(**values))


def _body(body: bytes = BODY, kind: str = "response_body") -> ext_proc.ProcessingRequest:
    return ext_proc.ProcessingRequest(**{kind: ext_proc.HttpBody(body=body, end_of_stream=True)})


def _run(server: ExtProcRedactionServer, *messages: ext_proc.ProcessingRequest) -> list[ext_proc.ProcessingResponse]:
    async def feed() -> AsyncIterator[ext_proc.ProcessingRequest]:
        for m in messages:
            yield m

    async def collect() -> list[ext_proc.ProcessingResponse]:
        return [r async for r in server.process(feed())]

    return asyncio.run(collect())


def _server(reports: list[Any] | None = None, lookup: Any = None, **settings: Any) -> ExtProcRedactionServer:
    sink = reports if reports is not None else []
    return ExtProcRedactionServer(RedactionSettings(**settings), lookup=lookup, report=lambda *r: sink.append(r))


def _set_headers(common: ext_proc.CommonResponse) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in common.header_mutation.set_headers}


def test_json_response_is_masked_with_new_content_length_and_count_header() -> None:
    reports: list[tuple[float, RequestView, Decision]] = []
    first, second, third = _run(_server(reports), _request(**{"accept_encoding": "gzip"}), _response(), _body())
    assert first.mode_override.response_body_mode == PM.BUFFERED and first.mode_override.request_body_mode == PM.NONE
    assert list(first.request_headers.response.header_mutation.remove_headers) == ["accept-encoding"]
    assert second.WhichOneof("response") == "response_headers" and not second.HasField("mode_override")
    common = third.response_body.response
    assert json.loads(common.body_mutation.body) == {"user": {"email": "[email]", "ssn": "[ssn]"}}
    assert _set_headers(common) == {"content-length": str(len(common.body_mutation.body)), "x-kubeward-redacted": "2"}
    ((_, view, decision),) = reports
    assert view.path == "/users/1" and decision.would == "redact" and dict(decision.redacted) == {"email": 1, "ssn": 1}


def test_chunked_response_gets_no_content_length() -> None:
    *_, last = _run(_server(), _request(), _response(length=None), _body())
    assert "content-length" not in _set_headers(last.response_body.response) and last.response_body.response.body_mutation.body


def test_skips_turn_the_body_off_and_are_counted() -> None:
    server = _server(max_body_bytes=100)
    for response, reason in ((_response("image/png"), "unsupported_type"), (_response(length=10_000), "too_large"),
                             (_response(content_encoding="gzip"), "encoded")):
        _, answer = _run(server, _request(), response)
        assert answer.mode_override.response_body_mode == PM.NONE and server.stats.skipped[reason] == 1
    *_, last = _run(server, _request(), _response(length=None), _body(BODY * 10))
    assert not last.response_body.HasField("response") and server.stats.skipped["too_large"] == 2


@pytest.mark.parametrize(("length", "skipped"), [
    ("9" * 5000, ["too_large"]),  # past int()'s 4,300 digits (found by the fuzz campaign: ValueError)
    ("1" + "0" * 18, ["too_large"]),  # 19 digits
    ("0" * 5000 + "99", []),  # leading zeros: 99 bytes
    ("0" * 5000 + "101", ["too_large"]),
    ("²", []),  # str.isdigit says yes, int() says no: no length at all, as for "abc"
    ("١٠١", []),  # Arabic-Indic digits: not a content-length either
])
def test_a_content_length_of_any_digits_never_raises(length: str, skipped: list[str]) -> None:
    server = _server(max_body_bytes=100)
    _, answer = _run(server, _request(), _response(length=None, content_length=length))
    assert dict(server.stats.skipped) == dict.fromkeys(skipped, 1) and server.stats.errors == 0
    assert answer.HasField("mode_override") is bool(skipped)  # a skip turns the body off


def test_request_body_to_an_llm_host_only() -> None:
    prompt = b'{"prompt": "I am bob@example.org"}'
    head, body = _run(_server(responses="none"), _request("api.openai.com:443", eos=False, content_type="application/json"), _body(prompt, "request_body"))
    assert head.mode_override.request_body_mode == PM.BUFFERED and head.mode_override.response_header_mode == PM.SKIP
    assert body.request_body.response.body_mutation.body == b'{"prompt":"I am [email]"}'
    (head,) = _run(_server(responses="none"), _request("orders.shop", eos=False))
    assert head.mode_override.request_body_mode == PM.NONE
    assert host_matches("x.openai.azure.com", ("*.openai.azure.com",)) and not host_matches("openai.azure.com.evil", ("*.openai.azure.com",))


def _verdict_cache(server: ExtProcRedactionServer, mode_: str) -> VerdictCache:
    cache = VerdictCache()
    view = server.resolver.resolve({"authorization": "Bearer t-1"}, None)
    key = RequestView("GET", "/", principal=view.principal, source_workload=view.workload, ip=view.ip).subject_keys()[0]
    cache.entries[key] = CachedVerdict("redact", mode_, 2e12, None, 0.0, 0, "suspect", "v-9")
    return cache


def test_verdict_mode_reads_only_the_subjects_responses_and_observe_only_counts() -> None:
    for mode_, masked in (("enforce", True), ("observe", False)):
        reports: list[Any] = []
        server = _server(reports, responses="verdict")
        server.lookup = cache_lookup(_verdict_cache(server, mode_))
        (other,) = _run(server, _request())
        assert other.mode_override.response_header_mode == PM.SKIP
        *_, last = _run(server, _request(authorization="Bearer t-1"), _response(), _body())
        assert last.response_body.HasField("response") is masked
        ((_, _, decision),) = reports
        assert (decision.reason, decision.verdict_id, decision.enforced, dict(decision.redacted)) == ("suspect", "v-9", masked, {"email": 1, "ssn": 1})


def test_errors_answer_continue_and_are_counted() -> None:
    server = _server()
    server._policy = None  # type: ignore[assignment]  # make redact_body fail
    *_, last = _run(server, _request(), _response(), _body())
    assert last.WhichOneof("response") == "response_body" and not last.response_body.HasField("response") and server.stats.errors == 1


def test_metrics_collector() -> None:
    server = _server(max_body_bytes=100)
    _run(server, _request(), _response(), _body(b'{"e": "a@example.org"}'))
    _run(server, _request(), _response("image/png"))
    families = {f.name: {tuple(s.labels.values()): s.value for s in f.samples} for f in RedactionCollector(server.stats).collect()}
    assert families["kubeward_redacted_values"] == {("email",): 1.0}
    assert families["kubeward_redaction_skipped_bodies"] == {("unsupported_type",): 1.0}
    assert families["kubeward_redaction_bodies"] == {("response",): 1.0}


def test_observability_mode_gets_no_answers() -> None:
    message = _request()
    message.observability_mode = True
    assert _run(_server(), message) == []


def test_the_reported_view_says_whether_the_client_is_external() -> None:
    """The exchange's report (the shim's queue) carries the bit as the ext_authz adapters derive it (ext_proc gets no
    source address: the client is Envoy's ``x-forwarded-for`` entry, ``trusted_hops=1``)."""
    reports: list[tuple[float, RequestView, Decision]] = []
    server = ExtProcRedactionServer(RedactionSettings(), IdentityResolver(IdentityConfig(trusted_hops=1)), report=lambda *r: reports.append(r))
    _run(server, _request(x_forwarded_for="203.0.113.7"), _response(), _body())
    _run(server, _request(x_forwarded_for="10.1.2.3"), _response(), _body())
    assert [(view.ip, view.external) for _, view, _ in reports] == [("203.0.113.7", True), ("10.1.2.3", False)]
