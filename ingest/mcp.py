"""Model Context Protocol calls as the data plane carries them: JSON-RPC 2.0 over streamable HTTP (and SSE).

An agent talks to an MCP server with POSTs of JSON-RPC messages (one object or a
batch array); the server answers with ``application/json`` or with a
``text/event-stream`` whose ``data:`` lines hold the JSON-RPC responses, and names
the session in the ``Mcp-Session-Id`` header. ``parse_exchange`` reads one such
exchange (request and, when the collector saw it, response) into an ``McpCall``:

* the method of the (first) request or notification: ``initialize``,
  ``tools/list``, ``tools/call``, ``resources/read``, ``prompts/get``,
  ``notifications/...``;
* what it names: the tool called, the prompt asked for, the resource read;
* from the answer: the server's name (``initialize``), every tool definition of a
  ``tools/list`` (name, description, input schema) with its definition hash
  (``tool_definition_hash``: what a pin compares), the JSON-RPC error code, a
  tool result's ``isError``, and the text a tool, resource or prompt returned
  (``result_text``: what flows to a model, for the injection scan and the
  sensitive-data count), capped at ``MAX_TEXT`` characters.

``None`` when the request body is not JSON-RPC 2.0, or when a body is nested
deeper than Python's recursion limit lets it be read. Bodies larger than
``MAX_BODY`` bytes are not parsed (the call stays an HTTP call). ``load_json``
reads a body as JSON for this module and ``ingest.llm``. Pure, stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_BODY", "MAX_TEXT", "MAX_TOOLS", "McpCall", "ToolDefinition", "jsonrpc_messages", "load_json", "parse_exchange",
           "tool_definition_hash"]

#: bodies parsed at most (a tools/list of a large server is tens of KB)
MAX_BODY = 1 << 20
#: characters of result text kept per call
MAX_TEXT = 65_536
#: tool definitions kept per tools/list answer
MAX_TOOLS = 512
#: events read per SSE stream
_MAX_EVENTS = 256
_LINES = re.compile(r"\r\n|\r|\n")
#: JSON-RPC methods of MCP (by prefix): a body with another method is not taken for MCP (a JSON-RPC field added to a
#: REST body must not hide its answer from the other detectors)
MCP_METHODS = ("initialize", "ping", "tools/", "resources/", "prompts/", "notifications/", "completion/", "logging/",
               "sampling/", "roots/", "elicitation/", "tasks/", "server/")
#: methods whose answer names the server (``server/discover`` opens a session of the 2026-07-28 protocol, which has no
#: ``initialize``)
_HANDSHAKES = ("initialize", "server/discover")
#: a ``\uD800``-``\uDFFF`` escape: paired it is one character once parsed, unpaired it is a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class ToolDefinition:
    """One tool as a server lists it; ``hash`` is ``tool_definition_hash`` of the three parts."""

    name: str
    description: str
    input_schema: Mapping[str, Any] | None
    hash: str


@dataclass(frozen=True)
class McpCall:
    """What one MCP exchange was about (see the module docstring)."""

    method: str
    session: str | None = None
    tool: str | None = None
    prompt: str | None = None
    resource: str | None = None
    server: str | None = None
    tools: tuple[ToolDefinition, ...] = ()
    error_code: int | None = None
    tool_error: bool | None = None
    result_text: str = ""


def tool_definition_hash(name: str | None, description: str | None, input_schema: Any) -> str:
    """sha256 (hex) of a tool's name, description and input schema as canonical JSON (sorted keys, no spaces):
    the same definition hashes the same whatever the key order or spacing on the wire.

    >>> tool_definition_hash("add", "Adds.", {"type": "object", "properties": {"a": {"type": "number"}}}) == \\
    ...     tool_definition_hash("add", "Adds.", {"properties": {"a": {"type": "number"}}, "type": "object"})
    True
    """
    canonical = json.dumps({"name": name, "description": description, "inputSchema": input_schema}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def load_json(data: bytes | str) -> Any:
    """A body off the wire as JSON; ``ValueError`` when it is not JSON (or is nested too deep for the parser).

    Text comes back valid: an unpaired surrogate, which ``json.loads`` reads from a ``"\\ud800"`` escape and a
    summary cannot encode as UTF-8, becomes U+FFFD, as do bytes that are not in the body's encoding.

    >>> load_json(b'{"a": "\\\\ud800x", "b": "\\\\ud83d\\\\ude00"}')
    {'a': '\ufffdx', 'b': '😀'}
    """
    text = data.decode(json.detect_encoding(data), "replace") if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
        if "\\u" in text and _SURROGATE_ESCAPE.search(text):
            value = json.loads(_LONE_SURROGATE.sub("\ufffd", json.dumps(value, ensure_ascii=False)))
    except RecursionError as exc:
        raise ValueError("JSON nested deeper than the parser reads") from exc
    return value


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _sse_payloads(text: str) -> list[str]:
    """The data of each event of an SSE stream (multi-line data joined with newlines)."""
    out: list[str] = []
    data: list[str] = []
    for line in _LINES.split(text):  # SSE ends lines with CR, LF or CRLF only (not U+2028, NEL...: str.splitlines)
        if not line:
            if data:
                out.append("\n".join(data))
                data = []
                if len(out) >= _MAX_EVENTS:
                    return out
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        out.append("\n".join(data))
    return out


def jsonrpc_messages(body: bytes | None, content_type: str | None = None) -> list[dict[str, Any]]:
    """The JSON-RPC 2.0 messages of a body: a JSON object or batch array, or the events of an SSE stream; [] when
    there are none (not JSON, not JSON-RPC, empty, or larger than ``MAX_BODY``).

    >>> [m["id"] for m in jsonrpc_messages(b'event: message\\r\\ndata: {"jsonrpc":"2.0","id":2,"result":{}}\\r\\n\\r\\n',
    ...                                    "text/event-stream")]
    [2]
    """
    if not body or len(body) > MAX_BODY:
        return []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return []
    stream = (content_type or "").lower().startswith("text/event-stream") or text.lstrip().startswith(("event:", "data:", "id:"))
    payloads = _sse_payloads(text) if stream else [text]
    out: list[dict[str, Any]] = []
    for payload in payloads:
        try:
            value = load_json(payload)
        except ValueError:
            continue
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and item.get("jsonrpc") == "2.0":
                out.append(item)
    return out


def _text_of(result: Mapping[str, Any]) -> list[str]:
    """The text a tools/call, resources/read or prompts/get result carries to the model."""
    parts: list[str] = []
    for item in _list(result.get("content")):  # tools/call
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            parts.append(item["text"])
    for item in _list(result.get("contents")):  # resources/read
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            parts.append(item["text"])
    for message in _list(result.get("messages")):  # prompts/get
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, dict) and isinstance(content.get("text"), str):
            parts.append(content["text"])
    return parts


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _tools_of(result: Mapping[str, Any]) -> tuple[ToolDefinition, ...]:
    tools = []
    for item in _list(result.get("tools"))[:MAX_TOOLS]:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        description = item["description"] if isinstance(item.get("description"), str) else ""
        schema = item.get("inputSchema") if isinstance(item.get("inputSchema"), dict) else None
        tools.append(ToolDefinition(item["name"], description, schema, tool_definition_hash(item["name"], description, schema)))
    return tuple(tools)


def _code(error: Mapping[str, Any] | None) -> int | None:
    """A JSON-RPC error's code; None when absent, not an integer, or past int64 (a summary column)."""
    code = error.get("code") if error is not None else None
    return code if isinstance(code, int) and not isinstance(code, bool) and -(1 << 63) <= code < 1 << 63 else None


