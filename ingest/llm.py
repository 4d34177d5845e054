"""Calls to OpenAI-compatible model APIs as the data plane carries them: what was asked of which model, and what came back.

``parse_llm(method, path, request_body, response_headers, response_body)``
reads one exchange with an API that speaks the OpenAI wire format (OpenAI,
Azure OpenAI, vLLM, Ollama, LiteLLM, most gateways) into an ``LlmCall``:

* the operation, from the path's last segments: ``chat`` (``/chat/completions``),
  ``completions``, ``embeddings``, ``responses``;
* the model asked for (the answer's ``model`` when the request names none);
* token counts from the answer's ``usage`` (``prompt_tokens`` /
  ``completion_tokens``, or ``input_tokens`` / ``output_tokens``), also from
  the last chunk of a streamed answer (``text/event-stream`` of ``data:``
  chunks ending in ``[DONE]``);
* the tools the request offered and the tool calls the model asked for (by
  name, streamed deltas included): what an agent is about to do;
* ``prompt_text``: the text sent to the model (message contents, ``input``,
  ``prompt``), capped at ``MAX_TEXT`` characters, so the summariser can count
  the sensitive data that leaves for a model (lineage) without keeping it;
* ``prompt``: what was asked this time: the last user message of a chat (an
  agent's tool loop repeats it until the next question), the last user item or
  the text of ``input`` (responses, embeddings), ``prompt`` (completions).

``prompt_hash(text, key)`` and ``shape_hash(text, key)`` turn a prompt into the
keyed hashes a summary carries (``ingest.templating.hash_object_id``, the key of
object ids; the text is never kept): the hash of the normalised prompt
(``normalise``: lower case, whitespace collapsed) and the hash of its *shape*
(``shape_of``: numbers, quoted strings and long tokens masked, then the opening
words up to the first line break or colon, at most ``SHAPE_WORDS``), so a
templated probe (``Classify the sentiment: <text>`` with a different text each
time) is one shape and many prompts. A template whose variable part comes first
reads as many shapes; the volume rule covers it (``models/rules/agents.yaml``,
model extraction).

``None`` when the path is not such an operation or the request body is not a
JSON object (bodies are read by ``ingest.mcp.load_json``: unpaired surrogates
become U+FFFD, and a body nested past Python's recursion limit is not read).
Pure, stdlib only (with ``ingest.templating``'s keyed hash).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ingest.mcp import load_json
from ingest.templating import hash_object_id

__all__ = ["MAX_TEXT", "SHAPE_WORDS", "LlmCall", "normalise", "operation_of", "parse_llm", "prompt_hash", "shape_hash", "shape_of"]

MAX_TEXT = 65_536
_MAX_BODY = 4 << 20
_OPERATIONS = (("/chat/completions", "chat"), ("/completions", "completions"), ("/embeddings", "embeddings"),
               ("/responses", "responses"))
#: words of the masked prompt its shape keeps (an instruction's opening: "classify the sentiment of this review:")
SHAPE_WORDS = 6
_SHAPE_SCAN = 512  # characters of a prompt's first line the shape reads: its first words, and room to close a quote
_QUOTED = re.compile(r"\"[^\"\n]*\"|(?<!\w)'[^'\n]*'(?!\w)|`[^`]*`|\u201c[^\u201d\n]*\u201d|\u00ab[^\u00bb\n]*\u00bb")
_LONG = re.compile(r"\S{24,}")  # ids, hashes, base64, URLs: values, not words of a template
_NUMBER = re.compile(r"[-+]?\d+(?:[.,:/-]\d+)*")
_COLON = re.compile(r"(?<=:)\s")  # with a line break, where a template's instruction usually hands over to its data


@dataclass(frozen=True)
class LlmCall:
    """What one model API exchange was about (see the module docstring)."""

    operation: str
    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    tools_offered: int = 0
    tool_calls: tuple[str, ...] = ()
    stream: bool = False
    prompt_text: str = ""
    prompt: str = ""


def operation_of(path: str) -> str | None:
    """The model API operation a path names, or None.

    >>> operation_of("/v1/chat/completions?api-version=2024-02-01"), operation_of("/openai/deployments/gpt/embeddings")
    ('chat', 'embeddings')
    >>> operation_of("/v1/orders") is None
    True
    """
    bare = path.split("?", 1)[0].rstrip("/").lower()
    return next((op for suffix, op in _OPERATIONS if bare.endswith(suffix)), None)


def names_model_call(document: Any, deployment: bool = False) -> bool:
    """Whether a JSON body is a model call in the OpenAI wire format: an object naming a ``model`` (or sent to a path
    naming an Azure deployment: ``deployment``) with ``messages``, ``input`` or ``prompt``. The shim's inline checks
    ask this of bodies POSTed to a model-API path (``operation_of``).

    >>> names_model_call({"model": "m", "messages": []}), names_model_call({"messages": []}), names_model_call({"messages": []}, True)
    (True, False, True)
    """
    return (isinstance(document, dict) and ("model" in document or deployment)
            and any(key in document for key in ("messages", "input", "prompt")))


def deployment_path(path: str) -> bool:
    """Whether a path names an Azure OpenAI deployment (whose bodies name no model)."""
    return "/deployments/" in path


def _json(body: bytes | None) -> Any:
    if not body or len(body) > _MAX_BODY:
        return None
    try:
        return load_json(body)
    except ValueError:
        return None


def _chunks(body: bytes | None) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed answer (``data:`` lines; ``[DONE]`` and anything else skipped)."""
    if not body or len(body) > _MAX_BODY:
        return []
    out = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.startswith("data:"):
            try:
                value = load_json(line[5:].strip())
            except ValueError:
                continue
            if isinstance(value, dict):
                out.append(value)
    return out


