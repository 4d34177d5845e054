"""Per-agent behaviour (streams/agentbehaviour.py): tools and chains new to an agent after learning, personal data read
through a tool it never used, and lineage kept per agent when its calls carry different principals."""

from __future__ import annotations

from typing import Any

import pytest

from ingest.envelope import decode_messages, encode_rows, summary_row
from streams.agentbehaviour import AgentBehaviour, AgentBehaviourConfig
from streams.batch import BatchView

T0 = 1_800_000_000.0


def _tool(k: int, t: float, agent: str, tool: str, sensitive: int = 0, principal: str | None = None, injected: float | None = None,
          namespace: str | None = "agents") -> dict[str, Any]:
    return summary_row(id=f"t{k}", time=T0 + t, source={"workload": agent, "namespace": "agents"}, principal=principal,
                       method="POST", destination={"service": "mcp-shop", "namespace": namespace}, path_template="/mcp", status=200,
                       sensitive={"email": sensitive} if sensitive else {},
                       mcp={"jsonrpc_method": "tools/call", "tool_name": tool, "injection": injected})


def _model(k: int, t: float, agent: str, sent: int, external: bool = True, principal: str | None = "bearer:key") -> dict[str, Any]:
    dest = {"service": "api.model.example", "host": "api.model.example", "external": True} if external else {"service": "llm", "namespace": "ai"}
    return summary_row(id=f"m{k}", time=T0 + t, source={"workload": agent, "namespace": "agents"}, principal=principal, method="POST",
                       destination=dest, path_template="/v1/chat/completions", status=200,
                       llm={"operation": "chat", "model": "m", "sent_sensitive": sent})


