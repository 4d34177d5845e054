"""Inline request validation against each endpoint's schema, declared and learned (an ``Inspector``).

Contract: ``PropertySchemaValidator.inspect(req)`` reads the request's JSON or
form body and its query (``ingest.bodies.walk_body``: property paths such as
``user.role``, ``items[].price``; query names as ``?name``) and compares them
with what the endpoint (service, method, template) accepts:

* **Declared** (an OpenAPI/Swagger spec of the service, ``ingest.openapi``):
  an undeclared property where ``additionalProperties: false``, a type the
  schema does not allow (text where an integer is declared, an object where a
  string is), a string over ``maxLength`` -> ``schema-violation`` (critical: the
  owner said so); a ``readOnly`` property sent -> ``schema-violation`` (warning),
  ``mass-assignment`` when its name is privileged; a privileged-looking name
  the schema does not declare -> ``mass-assignment`` (critical).
* **Learned** (no declared body/endpoint): per endpoint, the property paths and
  JSON types (null, boolean, number, string) of the first ``learn_requests``
  requests or ``learn_seconds``. After that, a never-seen property ->
  ``schema-violation`` (notice), a type change (a string where a number was
  seen, an object where a scalar was) -> ``schema-violation`` (warning), a
  string far longer than any seen -> ``schema-violation`` (notice). Learned
  evidence of this kind adds at most ``LEARNED_CAP`` (4), so it never denies
  alone at the default threshold 5 (and the shim's ``Inspectors`` applies each inspector's threshold on its own, so it does not add to the rule engines' scores either: ``evaluate`` reports it).
* **Privileged names** (role, is_admin, permissions, scope, verified, price,
  balance, tenant, plan...; ``status`` on a sign-up; ``owner_id``/``user_id``
  on an update) never seen on the endpoint -> ``mass-assignment`` (critical),
  during learning too, except the commercial ones (price, amount, balance,
  credit, discount), which many APIs take from clients: those are flagged only
  after learning. Such a property is learned only once ``min_principals``
  distinct principals (or sources) sent it during the learning period, so one
  actor cannot teach the endpoint to accept ``"role": "admin"``.

Learning happens in ``learn(req)``, which the shim calls only for requests it
allowed; ``inspect`` records nothing but privileged-name sightings (who sent
which privileged property during learning). The state is per shim process,
in memory, bounded by ``max_endpoints`` and ``max_properties`` (what did not fit
is counted in ``stats``); a restarted shim learns again. Id-like keys of maps
become ``*`` (``ingest.summarize.property_path``). A body the data plane cut
(``body_truncated``) that no longer parses is not validated: the inspection's
``oversize`` setting governs it. Scores follow the CRS convention (critical 5,
warning 3, notice 2); each rule counts once per request. The leaf reading and
the declared checks live in ``enforcement.schemacheck``; a JSON body's leaves
come aggregated per distinct (path, type) (the records of an array share
them), so the checks and learning cost per distinct property, and the ``stats``
counters per rule, ``properties_dropped`` and ``endpoints_dropped`` count once
per distinct property of a request rather than once per leaf (``checked`` and
``learned`` count requests, as before).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from enforcement.decision import Inspection, RequestView
from enforcement.requestparts import json_document
from enforcement.schemacheck import (
    CRITICAL,
    NOTICE,
    NULL,
    WARNING,
    Value,
    Violation,
    accepts,
    context_of,
    declared_leaf,
    declared_query,
    is_commercial,
    is_privileged,
    path_steps,
    request_values,
)
from ingest.llm import deployment_path, names_model_call, operation_of
from ingest.mcp import MCP_METHODS
from ingest.openapi import DeclaredEndpoint, SpecIndex, load_spec_dir
from ingest.templating import template_path

__all__ = ["LEARNED_CAP", "PropertySchemaValidator", "SchemaValidationSettings", "build_property_validator"]

#: the most learned (non-privileged) evidence adds to a request's score: below the default threshold on purpose
LEARNED_CAP = 4
_SIZE_FACTOR, _SIZE_FLOOR = 8, 256  # a string 8x longer than any seen (and over 256 characters) is a size anomaly
_SAFE_QUERY = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})  # their query names filter, they do not assign


class SchemaValidationSettings(BaseModel):
    """Request-schema validation (``KUBEWARD_SHIM_SCHEMA_VALIDATION__*``): learning window, poisoning guard, memory bounds, specs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="validate request bodies and queries against declared and learned schemas")
    learn_requests: int = Field(default=200, ge=1, description="allowed requests an endpoint learns from before never-seen properties are flagged")
    learn_seconds: float = Field(default=3600.0, gt=0, description="or this long after the endpoint's first request, whichever comes first")
    min_principals: int = Field(default=3, ge=1, description="distinct principals (or sources) that must send a property before it counts as learned (always for privileged names)")
    max_endpoints: int = Field(default=5000, ge=1, description="endpoints learned per shim process; more are counted and only privileged names are checked there")
    max_properties: int = Field(default=256, ge=1, description="property paths learned per endpoint; more are counted, not learned")
    spec_dir: Path | None = Field(default=None, description="declared OpenAPI/Swagger specs (<namespace>.<service>.json|yaml, or x-kubeward-service)")



