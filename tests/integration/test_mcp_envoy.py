"""MCP through a real Envoy: an agent speaks streamable HTTP to the official SDK's server behind Envoy (ext_authz with
the request body to a ``kubeward shim`` process that follows the verdict topic of a real broker); a signed verdict on
one tool (a rug-pull, as ``streams.toolpins`` issues it) denies every agent's calls of that tool before they reach the
server, while other tools, listings and sessions keep working."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.waf_bench import start_kubeward_envoy
from deploy.runtime.process import free_port, start_shim, stop_process
from ingest import VERDICTS, Policy, Reason, Subject, Verdict, sign_verdict
from tests.mcpserver import Exchange, serving

pytestmark = pytest.mark.integration

VERDICT_KEY = b"kubeward-dev-verdict-key"


class _Counting:
    """The MCP server with two tools that count their calls."""

    def __init__(self) -> None:
        from mcp.server.mcpserver import MCPServer

        self.calls: dict[str, int] = {"send_invoice": 0, "add": 0}
        self.server = MCPServer("mcp-orders")

        def send_invoice(order_id: int) -> str:
            """Send the invoice of an order to its customer."""
            self.calls["send_invoice"] += 1
            return "sent"

        def add(a: int, b: int) -> int:
            """Add two numbers."""
            self.calls["add"] += 1
            return a + b

        self.server.add_tool(send_invoice)
        self.server.add_tool(add)


@pytest.fixture(scope="module")
def plane(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, _Counting]]:
    work = tmp_path_factory.mktemp("mcp-envoy")
    tools = _Counting()
    shim_port, admin_port = free_port(), free_port()
    settings = {"bootstrap": kafka_bootstrap, "port": shim_port, "admin_port": admin_port, "report": "none", "adapter": "envoy",
                "policy": {"default_mode": "enforce"}}  # fmt: skip
    shim = start_shim(work / "shim.log", settings)
    try:
        with serving(tools.server) as url:
            upstream = int(url.rsplit(":", 1)[1].split("/", 1)[0])
            with start_kubeward_envoy(work / "envoy", shim_port, upstream) as envoy:
                yield f"http://127.0.0.1:{envoy.port}/mcp", tools
    finally:
        stop_process(shim)


def _tool_verdict(service: str, tool: str) -> Verdict:
    now = time.time()
    return sign_verdict(Verdict(id=str(uuid.uuid4()), subject=Subject(kind="tool", value=f"{service}/{tool}"), action="block",
                                mode="enforce", expires_at=now + 3600, issued_at=now, evidence_time=now,
                                reasons=[Reason(detector="mcp-tool-rug-pull", score=1.0, evidence="definition changed")]), VERDICT_KEY)


def _publish(bootstrap: str, verdict: Verdict) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    producer.send(VERDICTS.name, key=verdict.entry_key.encode(), value=verdict.model_dump_json().encode())
    producer.flush()
    producer.close()


def _call(x: Exchange, tool: str, arguments: dict[str, Any]) -> tuple[int, Any]:
    """(HTTP status, parsed call) of one tools/call through the proxy."""
    from ingest.mcp import parse_exchange

    headers, body, answer_headers, answer = x.post(x.message("tools/call", {"name": tool, "arguments": arguments}))
    return x.status, parse_exchange(headers, body, answer_headers, answer)


def test_a_tool_verdict_denies_that_tool_to_every_agent_through_envoy(plane: tuple[str, _Counting], kafka_bootstrap: str) -> None:
    url, tools = plane
    agent = Exchange(url)
    assert agent.initialize() is not None
    listed = agent.call("tools/list")
    assert listed is not None and {t.name for t in listed.tools} == {"send_invoice", "add"}  # SSE answers pass Envoy
    status, called = _call(agent, "send_invoice", {"order_id": 7})
    assert status == 200 and called is not None and called.result_text == "sent" and tools.calls["send_invoice"] == 1

    # the shipped Envoy configuration names the route's destination (x-kubeward-destination: shop/orders): the server
    _publish(kafka_bootstrap, _tool_verdict("shop/orders", "send_invoice"))
    other = Exchange(url)
    other.initialize()
    deadline = time.time() + 20
    while _call(other, "send_invoice", {"order_id": 8})[0] != 403 and time.time() < deadline:
        time.sleep(0.2)
    before = tools.calls["send_invoice"]
    assert _call(other, "send_invoice", {"order_id": 9})[0] == 403, "the tool verdict was not obeyed within 20 s"
    assert _call(agent, "send_invoice", {"order_id": 10})[0] == 403 and tools.calls["send_invoice"] == before
    status, added = _call(agent, "add", {"a": 2, "b": 3})
    assert status == 200 and added is not None and added.result_text == "5" and tools.calls["add"] == 1
    assert agent.call("tools/list") is not None

    # an operator approves the definition: the policy snapshot names it and the tool's verdict is lifted
    from deploy.policy import approve_tool, read_policy

    digest = next(t.hash for t in listed.tools if t.name == "send_invoice")
    approve_tool(kafka_bootstrap, "shop/orders/send_invoice", digest, allow_dev=True)
    assert (read_policy(kafka_bootstrap) or Policy()).approved_tools["shop/orders/send_invoice"] == digest
    deadline = time.time() + 20
    while _call(agent, "send_invoice", {"order_id": 11})[0] != 200 and time.time() < deadline:
        time.sleep(0.2)
    assert _call(agent, "send_invoice", {"order_id": 12})[0] == 200, "the approval did not lift the verdict within 20 s"
