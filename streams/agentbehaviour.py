"""Per-agent behaviour in the stream: the tools an agent uses, the order it uses them in, and where its data goes.

``AgentBehaviour`` is an ``Enricher`` (``streams.batch``). An *agent* is the calling
workload (its address when no workload is known), whatever principal a call
carries: one agent calls its tools with a user's token and the model API with
its own key, and both are the agent. For its first ``learn_s`` seconds and
``learn_calls`` tool calls an agent's tools and call chains (tool A, then tool B)
are learned; afterwards, per row:

* ``agent_new_tool``: 1 for the first call of a tool (``<server>/<tool>``) the
  agent never called;
* ``agent_new_chain``: 1 for the first time the agent calls tool B right after
  tool A when it never did (a hijacked agent strings its tools together anew);
* ``agent_new_behaviour``: the two above added (what the worker folds: one column for both);
* ``agent_hijack_sensitive``: the sensitive values (``RequestSummary.sensitive``) returned
  by a tool the agent first called after a tool, resource or prompt had handed it an
  injected instruction (``mcp.injection`` >= 0.5), within ``novel_s`` of that answer:
  an agent sent after customer records by a document it read. Tools it used before the
  injection, and new tools without one, do not count (agents gain tools legitimately);
* ``agent_tool_burst``: 1 on the tool call that takes the agent's calls in the current
  window (``window_s``) to ``burst_factor`` times its own baseline (an EWMA of past
  windows, empty ones included) and at least ``burst_floor``, once per window, after
  learning and ``burst_history`` windows with calls; at an *off hour* (an hour of the day
  that has had under ``off_hours_share`` of the agent's calls, once it has
  ``off_hours_after_s`` of history and ``off_hours_calls`` calls) the factor is
  ``off_hours_factor`` and the floor a third: a support bot scraping at 3 a.m. Not
  caught: a ramp slow enough for the baseline to follow, a burst split over a window
  boundary; a daily batch at the same hour reads as a burst every day (no hour-of-day
  baseline yet);
* ``agent_lineage_external``: on a call to a model API outside the cluster, the
  sensitive values it sent (``llm.sent_sensitive``) when MCP tools, resources or
  prompts had handed the *agent* sensitive values (decayed, half-life
  ``half_life_s``) of at least ``lineage_floor``: personal data from internal
  tools leaving for an external model. Keyed by the agent, so the model call's
  API key and the tool call's user token do not split the trail.

Only MCP and model-API rows are walked, in event order (a few dictionary probes each; the
other rows cost two Arrow null counts). A tool is named by its server's service and its
name (at most ``MAX_NAME`` characters). State is bounded: ``max_agents`` agents (least
recently seen evicted first, in constant time, counted in ``evicted``), ``max_tools`` tools
and chains each (past that, an unknown tool or chain is taken as known: a full table never
makes every call new). ``export``/``restore`` round-trip it as JSON bytes.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streams.batch import BatchView, Signals

__all__ = ["MAX_NAME", "AgentBehaviour", "AgentBehaviourConfig"]

#: characters of a tool name kept (names come from the client's request)
MAX_NAME = 128

_RESULTS = frozenset({"tools/call", "resources/read", "prompts/get"})


@dataclass(frozen=True)
class AgentBehaviourConfig:
    """Learning and memory bounds (see the module docstring)."""

    learn_s: float = 180.0
    learn_calls: int = 3
    novel_s: float = 600.0
    half_life_s: float = 3600.0
    lineage_floor: float = 0.5
    max_agents: int = 20_000
    max_tools: int = 256
    window_s: float = 60.0
    burst_factor: float = 10.0
    burst_floor: float = 30.0
    burst_alpha: float = 0.2
    off_hours_factor: float = 3.0
    off_hours_share: float = 0.02
    off_hours_after_s: float = 3 * 86_400.0
    off_hours_calls: int = 200
    burst_history: int = 5

    def __post_init__(self) -> None:
        if self.window_s <= 0 or not 0 < self.burst_alpha <= 1:
            raise ValueError(f"AgentBehaviourConfig: window_s must be > 0 and burst_alpha in (0, 1], got {self.window_s!r}, {self.burst_alpha!r}")
        for name in ("learn_s", "novel_s", "half_life_s", "lineage_floor", "burst_factor", "burst_floor", "off_hours_factor",
                     "off_hours_share", "off_hours_after_s", "off_hours_calls", "burst_history"):
            if getattr(self, name) < 0:
                raise ValueError(f"AgentBehaviourConfig.{name} must be >= 0, got {getattr(self, name)!r}")

    @classmethod
    def from_windows(cls, window_s: float, learn_windows: int, **overrides: Any) -> AgentBehaviourConfig:
        """The worker's learning period (``learn_windows`` windows of ``window_s``), other settings as given."""
        return cls(learn_s=float(window_s * learn_windows), window_s=float(window_s), **overrides)


