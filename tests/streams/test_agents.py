"""The agent inventory (streams/agents.py): agents, their MCP servers, tools and models, and MCP tools, from summaries."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ingest.envelope import decode_messages, encode_rows, summary_row
from streams.agents import AgentInventory
from streams.pipeline import Pipeline
from streams.settings import WorkerSettings

T0 = 1_800_000_000.0


def row(t: float, workload: str, service: str, mcp: dict[str, Any] | None = None, llm: dict[str, Any] | None = None,
        principal: str | None = None) -> dict[str, Any]:
    return summary_row(id=f"r{t}{workload}{service}", time=T0 + t, source={"workload": workload, "namespace": workload.split("/")[0]},
                       principal=principal, destination={"service": service, "namespace": "ai"}, method="POST", path_template="/mcp",
                       status=200, mcp=mcp, llm=llm)


def table(*rows: dict[str, Any]) -> pa.Table:
    got, errors = decode_messages([encode_rows(list(rows))], 1 << 30)
    assert got is not None and not errors
    return got


def test_agents_tools_and_models_are_folded_from_mcp_and_llm_extras() -> None:
    inv = AgentInventory()
    listed = {"jsonrpc_method": "tools/list", "tools": [{"name": "get_order", "hash": "h1"}, {"name": "refund", "hash": "h2"}]}
    inv.update(table(
        row(0, "ai/support-agent", "mcp-orders", mcp=listed),
        row(1, "ai/support-agent", "mcp-orders", mcp={"jsonrpc_method": "tools/call", "tool_name": "get_order"}),
        row(2, "ai/support-agent", "mcp-orders", mcp={"jsonrpc_method": "tools/call", "tool_name": "get_order"}),
        row(3, "ai/support-agent", "api.openai.com", llm={"operation": "chat", "model": "gpt-x", "input_tokens": 30, "output_tokens": 5,
                                                          "sent_sensitive": 2, "sent_types": ["email", "ssn"]}),
        row(4, "ai/triage", "mcp-orders", mcp={"jsonrpc_method": "tools/call", "tool_name": "refund"}),
        row(5, "shop/web", "orders"),  # no extras: no agent
        row(6, "ai/support-agent", "mcp-orders", mcp={"jsonrpc_method": "tools/list", "tools": [{"name": "get_order", "hash": "h1b"}]}),
    ))
    records = {r.key: r for r in inv.take_changed()}
    assert set(records) == {"agent ai/support-agent|-", "agent ai/triage|-", "mcp-tool mcp-orders/get_order", "mcp-tool mcp-orders/refund"}
    agent = records["agent ai/support-agent|-"]
    assert agent.mcp_servers == ["mcp-orders"] and agent.tools_called == {"mcp-orders/get_order": 2}
    assert agent.models == {"gpt-x": 1} and (agent.input_tokens, agent.output_tokens) == (30, 5)
    assert (agent.sent_sensitive, agent.sent_types, agent.first_seen, agent.last_seen) == (2, ["email", "ssn"], T0, T0 + 6)
    tool = records["mcp-tool mcp-orders/get_order"]
    assert (tool.definition_hash, tool.definitions_seen, tool.calls, tool.callers) == ("h1b", 2, 2, 1)
    assert records["mcp-tool mcp-orders/refund"].callers == 1 and inv.take_changed() == []


def test_memory_is_bounded_oldest_first() -> None:
    inv = AgentInventory(max_agents=3)
    inv.update(table(*[row(i, f"ai/agent-{i}", "mcp-x", mcp={"jsonrpc_method": "initialize"}) for i in range(5)]))
    assert sorted(inv.agents) == ["ai/agent-2|-", "ai/agent-3|-", "ai/agent-4|-"] and inv.evicted == 2


def test_the_pipeline_publishes_agent_records_beside_endpoint_records() -> None:
    pipeline = Pipeline(WorkerSettings(verdict_key="agents-test-key", inventory_interval_s=1.0), "l7.summaries.v1")
    rows = [row(0, "ai/support-agent", "mcp-orders", mcp={"jsonrpc_method": "tools/call", "tool_name": "get_order"})]
    out = pipeline.handle(0, encode_rows(rows), 0, T0 + 5)
    kinds = {r.kind for r in out.inventory}
    assert kinds == {"endpoint", "agent", "mcp_tool"}, out.inventory
