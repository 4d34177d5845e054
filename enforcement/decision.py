"""The shim's pure decision: ``decide(request, cache, buckets, inspector, policy, now)``.

Order (ARCHITECTURE "Shim semantics"): a block verdict for the actor, its
workload, principal or ip denies (403); a throttle verdict runs the subject's
token bucket (429 with ``Retry-After``); a redact verdict allows and says
``redact`` (the ext_proc adapter masks that subject's bodies); inline inspection
(any ``Inspector``: the rule engines, request-schema validation) denies in
enforce mode; the learned allow-list (``enforcement.allowlist``, when given)
refuses a call its destination's list does not name, with the reason
``allowlist:<why>``, in the mode the policy gives that destination; otherwise
allow. An observe-mode verdict never hides an enforced signature hit or
allow-list refusal. Observe mode never denies: the decision says what would have
happened (``would``) and the status stays 200. No model runs here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from enforcement.cache import CachedVerdict, VerdictCache
from enforcement.ratelimit import TokenBuckets
from ingest import Policy, actor_key

__all__ = ["ALLOW", "ALLOWLIST", "CallGate", "Decision", "Inspection", "Inspector", "RequestView", "decide"]


@dataclass(slots=True)
class RequestView:
    """What the data plane tells the shim about one request.

    Adapters fill it from the data plane's check request; identity and
    destination come from ``ingest.identity`` so that the shim and the
    collectors derive the same actor. ``headers`` (lower-case names), ``peer_ip``
    and ``body`` are kept for the report the shim publishes, not for ``decide``.
    ``external`` is ``ingest.identity.Identity.external``: no workload, and the
    client address lies outside ``identity.internal_networks``; the report
    carries it as ``source.external``, which decides how ``policy suggest``
    names the caller (a ``cidr:``, not an ``address:``). It is last, with a
    default, so positional construction stays as it was (the HTTP adapters pass
    it positionally: 0.02 us per view; as a keyword 0.1 us).
    ``body_json`` is a per-request cache, so the inspectors parse a body once.
    """

    method: str
    path: str
    source_workload: str | None = None
    principal: str | None = None
    ip: str | None = None
    service: str | None = None
    namespace: str | None = None
    keys: tuple[str, ...] | None = None
    request_id: str | None = None
    auth_type: str | None = None
    authority: str | None = None
    headers: dict[str, str] | None = None
    peer_ip: str | None = None
    body: bytes | None = None
    body_truncated: bool = False
    external: bool = False
    #: the body parsed as JSON, ``(parsed, document)``, computed once per request by the first inspector that needs it
    #: (``enforcement.requestparts.json_document``); adapters leave it None (not parsed yet)
    body_json: tuple[bool, Any] | None = field(default=None, init=False, compare=False, repr=False)

    def subject_keys(self) -> tuple[str, ...]:
        """Verdict-cache keys that can match this request, most specific first (``keys`` if precomputed)."""
        if self.keys is not None:
            return self.keys
        keys = [f"actor:{actor_key(self.source_workload or self.ip, self.principal)}"]
        if self.principal:
            keys.append(f"principal:{self.principal}")
        if self.source_workload:
            keys.append(f"workload:{self.source_workload}")
        if self.ip:
            keys.append(f"ip:{self.ip}")
        return tuple(keys)


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer for one request: status to return, what was decided and why."""

    status: int
    would: str
    enforced: bool
    reason: str | None = None
    retry_after: int | None = None
    findings: tuple[str, ...] = ()
    verdict_id: str | None = None
    redacted: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Inspection:
    """What inline inspection found in one request: attack categories (highest score first), rule ids, total score."""

    categories: tuple[str, ...]
    rules: tuple[str, ...] = ()
    score: int = 0


class Inspector(Protocol):
    """Inline inspection of one request; None when nothing reached the threshold (most traffic)."""

    def inspect(self, req: RequestView) -> Inspection | None:
        """Inspect a request; pure and bounded in time."""
        ...


class CallGate(Protocol):
    """Which calls may pass at all (``enforcement.allowlist.AllowList``): None, or why a call may not."""

    def refusal(self, req: RequestView) -> str | None:
        """None when the call may pass (or is not governed); else a short, bounded reason; pure and cheap."""
        ...

    def namespaces(self, service: str | None) -> tuple[str, ...]:
        """The namespaces whose ``service`` the gate governs by name (for a request whose namespace is unknown)."""
        ...


ALLOW = Decision(200, "allow", False)
#: prefix of the reason of a decision the allow-list took (``allowlist:unknown-caller``)
ALLOWLIST = "allowlist:"


def _from_verdict(key: str, hit: CachedVerdict, buckets: TokenBuckets, now: float) -> Decision | None:
    enforce = hit.mode == "enforce"
    if hit.action == "throttle":
        wait = buckets.take(key, hit.rate_per_s, hit.burst, now)
        if wait == 0.0:
            return None
        retry = max(1, math.ceil(wait))
        return Decision(429 if enforce else 200, "throttle", enforce, hit.reason, retry, (), hit.verdict_id)
    if hit.action == "redact":
        return Decision(200, "redact", enforce, hit.reason, None, (), hit.verdict_id)
    return Decision(403 if enforce else 200, "deny", enforce, hit.reason, None, (), hit.verdict_id)


