"""OpenAI-compatible model calls parsed into ``LlmCall``s: the official ``openai`` client against the project's stub
model, and unit cases."""

from __future__ import annotations

import json

import pytest

from deploy.runtime.stubmodel import StubModel
from ingest.llm import parse_llm


@pytest.fixture()
def model() -> StubModel:
    with StubModel() as stub:
        yield stub  # type: ignore[misc]


def _parsed(stub: StubModel, k: int = -1):  # type: ignore[no-untyped-def]
    method, path, request, headers, answer = stub.exchanges[k]
    return parse_llm(method, path, request, headers, answer)


TOOLS = [{"type": "function", "function": {"name": "get_order", "description": "Look up an order.",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}}}}]


def test_the_openai_client_chat_embeddings_tools_and_streams(model: StubModel) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=model.url, api_key="sk-test", max_retries=0)
    reply = client.chat.completions.create(model="gpt-stub", messages=[{"role": "system", "content": "Be brief."},
                                                                       {"role": "user", "content": "My email is ann@example.com, summarise my order"}])
    assert reply.choices[0].message.content.startswith("Noted:")
    call = _parsed(model)
    assert call is not None and (call.operation, call.model, call.stream) == ("chat", "gpt-stub", False)
    assert (call.input_tokens, call.output_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert "ann@example.com" in call.prompt_text and "Be brief." in call.prompt_text

    client.chat.completions.create(model="gpt-stub", tools=TOOLS, messages=[{"role": "user", "content": "please call get_order"}])
    call = _parsed(model)
    assert call is not None and call.tools_offered == 1 and call.tool_calls == ("get_order",)

    stream = client.chat.completions.create(model="gpt-stub", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "stream four words please"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    call = _parsed(model)
    assert call is not None and call.stream and text.startswith("Noted:") and call.output_tokens == len(text.split())
    client.chat.completions.create(model="gpt-stub", stream=True, tools=TOOLS, messages=[{"role": "user", "content": "call get_order"}])
    streamed = _parsed(model)
    assert streamed is not None and streamed.tool_calls == ("get_order",) and streamed.input_tokens is None  # no usage asked

    client.embeddings.create(model="embed-stub", input=["refund policy", "shipping times"])
    call = _parsed(model)
    assert call is not None and (call.operation, call.model, call.input_tokens) == ("embeddings", "embed-stub", 4)
    assert call.prompt_text == "refund policy\nshipping times"


@pytest.mark.parametrize(("method", "path", "body"), [("POST", "/v1/orders", b'{"model": "x"}'), ("GET", "/v1/chat/completions", b"{}"),
                                                      ("POST", "/v1/chat/completions", b"[1]"), ("POST", "/v1/chat/completions", b"no")])
def test_other_calls_are_not_model_calls(method: str, path: str, body: bytes) -> None:
    assert parse_llm(method, path, body) is None


def test_the_responses_api_and_answers_without_a_model_in_the_request() -> None:
    request = json.dumps({"input": [{"role": "user", "content": [{"type": "input_text", "text": "hello there"}]}]}).encode()
    answer = json.dumps({"model": "gpt-x", "output": [{"type": "function_call", "name": "lookup", "arguments": "{}"}],
                         "usage": {"input_tokens": 5, "output_tokens": 2}}).encode()
    call = parse_llm("POST", "/v1/responses", request, {"content-type": "application/json"}, answer)
    assert call is not None and (call.operation, call.model, call.tool_calls) == ("responses", "gpt-x", ("lookup",))
    assert (call.input_tokens, call.output_tokens, call.prompt_text) == (5, 2, "hello there")


def test_the_summariser_counts_sensitive_data_sent_to_a_model(model: StubModel) -> None:
    openai = pytest.importorskip("openai")
    from ingest.envelope import row_to_summary
    from ingest.observation import HttpObservation
    from ingest.summarize import Summarizer

    client = openai.OpenAI(base_url=model.url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "Customer ann@example.com, SSN 123-45-6789: draft a reply"}])
    method, path, request, headers, answer = model.exchanges[-1]
    obs = HttpObservation(time=1.0, method=method, path=path, reporter="ext_proc", authority="api.openai.com", status=200,
                          headers={"content-type": "application/json"}, request_body=request, response_headers=headers, response_body=answer)
    summary = row_to_summary(Summarizer().summarize(obs))
    assert summary.llm is not None and summary.llm.operation == "chat" and summary.llm.model == "gpt-stub"
    assert summary.llm.sent_sensitive == 2 and set(summary.llm.sent_types) == {"email", "ssn"}
    assert summary.mcp is None and summary.object_ids == []


@pytest.mark.parametrize("answer", [{"choices": 1}, {"output": 3}, {"response": "x"}, {"choices": [{"message": {"tool_calls": 5}}]},
                                    {"usage": {"prompt_tokens": "many"}}])
def test_answers_of_the_wrong_shape_never_raise(answer: dict[str, object]) -> None:
    call = parse_llm("POST", "/v1/chat/completions", b'{"model": "m", "messages": [{"role": "user", "content": 1}]}', {},
                     json.dumps(answer).encode())
    assert call is not None and call.tool_calls == ()