def _texts(value: Any, out: list[str], budget: int) -> int:
    """Append the strings of message contents (strings, or parts with ``text``) to ``out``; characters left."""
    if budget <= 0:
        return budget
    if isinstance(value, str):
        out.append(value[:budget])
        return budget - len(out[-1])
    if isinstance(value, list):
        for item in value:
            budget = _texts(item, out, budget)
    elif isinstance(value, dict):
        for key in ("content", "text", "input_text"):
            if key in value:
                budget = _texts(value[key], out, budget)
    return budget


def _prompt_text(request: dict[str, Any]) -> str:
    out: list[str] = []
    budget = MAX_TEXT
    for key in ("messages", "input", "prompt", "instructions"):
        if key in request:
            budget = _texts(request[key], out, budget)
    return "\n".join(out)


def _user_prompt(request: dict[str, Any]) -> str:
    """The text asked this time: the last user message (chat, responses), else all of ``input`` or ``prompt``."""
    for key in ("messages", "input", "prompt"):
        value = request.get(key)
        if isinstance(value, list) and any(isinstance(m, dict) and "role" in m for m in value):
            value = next((m for m in reversed(value) if isinstance(m, dict) and m.get("role") == "user"), None)
        if value is not None:
            out: list[str] = []
            _texts(value, out, MAX_TEXT)
            return "\n".join(out)
    return ""


def normalise(text: str) -> str:
    """The prompt as hashed: lower case, runs of whitespace made one space.

    >>> normalise("  Hello,\\n  World ")
    'hello, world'
    """
    return " ".join(text.lower().split())