def _string(params: Any, key: str) -> str | None:
    value = params.get(key) if isinstance(params, dict) else None
    return value if isinstance(value, str) else None


def parse_exchange(request_headers: Mapping[str, str], request_body: bytes | None,
                   response_headers: Mapping[str, str] | None = None, response_body: bytes | None = None) -> McpCall | None:
    """The ``McpCall`` of one HTTP exchange, or ``None`` when its request is not JSON-RPC 2.0 (see the module docstring)."""
    if not request_body or b"jsonrpc" not in request_body:  # most POSTs: no second parse of their body
        return None
    try:
        return _parse_exchange(request_headers, request_body, response_headers, response_body)
    except RecursionError:  # a document the parser read but a walk or a hash (json.dumps) cannot: ~1,000 levels
        return None


def _parse_exchange(request_headers: Mapping[str, str], request_body: bytes,
                    response_headers: Mapping[str, str] | None, response_body: bytes | None) -> McpCall | None:
    requests = jsonrpc_messages(request_body, _header(request_headers, "content-type"))
    first = next((m for m in requests if isinstance(m.get("method"), str)), None)
    if first is None or not first["method"].startswith(MCP_METHODS):
        return None
    method, params = first["method"], first.get("params")
    response_headers = response_headers or {}
    session = _header(response_headers, "mcp-session-id") or _header(request_headers, "mcp-session-id")
    answers = {json.dumps(m.get("id")): m for m in jsonrpc_messages(response_body, _header(response_headers, "content-type"))
               if "result" in m or "error" in m}
    answer = answers.get(json.dumps(first.get("id"))) if "id" in first else None
    result: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    if answer is not None and isinstance(answer.get("result"), dict):
        result = answer["result"]
    if answer is not None and isinstance(answer.get("error"), dict):
        error = answer["error"]
    server = result.get("serverInfo") if method in _HANDSHAKES else None
    text = "\n".join(_text_of(result))[:MAX_TEXT]
    is_error = result.get("isError") if method == "tools/call" else None
    return McpCall(
        method=method,
        session=session,
        tool=_string(params, "name") if method == "tools/call" else None,
        prompt=_string(params, "name") if method == "prompts/get" else None,
        resource=_string(params, "uri") if method == "resources/read" else None,
        server=_string(server, "name"),
        tools=_tools_of(result) if method == "tools/list" else (),
        error_code=_code(error),
        tool_error=is_error if isinstance(is_error, bool) else None,
        result_text=text,
    )
