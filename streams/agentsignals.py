"""The worker's agent signals: sensitive data an agent received from tools, and sensitive data it sent to models.

Contract: pure, stateless, vectorised. ``AgentSignals().enrich(batch)`` returns per row

* ``tool_sensitive`` -- the sensitive values (``RequestSummary.sensitive``, all types) of an
  MCP ``tools/call``, ``resources/read`` or ``prompts/get`` answer: what a tool handed the agent;
* ``llm_sensitive_external`` -- the sensitive values the call sent to a model API
  (``llm.sent_sensitive``) when the model's destination is outside the cluster;
* ``llm_external`` -- 1 for a call to an external model API;
* ``tool_injection`` -- 1 for an MCP answer whose text the collector scored as a prompt
  injection (``mcp.injection`` >= 0.5, ``enforcement.promptscan``).

Folded per actor (``models.features``: ``tool_sensitive_recent`` decayed, half-life 1 h,
``llm_sensitive_external`` per window), they give **lineage**: personal data a tool
returned to an agent, followed by the same agent sending personal data to an external
model (``models/rules/agents.yaml``). The verdict is scoped to the model endpoint: the
agent keeps its tools, loses that egress. Rows without MCP or model-API extras cost one
Arrow null count per column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streams.batch import BatchView, Signals

__all__ = ["AgentSignals"]

_RESULTS = pa.array(["tools/call", "resources/read", "prompts/get"])


def _struct_field(table: pa.Table, column: str, name: str) -> pa.ChunkedArray | None:
    if column not in table.column_names or table.column(column).null_count == table.num_rows:
        return None
    return pc.struct_field(table.column(column), name)


def _floats(values: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float64]:
    return np.asarray(pc.fill_null(pc.cast(values, pa.float64()), 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)


class AgentSignals:
    """Stateless enricher of the agent signals (see the module docstring)."""

    name = "agents"
    signals: tuple[str, ...] = ("tool_sensitive", "llm_sensitive_external", "llm_external", "tool_injection")

    def enrich(self, batch: BatchView) -> Signals:
        n, table = batch.n, batch.table
        out = {name: np.zeros(n, np.float64) for name in self.signals}
        method = _struct_field(table, "mcp", "jsonrpc_method")
        if method is not None:
            result = _floats(pc.is_in(method, value_set=_RESULTS))
            out["tool_sensitive"] = result * batch.sensitive
            injection = _struct_field(table, "mcp", "injection")
            if injection is not None:
                out["tool_injection"] = (_floats(injection) >= 0.5).astype(np.float64)
        sent = _struct_field(table, "llm", "sent_sensitive")
        if sent is not None:
            is_llm = _floats(pc.is_valid(table.column("llm")))
            external = _floats(pc.struct_field(table.column("destination"), "external"))
            out["llm_external"] = is_llm * external
            out["llm_sensitive_external"] = _floats(sent) * external
        return out

    def export(self) -> bytes:
        return b""

    def restore(self, blob: bytes) -> None:
        return None
