"""The worker's agent signals: injected tool results, and how systematically an actor questions a model.

Contract: vectorised. ``AgentSignals().enrich(batch)`` returns per row

* ``tool_injection`` -- 1 for an MCP answer whose text the collector scored as a prompt
  injection (``mcp.injection`` >= 0.5, ``enforcement.promptscan``);
* ``llm_call`` -- 1 for a call to a model API (chat, completions, responses, embeddings);
* ``llm_new_prompt`` / ``llm_new_shape`` -- 1 for a model call whose prompt (``llm.prompt_hash``)
  / prompt shape (``llm.prompt_shape``, the template: ``ingest.llm.shape_of``) the actor has not
  sent before in the current window (windows of ``window_s`` seconds aligned on the epoch, as the
  worker's tumbling windows are). Summed per window they are the actor's *distinct* prompts and
  shapes, counted exactly (no sketch: the volume a model-extraction rule looks at, hundreds to
  thousands a minute, is where a 256-bit sketch saturates). The only state: a ``KeyTable`` of
  (actor, prompt or shape, window) keys, at most ``budget``, oldest dropped first (a dropped key
  belongs to a past window unless one window holds more than ``budget`` of them); a key's first
  row, whatever the batching, is the new one.

Folded per actor (``models.features``), ``llm_calls``, ``llm_distinct_prompts``,
``llm_distinct_shapes`` and the actor's baseline of calls give **model extraction**: many
inference calls, well above the actor's usual rate, nearly all prompts distinct, few shapes.
Lineage (tool data reaching an external model) is kept per agent workload by ``streams.agentbehaviour``.
Rows without MCP or model-API extras cost one Arrow null count per column.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streams.batch import BatchView, Signals, hash64
from streams.keytable import KeyTable, pair_key

__all__ = ["AgentSignals"]



def _struct_field(table: pa.Table, column: str, name: str) -> pa.ChunkedArray | None:
    if column not in table.column_names or table.column(column).null_count == table.num_rows:
        return None
    return pc.struct_field(table.column(column), name)


def _floats(values: pa.ChunkedArray | pa.Array) -> npt.NDArray[np.float64]:
    return np.asarray(pc.fill_null(pc.cast(values, pa.float64()), 0.0).to_numpy(zero_copy_only=False), dtype=np.float64)


class AgentSignals:
    """Enricher of the agent signals; its only state is the table of prompts and shapes seen per actor and window
    (see the module docstring). ``window_s`` must be the worker's window."""

    name = "agents"
    signals: tuple[str, ...] = ("tool_injection", "llm_call", "llm_new_prompt", "llm_new_shape")

    def __init__(self, window_s: int = 60, budget: int = 1 << 17) -> None:
        if window_s < 1:
            raise ValueError(f"AgentSignals window_s={window_s!r} must be >= 1")
        self.window_s = window_s
        #: (actor, prompt or shape, window) keys seen; ``seen.evicted`` counts those dropped
        self.seen = KeyTable(budget, {})

    def enrich(self, batch: BatchView) -> Signals:
        n, table = batch.n, batch.table
        out = {name: np.zeros(n, np.float64) for name in self.signals}
        injection = _struct_field(table, "mcp", "injection")
        if injection is not None:
            out["tool_injection"] = (_floats(injection) >= 0.5).astype(np.float64)
        if "llm" in table.column_names and table.column("llm").null_count < table.num_rows:
            out["llm_call"] = _floats(pc.is_valid(table.column("llm")))
            self._novelty(batch, out)
        return out

    def _novelty(self, batch: BatchView, out: Signals) -> None:
        """``llm_new_prompt`` and ``llm_new_shape``: first rows of (actor, hash, window) keys the table did not hold."""
        actor = hash64(batch.actor_keys)[batch.actor_of_row]
        window = (batch.time // self.window_s).astype(np.uint64)
        for name, field, tag in (("llm_new_prompt", "prompt_hash", 1), ("llm_new_shape", "prompt_shape", 2)):
            values = _struct_field(batch.table, "llm", field)
            if values is None:
                continue
            hashes = hash64(values.combine_chunks())
            rows = np.flatnonzero(hashes != 0)
            if not len(rows):
                continue
            keys = pair_key(pair_key(actor[rows], hashes[rows], tag), window[rows])
            _, new, _ = self.seen.upsert(keys, batch.time[rows])
            out[name][rows[new]] = 1.0
        self.seen.evict_oldest()

    def export(self) -> bytes:
        """The keys of the newest two windows as ``.npz`` bytes (older ones can no longer make a row new)."""
        arrays = self.seen.arrays()
        if len(arrays["keys"]):
            recent = arrays["last_seen"] >= (arrays["last_seen"].max() // self.window_s - 1) * self.window_s
            arrays = {k: v[recent] for k, v in arrays.items()}
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load state written by ``export`` (an empty blob, from before the table existed, loads nothing)."""
        if not blob:
            return
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            self.seen.load({k: data[k] for k in data.files})