@dataclass(slots=True)
class _Prop:
    types: int = 0
    max_len: int = 0
    learned: bool = False
    principals: set[str] | None = None


@dataclass(slots=True)
class _Endpoint:
    first_seen: float
    requests: int = 0
    done: bool = False
    props: dict[str, _Prop] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Parsed:
    endpoint: tuple[str, str, str]
    declared: DeclaredEndpoint | None
    body: tuple[Value, ...]
    query: tuple[Value, ...]
    context: str  # signup | update | other

    @property
    def assigns_query(self) -> bool:
        """Whether query names may assign properties (not on GET, HEAD, OPTIONS, DELETE)."""
        return self.endpoint[1] not in _SAFE_QUERY


#: leaves of an OpenAI-compatible model call's body that the wire format defines (chat turns, tools offered, input)
_MODEL_API_LEAVES = ("messages[].", "input", "prompt", "tools[].", "functions[].", "tool_choice", "response_format.")
_MCP_LEAVES = ("params.", "[].params.")


def _protocol_prefixes(req: RequestView) -> tuple[str, ...]:
    """The leaf prefixes of a request body that a protocol, not a resource, defines: of a model API call (a model-API
    path, and a body naming ``model`` with ``messages``, ``input`` or ``prompt``), its chat turns and tools; of an MCP
    message (JSON-RPC 2.0 whose method is an MCP one; a batch when every message is), its ``params``. Other names of
    such bodies, and every other body, are still checked (review F5-F7: a path ending in ``/responses`` or a body with
    ``"jsonrpc"`` somewhere is not enough)."""
    head = (req.body or b"")[:256]
    looks_rpc = b'"jsonrpc"' in (req.body or b"")
    model_path = req.method.upper() == "POST" and operation_of(req.path) is not None
    if not (model_path or looks_rpc) or head.lstrip()[:1] not in (b"{", b"["):
        return ()
    ok, document = json_document(req)
    if not ok:
        return ()
    if model_path and names_model_call(document, deployment_path(req.path)):
        return _MODEL_API_LEAVES
    messages = document if isinstance(document, list) else [document]
    if messages and all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" and isinstance(m.get("method"), str)
                        and m["method"].startswith(MCP_METHODS) for m in messages):
        return _MCP_LEAVES
    return ()


def _principal(req: RequestView) -> str:
    return req.principal or req.source_workload or req.ip or req.peer_ip or "-"


def _learned_value(prop: _Prop, value: Value) -> Violation | None:
    if prop.types & ~NULL and not prop.types & accepts(value.bit, value.text):
        return Violation("schema:learned-type", "schema-violation", WARNING, value.key, "type differs from every value learned")
    if value.length > max(_SIZE_FACTOR * prop.max_len, _SIZE_FLOOR):
        return Violation("schema:learned-size", "schema-violation", NOTICE, value.key, f"{value.length} characters, at most {prop.max_len} learned")
    return None


def _never_seen(ep: _Endpoint, value: Value) -> Violation:
    """A property the endpoint never carried: an object where a scalar was learned (or the reverse) is a type change."""
    for _, child, _ in path_steps(value.key)[:-1]:
        prop = ep.props.get(child)
        if prop is not None and prop.learned:
            return Violation("schema:learned-type", "schema-violation", WARNING, child, "a container where a value was learned")
    below = (value.key + ".", value.key + "[")
    if any(k.startswith(below) and p.learned for k, p in ep.props.items()):
        return Violation("schema:learned-type", "schema-violation", WARNING, value.key, "a value where a container was learned")
    return Violation("schema:learned-unknown", "schema-violation", NOTICE, value.key, "property never seen on this endpoint")


def _inspection(violations: Iterable[Violation]) -> Inspection:
    """One score per request: each rule once, learned evidence capped at ``LEARNED_CAP``; categories by score."""
    by_rule: dict[str, Violation] = {}
    for v in violations:
        by_rule.setdefault(v.rule, v)
    learned = sum(v.score for v in by_rule.values() if v.learned)
    score = sum(v.score for v in by_rule.values() if not v.learned) + min(learned, LEARNED_CAP)
    best: dict[str, int] = {}
    for v in by_rule.values():
        best[v.category] = max(best.get(v.category, 0), v.score)
    return Inspection(tuple(sorted(best, key=lambda c: -best[c])), tuple(sorted(by_rule)), score)