def _run(enricher: AgentBehaviour, rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    table, errors = decode_messages([encode_rows(rows)], 1 << 30)
    assert table is not None and not errors
    return {k: v.tolist() for k, v in enricher.enrich(BatchView.decode(table)).items()}


CONFIG = AgentBehaviourConfig(learn_s=30.0, learn_calls=3, novel_s=60.0)


def test_after_learning_a_new_tool_and_a_new_chain_are_marked_once() -> None:
    rows = [_tool(0, 0, "agents/bot", "search"), _tool(1, 5, "agents/bot", "get_order"), _tool(2, 10, "agents/bot", "search"),
            _tool(3, 20, "agents/bot", "get_order"),  # learning: nothing is new
            _tool(4, 40, "agents/bot", "search"),  # known tool, known chain (get_order -> search)
            _tool(5, 41, "agents/bot", "customer_profile", sensitive=4),  # new tool, new chain, personal data: no injection
            _tool(6, 42, "agents/bot", "customer_profile", sensitive=3),  # chain profile -> profile new
            _tool(7, 43, "agents/bot", "customer_profile", sensitive=3, namespace=None)]  # the server without its namespace
    got = _run(AgentBehaviour(CONFIG), rows)
    assert got["agent_new_tool"] == [0, 0, 0, 0, 0, 1, 0, 0]
    assert got["agent_new_chain"] == [0, 0, 0, 0, 0, 1, 1, 0]
    assert got["agent_new_behaviour"] == [0, 0, 0, 0, 0, 2, 1, 0]
    assert not any(got["agent_hijack_sensitive"])  # a benign agent reading personal data through a new tool is no hijack


def test_personal_data_read_through_a_tool_first_called_after_an_injection_is_a_hijack() -> None:
    rows = [_tool(0, 0, "agents/bot", "customer_profile", sensitive=2),  # used before: never counts
            _tool(1, 10, "agents/bot", "search", injected=0.9),  # the injected answer
            _tool(2, 11, "agents/bot", "customer_profile", sensitive=2),  # a known tool
            _tool(3, 12, "agents/bot", "export_customers", sensitive=5, principal="jwt:u1"),  # first called since: hijack
            _tool(4, 13, "agents/bot", "export_customers", sensitive=1, principal="jwt:u2"),
            _tool(5, 700, "agents/bot", "export_customers", sensitive=5)]  # ten minutes on
    assert _run(AgentBehaviour(CONFIG), rows)["agent_hijack_sensitive"] == [0, 0, 0, 5, 1, 0]


def test_lineage_follows_the_agent_across_principals_and_only_to_external_models() -> None:
    rows = [_tool(0, 0, "agents/crm", "customer_profile", sensitive=3, principal="jwt:user-1"),  # read for a user
            _model(1, 5, "agents/crm", sent=2),  # sent with the model key: another actor, the same agent
            _model(2, 6, "agents/crm", sent=2, external=False),  # in-cluster model: not lineage
            _model(3, 7, "agents/other", sent=2),  # an agent no tool gave personal data
            _model(4, 8, "agents/crm", sent=0)]  # nothing sensitive sent
    got = _run(AgentBehaviour(CONFIG), rows)
    assert got["agent_lineage_external"] == [0, 2, 0, 0, 0]


def test_what_a_tool_handed_over_decays() -> None:
    config = AgentBehaviourConfig(learn_s=0, learn_calls=0, half_life_s=60.0)
    rows = [_tool(0, 0, "agents/crm", "customer_profile", sensitive=2), _model(1, 30, "agents/crm", sent=1),
            _model(2, 600, "agents/crm", sent=1)]  # 2 * 2^-10 long after: below the floor
    assert _run(AgentBehaviour(config), rows)["agent_lineage_external"] == [0, 1, 0]
    one = [_tool(0, 0, "agents/crm", "get_secret", sensitive=1), _model(1, 2, "agents/crm", sent=1)]  # one value, sent 2 s on
    assert _run(AgentBehaviour(), one)["agent_lineage_external"] == [0, 1]
    late = AgentBehaviour()
    _run(late, [_tool(0, 1000, "agents/crm", "customer_profile", sensitive=4)])
    _run(late, [_tool(1, 0, "agents/crm", "search")])  # a row from long before arrives late: the clock stays
    assert _run(late, [_model(2, 1030, "agents/crm", sent=2)])["agent_lineage_external"] == [2]


def test_batching_and_a_restore_give_the_same_signals() -> None:
    rows = [_tool(k, t, "agents/bot", tool, s, injected=j) for k, (t, tool, s, j) in enumerate(
        [(0, "a", 0, None), (5, "b", 0, None), (10, "a", 0, 0.8), (40, "c", 2, None), (41, "a", 0, None), (42, "c", 1, None)])]
    rows.append(_model(9, 43, "agents/bot", sent=1))
    whole = _run(AgentBehaviour(CONFIG), rows)
    one = AgentBehaviour(CONFIG)
    singly = [_run(one, [r]) for r in rows]
    assert {k: [s[k][0] for s in singly] for k in whole} == whole
    first, second = AgentBehaviour(CONFIG), AgentBehaviour(CONFIG)
    head = _run(first, rows[:4])
    second.restore(first.export())
    tail = _run(second, rows[4:])
    assert {k: head[k] + tail[k] for k in whole} == whole
    AgentBehaviour().restore(b"")


def test_rows_without_agent_extras_cost_nothing_and_memory_is_bounded() -> None:
    plain = summary_row(id="x", time=T0, source={"ip": "10.0.0.1"}, destination={"service": "orders"}, method="GET", path_template="/orders")
    assert all(not any(v) for v in _run(AgentBehaviour(), [plain]).values())
    enricher = AgentBehaviour(AgentBehaviourConfig(max_agents=10, max_tools=4, learn_s=0, learn_calls=0))
    _run(enricher, [_tool(k, k, f"agents/a{k}", f"t{k % 7}") for k in range(50)])
    got = _run(enricher, [_tool(100 + k, 100 + k, "agents/a49", f"tool{k}" + "x" * 500) for k in range(20)])
    assert len(enricher.agents) == 10 and enricher.evicted == 40
    assert len(enricher.agents["agents/a49"].tools) <= 4 and all(len(t) < 160 for t in enricher.agents["agents/a49"].tools)
    assert sum(got["agent_new_tool"]) == 3  # a full table takes unknown tools as known: not every call is new
    again = _run(enricher, [_tool(200 + k, 200 + k, "agents/a49", f"tool{k}" + "x" * 500) for k in range(20)])
    assert not any(again["agent_new_tool"]) and not any(again["agent_new_chain"])


def test_a_bad_config_names_the_key() -> None:
    with pytest.raises(ValueError, match="novel_s"):
        AgentBehaviourConfig(novel_s=-1)


def _at(day: int, hour: int) -> float:
    """Seconds after T0 of ``hour`` o'clock (UTC) on day ``day`` (T0 itself is 08:00 UTC)."""
    return day * 86_400 + hour * 3600 - T0 % 86_400


BURSTS = AgentBehaviourConfig(learn_s=600.0, learn_calls=3, window_s=60.0, burst_factor=10.0, burst_floor=30.0)


def _steady(agent: str, start: float, hours: float, per_window: int = 2, every: float = 60.0, hour_range: range = range(24)) -> list[dict[str, Any]]:
    """An agent's ordinary tool calls: ``per_window`` calls a window for ``hours`` hours, only at ``hour_range`` hours of the day."""
    rows, t, k = [], start, 0
    while t < start + hours * 3600:
        if int((T0 + t) // 3600) % 24 in hour_range:
            rows += [_tool(k + i, t + i, agent, "get_order") for i in range(per_window)]
            k += per_window
        t += every
    return rows


def test_a_burst_of_tool_calls_is_marked_once_per_window_and_only_well_above_the_agents_own_rate() -> None:
    enricher = AgentBehaviour(BURSTS)
    _run(enricher, _steady("agents/bot", 0.0, 2.0))  # two calls a minute for two hours
    ordinary = _run(enricher, [_tool(i, 7200 + i, "agents/bot", "get_order") for i in range(12)])  # busy, not a burst
    assert not any(ordinary["agent_tool_burst"])
    burst = _run(enricher, [_tool(i, 7260 + i * 0.5, "agents/bot", "get_order") for i in range(60)])
    # the busy minute lifted the baseline to 0.8 * 2 + 0.2 * 12 = 4: the 40th call of the next window is ten times that
    assert sum(burst["agent_tool_burst"]) == 1 and burst["agent_tool_burst"].index(1.0) == 39
    busy = AgentBehaviour(BURSTS)  # an agent that always runs 40 a minute: 60 is no burst for it
    _run(busy, _steady("agents/indexer", 0.0, 2.0, per_window=40))
    assert not any(_run(busy, [_tool(i, 7260 + i * 0.5, "agents/indexer", "get_order") for i in range(60)])["agent_tool_burst"])


def test_at_an_hour_the_agent_is_quiet_a_smaller_burst_counts() -> None:
    day = range(8, 20)  # an office-hours agent (UTC), almost four days of history
    enricher = AgentBehaviour(BURSTS)
    _run(enricher, _steady("agents/bot", 0.0, 90.0, hour_range=day))
    night = _at(4, 3)  # 3 a.m. on the fifth day
    got = _run(enricher, [_tool(i, night + i, "agents/bot", "customer_profile") for i in range(12)])
    assert sum(got["agent_tool_burst"]) == 1 and got["agent_tool_burst"].index(1.0) == 9  # a third of the floor
    noon = AgentBehaviour(BURSTS)
    _run(noon, _steady("agents/bot", 0.0, 90.0, hour_range=day))
    assert not any(_run(noon, [_tool(i, _at(4, 12) + i, "agents/bot", "customer_profile") for i in range(12)])["agent_tool_burst"])
    young = AgentBehaviour(BURSTS)  # under three days of history: no hour is off yet
    _run(young, _steady("agents/bot", 0.0, 30.0, hour_range=day))
    assert not any(_run(young, [_tool(i, _at(1, 22) + i, "agents/bot", "x") for i in range(12)])["agent_tool_burst"])


def test_odd_times_and_state_from_before_bursts_raise_nothing() -> None:
    enricher = AgentBehaviour(BURSTS)
    rows = [_tool(0, 0, "agents/bot", "a"), _tool(1, 1, "agents/bot", "a")]
    rows[1]["time"] = float("nan")
    assert _run(enricher, rows)["agent_tool_burst"] == [0, 0]  # a NaN time is skipped, the batch goes on
    old = AgentBehaviour(BURSTS)
    _run(old, _steady("agents/bot", 0.0, 2.0, per_window=40))
    blob = __import__("json").loads(old.export())
    for agent in blob["agents"].values():  # a changelog written before the burst fields existed
        for key in ("window", "count", "baseline", "burst_window", "hours", "windows"):
            agent.pop(key)
    restored = AgentBehaviour(BURSTS)
    restored.restore(__import__("json").dumps(blob).encode())
    assert not any(_run(restored, [_tool(i, 7260 + i * 0.5, "agents/bot", "get_order") for i in range(60)])["agent_tool_burst"])
