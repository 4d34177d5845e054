"""Prompt injection inline: what an agent is about to send to a model, scanned before it leaves.

``PromptInspector`` is an ``Inspector`` (``enforcement.decision``) for calls to a model API in
the OpenAI wire format (``ingest.llm.operation_of``: chat completions, completions,
responses, embeddings) whose JSON body names a ``model``. It reads the *data* that
flows to the model, newest first: the contents of ``tool`` and ``function`` messages
and the Responses API's ``function_call_output`` items (tool results, documents an
agent retrieved). Instructions are not scanned: system, user and assistant turns,
``prompt`` and plain ``input`` tell the model what to do by design, and the classifier
reads "Draft a short answer to the customer using:" as an instruction (0.55): a
user's direct injection, and tool results an agent pastes into a user turn, are left
to the stream (the collector scans every tool result where the agent received it). Up to
``max_chars`` characters of that text (the inline limit: the stream scans whole tool
results, ``streams`` via the collector) go through ``enforcement.promptscan.scan_result``
(the RE2 pack over every string, the classifier over the prose of JSON results). An
injected text is the finding ``prompt-injection`` at the inspection threshold: denied in
enforce mode, reported in observe mode. The classifier loads at the first model call the
shim sees, not at start.

Measured with ``kubeward eval-agents`` (``prompt_injection.cost``): 1.0-1.9 ms per KB with the
model, so the default 8 KB costs at most ~15 ms on a model call that itself takes seconds.
"""

from __future__ import annotations

from typing import Any

from enforcement.decision import Inspection, RequestView
from enforcement.requestparts import json_document
from ingest.llm import operation_of

__all__ = ["CATEGORY", "PromptInspector", "model_input_text"]

CATEGORY = "prompt-injection"
_READ_ROLES = frozenset({"tool", "function"})


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):  # content parts: {"type": "text", "text": ...}
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def model_input_text(document: Any, max_chars: int) -> str | None:
    """The data a model-API body hands the model (tool results), newest first, cut at ``max_chars``; None when the
    body is no model call (no ``model`` with ``messages``, ``input`` or ``prompt``).

    >>> model_input_text({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
    ...     {"role": "user", "content": "hi"}, {"role": "tool", "content": "doc"}, {"role": "tool", "content": "new"}]}, 100)
    'new\\ndoc'
    >>> model_input_text({"orders": []}, 100) is None
    True
    """
    if not isinstance(document, dict) or "model" not in document:
        return None
    parts: list[str] = []
    messages = document.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") in _READ_ROLES:
                parts += _texts(message.get("content"))
    items = document.get("input")
    if isinstance(items, list):  # the Responses API: tool outputs are items of their own
        for item in reversed(items):
            if isinstance(item, dict) and item.get("type") == "function_call_output":
                parts += _texts(item.get("output"))
            elif isinstance(item, dict) and item.get("role") in _READ_ROLES:
                parts += _texts(item.get("content"))
    if messages is None and "input" not in document and "prompt" not in document:
        return None
    out, left = [], max_chars
    for part in parts:
        if left <= 0:
            break
        out.append(part[:left])
        left -= len(out[-1]) + 1
    return "\n".join(out)


class PromptInspector:
    """Inline prompt-injection scan of model-API calls (see the module docstring)."""

    def __init__(self, threshold: int, max_chars: int = 8192, model: Any = None) -> None:
        self.threshold, self.max_chars = threshold, max_chars
        self._model = model
        #: model calls scanned, and found injected (metrics)
        self.counts = {"scanned": 0, "injected": 0}

    def _scorer(self) -> Any:
        if self._model is None:
            from enforcement.promptmodel import load_prompt_model

            self._model = load_prompt_model()
        return self._model

    def inspect(self, req: RequestView) -> Inspection | None:
        """The finding ``prompt-injection`` when the text a model call sends reads as injected, else None."""
        if req.method.upper() != "POST" or not req.body or operation_of(req.path) is None:
            return None
        ok, document = json_document(req)
        text = model_input_text(document, self.max_chars) if ok else None
        if not text:
            return None
        from enforcement.promptscan import scan_result

        self.counts["scanned"] += 1
        found = scan_result(text, model=self._scorer())
        if not found.injected:
            return None
        self.counts["injected"] += 1
        traits = tuple(dict.fromkeys(f"{CATEGORY}:{trait}" for trait, _ in found.findings)) or (f"{CATEGORY}:model",)
        return Inspection((CATEGORY,), traits, self.threshold)
