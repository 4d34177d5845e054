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


# -- the prompt asked and its shape, as keyed hashes (model extraction)

KEY = b"kubeward-test-object-key"


def _chat(*messages: tuple[str, str]) -> bytes:
    return json.dumps({"model": "gpt-x", "messages": [{"role": r, "content": c} for r, c in messages]}).encode()


def test_the_prompt_is_the_last_user_message_or_the_input() -> None:
    from ingest.llm import LlmCall

    def prompt(path: str, body: bytes) -> str:
        call = parse_llm("POST", path, body)
        assert isinstance(call, LlmCall)
        return call.prompt

    loop = json.dumps({"model": "m", "messages": [
        {"role": "system", "content": "You are the support assistant."}, {"role": "user", "content": "Where is order 7?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_order", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"}]}).encode()
    assert prompt("/v1/chat/completions", loop) == "Where is order 7?"  # an agent's tool loop repeats its user's question
    parts = _chat(("system", "Be brief."), ("user", "first"), ("assistant", "ok"), ("user", "second"))
    assert prompt("/v1/chat/completions", parts) == "second"
    assert prompt("/v1/responses", json.dumps({"input": "hello", "instructions": "Be brief."}).encode()) == "hello"
    items = json.dumps({"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}]},
                                  {"role": "assistant", "content": "b"}, {"role": "user", "content": [{"type": "input_text", "text": "c"}]}]})
    assert prompt("/v1/responses", items.encode()) == "c"
    assert prompt("/v1/embeddings", json.dumps({"input": ["refund policy", "shipping"]}).encode()) == "refund policy\nshipping"
    assert prompt("/v1/completions", json.dumps({"prompt": "Once upon"}).encode()) == "Once upon"
    assert prompt("/v1/chat/completions", _chat(("system", "only a system prompt"))) == ""


def test_prompt_hashes_are_keyed_stable_and_normalised() -> None:
    from ingest.llm import prompt_hash, shape_hash

    h = prompt_hash("What is the refund policy?", KEY)
    assert h is not None and len(h) == 16 and int(h, 16) >= 0
    assert prompt_hash("  what IS the\n refund   policy? ", KEY) == h  # case and whitespace do not make a new prompt
    assert prompt_hash("What is the refund policy?", b"another-key") != h
    assert prompt_hash("What is the return policy?", KEY) != h
    assert shape_hash("What is the refund policy?", KEY) != h  # prompts and shapes are hashed apart
    assert prompt_hash(" \n ", KEY) is None and shape_hash("", KEY) is None


@pytest.mark.parametrize("template", [
    'Classify the sentiment of this review: "{}"',
    "Classify the sentiment of this review: {}",
    "Translate to French: {}",
    "Summarise the following text.\n\n{}",
    "Rate this review from 1 to 5.\nReview: {}",
])
def test_a_templated_probe_is_one_shape_and_many_prompts(template: str) -> None:
    from ingest.llm import prompt_hash, shape_hash

    fillings = ["I loved this phone, 5 stars", "Battery died after 2 days. Never again!", "meh",
                "Delivered on 2024-03-07, works fine", "Order a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6 arrived broken"]
    prompts = {prompt_hash(template.format(f), KEY) for f in fillings}
    shapes = {shape_hash(template.format(f), KEY) for f in fillings}
    assert len(prompts) == len(fillings) and len(shapes) == 1


def test_different_templates_and_different_questions_are_different_shapes() -> None:
    from ingest.llm import shape_hash, shape_of

    templates = ["Classify the sentiment of this review: {}", "Translate to French: {}", "Summarise the following text.\n\n{}",
                 "Extract the company names from: {}"]
    assert len({shape_hash(t.format("some text"), KEY) for t in templates}) == len(templates)
    questions = ["How do I rotate my API key?", "Why did my deploy fail last night?", "Can you draft a polite reply to Ann?",
                 "Which plan includes SSO?", "Explain the difference between a pod and a deployment"]
    assert len({shape_hash(q, KEY) for q in questions}) == len(questions)  # a person's varied questions are varied shapes
    assert shape_of("What is 17 * 23?") == shape_of("What is 4096 * 7?") == "what is <n> * <n>?"
    assert shape_of('Is "abc" a word?') == shape_of("Is 'xyz' a word?") == "is <q> a word?"
    assert shape_of("Say hi to https://example.com/a/very/long/path") == "say hi to <t>"


def test_the_summary_carries_the_hashes_and_never_the_text() -> None:
    from ingest.envelope import row_to_summary
    from ingest.observation import HttpObservation
    from ingest.summarize import Summarizer, SummarizerConfig

    def summary(text: str, key: bytes = KEY):  # type: ignore[no-untyped-def]
        obs = HttpObservation(time=1.0, method="POST", path="/v1/chat/completions", reporter="ext_proc", authority="api.openai.com",
                              status=200, headers={"content-type": "application/json"},
                              request_body=_chat(("system", "You are terse."), ("user", text)), response_headers={},
                              response_body=b'{"choices": [{"message": {"role": "assistant", "content": "positive"}}]}')
        row = Summarizer(SummarizerConfig(object_id_key=key)).summarize(obs)
        return row, row_to_summary(row)

    row, first = summary("Classify the sentiment of this review: zanzibarquux was lovely")
    _, second = summary("Classify the sentiment of this review: the flumpet broke")
    _, again = summary("classify the sentiment of this review:   zanzibarquux was LOVELY")
    assert first.llm is not None and second.llm is not None and again.llm is not None
    assert first.llm.prompt_hash and first.llm.prompt_shape and len(first.llm.prompt_hash) == 16
    assert first.llm.prompt_hash != second.llm.prompt_hash and first.llm.prompt_shape == second.llm.prompt_shape
    assert (again.llm.prompt_hash, again.llm.prompt_shape) == (first.llm.prompt_hash, first.llm.prompt_shape)
    _, other_key = summary("Classify the sentiment of this review: zanzibarquux was lovely", b"another-key")
    assert other_key.llm is not None and other_key.llm.prompt_hash != first.llm.prompt_hash
    text = json.dumps(row, default=str).lower()
    assert "zanzibarquux" not in text and "classify" not in text and "sentiment" not in text
    assert row_to_summary(first.model_dump()) == first  # the new fields travel through the record


def test_the_openai_client_body_hashes_as_the_wire_format_says(model: StubModel) -> None:
    openai = pytest.importorskip("openai")
    from ingest.llm import prompt_hash, shape_hash

    client = openai.OpenAI(base_url=model.url, api_key="sk-test", max_retries=0)
    client.chat.completions.create(model="gpt-stub", messages=[{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "Translate to French: good morning"}])
    call = _parsed(model)
    assert call is not None and call.prompt == "Translate to French: good morning"
    assert prompt_hash(call.prompt, KEY) == prompt_hash("translate to french: good morning", KEY)
    assert shape_hash(call.prompt, KEY) == shape_hash("Translate to French: good night", KEY)


def test_module_doctests_pass() -> None:
    import doctest

    import ingest.llm

    result = doctest.testmod(ingest.llm)
    assert result.attempted >= 4 and result.failed == 0
