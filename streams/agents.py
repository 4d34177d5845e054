"""The agent inventory: which callers act as AI agents, the MCP servers and tools they use, the models they call.

``AgentInventory.update(table)`` folds the summaries that carry ``mcp`` or ``llm``
extras (``ingest.mcp``, ``ingest.llm``); other rows cost one Arrow null count.
It keeps

* per agent (the actor key of the caller: workload or address, and principal):
  the MCP servers it talked to, its ``tools/call`` counts per ``<server>/<tool>``,
  its model calls per model, tokens in and out, and the sensitive values it sent
  to models (by type);
* per MCP tool (``<server>/<tool>``): the definition hash last listed, how many
  distinct definitions were seen, calls and distinct callers;

and ``take_changed()`` gives the ``AgentRecord``s and ``McpToolRecord``s changed
since the last call, for ``api.inventory.v1`` beside the endpoint records. At
most ``max_agents`` agents and ``max_tools`` tools are kept (least recently seen
dropped first, counted in ``evicted``). Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest.schema import AgentRecord, McpToolRecord, actor_key

__all__ = ["AgentInventory"]


@dataclass
class _Agent:
    namespace: str | None
    first: float
    last: float
    servers: set[str] = field(default_factory=set)
    tools: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    tokens_in: int = 0
    tokens_out: int = 0
    sent: int = 0
    sent_types: set[str] = field(default_factory=set)


@dataclass
class _Tool:
    namespace: str | None
    first: float
    last: float
    digest: str | None = None
    digests: set[str] = field(default_factory=set)
    calls: int = 0
    callers: set[str] = field(default_factory=set)


def _agent_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows with MCP or model-API extras, as Python dicts (only those are converted)."""
    present = [name for name in ("mcp", "llm") if name in table.column_names and table.column(name).null_count < table.num_rows]
    if not present:
        return []
    mask = pc.is_valid(table.column(present[0]))
    for name in present[1:]:
        mask = pc.or_(mask, pc.is_valid(table.column(name)))
    columns = [c for c in ("time", "source", "principal", "destination", "mcp", "llm") if c in table.column_names]
    rows: list[dict[str, Any]] = table.select(columns).filter(mask).to_pylist()
    return rows


class AgentInventory:
    """Agents and MCP tools seen in traffic (see the module docstring)."""

    def __init__(self, max_agents: int = 50_000, max_tools: int = 100_000, max_callers: int = 1_000) -> None:
        self.max_agents, self.max_tools, self.max_callers = max_agents, max_tools, max_callers
        self.agents: dict[str, _Agent] = {}
        self.tools: dict[tuple[str, str], _Tool] = {}
        self.evicted = 0
        self._changed_agents: set[str] = set()
        self._changed_tools: set[tuple[str, str]] = set()

    def update(self, table: pa.Table) -> None:
        """Fold a batch of summaries in."""
        for row in _agent_rows(table):
            self._fold(row)
        self._evict()

    def _fold(self, row: dict[str, Any]) -> None:
        t, source, where = float(row["time"]), row.get("source") or {}, row.get("destination") or {}
        who = actor_key(source.get("workload") or source.get("ip"), row.get("principal"))
        agent = self.agents.get(who)
        if agent is None:
            agent = self.agents[who] = _Agent(source.get("namespace"), t, t)
        agent.first, agent.last = min(agent.first, t), max(agent.last, t)
        self._changed_agents.add(who)
        server = where.get("service") or "-"
        mcp, llm = row.get("mcp"), row.get("llm")
        if mcp:
            agent.servers.add(server)
            for listed in mcp.get("tools") or ():
                tool = self._tool(server, where.get("namespace"), listed["name"], t)
                tool.digest = listed["hash"]
                tool.digests.add(listed["hash"])
            if mcp.get("jsonrpc_method") == "tools/call" and mcp.get("tool_name"):
                name = mcp["tool_name"]
                agent.tools[f"{server}/{name}"] += 1
                tool = self._tool(server, where.get("namespace"), name, t)
                tool.calls += 1
                if len(tool.callers) < self.max_callers:
                    tool.callers.add(who)
        if llm:
            agent.models[llm.get("model") or "-"] += 1
            agent.tokens_in += llm.get("input_tokens") or 0
            agent.tokens_out += llm.get("output_tokens") or 0
            agent.sent += llm.get("sent_sensitive") or 0
            agent.sent_types.update(llm.get("sent_types") or ())

    def _tool(self, server: str, namespace: str | None, name: str, t: float) -> _Tool:
        key = (server, name)
        tool = self.tools.get(key)
        if tool is None:
            tool = self.tools[key] = _Tool(namespace, t, t)
        tool.first, tool.last = min(tool.first, t), max(tool.last, t)
        self._changed_tools.add(key)
        return tool

    def _evict(self) -> None:
        if len(self.agents) > self.max_agents:
            for who in sorted(self.agents, key=lambda k: self.agents[k].last)[: len(self.agents) - self.max_agents]:
                del self.agents[who]
                self._changed_agents.discard(who)
                self.evicted += 1
        if len(self.tools) > self.max_tools:
            for key in sorted(self.tools, key=lambda k: self.tools[k].last)[: len(self.tools) - self.max_tools]:
                del self.tools[key]
                self._changed_tools.discard(key)
                self.evicted += 1

    def record_of_agent(self, who: str) -> AgentRecord:
        a = self.agents[who]
        return AgentRecord(agent=who, namespace=a.namespace, mcp_servers=sorted(a.servers), tools_called=dict(a.tools),
                           models=dict(a.models), input_tokens=a.tokens_in, output_tokens=a.tokens_out, sent_sensitive=a.sent,
                           sent_types=sorted(a.sent_types), first_seen=a.first, last_seen=a.last)

    def record_of_tool(self, key: tuple[str, str]) -> McpToolRecord:
        t = self.tools[key]
        return McpToolRecord(server=key[0], namespace=t.namespace, name=key[1], definition_hash=t.digest,
                             definitions_seen=len(t.digests), calls=t.calls, callers=len(t.callers), first_seen=t.first, last_seen=t.last)

    def take_changed(self) -> list[AgentRecord | McpToolRecord]:
        """Records of the agents and tools changed since the last call."""
        agents, self._changed_agents = self._changed_agents, set()
        tools, self._changed_tools = self._changed_tools, set()
        out: list[AgentRecord | McpToolRecord] = [self.record_of_agent(k) for k in sorted(agents)]
        return out + [self.record_of_tool(k) for k in sorted(tools)]