@dataclass
class _Agent:
    first: float
    last: float
    calls: int = 0
    tools: dict[str, float] = field(default_factory=dict)  # tool -> first call (learned ones: first <= learned_at)
    chains: set[str] = field(default_factory=set)
    previous: str | None = None
    received: float = 0.0  # sensitive values from tools, decayed to ``received_t``
    received_t: float = 0.0
    injected_t: float = -math.inf  # the last answer that carried an injected instruction
    window: int | None = None  # the current window of tool calls, its count, the EWMA of past windows' counts
    count: int = 0
    baseline: float = 0.0
    burst_window: int | None = None
    windows: int = 0  # windows with tool calls closed into the baseline (state restored from before bursts: 0)
    hours: list[int] = field(default_factory=lambda: [0] * 24)  # tool calls per hour of the day (UTC)


def _column(table: pa.Table, name: str) -> pa.ChunkedArray | None:
    if name not in table.column_names or table.column(name).null_count == table.num_rows:
        return None
    return table.column(name)


def _field(values: pa.ChunkedArray, name: str) -> list[Any]:
    return list(pc.struct_field(values, name).to_pylist()) if name in {f.name for f in values.type} else [None] * len(values)


class AgentBehaviour:
    """The stateful enricher of per-agent behaviour (see the module docstring)."""

    name = "agentbehaviour"
    signals: tuple[str, ...] = ("agent_new_tool", "agent_new_chain", "agent_new_behaviour", "agent_hijack_sensitive",
                                "agent_tool_burst", "agent_lineage_external")

    def __init__(self, config: AgentBehaviourConfig | None = None) -> None:
        self.config = config or AgentBehaviourConfig()
        self.agents: OrderedDict[str, _Agent] = OrderedDict()  # least recently seen first
        self.evicted = 0

    def enrich(self, batch: BatchView) -> Signals:
        n, table = batch.n, batch.table
        out = {name: np.zeros(n, np.float64) for name in self.signals}
        mcp, llm = _column(table, "mcp"), _column(table, "llm")
        if mcp is None and llm is None:
            return out
        rows = np.zeros(n, bool)
        if mcp is not None:
            rows |= np.asarray(mcp.is_valid(), dtype=bool)
        if llm is not None:
            rows |= np.asarray(llm.is_valid(), dtype=bool)
        index = np.flatnonzero(rows & batch.first)
        if not len(index):
            return out
        index = index[np.argsort(batch.time[index], kind="stable")]
        take = pa.array(index)
        workload = batch.source_workload.take(take).to_pylist()
        ip = batch.source_ip.take(take).to_pylist()
        methods = _field(mcp.take(take), "jsonrpc_method") if mcp is not None else [None] * len(index)
        tools = _field(mcp.take(take), "tool_name") if mcp is not None else [None] * len(index)
        injected = _field(mcp.take(take), "injection") if mcp is not None else [None] * len(index)
        sent = _field(llm.take(take), "sent_sensitive") if llm is not None else [None] * len(index)
        is_llm = np.asarray(llm.is_valid(), dtype=bool)[index] if llm is not None else np.zeros(len(index), bool)
        service = batch.service.take(take).to_pylist()
        for j, row in enumerate(index.tolist()):
            key = workload[j] or ip[j]
            if not key:
                continue
            t = float(batch.time[row])
            if not math.isfinite(t):  # a time a decoder let through must not stop the batch
                continue
            agent = self._agent(key, t)
            if methods[j] in _RESULTS:
                self._receive(agent, t, float(batch.sensitive[row]))
            if methods[j] == "tools/call" and tools[j]:
                self._call(agent, f"{service[j]}/{str(tools[j])[:MAX_NAME]}", t, float(batch.sensitive[row]), row, out)
            if methods[j] in _RESULTS and (injected[j] or 0.0) >= 0.5:
                agent.injected_t = max(agent.injected_t, t)
            elif is_llm[j] and batch.dest_external[row]:
                amount = sent[j]
                if amount and self._decayed(agent, t) >= self.config.lineage_floor:
                    out["agent_lineage_external"][row] = float(amount)
        out["agent_new_behaviour"] = out["agent_new_tool"] + out["agent_new_chain"]
        return out

    def _agent(self, key: str, t: float) -> _Agent:
        agent = self.agents.get(key)
        if agent is None:
            if len(self.agents) >= self.config.max_agents:
                self.agents.popitem(last=False)
                self.evicted += 1
            agent = self.agents[key] = _Agent(first=t, last=t)
        else:
            self.agents.move_to_end(key)
        agent.last = max(agent.last, t)
        return agent

    def _decayed(self, agent: _Agent, t: float) -> float:
        if agent.received <= 0:
            return 0.0
        return agent.received * math.exp2(-max(0.0, t - agent.received_t) / self.config.half_life_s)

    def _receive(self, agent: _Agent, t: float, sensitive: float) -> None:
        if sensitive > 0:  # a late row adds its values without moving the clock back
            now = max(agent.received_t, t)
            agent.received, agent.received_t = self._decayed(agent, now) + sensitive, now

    def _learning(self, agent: _Agent, t: float) -> bool:
        return t - agent.first < self.config.learn_s or agent.calls < self.config.learn_calls

    def _call(self, agent: _Agent, tool: str, t: float, sensitive: float, row: int, out: dict[str, np.ndarray]) -> None:
        learning = self._learning(agent, t)
        if self._burst(agent, t, learning):
            out["agent_tool_burst"][row] = 1.0
        agent.calls += 1
        first = agent.tools.get(tool)
        if first is None and len(agent.tools) < self.config.max_tools:  # a full table takes an unknown tool as known
            first = agent.tools[tool] = t
            if not learning:
                out["agent_new_tool"][row] = 1.0
        if first is not None and first >= agent.injected_t and t - agent.injected_t <= self.config.novel_s:
            out["agent_hijack_sensitive"][row] = sensitive
        if agent.previous is not None:
            chain = f"{agent.previous} -> {tool}"
            if chain not in agent.chains and len(agent.chains) < self.config.max_tools:
                agent.chains.add(chain)
                if not learning:
                    out["agent_new_chain"][row] = 1.0
        agent.previous = tool

    def _burst(self, agent: _Agent, t: float, learning: bool) -> bool:
        """Count a tool call in the agent's window; whether it makes the window a burst (see the module docstring)."""
        c = self.config
        window = int(t // c.window_s)
        if agent.window is None:
            agent.window = window
        elif window > agent.window:  # close the window, and the empty ones since, into the baseline
            gap = window - agent.window
            agent.baseline = (1 - c.burst_alpha) ** (gap - 1) * ((1 - c.burst_alpha) * agent.baseline + c.burst_alpha * agent.count)
            agent.windows += agent.count > 0
            agent.window, agent.count = window, 0
        elif window < agent.window - 1:
            return False  # a row from long before: not this window's
        agent.count += 1
        hour = int(t // 3600) % 24
        seen = sum(agent.hours)
        off = t - agent.first >= c.off_hours_after_s and seen >= c.off_hours_calls and agent.hours[hour] < c.off_hours_share * seen
        agent.hours[hour] += 1
        if learning or agent.windows < c.burst_history or agent.burst_window == agent.window:
            return False
        factor, floor = (c.off_hours_factor, c.burst_floor / 3) if off else (c.burst_factor, c.burst_floor)
        if agent.count >= max(floor, factor * agent.baseline):
            agent.burst_window = agent.window
            return True
        return False

    def export(self) -> bytes:
        """The state as JSON bytes (the changelog value)."""
        return json.dumps({"evicted": self.evicted, "agents": {
            k: {"first": a.first, "last": a.last, "calls": a.calls, "tools": a.tools, "chains": sorted(a.chains), "previous": a.previous,
                "received": a.received, "received_t": a.received_t, "injected_t": None if a.injected_t == -math.inf else a.injected_t,
                "window": a.window, "count": a.count, "baseline": a.baseline, "burst_window": a.burst_window, "hours": a.hours,
                "windows": a.windows}
            for k, a in self.agents.items()}}).encode()

    def restore(self, blob: bytes) -> None:
        """Load state written by ``export`` (replaces the current state)."""
        data = json.loads(blob) if blob else {}
        self.evicted = int(data.get("evicted", 0))
        self.agents = OrderedDict(
            (k, _Agent(first=a["first"], last=a["last"], calls=a["calls"], tools=dict(a["tools"]), chains=set(a["chains"]),
                       previous=a["previous"], received=a["received"], received_t=a["received_t"],
                       injected_t=-math.inf if a.get("injected_t") is None else a["injected_t"], window=a.get("window"),
                       count=a.get("count", 0), baseline=a.get("baseline", 0.0), burst_window=a.get("burst_window"),
                       hours=list(a.get("hours") or [0] * 24), windows=a.get("windows", 0)))
            for k, a in data.get("agents", {}).items())
