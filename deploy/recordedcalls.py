"""Recorded requests as a shim would have seen them: summary archives conformed, cut by event time, and viewed.

The input half of ``kubeward whatif`` (``deploy.counterfactual``): a source (Arrow tables or record batches in
the summary schema, summary rows or ``RequestSummary`` records) becomes conformed tables (every summary column in
schema order, ``ground_truth`` nulled before anything reads it), cut into replay batches of ``batch_s`` event
seconds, and each batch's rows become ``RecordedCall``s: the ``RequestView`` the shim's ``decide`` takes (path =
the raw path when the collector kept it, else the template; an MCP ``tools/call`` carries its tool name in a
minimal JSON-RPC body), the actor, the endpoint, the recorded decision and inline findings. Pure.

The view's caller is the recorded source as the shim resolves it (``ingest.identity``: the workload, else the client
address, with ``external`` as recorded; an empty workload counts as none), which is what the learned allow-list checks
(``AllowList.refusal``; ``caller_of`` names it as ``policy suggest`` did);
its destination namespace stays None when the recording has none (a bare ``Host``: governed by the service in any
namespace, as in the shim), while ``RecordedCall.namespace`` says ``-`` for the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import pyarrow as pa
import pyarrow.compute as pc

from enforcement.decision import RequestView
from ingest import RequestSummary, actor_key, summary_to_row
from ingest.envelope import SUMMARY_SCHEMA

__all__ = ["Endpoint", "RecordedCall", "Source", "conformed_tables", "cut", "recorded_calls"]

Row = Union[dict[str, Any], RequestSummary]
Chunk = Union[pa.Table, pa.RecordBatch, Row]
Source = Union[pa.Table, pa.RecordBatch, Iterable[Chunk]]
Endpoint = tuple[str, str, str]
_ROWS_PER_CHUNK = 1000


# --- the source: Arrow tables in the summary schema, ground truth nulled, cut by event time ---------------------------


def _conformed(table: pa.Table) -> pa.Table:
    """The table with every summary column in schema order (absent ones null) and ``ground_truth`` nulled."""
    n, names = table.num_rows, set(table.column_names)
    columns = []
    for f in SUMMARY_SCHEMA:
        if f.name in names and f.name != "ground_truth":
            column = table[f.name]
            columns.append(column if column.type.equals(f.type) else column.cast(f.type))
        else:
            columns.append(pa.nulls(n, f.type))
    return pa.Table.from_arrays(columns, schema=SUMMARY_SCHEMA)


def _from_rows(rows: list[dict[str, Any]]) -> pa.Table:
    return _conformed(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))


def conformed_tables(source: Source) -> Iterator[pa.Table]:
    """The source as conformed tables: Arrow items as they come, rows gathered by the thousand."""
    items: Iterable[Chunk] = [source] if isinstance(source, (pa.Table, pa.RecordBatch)) else source
    rows: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, (pa.Table, pa.RecordBatch)):
            if rows:
                yield _from_rows(rows)
                rows = []
            yield _conformed(pa.Table.from_batches([item]) if isinstance(item, pa.RecordBatch) else item)
            continue
        rows.append(item if isinstance(item, dict) else summary_to_row(item))
        if len(rows) >= _ROWS_PER_CHUNK:
            yield _from_rows(rows)
            rows = []
    if rows:
        yield _from_rows(rows)


def cut(tables: Iterable[pa.Table], batch_s: float, batch_rows: int) -> Iterator[pa.Table]:
    """Batches holding the rows of ``batch_s`` event seconds from their first row (at most ``batch_rows``), in order."""
    pending: list[pa.Table] = []
    start, n = 0.0, 0
    for table in tables:
        begin = 0
        for i, t in enumerate(table.column("time").to_pylist()):
            if n and (t >= start + batch_s or n >= batch_rows):
                pending.append(table.slice(begin, i - begin))
                yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                pending, begin, n = [], i, 0
            if n == 0:
                start = t
            n += 1
        if begin < table.num_rows:
            pending.append(table.slice(begin))
    if n:
        yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]


# --- one recorded request as the shim sees it ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecordedCall:
    """One recorded request: its id, time, actor, address, the shim's view of it, endpoint, recorded decision and findings."""

    id: str
    time: float
    actor: str
    ip: str | None
    view: RequestView
    endpoint: Endpoint
    namespace: str
    recorded: str | None
    findings: tuple[str, ...]


def _field(column: pa.ChunkedArray, name: str) -> list[Any]:
    return pc.struct_field(column, name).to_pylist()  # type: ignore[no-any-return]


def _tool_body(jsonrpc: str | None, tool: str | None) -> bytes | None:
    """The smallest JSON-RPC body naming the tool a recorded ``tools/call`` called (the shim's ``called_tools`` reads it)."""
    if jsonrpc != "tools/call" or not tool:
        return None
    return json.dumps({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": tool}}).encode()


def recorded_calls(table: pa.Table) -> list[RecordedCall]:
    """The requests of a batch, in recorded order."""
    cols = {name: table[name].to_pylist() for name in ("id", "time", "principal", "auth_type", "method", "path_template", "raw_path",
                                                        "decision", "inline_findings")}
    src, dst, mcp = table["source"], table["destination"], table["mcp"]
    workload, ip, external = _field(src, "workload"), _field(src, "ip"), _field(src, "external")
    service, namespace = _field(dst, "service"), _field(dst, "namespace")
    jsonrpc, tool = _field(mcp, "jsonrpc_method"), _field(mcp, "tool_name")
    out = []
    for i, rid in enumerate(cols["id"]):
        method, template = cols["method"][i], cols["path_template"][i]
        body = _tool_body(jsonrpc[i], tool[i]) if method == "POST" else None
        view = RequestView(method, cols["raw_path"][i] or template, workload[i], cols["principal"][i], ip[i], service[i], namespace[i],
                           request_id=rid, auth_type=cols["auth_type"][i], body=body, external=bool(external[i]))
        out.append(RecordedCall(rid, cols["time"][i], actor_key(workload[i] or ip[i], cols["principal"][i]), ip[i], view,
                         (service[i], method, template), namespace[i] or "-", cols["decision"][i], tuple(cols["inline_findings"][i] or ())))
    return out
