"""A small OpenAI-compatible model endpoint for the demo and tests: deterministic answers, the OpenAI wire format.

``StubModel`` serves, on 127.0.0.1:

* ``POST /v1/chat/completions``: the answer repeats the last user message's first
  words; when the request offers tools and the last user message names one of
  them (``call <tool>``), the model asks for that tool call instead. With
  ``"stream": true`` the answer is a ``text/event-stream`` of chunks ending in
  ``data: [DONE]``, usage in the last chunk when ``stream_options.include_usage``;
* ``POST /v1/embeddings``: an 8-dimension vector per input, from a hash.

Token counts are words (whitespace-separated), so tests can predict them. Every
exchange is kept (``exchanges``: method, path, request body, response headers,
response body) for the tests that parse what a data plane would see.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["StubModel"]


def _words(text: str) -> int:
    return len(text.split())


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _chat(request: dict[str, Any]) -> tuple[dict[str, Any], str | None, int, int]:
    """(message, tool asked for or None, prompt tokens, completion tokens) of a chat request."""
    messages = request.get("messages") or []
    text = _last_user_text(messages)
    prompt_tokens = sum(_words(m["content"]) for m in messages if isinstance(m.get("content"), str))
    offered = [t.get("function", {}).get("name") for t in request.get("tools") or [] if isinstance(t, dict)]
    asked = next((name for name in offered if name and f"call {name}" in text), None)
    if asked is not None:
        call = {"id": "call_1", "type": "function", "function": {"name": asked, "arguments": "{}"}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}, asked, prompt_tokens, 1
    answer = "Noted: " + " ".join(text.split()[:8])
    return {"role": "assistant", "content": answer}, None, prompt_tokens, _words(answer)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        self.server.owner.exchanges.append(("POST", self.path, self._body, {"content-type": ctype}, body))  # before the client can see it
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        self._body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            request = json.loads(self._body or b"{}")
        except ValueError:
            self._send(400, "application/json", b'{"error": {"message": "invalid JSON"}}')
            return
        model = request.get("model", "stub-1")
        if self.path.rstrip("/").endswith("/embeddings"):
            inputs = request.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            data = [{"object": "embedding", "index": i, "embedding": [b / 255 for b in hashlib.sha256(str(x).encode()).digest()[:8]]}
                    for i, x in enumerate(items)]
            tokens = sum(_words(str(x)) for x in items)
            self._send(200, "application/json", json.dumps({"object": "list", "data": data, "model": model,
                                                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}).encode())
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(404, "application/json", b'{"error": {"message": "not found"}}')
            return
        message, asked, prompt_tokens, completion_tokens = _chat(request)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        created, finish = int(time.time()), "tool_calls" if asked else "stop"
        if not request.get("stream"):
            answer = {"id": "chatcmpl-stub", "object": "chat.completion", "created": created, "model": model,
                      "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
            self._send(200, "application/json", json.dumps(answer).encode())
            return
        chunks = [{"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {**message, "tool_calls": [{**c, "index": 0} for c in message.get("tool_calls") or []]}
                                if asked else {"role": "assistant", "content": message["content"]}, "finish_reason": None}]},
                  {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
        if (request.get("stream_options") or {}).get("include_usage"):
            chunks.append({"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [], "usage": usage})
        body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
        self._send(200, "text/event-stream", body)


class StubModel:
    """The stub model server (a context manager); ``url`` is its ``/v1`` base."""

    def __init__(self, port: int = 0) -> None:
        self.exchanges: list[tuple[str, str, bytes, dict[str, str], bytes]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.owner = self  # type: ignore[attr-defined]
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StubModel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
