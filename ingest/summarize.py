"""From what a data plane saw to the ``RequestSummary`` detectors read: every feature derived here.

``Summarizer.summarize(observation)`` derives, in one place for every source:

* the source identity and principal (``ingest.identity``: JWT ``sub`` as a keyed
  hash, API key, session cookie, SPIFFE workload, pod directory, trusted hops);
* the destination (configured header, route or cluster, service host name);
* the path template and the object ids in the path (``ingest.templating``: a
  learned ``PathTemplater`` when one is given, declared specs winning), plus ids
  in the query and in the response body (``ingest.bodies``);
* ids a creating call got back (``object_ids_created``), so ownership can be learned,
  and the id blocks numeric ids fall in (``object_blocks``, ``ingest.idblocks``), so
  sequential or dense enumeration shows while the ids stay hashed;
* sensitive values in the response body, counted by type (``ingest.sensitive``);
* the response body's property paths (``property_paths``: ``user.email``,
  ``items[].price``; names, never values; id-like keys of a map become ``*``;
  at most ``MAX_PROPERTIES``), so an endpoint that starts returning a new
  property can be noticed (``streams.exposure``);
* the account a login names (``credential_subject``: ``ingest.loginsubject``, a keyed hash);
* for a Model Context Protocol call (JSON-RPC 2.0 over streamable HTTP, ``ingest.mcp``) the
  ``mcp`` extras: method, tool called, session (keyed hash), server name, the tools a
  ``tools/list`` defined with their definition hashes, prompt or resource (keyed hash), errors;
  its sensitive counts are those of the text the tool, resource or prompt returned;
* for a call to an OpenAI-compatible model API (``ingest.llm``) the ``llm`` extras: operation,
  model, token counts, tools offered and tool calls the model asked for, and the sensitive
  values in the text sent to the model (lineage: what leaves for a model), the prompt asked and
  its shape as keyed hashes (model extraction: many prompts of few shapes);
* the outcome where the status does not tell it (``OutcomeRule``: a login that
  answers 200 with an error body is an authentication failure).

Ids are keyed hashes, principals are keyed hashes, sensitive values are counted:
nothing secret leaves the node. The output is an envelope row
(``ingest.envelope.summary_row``) ready for ``SummaryPublisher.publish_rows``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ingest.bodies import BodyFeatures, Leaf, body_features, query_object_ids, walk_body
from ingest.destination import Target
from ingest.envelope import summary_row
from ingest.identity import Identity, IdentityConfig, IdentityResolver
from ingest.loginsubject import LOGIN_PATH, login_subject
from ingest.llm import LlmCall, parse_llm, prompt_hash, shape_hash
from ingest.mcp import McpCall, ToolDefinition, parse_exchange
from ingest.idblocks import object_blocks
from ingest.observation import HttpObservation
from ingest.templating import STRONG, hash_object_id, id_kind, keyed_hasher, template_path

__all__ = ["MAX_PROPERTIES", "OutcomeRule", "Summarizer", "SummarizerConfig", "Templater", "property_path", "property_paths"]

#: property paths kept per response body (the summary field ``response_properties``)
MAX_PROPERTIES = 64
_STRUCTURED = frozenset({"json", "ndjson", "form", "multipart"})
_NORMAL: dict[str, str] = {}

_FAILURE_KEYS = (b'"error"', b'"errors"')
_FAILURE_FLAGS = re.compile(rb'"(?:ok|success|authenticated|valid)"\s*:\s*false')


class Templater(Protocol):
    """Anything that learns from concrete paths of a service and turns them into (template, ids in the path)."""

    def learn(self, service: str, method: str, path: str) -> tuple[str, list[str]]:
        """Learn from one path, then answer its template and raw ids (query removed)."""
        ...


@dataclass(frozen=True)
class OutcomeRule:
    """A declared outcome: calls to this endpoint failed authentication when the rule matches.

    ``body_pattern`` is a regular expression searched in the first bytes of the
    response body; ``statuses`` are statuses that mean failure by themselves.
    """

    service: str
    method: str
    path_template: str
    body_pattern: str | None = None
    statuses: frozenset[int] = frozenset({401})
    outcome: str = "auth_failure"

    def matches(self, status: int | None, body: bytes | None) -> bool:
        """True when this status or body says the call failed."""
        if status in self.statuses:
            return True
        return bool(self.body_pattern and body and re.search(self.body_pattern.encode(), body[:4096]))


@dataclass(frozen=True)
class SummarizerConfig:
    """What the summariser needs besides the observation; safe defaults throughout."""

    identity: IdentityConfig = field(default_factory=IdentityConfig)
    object_id_key: bytes = b"kubeward-dev-object-key"
    keep_raw_path: bool = False
    outcome_rules: tuple[OutcomeRule, ...] = ()
    learn_login_outcomes: bool = True
    basic_auth_anywhere: bool = False  # the Basic user names an account on every endpoint, not only login-like ones
    max_body_bytes: int = 262_144


def _llm(call: LlmCall, key: bytes) -> dict[str, Any]:
    """The summary's ``llm`` extras of a parsed model call (sensitive values sent counted by type, the prompt and its
    shape as keyed hashes: never the text)."""
    sent = body_features(call.prompt_text.encode(), _text_type(call.prompt_text)).sensitive if call.prompt_text else {}
    return {"model": call.model, "input_tokens": call.input_tokens, "output_tokens": call.output_tokens,
            "operation": call.operation, "tools_offered": call.tools_offered, "tool_calls": list(call.tool_calls),
            "sent_sensitive": sum(sent.values()), "sent_types": sorted(sent),
            "prompt_hash": prompt_hash(call.prompt, key), "prompt_shape": shape_hash(call.prompt, key)}


def _text_type(text: str) -> str:
    """The content type to read a tool result's text as: JSON when it looks like JSON, else plain text."""
    return "application/json" if text.lstrip()[:1] in ("{", "[") else "text/plain"


