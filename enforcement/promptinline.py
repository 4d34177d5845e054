"""Prompt injection inline: the tool results an agent is about to hand a model, scanned before they leave.

``PromptInspector`` is an ``Inspector`` (``enforcement.decision``) for calls to a model API in
the OpenAI wire format (``ingest.llm.operation_of``: chat completions, completions,
responses, embeddings) whose JSON body names a ``model`` (or whose path names an Azure
deployment). It reads the *tool results* in it, newest first, each on its own: the
contents of ``tool``, ``function`` and ``ipython`` messages and the Responses API's
``function_call_output``, ``custom_tool_call_output`` and ``mcp_call`` outputs. Each goes
through ``enforcement.promptscan.scan_result`` (the RE2 pack over the text and every JSON
string in it, the classifier over its prose), a long one by its head and its tail, until
``max_chars`` are spent (the inline limit; the stream scans whole tool results where the
collector sees them). A result the rule pack scores as injected, or the classifier at
``model_floor`` (0.8; the stream's 0.5 flagged code, docs and e-mails a shim must not
deny), is the finding ``prompt-injection`` at the inspection threshold: denied in
enforce mode, reported in observe mode.

Not read inline: system, user and assistant turns, ``prompt`` and plain ``input``. They
tell the model what to do by design (the classifier reads "Draft a short answer to the
customer using:" as an instruction, 0.55), and a retrieved document placed in one of
them (the usual RAG pattern) is scanned only where it crossed an MCP server, by the
collector. A body cut at the data plane's limit (``max_request_bytes``; the newest
results are at its end) is read for the strings of its first part and counted in
``counts["truncated"]``: give model-API routes a larger limit.

The classifier loads in the background when the inspector is built (~2 s); until it is
ready, or if it cannot load (logged once), results are scanned with the rules alone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from enforcement.decision import Inspection, RequestView
from enforcement.promptscan import THRESHOLD, json_strings, scan_result
from enforcement.requestparts import json_document
from ingest.llm import deployment_path, names_model_call, operation_of

__all__ = ["CATEGORY", "PromptInspector", "tool_results"]

CATEGORY = "prompt-injection"
_RESULT_ROLES = frozenset({"tool", "function", "ipython"})
_RESULT_ITEMS = frozenset({"function_call_output", "custom_tool_call_output", "mcp_call"})
log = logging.getLogger(__name__)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):  # content parts: {"type": "text", "text": ...}
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def tool_results(document: Any, deployment: bool = False) -> list[str] | None:
    """The tool results a model-API body hands the model, newest first; None when the body is no model call (no
    ``model``, unless the path names a deployment, with ``messages`` or ``input``).

    >>> tool_results({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
    ...     {"role": "user", "content": "hi"}, {"role": "tool", "content": "doc"}, {"role": "tool", "content": "new"}]})
    ['new', 'doc']
    >>> tool_results({"orders": []}) is None
    True
    """
    if not names_model_call(document, deployment):
        return None
    messages, items = document.get("messages"), document.get("input")
    parts: list[str] = []
    for message in reversed(messages) if isinstance(messages, list) else ():
        if isinstance(message, dict) and message.get("role") in _RESULT_ROLES:
            parts += _texts(message.get("content"))
    for item in reversed(items) if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("type") in _RESULT_ITEMS:
            parts += _texts(item.get("output"))
        elif isinstance(item, dict) and item.get("role") in _RESULT_ROLES:
            parts += _texts(item.get("content"))
    return parts


class PromptInspector:
    """Inline prompt-injection scan of the tool results in model-API calls (see the module docstring)."""

    def __init__(self, threshold: int, max_chars: int = 8192, model: Any = None, load: bool = True, model_floor: float = 0.8) -> None:
        self.threshold, self.max_chars, self.model_floor = threshold, max_chars, model_floor
        self._model = model
        #: model calls scanned, found injected, and cut by the data plane's body limit (the shim's metrics)
        self.counts = {"scanned": 0, "injected": 0, "truncated": 0}
        #: set once the classifier has loaded or failed to (at once when there is nothing to load)
        self.loaded = threading.Event()
        if model is None and load:
            threading.Thread(target=self._load, name="prompt-model-load", daemon=True).start()
        else:
            self.loaded.set()

    def _load(self) -> None:
        try:
            from enforcement.promptmodel import load_prompt_model

            self._model = load_prompt_model()
        except Exception:  # noqa: BLE001 - a model that cannot load leaves the rules working
            log.exception("prompt-injection model not loaded: tool results in model calls are scanned with the rules alone")
        finally:
            self.loaded.set()

    def _budgeted(self, results: list[str]) -> list[str]:
        """The results within ``max_chars``, newest first; a long one by its head and its tail (padding hides nothing)."""
        out, left = [], self.max_chars
        for text in results:
            if left <= 0:
                break
            out.append(text if len(text) <= left else text[: left // 2] + "\n" + text[-(left // 2):])
            left -= len(out[-1])
        return out

    def inspect(self, req: RequestView) -> Inspection | None:
        """The finding ``prompt-injection`` when a tool result a model call hands the model reads as injected, else None."""
        if req.method.upper() != "POST" or not req.body or operation_of(req.path) is None:
            return None
        ok, document = json_document(req)
        if ok:
            results = tool_results(document, deployment_path(req.path))
        elif req.body_truncated:  # cut by the data plane: read the strings of what arrived
            self.counts["truncated"] += 1
            results = [" ".join(json_strings(req.body.decode("utf-8", "replace")) or [])]
        else:
            return None
        if not results:
            return None
        self.counts["scanned"] += 1
        for text in self._budgeted(results):
            found = scan_result(text, model=self._model)
            if found.points >= THRESHOLD or (found.model_score or 0.0) >= self.model_floor:
                self.counts["injected"] += 1
                traits = tuple(dict.fromkeys(f"{CATEGORY}:{trait}" for trait, _ in found.findings)) or (f"{CATEGORY}:model",)
                return Inspection((CATEGORY,), traits, self.threshold)
        return None