def shape_of(text: str) -> str:
    """The template a prompt follows: quoted strings, long tokens and numbers masked, then its opening: the words
    before the first line break or ``:`` (where instructions usually hand over to data), at most ``SHAPE_WORDS``.

    >>> shape_of('Classify the sentiment of this review: "Great phone, 5 stars"')
    'classify the sentiment of this review:'
    >>> shape_of("Translate to French: good morning"), shape_of("Summarise this.\\n\\nThe meeting moved to Monday.")
    ('translate to french:', 'summarise this.')
    >>> shape_of("What is 17 * 23?") == shape_of("what is 4096 * 7?")
    True
    """
    head = text.lstrip()[:_SHAPE_SCAN].split("\n", 1)[0]  # a 2 kB one-line prompt: 136 us masking 4 kB, 36 us now
    masked = _NUMBER.sub("<n>", _LONG.sub("<t>", _QUOTED.sub("<q>", head)))
    return " ".join(_COLON.split(masked, 1)[0].lower().split()[:SHAPE_WORDS])


def prompt_hash(text: str, key: bytes) -> str | None:
    """Keyed hash of the normalised prompt (None for an empty one); the text is not kept."""
    norm = normalise(text)
    return hash_object_id("llm-prompt\0" + norm, key) if norm else None


def shape_hash(text: str, key: bytes) -> str | None:
    """Keyed hash of the prompt's shape (``shape_of``; None for an empty prompt)."""
    shape = shape_of(text)
    return hash_object_id("llm-shape\0" + shape, key) if shape else None


def _int(value: Any) -> int | None:
    """A count (a summary column is int64: a larger number would fail the envelope it travels in)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63 else None


def _usage(answers: list[dict[str, Any]]) -> tuple[int | None, int | None]:
    for answer in reversed(answers):
        response = answer.get("response")
        usage = answer.get("usage") or (response.get("usage") if isinstance(response, dict) else None)
        if isinstance(usage, dict):
            return (_int(usage.get("prompt_tokens", usage.get("input_tokens"))),
                    _int(usage.get("completion_tokens", usage.get("output_tokens"))))
    return None, None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _tool_calls(answers: list[dict[str, Any]]) -> tuple[str, ...]:
    names: dict[str, None] = {}
    for answer in answers:
        for choice in _list(answer.get("choices")):
            if not isinstance(choice, dict):
                continue
            message = choice.get("message") or choice.get("delta") or {}
            for call in _list(message.get("tool_calls")) if isinstance(message, dict) else ():
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict) and isinstance(function.get("name"), str):
                    names.setdefault(function["name"], None)
        for item in _list(answer.get("output")):  # the responses API
            if isinstance(item, dict) and item.get("type") == "function_call" and isinstance(item.get("name"), str):
                names.setdefault(item["name"], None)
    return tuple(names)


def parse_llm(method: str, path: str, request_body: bytes | None, response_headers: dict[str, str] | None = None,
              response_body: bytes | None = None) -> LlmCall | None:
    """The ``LlmCall`` of one exchange, or None (see the module docstring)."""
    operation = operation_of(path) if method == "POST" else None
    request = _json(request_body) if operation else None
    if not isinstance(request, dict):
        return None
    try:
        return _parse(operation or "", request, response_headers, response_body)
    except RecursionError:  # a document the parser read but a walk of its messages cannot: ~1,000 levels
        return None


def _parse(operation: str, request: dict[str, Any], response_headers: dict[str, str] | None, response_body: bytes | None) -> LlmCall:
    content_type = ((response_headers or {}).get("content-type") or "").lower()
    streamed = content_type.startswith("text/event-stream") or (response_body or b"").lstrip().startswith(b"data:")
    answers = _chunks(response_body) if streamed else [a for a in [_json(response_body)] if isinstance(a, dict)]
    model = request.get("model") if isinstance(request.get("model"), str) else next(
        (a["model"] for a in answers if isinstance(a.get("model"), str)), None)
    tokens_in, tokens_out = _usage(answers)
    tools = request.get("tools")
    return LlmCall(operation=operation, model=model, input_tokens=tokens_in, output_tokens=tokens_out,
                   tools_offered=len(tools) if isinstance(tools, list) else 0, tool_calls=_tool_calls(answers),
                   stream=bool(request.get("stream")) or streamed, prompt_text=_prompt_text(request),
                   prompt=_user_prompt(request))
