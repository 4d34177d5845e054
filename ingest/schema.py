"""The wire contract of every Kubeward topic, defined once.

``RequestSummary`` (one L7 call) travels on ``l7.summaries.v1``, batched into
Arrow IPC envelopes (``ingest.envelope``) or, for small producers, as one JSON
object per message. ``Verdict`` (what a shim must do about a subject) travels on
``enforcement.verdicts.v1``; ``Finding`` (an OCSF 1.5 Detection Finding, class
2004, defined in ``ingest.finding``) on ``security.findings.v1``; ``Policy`` on ``enforcement.policy.v1``.

Records are frozen pydantic models with a ``schema_version``; readers ignore
unknown fields, and a retired field name is never reused. Field names follow
OpenTelemetry's HTTP conventions where one exists (``method``,
``path_template``, ``status``). Values never carry secrets: principals are ids,
object ids are keyed hashes by default, sensitive data is counted, not copied.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ingest.finding import (
    Finding,
    FindingActor,
    FindingApi,
    FindingAttack,
    FindingEndpoint,
    FindingEntity,
    FindingEvidence,
    FindingInfo,
    FindingMetadata,
    FindingObservable,
    FindingResource,
    FindingTag,
)
from ingest.record import Record

__all__ = [
    "DeadLetter",
    "Destination",
    "AgentRecord",
    "EndpointRecord",
    "Finding",
    "FindingActor",
    "FindingApi",
    "FindingAttack",
    "FindingEndpoint",
    "FindingEntity",
    "FindingEvidence",
    "FindingInfo",
    "FindingMetadata",
    "FindingObservable",
    "FindingResource",
    "FindingTag",
    "GroundTruth",
    "LlmExtras",
    "McpExtras",
    "McpTool",
    "McpToolRecord",
    "Policy",
    "Reason",
    "RequestSummary",
    "Scope",
    "Source",
    "Subject",
    "Verdict",
    "actor_key",
]

SCHEMA_VERSION = 1

SubjectKind = Literal["actor", "workload", "principal", "ip", "endpoint", "tool"]
Action = Literal["block", "throttle", "redact", "quarantine"]
#: what a verdict record can say: an action, or ``lift`` (the verdicts of its entry key issued up to then no longer stand)
VerdictAction = Literal["block", "throttle", "redact", "quarantine", "lift"]
Mode = Literal["observe", "enforce"]


_Record = Record


class Source(_Record):
    """Who made the call: workload identity (``namespace/name``) and network origin."""

    workload: str | None = None
    namespace: str | None = None
    pod: str | None = None
    ip: str | None = None
    external: bool = False


class Destination(_Record):
    """Where the call went: a service in the cluster or an external host."""

    service: str
    namespace: str | None = None
    host: str | None = None
    port: int | None = None
    external: bool = False


class McpTool(_Record):
    """One tool a ``tools/list`` answer defined: its name, the hash of its definition (``ingest.mcp``) and, where the
    collector scans definitions (``enforcement.toolscan``), whether it reads as poisoned, its score and the traits
    found (hidden instructions, secrets, exfiltration, shadowing, obfuscation...)."""

    name: str
    hash: str
    poisoned: bool | None = None
    score: float | None = None
    traits: list[str] = Field(default_factory=list)


class McpExtras(_Record):
    """Model Context Protocol details of a call, derived by ``ingest.mcp`` from its JSON-RPC bodies.

    ``tool_name`` is the tool a ``tools/call`` called (``tool_hash`` its pinned definition hash where the reporter
    knows it); ``session`` a keyed hash of the ``Mcp-Session-Id``; ``server`` the name the server gave in its
    ``initialize`` answer; ``tools`` what a ``tools/list`` answer defined; ``target`` the prompt asked for or a keyed
    hash of the resource read; ``error_code`` a JSON-RPC error, ``tool_error`` a tool result's ``isError``.
    """

    jsonrpc_method: str | None = None
    tool_name: str | None = None
    tool_hash: str | None = None
    session: str | None = None
    server: str | None = None
    tools: list[McpTool] = Field(default_factory=list)
    target: str | None = None
    error_code: int | None = None
    tool_error: bool | None = None
    injection: float | None = Field(default=None, description="prompt-injection score of the text a tool, resource or prompt returned (enforcement.promptscan, where the collector scans)")
    injection_traits: list[str] = Field(default_factory=list)


class LlmExtras(_Record):
    """Calls to a language model API (OpenAI-compatible), derived by ``ingest.llm``: the operation (``chat``,
    ``completions``, ``embeddings``, ``responses``), model, token counts, how many tools the request offered and the
    tool calls the model asked for, and the sensitive values found in the text sent to the model (``sent_sensitive``
    values of the types in ``sent_types``: what leaves for a model, never the values). ``prompt_hash`` is a keyed hash
    of the prompt asked (the last user message or the input, normalised) and ``prompt_shape`` a keyed hash of its
    template (numbers, quoted strings and long tokens masked, first words kept): many prompts of few shapes is
    systematic probing (``ingest.llm``; the text is never kept)."""

    model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    operation: str | None = None
    tools_offered: int | None = None
    tool_calls: list[str] = Field(default_factory=list)
    sent_sensitive: int | None = None
    sent_types: list[str] = Field(default_factory=list)
    prompt_hash: str | None = None
    prompt_shape: str | None = None


class GroundTruth(_Record):
    """Simulator labels. Evaluation reads them; no detector does."""

    scenario: str
    attack_id: str | None = None
    malicious: bool = False


class RequestSummary(_Record):
    """One L7 call as seen by a shim, a collector or the simulator.

    ``object_ids`` are keyed hashes of the object identifiers the call touched
    (path, query and response body); ``object_ids_created`` those a creating call
    (POST) got back; ``sensitive`` counts sensitive values in the response by
    type (``email``, ``ssn``...), never the values themselves. ``status`` is
    ``None`` when the reporter did not see a response (a shim deciding before
    the upstream). ``redacted`` counts the values inline redaction masked in
    this call's bodies, by type. ``response_properties`` are the property paths
    of the response body (``user.email``, ``items[].price``: names, never
    values; at most a few dozen), so an endpoint that starts returning a new
    property (a password hash, a token) can be noticed. ``outcome`` is what the call meant for the caller where the
    status alone does not say it: ``auth_failure`` for a login answered 200 with
    an error body, by a per-endpoint outcome rule. ``id`` is the data plane's
    request id when it has one, so that two reporters' records of one call can be
    counted once.
    """

    schema_version: int = SCHEMA_VERSION
    id: str
    time: float = Field(description="start of the call, Unix seconds")
    duration_ms: float | None = None
    reporter: str = "simulator"
    source: Source
    principal: str | None = None
    auth_type: str | None = None
    destination: Destination
    protocol: str = "http"
    method: str
    path_template: str
    raw_path: str | None = None
    status: int | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    object_ids: list[str] = Field(default_factory=list)
    object_ids_created: list[str] = Field(default_factory=list)
    object_blocks: list[str] = Field(default_factory=list, description="keyed hashes of (template, numeric id // 16) of numeric ids touched: dense or sequential enumeration shows, the ids do not")
    sensitive: dict[str, int] = Field(default_factory=dict)
    redacted: dict[str, int] = Field(default_factory=dict)
    response_properties: list[str] = Field(default_factory=list)
    outcome: str | None = None
    credential_subject: str | None = Field(default=None, description="keyed hash of the account a login attempt named (user name or e-mail in its body), never the value")
    inline_findings: list[str] = Field(default_factory=list)
    decision: str | None = None
    mcp: McpExtras | None = None
    llm: LlmExtras | None = None
    trace_id: str | None = None
    ground_truth: GroundTruth | None = None

    @property
    def actor(self) -> str:
        """The Kafka key: source identity and principal, so one actor's state lives in one partition."""
        return actor_key(self.source.workload or self.source.ip, self.principal)