def property_path(path: str) -> str:
    """``users.81231.name`` -> ``users.*.name``: a key that looks like an id is data (a map), not a property name.

    >>> property_path("data[].a1b2c3d4e5f6a7b8[].ok")
    'data[].*[].ok'
    """
    out = _NORMAL.get(path)
    if out is None:
        parts = []
        for seg in path.split("."):
            name = seg.split("[", 1)[0]
            parts.append("*" + seg[len(name):] if name and id_kind(name) == STRONG else seg)
        out = ".".join(parts)
        if len(_NORMAL) >= 8192:  # paths repeat per endpoint; the memo stays small unless attacked
            _NORMAL.clear()
        _NORMAL[path] = out
    return out


def property_paths(leaves: Iterable[Leaf], cap: int = MAX_PROPERTIES) -> list[str]:
    """Distinct property paths of body leaves, in body order, at most ``cap``; the values are never read.

    >>> property_paths([("items[].id", 1), ("items[].id", 2), ("users.81231.name", "x"), ("", "text")])
    ['items[].id', 'users.*.name']
    """
    seen: dict[str, None] = {}
    for path, _ in leaves:
        if len(seen) >= cap:
            break
        if path:
            seen.setdefault(property_path(path), None)
    return list(seen)


def _login_failed(method: str, template: str, status: int | None, body: bytes | None) -> bool:
    """Built-in rule for login-like endpoints: 401, or 2xx with an error body and no token."""
    if method != "POST" or not LOGIN_PATH.search(template):
        return False
    if status == 401:
        return True
    if status is None or not 200 <= status < 300 or not body:
        return False
    head = body[:2048]
    if b"token" in head and not _FAILURE_FLAGS.search(head):
        return False
    return bool(_FAILURE_FLAGS.search(head) or any(k in head for k in _FAILURE_KEYS))


#: a tool-definition scanner: (poisoned, score in [0, 1], traits) of one definition (``enforcement.toolscan`` in a collector)
ToolScanner = Callable[[ToolDefinition], tuple[bool, float, tuple[str, ...]]]
#: a prompt-injection scanner of text flowing to a model: (score in [0, 1], traits) (``enforcement.promptscan``)
TextScanner = Callable[[str], tuple[float, tuple[str, ...]]]
_SCANNED_MAX = 4096
_ROW_MEMO_MAX = 65536