#: JSON-RPC messages read per request body for the tools it calls; a longer batch is read as "any tool"
MAX_MESSAGES = 256


def _pairs(items: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return items  # every (key, value) of a JSON object, duplicates and order kept


def called_tools(req: RequestView) -> tuple[str, ...] | None:
    """The MCP tools a request may call: every ``params.name`` of each JSON-RPC ``tools/call`` in its body (an object
    or a batch); () for a request that calls none; ``None`` when the body cannot be read for it (not JSON as a lenient
    parser reads it, cut at the data plane's body limit, or a batch of more than ``MAX_MESSAGES``), which the caller
    takes as "any tool".

    Servers differ in how they read JSON: some match keys regardless of case or take the first of duplicate keys,
    some accept ``NaN``; so every key spelled ``method``, ``params`` or ``name`` in any case counts, duplicates
    included, and the body is parsed by Python's lenient parser with every key kept.
    """
    if req.method != "POST" or not req.body:
        return ()
    if req.body_truncated:
        return None
    try:
        doc = json.loads(req.body, object_pairs_hook=_pairs)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    messages = doc if isinstance(doc, list) and (not doc or isinstance(doc[0], list)) else [doc]
    if len(messages) > MAX_MESSAGES:
        return None
    names: dict[str, None] = {}
    for message in messages:
        if not isinstance(message, list):
            continue
        fields = [(k.lower(), v) for k, v in message if isinstance(k, str)]
        if not any(k == "method" and isinstance(v, str) and v.strip().lower() == "tools/call" for k, v in fields):
            continue
        for key, params in fields:
            if key == "params" and isinstance(params, list):
                for item in params:
                    if isinstance(item, tuple) and isinstance(item[0], str) and item[0].lower() == "name" and isinstance(item[1], str):
                        names.setdefault(item[1], None)
    return tuple(names)


def lookup_keys(req: RequestView, cache: VerdictCache) -> tuple[str, ...]:
    """The request's subject keys, plus ``tool:<server>/<tool>`` for each MCP tool it calls when its server (the
    destination, ``<namespace>/<service>`` or the service alone, as ``streams.toolpins.server_of`` names it) has a
    tool verdict (a rug-pulled or unapproved tool is denied to every agent); every tool verdict of the server when
    the body cannot be read for the tools it calls. Other requests pay one dictionary probe."""
    keys = req.subject_keys()
    if cache.tools and req.method == "POST":
        server = f"{req.namespace}/{req.service or '-'}" if req.namespace else (req.service or "-")
        tools = cache.tools.get(server)
        if tools:
            names = called_tools(req)
            keys += tuple(tools) if names is None else tuple(f"tool:{server}/{name}" for name in names)
    return keys


def decide(req: RequestView, cache: VerdictCache, buckets: TokenBuckets, inspector: Inspector, policy: Policy, now: float,
           allowlist: CallGate | None = None) -> Decision:
    """Decide one request. Pure apart from the token buckets it updates."""
    observed: Decision | None = None
    if cache.entries:
        found = cache.find(lookup_keys(req, cache), req.service, now, req.path)
        if found is not None:
            decided = _from_verdict(found[0], found[1], buckets, now)
            # An enforced redact verdict still lets inline inspection deny the request.
            if decided is not None and decided.enforced and decided.status != 200:
                return decided
            observed = decided
    inspected = inspector.inspect(req)
    if inspected is not None:
        enforce = policy.mode_for(req.namespace, req.service) == "enforce"
        inline = Decision(403 if enforce else 200, "deny", enforce, f"inline:{inspected.categories[0]}", None, inspected.categories)
        # An observe-mode verdict must not shield a request from a signature the policy enforces.
        if enforce:
            return inline
        if observed is not None:
            # The verdict's answer stands (observe-mode deny, or redact), but what inspection found is still reported.
            inline = Decision(observed.status, observed.would, observed.enforced, observed.reason, observed.retry_after, inline.findings,
                              observed.verdict_id)
        return inline if allowlist is None else _gated(req, inline, allowlist, policy)
    if allowlist is None:
        return observed or ALLOW
    return _gated(req, observed or ALLOW, allowlist, policy)


def _gated(req: RequestView, decided: Decision, allowlist: CallGate, policy: Policy) -> Decision:
    """``decided`` (nothing enforced refused the request) after the allow-list: an enforced refusal in the destination's
    enforce mode; in observe mode what would have happened, unless something else already answers for the request (an
    observe-mode verdict or finding; a redact verdict, which must still redact)."""
    if decided.enforced and decided.status != 200:
        return decided
    why = allowlist.refusal(req)
    if why is None:
        return decided
    if _enforced(req, allowlist, policy):
        return Decision(403, "deny", True, ALLOWLIST + why, None, decided.findings)
    return Decision(200, "deny", False, ALLOWLIST + why) if decided is ALLOW else decided


def _enforced(req: RequestView, allowlist: CallGate, policy: Policy) -> bool:
    """Whether the destination is in enforce mode; with its namespace unknown, the strictest of the namespaces the
    list names for the service (else a bare Host would turn an enforced service's refusals into observed ones)."""
    if policy.mode_for(req.namespace, req.service) == "enforce":
        return True
    return req.namespace is None and any(policy.mode_for(ns, req.service) == "enforce" for ns in allowlist.namespaces(req.service))
