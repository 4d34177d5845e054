"""The blueprint's model: the API and agent inventory as a graph with marks, built from inventory records.

``build_blueprint(records, findings)`` turns what the workers published on ``api.inventory.v1`` (endpoint,
agent and MCP-tool records, the newest per key) and, optionally, findings from ``security.findings.v1`` into

* **nodes**: callers (a workload, or an address; the principals behind it counted, never named in full),
  services (in-cluster ``namespace/service`` or an external host: ``api`` in ``shop`` and ``api`` in
  ``billing`` are two services), endpoints (``METHOD /template``),
  agents, MCP servers and their tools, models;
* **edges**: caller -> endpoint (from each endpoint's top callers), agent -> MCP tool, agent -> model;
* **marks** per endpoint and service: ``shadow`` (absent from a declared spec of its service), ``zombie``
  (declared deprecated, or dormant and called again), ``undeclared`` (no spec at all), ``probed`` (in no spec
  and no endpoint of the API: a traversal probe or a path never answered but with "no such endpoint",
  ``EndpointRecord.probed``; it carries none of shadow, undeclared, zombie, adds nothing to the risk, takes none
  of its service's findings and is never high-risk), ``traversal-answered`` (a traversal path that got a success
  answer, ``EndpointRecord.traversal_answered``: no endpoint either, but a traversal that worked, high-risk on
  its own), ``external``,
  ``sensitive`` (the sensitive-data types its answers carried), ``unauthenticated`` (calls without
  credentials), and a **risk** score from 0 to 100 adding those up with the findings that name it. A finding
  names an endpoint by ``service``, ``method`` and ``path_template`` in its ``unmapped`` (the exposure
  findings do), or a whole service by ``service`` alone; its namespace is the one of its OCSF
  ``resources`` naming that service (``kubernetes.service`` or ``api.endpoint``), else ``namespace`` in
  ``unmapped`` (older findings, hand-made ones); one with no namespace counts for that service name in
  every namespace. The workers' verdict findings name actors, counted per caller;
  per tool: ``changed`` (more than one definition seen: a rug-pull candidate).

Pure: no Kafka, no files. ``deploy.blueprint`` reads the topics; ``deploy.blueprinthtml`` draws this.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ingest.schema import AgentRecord, EndpointRecord, Finding, McpToolRecord

__all__ = ["Blueprint", "Caller", "Endpoint", "NOT_ENDPOINTS", "Service", "Tool", "build_blueprint", "caller_of", "risk_of"]

#: what each mark adds to an endpoint's risk (capped at 100 with the findings)
RISK_WEIGHTS: Mapping[str, int] = {"shadow": 25, "zombie": 30, "unauthenticated": 20, "sensitive": 20, "external": 10, "undeclared": 5,
                                   "probed": 0, "traversal-answered": 70}
#: the marks of paths that are no endpoints of the API (left out of the endpoint count and the OpenAPI export)
NOT_ENDPOINTS = ("probed", "traversal-answered")
#: what each finding naming an endpoint adds, by OCSF severity_id (0-6)
FINDING_WEIGHT = (0, 2, 4, 8, 15, 25, 25)
ANONYMOUS_AUTH = {"none", "-", ""}


@dataclass
class Endpoint:
    """One endpoint with its marks."""

    service: str
    method: str
    template: str
    calls: int
    callers: int
    data_types: tuple[str, ...]
    auth_types: tuple[str, ...]
    statuses: dict[str, int]
    spec_status: str
    marks: tuple[str, ...]
    findings: int = 0
    risk: int = 0
    namespace: str | None = None

    @property
    def key(self) -> str:
        """As ``EndpointRecord.key``: ``namespace/service METHOD /template`` (no ``namespace/`` without one)."""
        return EndpointRecord.key_of(self.namespace, self.service, self.method, self.template)


@dataclass
class Service:
    """A destination: its endpoints and the marks any of them carries."""

    name: str
    namespace: str | None
    external: bool
    endpoints: list[Endpoint] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``namespace/service``, or the name alone with no namespace (an external host)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name

    @property
    def marks(self) -> tuple[str, ...]:
        return tuple(sorted({m for e in self.endpoints for m in e.marks}))

    @property
    def risk(self) -> int:
        """The highest risk of its endpoints, probed paths left out."""
        return max((e.risk for e in self.endpoints if "probed" not in e.marks), default=0)

    @property
    def calls(self) -> int:
        return sum(e.calls for e in self.endpoints)


@dataclass
class Caller:
    """A calling workload or address, the principals seen behind it and the endpoints it calls."""

    name: str
    principals: set[str] = field(default_factory=set)
    endpoints: set[str] = field(default_factory=set)
    findings: int = 0


@dataclass
class Tool:
    """An MCP tool of a server."""

    server: str
    name: str
    definition_hash: str | None
    definitions_seen: int
    calls: int
    callers: int

    @property
    def key(self) -> str:
        return f"{self.server}/{self.name}"

    @property
    def marks(self) -> tuple[str, ...]:
        return ("changed",) if self.definitions_seen > 1 else ()


@dataclass
class Blueprint:
    """The graph: services with endpoints, callers, agents, tools and the edges between them."""

    services: dict[str, Service]  # by Service.key
    callers: dict[str, Caller]
    agents: dict[str, AgentRecord]
    tools: dict[str, Tool]
    agent_tools: list[tuple[str, str, int]]
    agent_models: list[tuple[str, str, int]]
    first_seen: float | None
    last_seen: float | None

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for s in self.services.values() for e in s.endpoints]

    def summary(self) -> dict[str, Any]:
        """Counts a page header or a test reads: ``endpoints`` leaves the probed paths and answered traversals out
        (``marks`` counts them); ``high_risk`` (risk 50 or more) counts answered traversals, never probed paths."""
        marks = Counter(m for e in self.endpoints for m in e.marks)
        return {"services": len(self.services), "endpoints": len(self.endpoints) - sum(marks[m] for m in NOT_ENDPOINTS),
                "callers": len(self.callers), "agents": len(self.agents), "tools": len(self.tools), "marks": dict(sorted(marks.items())),
                "high_risk": sum(1 for e in self.endpoints if e.risk >= 50 and "probed" not in e.marks)}


def caller_of(actor: str) -> tuple[str, str | None]:
    """(caller, principal) of an actor key: ``shop/frontend|user-7`` -> (``shop/frontend``, ``user-7``); ``-`` is none."""
    caller, _, principal = actor.partition("|")
    return (caller if caller and caller != "-" else "(no workload)"), (principal if principal and principal != "-" else None)


def _marks(record: EndpointRecord) -> tuple[str, ...]:
    marks = []
    if record.probed:
        marks.append("probed")  # no endpoint of the API: not shadow, undeclared or zombie whatever the specs say
    elif record.traversal_answered:
        marks.append("traversal-answered")  # no endpoint either: a traversal that worked
    elif record.spec_status == "shadow":
        marks.append("shadow")
    elif record.spec_status in ("deprecated", "dormant"):
        marks.append("zombie")
    elif record.spec_status == "undeclared":
        marks.append("undeclared")
    if record.namespace is None:
        marks.append("external")
    if record.data_types:
        marks.append("sensitive")
    if record.auth_types and all(a in ANONYMOUS_AUTH for a in record.auth_types):
        marks.append("unauthenticated")  # every call without credentials (one anonymous probe among many is not)
    return tuple(marks)


def risk_of(marks: Iterable[str], finding_severities: Iterable[int] = ()) -> int:
    """0-100: the marks' weights plus the findings' (by severity), capped.

    >>> risk_of(["shadow", "sensitive"]), risk_of(["zombie"], [4, 4]), risk_of(["shadow", "zombie", "sensitive", "unauthenticated"], [5])
    (45, 60, 100)
    """
    score = sum(RISK_WEIGHTS.get(m, 0) for m in marks) + sum(FINDING_WEIGHT[min(max(s, 0), 6)] for s in finding_severities)
    return min(100, score)


#: what a finding names: (namespace or None, service, method or None, template or None)
_Target = tuple[str | None, str, str | None, str | None]


def _finding_targets(findings: Iterable[Finding]) -> tuple[dict[_Target, list[int]], Counter[str]]:
    """(the endpoint or service a finding names -> severities of the findings naming it, caller -> findings about its
    actors). Method and template are None for a finding about a whole service, the namespace when it names none."""
    named: dict[_Target, list[int]] = defaultdict(list)
    by_caller: Counter[str] = Counter()
    for f in findings:
        u = f.unmapped
        if u.get("actor"):
            by_caller[caller_of(u["actor"])[0]] += 1
        service = u.get("service") or u.get("destination_service")
        if not service:
            continue
        namespace = _namespace_of(f, service) or u.get("namespace") or u.get("destination_namespace") or None
        template, method = u.get("path_template") or u.get("template"), u.get("method")
        named[(namespace, service, method, template) if template and method else (namespace, service, None, None)].append(f.severity_id)
    return named, by_caller


def _namespace_of(finding: Finding, service: str) -> str | None:
    """The namespace the finding's OCSF resources give ``service`` (the ``kubernetes.service`` of that name, or an
    ``api.endpoint`` of it), if any."""
    for resource in finding.resources:
        if resource.namespace and (resource.type == "kubernetes.service" and resource.name == service
                                   or resource.type == "api.endpoint" and resource.name.split(" ", 1)[0] == service):
            return resource.namespace
    return None


def _severities(named: Mapping[_Target, list[int]], namespace: str | None, service: str, method: str | None = None,
                template: str | None = None) -> list[int]:
    """The findings naming this endpoint (or service): in its namespace, and those naming no namespace."""
    namespace = namespace or None
    here = named.get((namespace, service, method, template), [])
    return [*here, *named.get((None, service, method, template), [])] if namespace else list(here)


def _endpoint(record: EndpointRecord, named: Mapping[_Target, list[int]]) -> Endpoint:
    marks = _marks(record)
    severities = _severities(named, record.namespace, record.service, record.method, record.path_template)
    return Endpoint(record.service, record.method, record.path_template, record.calls, record.callers,
                    tuple(sorted(record.data_types)), tuple(sorted(record.auth_types)), dict(record.statuses),
                    record.spec_status, marks, len(severities), risk_of(marks, severities), record.namespace or None)


def build_blueprint(records: Iterable[EndpointRecord | AgentRecord | McpToolRecord], findings: Iterable[Finding] = ()) -> Blueprint:
    """The blueprint of these inventory records (the newest per key wins) and findings."""
    newest: dict[str, EndpointRecord | AgentRecord | McpToolRecord] = {}
    for record in records:
        old = newest.get(record.key)
        if old is None or record.last_seen >= old.last_seen:
            newest[record.key] = record
    named, by_caller = _finding_targets(findings)
    services: dict[str, Service] = {}
    callers: dict[str, Caller] = {}
    agents: dict[str, AgentRecord] = {}
    tools: dict[str, Tool] = {}
    for record in newest.values():
        if isinstance(record, EndpointRecord):
            endpoint = _endpoint(record, named)
            fresh = Service(record.service, record.namespace or None, record.namespace is None)
            service = services.setdefault(fresh.key, fresh)
            service.endpoints.append(endpoint)
            for actor in record.top_callers:
                name, principal = caller_of(actor)
                caller = callers.setdefault(name, Caller(name))
                caller.endpoints.add(endpoint.key)
                if principal:
                    caller.principals.add(principal)
        elif isinstance(record, AgentRecord):
            agents[record.agent] = record
        else:
            tool = Tool(record.server, record.name, record.definition_hash, record.definitions_seen, record.calls, record.callers)
            tools[tool.key] = tool
    for service in services.values():
        service.endpoints.sort(key=lambda e: ("probed" in e.marks, e.template, e.method))  # probes after the endpoints
    for service in services.values():
        extra = _severities(named, service.namespace, service.name)
        for endpoint in service.endpoints:
            if extra and "probed" not in endpoint.marks:  # a finding about the service says nothing of a probe
                endpoint.findings += len(extra)
                own = _severities(named, endpoint.namespace, endpoint.service, endpoint.method, endpoint.template)
                endpoint.risk = risk_of(endpoint.marks, [*own, *extra])
    for name, count in by_caller.items():
        if name in callers:
            callers[name].findings = count
    agent_tools = sorted((a.agent, tool, n) for a in agents.values() for tool, n in a.tools_called.items())
    agent_models = sorted((a.agent, model, n) for a in agents.values() for model, n in a.models.items())
    times = [r.first_seen for r in newest.values()] + [r.last_seen for r in newest.values()]
    return Blueprint(dict(sorted(services.items())), dict(sorted(callers.items())), dict(sorted(agents.items())),
                     dict(sorted(tools.items())), agent_tools, agent_models, min(times, default=None), max(times, default=None))