def actor_key(source: str | None, principal: str | None) -> str:
    """Join a source identity (workload or ip) and a principal into the actor key."""
    return f"{source or '-'}|{principal or '-'}"


class Subject(_Record):
    """What a verdict applies to: an actor, workload, principal, ip, endpoint or tool."""

    kind: SubjectKind
    value: str

    @property
    def cache_key(self) -> str:
        """The key the shim's verdict cache and the compacted topic use."""
        return f"{self.kind}:{self.value}"


class Scope(_Record):
    """Narrows a verdict to one destination service, path template or tool."""

    service: str | None = None
    path_template: str | None = None
    tool: str | None = None


class Reason(_Record):
    """Why a verdict or finding exists: detector id, score in [0, 1], evidence in words."""

    detector: str
    score: float = Field(ge=0.0, le=1.0)
    evidence: str


class Verdict(_Record):
    """An instruction to every shim: what to do about a subject, until when, and why.

    ``evidence_time`` is the time of the newest summary that led to the
    verdict, so detection-to-enforcement latency can be measured at the shim.
    ``signature`` is an HMAC over every other field, ``key_id`` (the key it was
    signed with) included (``ingest.signing``). A verdict with action ``lift``
    ends the verdicts of its entry key issued up to its ``issued_at``: lifting
    is a signed record like any other, never a bare tombstone; it stands (and
    keeps a replayed older verdict out) until its ``expires_at``.
    """

    schema_version: int = SCHEMA_VERSION
    id: str
    subject: Subject
    scope: Scope | None = None
    action: VerdictAction
    rate_per_s: float | None = None
    burst: int | None = None
    mode: Mode = "observe"
    expires_at: float
    reasons: list[Reason] = Field(default_factory=list)
    finding_ids: list[str] = Field(default_factory=list)
    policy_version: str = "0"
    issued_at: float
    evidence_time: float
    key_id: str = ""
    signature: str = ""

    @property
    def entry_key(self) -> str:
        """The key of this verdict in the shim's cache and on the compacted verdict topic: the subject's
        (``kind:value``), plus ``@service template`` for a verdict scoped to an edge, so that several edge
        verdicts of one subject stand side by side."""
        key = self.subject.cache_key
        if self.scope is None or not self.scope.path_template:
            return key
        return f"{key}@{self.scope.service or '*'} {self.scope.path_template}"


