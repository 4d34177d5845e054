"""The feature table: every feature a detector reads, declared once.

A ``Feature`` says what state the worker keeps for it and how a batch folds
into that state; ``streams.state`` derives its columns from this table and
``streams.processor`` folds *signals* (one float per summary row, computed by
``streams.signals`` or by an ``Enricher``) into them. Adding a signal to
detection is one entry here plus the code that computes the signal.

Folds:

* ``sum`` -- sum of the signal over the key's current tumbling window (reset when it closes);
* ``max`` -- largest signal value in the window;
* ``distinct`` -- distinct elements of an element stream in the window (a 256-bit
  linear-counting sketch; the signal names an element stream, e.g. ``objects``);
* ``ewma`` -- the key's own baseline of the window feature ``of``: an
  exponentially weighted mean over past windows, updated when a window closes,
  only from windows that raised no flag;
* ``decay`` -- a long-horizon exponentially decayed sum of the signal (half-life
  ``half_life_s``, hours): never reset by windows, so one event a minute adds up;
* ``age`` / ``flag`` -- windows since the key was first seen / 1 once any row had the signal.

``key`` is the state the feature belongs to: ``actor`` (``workload-or-ip|principal``)
or ``source`` (the trusted client address alone, so one client hiding behind many
principals or none is one key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["FEATURES", "FEATURE_TABLE", "KEYS", "Feature", "feature", "features_for"]

Fold = Literal["sum", "max", "distinct", "ewma", "decay", "age", "flag"]
Key = Literal["actor", "source"]
KEYS: tuple[Key, ...] = ("actor", "source")
WINDOWED: frozenset[str] = frozenset({"sum", "max", "distinct"})

HOUR = 3600.0


@dataclass(frozen=True)
class Feature:
    """One feature: its name, how it is folded, from which signal, for which key (see the module docstring)."""

    name: str
    fold: Fold
    signal: str | None = None
    of: str | None = None
    half_life_s: float = 0.0
    key: Key = "actor"
    doc: str = ""

    def __post_init__(self) -> None:
        if self.fold in ("sum", "max", "distinct", "decay", "flag") and not self.signal:
            raise ValueError(f"feature {self.name!r}: fold {self.fold!r} needs a signal")
        if self.fold == "ewma" and not self.of:
            raise ValueError(f"feature {self.name!r}: fold 'ewma' needs of=<window feature>")
        if self.fold == "decay" and self.half_life_s <= 0:
            raise ValueError(f"feature {self.name!r}: fold 'decay' needs half_life_s > 0, got {self.half_life_s}")
        if self.key not in KEYS:
            raise ValueError(f"feature {self.name!r}: key {self.key!r} is not one of {KEYS}")

    @property
    def windowed(self) -> bool:
        """True when the feature is reset at the end of each window."""
        return self.fold in WINDOWED


_TABLE: list[Feature] = [  # one entry per feature; a name only once
    # -- per actor, the current window
    Feature("requests", "sum", "request", doc="calls in the window"),
    Feature("distinct_objects", "distinct", "objects", doc="estimated distinct object ids touched"),
    Feature("denied", "sum", "denied", doc="403 and 404 answers"),
    Feature("auth_failures", "sum", "auth_failure", doc="401 answers or derived authentication failures"),
    Feature("pii", "sum", "sensitive", doc="sensitive values returned (all types)"),
    Feature("response_bytes", "sum", "response_bytes", doc="bytes returned to the actor"),
    Feature("records", "sum", "records", doc="object ids the answers carried (records returned)"),
    Feature("novel_destinations", "sum", "novel_destination", doc="calls to services the actor had not called once learned"),
    Feature("inline_hits", "sum", "inline", doc="calls an inline signature flagged (injection, traversal)"),
    Feature("retired_hits", "sum", "retired", doc="calls to retired or deprecated endpoints"),
    Feature("request_bytes_max", "max", "request_bytes", doc="largest request body in the window"),
    Feature("shadow_hits", "sum", "shadow", doc="calls to endpoints in no spec of a service that has one (shadow APIs)"),
    # -- per actor, its own history
    Feature("baseline_distinct", "ewma", of="distinct_objects", doc="EWMA of distinct_objects over past windows"),
    Feature("baseline_pii", "ewma", of="pii", doc="EWMA of pii over past windows"),
    Feature("baseline_records", "ewma", of="records", doc="EWMA of records over past windows"),
    Feature("age_windows", "age", doc="windows since the actor was first seen"),
    Feature("is_service", "flag", "service", doc="1 when the actor is a workload without an end-user principal"),
    # -- per actor, long horizon
    Feature("pii_long", "decay", "sensitive", half_life_s=HOUR, doc="sensitive values returned, decayed (half-life 1 h)"),
    Feature("records_long", "decay", "records", half_life_s=HOUR, doc="records returned, decayed (half-life 1 h)"),
    Feature("bytes_long", "decay", "response_bytes", half_life_s=HOUR, doc="bytes returned, decayed (half-life 1 h)"),
    Feature("denied_long", "decay", "denied", half_life_s=HOUR, doc="403/404 answers, decayed (half-life 1 h)"),
    Feature("creates_long", "decay", "creates", half_life_s=HOUR, doc="calls that created objects (orders, reservations...), decayed (half-life 1 h)"),
    # -- BOLA by ownership (streams.ownership: who owns which object, learned from traffic)
    Feature("foreign_owners", "sum", "foreign_owners", doc="other principals' objects' owners newly touched in the window"),
    Feature("denied_objects", "sum", "denied_objects", doc="object ids of 403/404 answers in the window"),
    Feature("dense_blocks", "sum", "dense_blocks", doc="denied or foreign touches in dense id blocks in the window"),
    Feature("foreign_objects_long", "decay", "foreign_objects", half_life_s=HOUR, doc="objects of other confirmed owners, decayed (1 h)"),
    Feature("thin_owners_long", "decay", "thin_owners", half_life_s=2 * HOUR, doc="owners touched through a single object, decayed (2 h)"),
    Feature("denied_objects_long", "decay", "denied_objects", half_life_s=HOUR, doc="object-level 403/404, decayed (1 h)"),
    Feature("new_objects_long", "decay", "new_objects", half_life_s=HOUR, doc="never-seen objects touched, decayed (1 h)"),
    Feature("own_objects_long", "decay", "own_objects", half_life_s=HOUR, doc="own objects touched, decayed (1 h)"),
    Feature("dense_blocks_long", "decay", "dense_blocks", half_life_s=HOUR, doc="dense-block touches, decayed (1 h)"),
    # -- lateral movement, function-level authorization, new external hosts (streams.edges: learned call edges)
    Feature("novel_edges", "sum", "novel_edge", doc="first calls on unlearned edges (caller -> service, method, template), weighted by rarity"),
    Feature("novel_privileged_edges", "sum", "novel_privileged_edge", doc="first calls on unlearned privileged edges (admin, export, credential, debug, internal)"),
    Feature("novel_edges_denied", "sum", "novel_edge_denied", doc="first calls on unlearned edges answered 401/403"),
    Feature("rare_functions", "sum", "rare_function", doc="privileged functions an end user called that the user cohort never calls"),
    Feature("new_external_hosts", "sum", "new_external_host", doc="first calls to an external host never seen for the workload"),
    Feature("new_host_bytes_long", "decay", "new_host_bytes", half_life_s=HOUR, doc="bytes sent to external hosts first seen within the hour, decayed (1 h)"),
    Feature("novel_privileged_edges_long", "decay", "novel_privileged_edge", half_life_s=6 * HOUR, doc="unlearned privileged edges, decayed (6 h)"),
    # -- agents (streams.agentbehaviour, per agent workload whatever principal a call carries): tools new to the agent
    # -- after its learning, personal data read through them, lineage from tools to external models
    Feature("agent_new_behaviour", "sum", "agent_new_behaviour",
            doc="first calls of MCP tools, and first tool A -> tool B chains, the agent (workload) never made once learned"),
    Feature("agent_hijack_sensitive", "sum", "agent_hijack_sensitive",
            doc="sensitive values returned by tools the agent first called after an injected tool result (within 10 min of it)"),
    Feature("agent_tool_bursts", "sum", "agent_tool_burst",
            doc="windows in which the agent's tool calls reached 10x its own baseline (3x at an hour it is normally quiet)"),
    Feature("llm_sensitive_after_tools", "sum", "agent_lineage_external",
            doc="sensitive values sent to external model APIs by an agent that MCP tools had handed sensitive values (decayed, 1 h)"),
    Feature("tool_injections", "sum", "tool_injection", doc="MCP answers (tool results, resources, prompts) scored as prompt injection in the window"),
    # -- model extraction (streams.agentsignals): volume x prompt diversity x systematic probing of inference endpoints
    Feature("llm_calls", "sum", "llm_call", doc="calls to model APIs (chat, completions, responses, embeddings) in the window"),
    Feature("llm_distinct_prompts", "sum", "llm_new_prompt",
            doc="distinct prompts (keyed hashes of the last user message or input) sent to model APIs in the window; exact, "
                "counted by streams.agentsignals (first row of each prompt in the window), not a sketch"),
    Feature("llm_distinct_shapes", "sum", "llm_new_shape",
            doc="distinct prompt shapes (templates: numbers, quoted strings, long tokens masked; opening words) in the window"),
    Feature("baseline_llm_calls", "ewma", of="llm_calls", doc="EWMA of llm_calls over past windows (the actor's usual rate of model calls)"),
    # -- deception (streams.honeytokens)
    Feature("honeytoken_hits", "sum", "honeytoken_hits", doc="calls that used a declared honeytoken (credential, account, object id)"),
    # -- per trusted client address
    Feature("source_dense_blocks_long", "decay", "dense_blocks", half_life_s=HOUR, key="source",
            doc="dense-block touches from the client address, decayed (1 h)"),
    # -- credential abuse per client address (streams.credentials: per-source, per-account and per-endpoint login tables)
    Feature("source_failed_accounts", "max", "source_accounts_failed", key="source", doc="accounts the address failed on and never then logged in to (1 h)"),
    Feature("source_failure_share", "max", "source_failure_share", key="source", doc="the address's login failures / attempts (decayed)"),
    Feature("source_login_failures_long", "decay", "login_failure", half_life_s=HOUR / 2, key="source", doc="login failures from the address, decayed (30 min)"),
    Feature("source_hot_target_failures", "decay", "failure_on_hot_target", half_life_s=HOUR, key="source",
            doc="failures on accounts under attack the address never logged in to, decayed (1 h)"),
    Feature("source_unknown_account_failures", "decay", "unknown_account_failure", half_life_s=HOUR / 2, key="source",
            doc="failures on accounts never seen logging in, decayed (30 min)"),
    Feature("source_endpoint_unknown_failures", "max", "endpoint_unknown_failures", key="source",
            doc="the login endpoint's recent failures on unknown accounts, as the address saw it"),
    Feature("source_denied_objects_long", "decay", "denied_objects", half_life_s=HOUR, key="source",
            doc="object-level 403/404 from the client address, decayed (1 h)"),
    Feature("source_requests", "sum", "request", key="source", doc="calls from the client address in the window"),
    Feature("source_principals", "distinct", "principals", key="source", doc="distinct principals behind the client address in the window (a NAT or gateway has many)"),
    Feature("source_auth_failures", "sum", "auth_failure", key="source", doc="authentication failures from the client address in the window"),
    Feature("source_auth_failures_long", "decay", "auth_failure", half_life_s=HOUR, key="source",
            doc="authentication failures from the client address, decayed (half-life 1 h)"),
    Feature("source_age_windows", "age", key="source", doc="windows since the client address was first seen"),
    Feature("source_stuffing_accounts", "max", "stuffing_accounts", key="source",
            doc="accounts the address failed on and has not logged in to, while it logged in to at most half as many"),
    Feature("source_stuffing_campaign", "max", "stuffing_campaign", key="source",
            doc="other addresses doing the same, still 45 s later (decayed, half-life 1 h): a stuffing campaign"),
    # -- BOLA probes (streams.ownership): objects not its own a principal was refused, or read in an id block others were refused in
    Feature("probes_long", "decay", "probes", half_life_s=HOUR,
            doc="objects not its own and never answered to it that the principal probed (refused, or read in a crowded block "
                "where it was refused), at most one per call; 0.5 for a lone 404, a link others were refused too, or a further "
                "object of an owner already touched; decayed (1 h)"),
    Feature("source_repeat_probes_long", "decay", "repeat_probes", half_life_s=HOUR, key="source",
            doc="whole probes by principals past their first, from the client address, decayed (1 h): probers behind one address"),
    # -- shape and history of volume (models/rules/core.yaml, abuse.yaml: volume alone never blocks a hard negative)
    Feature("records_max", "max", "records", doc="most records one answer carried in the window (1 for single-object reads, a page's size)"),
    Feature("source_baseline_requests", "ewma", of="source_requests", key="source",
            doc="EWMA of source_requests over the client address's past windows (its own usual rate)"),
    Feature("source_repeat_probers_long", "decay", "repeat_probers", half_life_s=HOUR, key="source",
            doc="principals reaching their second whole probe, from the client address, decayed (1 h): distinct probers behind it"),
    # -- identity floods (streams.identityflood): actors never seen before, counted per source group and per service;
    # -- the count lands on the one new identity that crossed its group's line, folded under that row's client address
    Feature("identity_flood_source", "max", "identity_flood_source", key="source",
            doc="new identities (actors never seen) its source group (calling workload, else the address's /24 or /64) brought "
                "in one window when they reached max(50, 10x the group's usual number): set on the address of the row that crossed"),
    Feature("identity_flood_service", "max", "identity_flood_service", key="source",
            doc="new identities a destination service received in one window when they reached max(200, 10x its usual number): "
                "set on the address of the row that crossed"),
]


def feature(name: str) -> Feature:
    """The declared feature of that name; the error lists the valid names."""
    found = _BY_NAME.get(name)
    if found is not None:
        return found
    raise KeyError(f"unknown feature {name!r}; declared: {', '.join(sorted(f.name for f in _TABLE))}")


def features_for(key: Key) -> tuple[Feature, ...]:
    """The features kept for one key, in declaration order."""
    return tuple(f for f in _TABLE if f.key == key)


FEATURE_TABLE: tuple[Feature, ...] = tuple(_TABLE)
_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURE_TABLE}
if len(_BY_NAME) != len(FEATURE_TABLE):
    _names = [f.name for f in FEATURE_TABLE]
    raise ValueError(f"features declared twice: {sorted({n for n in _names if _names.count(n) > 1})}")
#: the names of every declared feature (what a frame holds), in declaration order
FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURE_TABLE)