class PropertySchemaValidator:
    """Validates request bodies and queries against declared and learned schemas (an ``Inspector``; see the module docstring).

    Parameters: ``settings``; ``specs`` (service -> ``SpecIndex``, as
    ``ingest.openapi.load_spec_dir`` returns); ``threshold``, the score at which
    ``inspect`` reports (``evaluate`` reports any score, for a composition that
    adds scores across engines); ``clock`` for the learning window.
    """

    def __init__(self, settings: SchemaValidationSettings | None = None, specs: Mapping[str, SpecIndex] | None = None, *,
                 threshold: int = 5, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or SchemaValidationSettings()
        self.specs = dict(specs or {})
        self.threshold = threshold
        self._clock = clock
        self._endpoints: dict[tuple[str, str, str], _Endpoint] = {}
        self._last: tuple[RequestView, _Parsed | None] | None = None
        self.counts: dict[str, int] = {"checked": 0, "learned": 0, "endpoints_dropped": 0, "properties_dropped": 0}

    def inspect(self, req: RequestView) -> Inspection | None:
        """The inspection when the request's score reaches ``threshold``, else None."""
        found = self.evaluate(req)
        return found if found is not None and found.score >= self.threshold else None

    def evaluate(self, req: RequestView) -> Inspection | None:
        """The inspection of any score (None when nothing was found)."""
        violations = self.check(req)
        return _inspection(violations) if violations else None

    def check(self, req: RequestView) -> list[Violation]:
        """Every violation of one request; records privileged-name sightings during learning."""
        parsed = self._parse(req)
        if parsed is None:
            return []
        self.counts["checked"] += 1
        out: list[Violation] = []
        spec, ctx = parsed.declared, parsed.context
        if spec is not None and spec.body is not None:
            out += [v for v in (declared_leaf(spec.body, x, ctx) for x in parsed.body) if v is not None]
        elif parsed.body:
            out += self._learned(req, parsed, parsed.body, True)
        if spec is not None:
            out += [v for v in (declared_query(spec, parsed.endpoint[1], x, ctx) for x in parsed.query) if v is not None]
        elif parsed.query:
            out += self._learned(req, parsed, parsed.query, parsed.assigns_query)
        for v in out:
            self.counts[v.rule] = self.counts.get(v.rule, 0) + 1
        return out

    def learn(self, req: RequestView) -> None:
        """Learn from a request the shim allowed (never call it for a denied one)."""
        parsed = self._parse(req)
        if parsed is None:
            return
        spec = parsed.declared
        body = parsed.body if spec is None or spec.body is None else ()
        query = parsed.query if spec is None else ()
        now = self._clock()
        ep = self._endpoint(parsed.endpoint, now) if body or query else None
        if ep is None:
            return
        learning = self._learning(ep, now)
        ep.requests += 1
        self.counts["learned"] += 1
        who, props = _principal(req), ep.props
        for values, assigns in ((body, True), (query, parsed.assigns_query)):
            for value in values:
                prop = props.get(value.key)
                if prop is not None and prop.learned:
                    if learning:  # after learning, what was learned stays as learned: traffic cannot widen it
                        prop.types |= value.bit
                        if value.length > prop.max_len:
                            prop.max_len = value.length
                    continue
                privileged = assigns and is_privileged(value.key, parsed.context)
                if privileged and not learning:  # after learning, a privileged name is never learned from traffic
                    continue
                prop = self._prop(ep, value.bit, value.length if learning else value.first, value.key)
                if prop is not None and learning and not privileged:
                    prop.learned = True
                elif prop is not None and not self._sighting(prop, who) and value.length > prop.max_len:
                    prop.max_len = value.length  # (after learning, a sighting that teaches the property stops at its first leaf)

    def stats(self) -> dict[str, int]:
        """Counters (checked, learned, per rule, what the memory bounds dropped) and the endpoints and properties held."""
        return {**self.counts, "endpoints": len(self._endpoints), "properties": sum(len(e.props) for e in self._endpoints.values())}

    # ------------------------------------------------------------ internals
    def _parse(self, req: RequestView) -> _Parsed | None:
        last = self._last
        if last is not None and last[0] is req:  # learn() right after inspect() of the same request: parse once
            return last[1]
        parsed = self._parse_new(req)
        self._last = (req, parsed)
        return parsed

    def _parse_new(self, req: RequestView) -> _Parsed | None:
        if not req.body and "?" not in req.path:
            return None
        body, query = request_values(req)
        protocol = _protocol_prefixes(req) if body else ()
        if protocol:  # a model API call or an MCP message: the protocol's own fields are no resource's properties
            body = [v for v in body if not v.key.startswith(protocol)]
        if not body and not query:
            return None
        method, path = req.method.upper(), req.path.partition("?")[0]
        service = f"{req.namespace}/{req.service}" if req.namespace and req.service else (req.service or "-")
        index = self.specs.get(service) or self.specs.get(req.service or "-")
        declared = index.match(method, path) if index is not None else None
        template = declared.template if declared is not None else template_path(path)[0]
        return _Parsed((service, method, template), declared, tuple(body), tuple(query), context_of(method, template))

    def _learning(self, ep: _Endpoint, now: float) -> bool:
        if not ep.done and (ep.requests >= self.settings.learn_requests or now - ep.first_seen >= self.settings.learn_seconds):
            ep.done = True
        return not ep.done

    def _endpoint(self, key: tuple[str, str, str], now: float) -> _Endpoint | None:
        ep = self._endpoints.get(key)
        if ep is None:
            if len(self._endpoints) >= self.settings.max_endpoints:
                self.counts["endpoints_dropped"] += 1
                return None
            ep = self._endpoints[key] = _Endpoint(now)
        return ep

    def _prop(self, ep: _Endpoint, bit: int, length: int, key: str) -> _Prop | None:
        prop = ep.props.get(key)
        if prop is None:
            if len(ep.props) >= self.settings.max_properties:
                self.counts["properties_dropped"] += 1
                return None
            prop = ep.props[key] = _Prop()
        prop.types |= bit
        if length > prop.max_len:
            prop.max_len = length
        return prop

    def _sighting(self, prop: _Prop, who: str) -> bool:
        """Count one more distinct principal; True when that makes the property learned."""
        seen = prop.principals if prop.principals is not None else set()
        seen.add(who)
        if len(seen) >= self.settings.min_principals:
            prop.learned, prop.principals = True, None
            return True
        prop.principals = seen
        return False

    def _learned(self, req: RequestView, parsed: _Parsed, values: tuple[Value, ...], assigns: bool) -> list[Violation]:
        now = self._clock()
        ep = self._endpoints.get(parsed.endpoint)
        learning = ep is None or self._learning(ep, now)
        out: list[Violation] = []
        props = ep.props if ep is not None else {}
        for value in values:
            prop = props.get(value.key)
            if prop is not None and prop.learned:
                if prop.types & value.bit and value.length <= _SIZE_FLOOR:  # the usual leaf: a learned type, short
                    continue
                found = _learned_value(prop, value)
            elif assigns and is_privileged(value.key, parsed.context):
                found = self._privileged(req, parsed, value, learning, now, ep is not None)
            else:
                found = _never_seen(ep, value) if ep is not None and not learning else None
            if found is not None:
                out.append(found)
        return out

    def _privileged(self, req: RequestView, parsed: _Parsed, value: Value, learning: bool, now: float, known: bool) -> Violation | None:
        """A privileged property not learned; ``known``: the endpoint existed before this request.

        A sighting that makes the property learned counts from the value's first leaf: on a known
        endpoint its other leaves are then checked as learned ones, on an endpoint this request
        created they are sightings too (they update the property and pass).
        """
        if learning:
            ep = self._endpoint(parsed.endpoint, now)
            prop = self._prop(ep, value.bit, value.first if known else value.length, value.key) if ep is not None else None
            if prop is None:
                # The endpoint or property table is full (counted in stats): not validated rather than denied, so
                # junk endpoints or properties sent to fill the tables cannot turn legitimate requests into denials.
                return None
            if self._sighting(prop, _principal(req)):
                return _learned_value(prop, value) if known else None
            prop.max_len = max(prop.max_len, value.length)
            if is_commercial(value.key, parsed.context):  # an order's price is normal until learning says otherwise
                return None
        when = "during learning" if learning else "after learning"
        return Violation("mass-assignment:never-seen", "mass-assignment", CRITICAL, value.key, f"privileged property never seen on this endpoint ({when})")


def build_property_validator(spec_dir: Path | None, settings: SchemaValidationSettings | None = None, *, threshold: int = 5,
                             clock: Callable[[], float] = time.monotonic) -> PropertySchemaValidator:
    """The validator with the declared specs of ``spec_dir`` (else ``settings.spec_dir``); the only function here that reads files."""
    settings = settings or SchemaValidationSettings()
    directory = spec_dir if spec_dir is not None else settings.spec_dir
    return PropertySchemaValidator(settings, load_spec_dir(directory) if directory is not None else {}, threshold=threshold, clock=clock)