class Policy(_Record):
    """Enforcement policy snapshot: modes per namespace and service, TTLs, allow-lists.

    ``modes`` maps ``namespace`` or ``namespace/service`` to a mode; the most
    specific entry wins, then ``default_mode``.
    """

    schema_version: int = SCHEMA_VERSION
    name: str = "default"
    version: str = "1"
    default_mode: Mode = "observe"
    modes: dict[str, Mode] = Field(default_factory=dict)
    verdict_ttl_s: float = Field(default=900.0, gt=0)
    throttle_rate_per_s: float = Field(default=5.0, gt=0)
    throttle_burst: int = Field(default=10, gt=0)
    retired_endpoints: list[str] = Field(default_factory=list, description="'service METHOD /template' entries")
    actions: dict[str, Action] = Field(
        default_factory=dict,
        description="attack class -> verdict action; unnamed classes are blocked (e.g. exfiltration: redact, credential_abuse: throttle)",
    )
    user_expected_principals: list[str] = Field(default_factory=list)
    approved_tools: dict[str, str] = Field(default_factory=dict, description=(
        "'<service>/<tool>' -> the sha256 definition hash approved for that MCP tool: the workers pin it and never flag "
        "it (kubeward policy approve-tool)"))

    def mode_for(self, namespace: str | None, service: str | None) -> Mode:
        """The mode that applies to a destination: service entry, then namespace entry, then default."""
        if namespace and service and f"{namespace}/{service}" in self.modes:
            return self.modes[f"{namespace}/{service}"]
        if namespace and namespace in self.modes:
            return self.modes[namespace]
        return self.default_mode