class Summarizer:
    """Derives summary rows from observations; keeps only memo state and the templater's learning.

    ``tool_scanner``, when given, scans each tool definition a ``tools/list`` answer carries (once per definition
    hash: listings repeat), so summaries say which tools read as poisoned without carrying their text;
    ``text_scanner`` scans the text a tool, resource or prompt returned for prompt injection.
    """

    def __init__(self, config: SummarizerConfig | None = None, templater: Templater | None = None,
                 pods: Any = None, tool_scanner: ToolScanner | None = None, text_scanner: TextScanner | None = None):
        self.config = config or SummarizerConfig()
        self.tool_scanner = tool_scanner
        self.text_scanner = text_scanner
        self._scanned: dict[str, tuple[bool, float, tuple[str, ...]]] = {}
        self.identities = IdentityResolver(self.config.identity, pods)
        self.templater = templater
        self._rules = {(r.service, r.method, r.path_template): r for r in self.config.outcome_rules}
        self._key = self.config.object_id_key
        self._hasher = keyed_hasher(self._key)
        self._row = summary_row(id=None, time=None, source=None, destination=None, method=None, path_template=None)
        self._sources: dict[tuple[str | None, str | None, str | None, str | None, bool], dict[str, Any]] = {}
        self._destinations: dict[int, tuple[Target, dict[str, Any]]] = {}
        self._queries: dict[str, tuple[str, ...]] = {}

    def _template(self, service: str, method: str, path: str) -> tuple[str, list[str]]:
        if self.templater is not None:
            return self.templater.learn(service, method, path)
        return template_path(path)

    def _body(self, obs: HttpObservation, headers: Mapping[str, str], body: bytes | None) -> BodyFeatures | None:
        if not body:
            return None
        return body_features(body[: self.config.max_body_bytes], headers.get("content-type"))

    def _properties(self, headers: Mapping[str, str], body: bytes | None, response: BodyFeatures | None) -> list[str]:
        # a second walk of the body: body_features keeps no leaves (see the report's patch to ingest/bodies.py)
        if not body or response is None or response.kind not in _STRUCTURED:
            return []
        return property_paths(walk_body(body[: self.config.max_body_bytes], headers.get("content-type")).leaves)

    def _outcome(self, service: str, method: str, template: str, status: int | None, body: bytes | None) -> str | None:
        if not self._rules and (method != "POST" or not self.config.learn_login_outcomes):
            return None  # neither a declared rule nor the login rule (POST only) can apply
        rule = self._rules.get((service, method, template))
        if rule is not None:
            return rule.outcome if rule.matches(status, body) else "ok"
        if self.config.learn_login_outcomes and _login_failed(method, template, status, body):
            return "auth_failure"
        return None

    def summarize(self, obs: HttpObservation) -> dict[str, Any]:
        """The envelope row of one observation.

        This is the collector's hot path (one call per access-log entry). What repeats from call to
        call is memoised per distinct value, each memo bounded: identities and destinations (by the
        resolver), their row dicts (``_source_row``, ``_destination_row``), the ids of a query string,
        whether an endpoint can have an outcome. The row equals ``summary_row`` of the same fields.
        """
        headers, method = obs.headers, obs.method
        who = self.identities.resolve(headers, obs.peer_ip)
        where = self.identities.destination(headers, obs.route, obs.authority)
        service = where.service or "-"
        path, _, query = obs.path.partition("?")
        template, ids = self._template(f"{where.namespace}/{service}" if where.namespace else service, method, path)
        if query:
            ids += self._query_ids(query)
        request_body, response_body = obs.request_body, obs.response_body
        mcp = llm = None
        if method == "POST" and request_body:
            mcp = parse_exchange(headers, request_body, obs.response_headers, response_body)
            if mcp is None:
                llm = parse_llm(method, path, request_body, obs.response_headers, response_body)
        if mcp is not None:  # what flows to the model, not the JSON-RPC envelope; no object ids of its own
            response = self._body(obs, {"content-type": _text_type(mcp.result_text)}, mcp.result_text.encode())
        elif response_body:
            response = self._body(obs, obs.response_headers, response_body)
        else:
            response = None
        created: list[str] = []
        sensitive: list[tuple[str, int]] = []
        properties: list[str] = []
        if response is not None:
            sensitive = list(response.sensitive.items())
            properties = self._properties(obs.response_headers, response_body, response)
            if mcp is None and llm is None:  # ids in tool or model text are not objects read
                if method == "POST" and obs.status is not None and 200 <= obs.status < 300:
                    created = response.object_ids[:16]
                else:
                    ids += response.object_ids
        hashed = self._hash
        if len(ids) > 1:
            ids = list(dict.fromkeys(ids))
        subject = self._login_subject(method, path, headers, request_body)
        return {
            **self._row,
            "id": obs.request_id or uuid.uuid4().hex,
            "time": obs.time,
            "duration_ms": obs.duration_ms,
            "reporter": obs.reporter,
            "source": self._source_row(who),
            "principal": who.principal,
            "auth_type": who.auth_type,
            "destination": self._destination_row(where, service),
            "method": method,
            "path_template": template,
            "raw_path": obs.path if self.config.keep_raw_path else None,
            "status": obs.status,
            "request_bytes": obs.request_bytes,
            "response_bytes": obs.response_bytes,
            "object_ids": [hashed(i) for i in ids],
            "object_blocks": object_blocks(template, ids, self._key) if ids else [],
            "object_ids_created": [hashed(i) for i in created],
            "sensitive": sensitive,
            "response_properties": properties,
            "outcome": self._outcome(service, method, template, obs.status, response_body),
            "credential_subject": hashed(subject) if subject is not None else None,
            "inline_findings": list(obs.inline_findings),
            "decision": obs.decision,
            "mcp": self._mcp(mcp) if mcp is not None else None,
            "llm": _llm(llm, self._key) if llm is not None else None,
            "trace_id": obs.trace_id,
        }

    def _hash(self, value: str) -> str:
        """``hash_object_id`` with the object-id key, from a hasher that has taken the key once."""
        h = self._hasher.copy()
        h.update(value.encode())
        return h.hexdigest()

    def _source_row(self, who: Identity) -> dict[str, Any]:
        """The row's ``source`` of an identity, built once per distinct source: keyed by value, since an identity
        matched to a pod by its address is a new object per call (a memo by object missed every such call)."""
        key = (who.workload, who.namespace, who.pod, who.ip, who.external)
        found = self._sources.get(key)
        if found is None:
            if len(self._sources) >= _ROW_MEMO_MAX:
                self._sources.clear()
            found = self._sources[key] = summary_row(source={
                "workload": who.workload, "namespace": who.namespace, "pod": who.pod, "ip": who.ip, "external": who.external})["source"]
        return found.copy()

    def _destination_row(self, where: Target, service: str) -> dict[str, Any]:
        """The row's ``destination`` of a target (``service`` is its name or ``-``), built once per ``Target`` object."""
        found = self._destinations.get(id(where))
        if found is None or found[0] is not where:
            if len(self._destinations) >= _ROW_MEMO_MAX:
                self._destinations.clear()
            found = self._destinations[id(where)] = (where, summary_row(destination={
                "service": service, "namespace": where.namespace, "host": where.host, "external": where.external})["destination"])
        return found[1].copy()

    def _query_ids(self, query: str) -> list[str]:
        """``query_object_ids`` of a query string, memoised (queries repeat: ``page=2&limit=50``)."""
        found = self._queries.get(query)
        if found is None:
            if len(self._queries) >= _ROW_MEMO_MAX:
                self._queries.clear()
            found = self._queries[query] = tuple(query_object_ids(query))
        return list(found)

    def _login_subject(self, method: str, path: str, headers: Mapping[str, str], body: bytes | None) -> str | None:
        """``login_subject``, skipped where it must answer None: no body, no Basic credentials, not ``basic_anywhere``."""
        if not body and not self.config.basic_auth_anywhere:
            auth = headers.get("authorization")
            if not auth or auth.lstrip()[:5].lower() != "basic":  # _basic_user reads nothing else
                return None
        return login_subject(method, path, headers, body, basic_anywhere=self.config.basic_auth_anywhere)

    def _tool(self, tool: ToolDefinition) -> dict[str, Any]:
        """A listed tool of the ``mcp`` extras, scanned when a scanner is configured (memoised by definition hash)."""
        if self.tool_scanner is None:
            return {"name": tool.name, "hash": tool.hash}
        found = self._scanned.get(tool.hash)
        if found is None:
            if len(self._scanned) >= _SCANNED_MAX:
                self._scanned.clear()
            found = self._scanned[tool.hash] = self.tool_scanner(tool)
        poisoned, score, traits = found
        return {"name": tool.name, "hash": tool.hash, "poisoned": poisoned, "score": score, "traits": list(traits)}

    def _mcp(self, call: McpCall) -> dict[str, Any]:
        """The summary's ``mcp`` extras of a parsed call (session and resource as keyed hashes)."""
        key = self._key
        target = call.prompt if call.prompt is not None else (hash_object_id(call.resource, key) if call.resource else None)
        injection, traits = self.text_scanner(call.result_text) if self.text_scanner is not None and call.result_text else (None, ())
        return {"jsonrpc_method": call.method, "tool_name": call.tool, "tool_hash": None,
                "injection": injection, "injection_traits": list(traits),
                "session": hash_object_id(call.session, key) if call.session else None, "server": call.server,
                "tools": [self._tool(t) for t in call.tools], "target": target,
                "error_code": call.error_code, "tool_error": call.tool_error}

    def summarize_many(self, observations: Iterable[HttpObservation]) -> list[dict[str, Any]]:
        """Rows of many observations, in order."""
        return [self.summarize(o) for o in observations]