class EndpointRecord(_Record):
    """One API endpoint as traffic revealed it (``api.inventory.v1``, compacted, keyed by ``key``).

    ``spec_status`` compares traffic with the declared specifications:
    ``declared`` (in a spec), ``shadow`` (the service has a spec and this
    endpoint is in none), ``undeclared`` (no spec for the service at all),
    ``deprecated`` (declared deprecated and still called: a zombie), ``dormant``
    (unseen for the dormancy period, then called again: a zombie too).
    ``data_types`` are the sensitive-data types seen in its responses;
    ``callers`` counts distinct actors, ``top_callers`` names a few.
    ``probed`` marks a path in no spec that traffic reached but that is no endpoint of the API: a path traversal
    probe no call got a success answer from (``/documents/..%2F..%2Fetc%2Fpasswd``), or a path no call got an answer
    from that shows it exists (only 404, 405, 410, 501 or Kubeward's own refusals: scanners' guesses).
    ``traversal_answered`` marks a traversal path in no spec that got a success (2xx) answer: no endpoint either,
    but a traversal that worked, evidence of a successful attack (``probed`` is then false, so a reader that
    predates the flag still shows it, as shadow or undeclared). Either way ``spec_status`` is still what the specs
    say, and readers keep the path out of shadow counts and OpenAPI exports (``streams.inventory`` says why). Both
    are absent (false) in records written before they existed.
    """

    schema_version: int = SCHEMA_VERSION
    kind: Literal["endpoint"] = "endpoint"
    service: str
    namespace: str | None = None
    method: str
    path_template: str
    calls: int = 0
    callers: int = 0
    top_callers: list[str] = Field(default_factory=list)
    auth_types: list[str] = Field(default_factory=list)
    data_types: list[str] = Field(default_factory=list)
    statuses: dict[str, int] = Field(default_factory=dict)
    first_seen: float
    last_seen: float
    spec_status: Literal["declared", "shadow", "undeclared", "deprecated", "dormant"] = "undeclared"
    probed: bool = False
    traversal_answered: bool = False

    @property
    def key(self) -> str:
        """The compacted topic's key: ``namespace/service METHOD /template``, or ``service METHOD /template`` without a
        namespace (an external host; and the form every record had before namespaces were part of the key, so those
        still read). Two services of one name in two namespaces are two endpoints.

        >>> EndpointRecord(service="api", namespace="shop", method="GET", path_template="/x", first_seen=0, last_seen=0).key
        'shop/api GET /x'
        >>> EndpointRecord(service="api.psp.example.com", method="GET", path_template="/x", first_seen=0, last_seen=0).key
        'api.psp.example.com GET /x'
        """
        return self.key_of(self.namespace, self.service, self.method, self.path_template)

    @staticmethod
    def key_of(namespace: str | None, service: str, method: str, template: str) -> str:
        """The key of an endpoint from its parts (what ``key`` returns; the inventory and the blueprint use it too)."""
        return f"{namespace}/{service} {method} {template}" if namespace else f"{service} {method} {template}"


class AgentRecord(_Record):
    """An AI agent as traffic revealed it (``api.inventory.v1``, keyed ``agent <agent>``): a caller (the actor key,
    workload or address and principal) of MCP servers or model APIs, what it used and how much, and the sensitive data
    it sent to models (counted by type, never kept)."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["agent"] = "agent"
    agent: str
    namespace: str | None = None
    mcp_servers: list[str] = Field(default_factory=list)
    tools_called: dict[str, int] = Field(default_factory=dict, description="'<server>/<tool>' -> tools/call count")
    models: dict[str, int] = Field(default_factory=dict, description="model -> calls")
    input_tokens: int = 0
    output_tokens: int = 0
    sent_sensitive: int = 0
    sent_types: list[str] = Field(default_factory=list)
    first_seen: float
    last_seen: float

    @property
    def key(self) -> str:
        """The compacted topic's key."""
        return f"agent {self.agent}"


class McpToolRecord(_Record):
    """A tool of an MCP server as traffic revealed it (``api.inventory.v1``, keyed ``mcp-tool <server>/<tool>``): the
    definition hash last listed, how many distinct definitions were seen, who called it and how often."""

    schema_version: int = SCHEMA_VERSION
    kind: Literal["mcp_tool"] = "mcp_tool"
    server: str
    namespace: str | None = None
    name: str
    definition_hash: str | None = None
    definitions_seen: int = 0
    calls: int = 0
    callers: int = 0
    first_seen: float
    last_seen: float

    @property
    def key(self) -> str:
        """The compacted topic's key."""
        return f"mcp-tool {self.server}/{self.name}"


class DeadLetter(_Record):
    """A message that could not be used, kept with the reason (``l7.summaries.dlq.v1``).

    ``raw_b64`` holds at most the first ``raw_cap`` bytes of the original value;
    ``raw_bytes`` is its full length, so truncation is visible.
    """

    schema_version: int = SCHEMA_VERSION
    error: str
    source: str
    time: float
    topic: str
    partition: int | None = None
    offset: int | None = None
    raw_bytes: int
    raw_b64: str
