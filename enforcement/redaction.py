"""Inline redaction of personal data and secrets in HTTP bodies (pure: no I/O, no environment).

Contract: ``redact_body(body, content_type, policy, limits) -> Redacted`` returns
the body with every detected value of an enabled type replaced, the number of
values redacted by type, and why a body was left untouched (``skipped``). A body
with nothing to redact comes back as the same bytes object. Detection is
``ingest.sensitive`` (``scan_spans`` for patterns, ``leaf_info`` for what a field
name announces), and the values of a JSON or form body are gathered and scanned
by ``enforcement.bodyvalues``; this module only decides what to replace and how.

Per-type actions (``RedactionPolicy``):

========  ================================================================
``mask``  the detected span becomes ``[<type>]`` (``"mail me at [email]"``);
          only the span, the rest of the string stays
``hash``  the span becomes ``[<type>:<12 hex>]``, an HMAC-SHA256 of the value
          under ``hash_key`` (equal values stay joinable, never reversible)
``drop``  JSON: the key (or array element) holding the value is removed;
          form: the field is removed; text: the span is removed
``allow`` left as is and not counted
========  ================================================================

On by default (``DEFAULT_ACTIONS``: mask): email, phone, card, iban, ssn,
national_id, dob, jwt, secret. ``ip`` is allowed by default: addresses fill
operational responses (health checks, node lists) and are personal data only
sometimes; a policy turns it on.

Formats. JSON is redacted structurally: parsed, string leaves (and numbers of
sensitive shape or in a sensitive-named field, which become strings) are
rewritten, key order and shape are kept, and the result is serialised compactly
(orjson). A field whose name announces a type (``password``, ``ssn``,
``card_number``, ``dob``...) is redacted whole when its value matched nothing and
is not already masked. NDJSON is redacted line by line; form bodies field by
field (names give hints, values are re-encoded); ``text/*``, XML and JavaScript
by span. A JSON body that does not parse is redacted as text. Anything else
(images, protobuf, octet streams, unknown types) passes untouched with
``skipped="unsupported_type"``; so do bodies over ``max_body_bytes``
(``too_large``), with more than ``max_leaves`` values (``too_many_leaves``), or
that are not valid UTF-8 / their declared charset (``undecodable``).
Content-encoded (gzip, br) bodies are the adapter's business: it skips them
(``encoded``) and asks upstreams for identity encoding instead.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote_plus, unquote_plus

import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from enforcement.bodyvalues import BodyValues, json_slots
from ingest.bodies import is_json_media, media_type
from ingest.sensitive import SENSITIVE_TYPES, Span, scan_spans

__all__ = [
    "ACTIONS", "DEFAULT_ACTIONS", "DEFAULT_LLM_HOSTS", "SKIP_REASONS", "Action", "Redacted", "RedactionLimits",
    "RedactionPolicy", "RedactionSettings", "redact_body", "redact_text", "redactable",
]

Action = Literal["mask", "hash", "drop", "allow"]
ACTIONS: tuple[Action, ...] = ("mask", "hash", "drop", "allow")
DEFAULT_ACTIONS: Mapping[str, Action] = {t: ("allow" if t == "ip" else "mask") for t in SENSITIVE_TYPES}
#: what a JSON body with sensitive values becomes when it is nested too deeply to be written back redacted
_TOO_DEEP = b'"[redacted by kubeward: a body nested too deeply to rewrite]"'
#: every value ``Redacted.skipped`` can take (bounded: they label a metric)
SKIP_REASONS = ("too_large", "too_many_leaves", "unsupported_type", "undecodable", "encoded")

_NDJSON = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines"})
_TEXT = frozenset({"application/xml", "application/javascript", "application/graphql", "application/yaml",
                   "application/x-yaml", "application/soap+xml"})


@dataclass(frozen=True, slots=True)
class RedactionPolicy:
    """What happens to each sensitive type: ``actions`` by type, ``default`` for types not named.

    ``hash_key`` keys the ``hash`` action and must be set when any type hashes.
    """

    actions: Mapping[str, Action] = field(default_factory=lambda: dict(DEFAULT_ACTIONS))
    default: Action = "mask"
    hash_key: bytes = b""

    def __post_init__(self) -> None:
        for kind, action in (*self.actions.items(), ("default", self.default)):
            if action not in ACTIONS:
                raise ValueError(f"redaction action for {kind!r} must be one of {ACTIONS}, got {action!r}")
        if not self.hash_key and "hash" in (*self.actions.values(), self.default):
            raise ValueError("redaction hash_key must be set when an action is 'hash'")

    def action(self, kind: str) -> Action:
        """The action for one type."""
        return self.actions.get(kind, self.default)

    def replacement(self, kind: str, value: str) -> str | None:
        """What replaces ``value`` of type ``kind``; None means drop it."""
        action = self.action(kind)
        if action == "drop":
            return None
        if action == "hash":
            digest = hmac.new(self.hash_key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
            return f"[{kind}:{digest[:12]}]"
        return f"[{kind}]"


@dataclass(frozen=True, slots=True)
class RedactionLimits:
    """Bounds on one body: bytes (past it the body passes untouched) and values (JSON leaves, form fields)."""

    max_body_bytes: int = 262144
    max_leaves: int = 20000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_leaves"):
            if getattr(self, name) < 1:
                raise ValueError(f"redaction limit {name} must be >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True, slots=True)
class Redacted:
    """A redacted body: the bytes to send, values redacted by type, why it was left untouched (or None)."""

    body: bytes
    counts: dict[str, int] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def changed(self) -> bool:
        """Whether ``body`` differs from the input (something was redacted)."""
        return bool(self.counts)


_UNCHANGED: dict[str, int] = {}


def _add(counts: dict[str, int], kind: str) -> None:
    counts[kind] = counts.get(kind, 0) + 1


def _apply(text: str, spans: list[Span], policy: RedactionPolicy, counts: dict[str, int]) -> str | None:
    """``text`` with ``spans`` replaced per policy (None: a span says drop the whole value); counts what changed."""
    out: list[str] = []
    at = 0
    for span in spans:
        if policy.action(span.type) == "allow":
            continue
        new = policy.replacement(span.type, text[span.start:span.end])
        _add(counts, span.type)
        if new is None:
            return None
        out += (text[at:span.start], new)
        at = span.end
    if not out:
        return text
    out.append(text[at:])
    return "".join(out)


def redact_text(text: str, policy: RedactionPolicy, counts: dict[str, int] | None = None) -> str:
    """Free text with every enabled span replaced (``drop`` removes the span); adds to ``counts`` if given."""
    counts = {} if counts is None else counts
    out: list[str] = []
    at = 0
    for span in scan_spans(text):
        if policy.action(span.type) == "allow":
            continue
        _add(counts, span.type)
        out += (text[at:span.start], policy.replacement(span.type, text[span.start:span.end]) or "")
        at = span.end
    return "".join(out) + text[at:] if out else text


# ------------------------------------------------------------------ formats
def _rewrite_json(values: BodyValues, policy: RedactionPolicy, counts: dict[str, int]) -> None:
    dropped: list[tuple[Any, Any]] = []
    for i, spans in values.spans():
        container, key = values.slots[i]
        new = _apply(values.texts[i], spans, policy, counts)
        if new is None:
            dropped.append((container, key))
        elif new is not values.texts[i]:
            container[key] = new
    # Array elements go last first, so earlier indices stay valid.
    for container, key in sorted(dropped, key=lambda d: d[1] if isinstance(d[1], int) else -1, reverse=True):
        del container[key]


def _redact_json(data: bytes, policy: RedactionPolicy, limits: RedactionLimits) -> Redacted | None:
    """Structural JSON redaction; None when ``data`` is not JSON."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    root = [doc]
    values = BodyValues()
    if not json_slots(root, values, limits.max_leaves):
        return Redacted(data, _UNCHANGED, "too_many_leaves")
    counts: dict[str, int] = {}
    _rewrite_json(values, policy, counts)
    if not counts:
        return Redacted(data, _UNCHANGED)
    try:
        return Redacted(orjson.dumps(root[0]) if root else b"", counts)
    except TypeError:  # orjson writes 254 levels of the 1,024 it reads: write it with the standard library
        try:
            return Redacted(json.dumps(root[0], ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass"), counts)
        except (RecursionError, ValueError):  # deeper still: the body goes whole, never unredacted
            return Redacted(_TOO_DEEP, counts)


def _redact_ndjson(data: bytes, policy: RedactionPolicy, limits: RedactionLimits) -> Redacted:
    counts: dict[str, int] = {}
    lines = data.split(b"\n")
    for n, line in enumerate(lines):
        if line.strip():
            one = _redact_json(line, policy, limits) or _redact_plain(line, "", policy)
            if one.skipped:
                return Redacted(data, _UNCHANGED, one.skipped)
            for kind, c in one.counts.items():
                counts[kind] = counts.get(kind, 0) + c
            lines[n] = one.body
    return Redacted(b"\n".join(lines), counts) if counts else Redacted(data, _UNCHANGED)


def _redact_form(data: bytes, policy: RedactionPolicy, limits: RedactionLimits) -> Redacted:
    try:
        pairs = data.decode("ascii").split("&")
    except UnicodeDecodeError:
        return Redacted(data, _UNCHANGED, "undecodable")
    if len(pairs) > limits.max_leaves:
        return Redacted(data, _UNCHANGED, "too_many_leaves")
    values = BodyValues()
    for n, pair in enumerate(pairs):
        key, _, value = pair.partition("=")
        name = unquote_plus(key)
        values.add(name.rsplit("[", 1)[0] if name.endswith("]") else name, unquote_plus(value), n)
    counts: dict[str, int] = {}
    out: list[str | None] = list(pairs)
    for i, spans in values.spans():
        n = values.slots[i]
        new = _apply(values.texts[i], spans, policy, counts)
        out[n] = None if new is None else f"{pairs[n].partition('=')[0]}={quote_plus(new, safe='[]:')}"
    if not counts:
        return Redacted(data, _UNCHANGED)
    return Redacted("&".join(p for p in out if p is not None).encode("ascii"), counts)


def _charset(params: str) -> str:
    for part in params.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"').lower()
    return "utf-8"


def _redact_plain(data: bytes, params: str, policy: RedactionPolicy) -> Redacted:
    charset = _charset(params)
    try:
        text = data.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return Redacted(data, _UNCHANGED, "undecodable")
    counts: dict[str, int] = {}
    new = redact_text(text, policy, counts)
    if not counts:
        return Redacted(data, _UNCHANGED)
    try:
        return Redacted(new.encode(charset), counts)
    except UnicodeEncodeError:
        return Redacted(new.encode("utf-8"), counts)


def _kind(media: str) -> str | None:
    if is_json_media(media):
        return "json"
    if media in _NDJSON:
        return "ndjson"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("text/") or media in _TEXT or media.endswith("+xml"):
        return "text"
    return None


def redactable(content_type: str | None) -> bool:
    """Whether ``redact_body`` reads bodies of this content type (JSON, NDJSON, form, text, XML)."""
    return _kind(media_type(content_type)[0]) is not None


def redact_body(body: bytes, content_type: str | None, policy: RedactionPolicy, limits: RedactionLimits | None = None) -> Redacted:
    """``body`` with every enabled sensitive value replaced, per its content type (see the module docstring).

    >>> r = redact_body(b'{"note": "mail bob@example.org", "n": 2}', "application/json", RedactionPolicy())
    >>> r.body, r.counts
    (b'{"note":"mail [email]","n":2}', {'email': 1})
    """
    limits = limits or RedactionLimits()
    if len(body) > limits.max_body_bytes:
        return Redacted(body, _UNCHANGED, "too_large")
    if not body.strip():
        return Redacted(body, _UNCHANGED)
    media, params = media_type(content_type)
    kind = _kind(media)
    if kind is None:
        return Redacted(body, _UNCHANGED, "unsupported_type")
    if kind == "json":
        return _redact_json(body, policy, limits) or _redact_plain(body, params, policy)
    if kind == "ndjson":
        return _redact_ndjson(body, policy, limits)
    if kind == "form":
        return _redact_form(body, policy, limits)
    return _redact_plain(body, params, policy)


DEFAULT_LLM_HOSTS = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "api.mistral.ai",
                     "api.cohere.com", "api.cohere.ai", "api.groq.com", "*.openai.azure.com")


class RedactionSettings(BaseModel):
    """Inline redaction through Envoy ext_proc (section ``redaction`` of the shim: ``KUBEWARD_SHIM_REDACTION__*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    extproc_port: int | None = Field(default=None, ge=0, le=65535, description="Envoy ext_proc port (envoy.service.ext_proc.v3.ExternalProcessor/Process); unset = off")
    responses: Literal["all", "verdict", "none"] = Field(
        default="all", description="which response bodies are redacted: all that pass the filter, only those of subjects with a redact verdict, or none")
    actions: dict[str, Action] = Field(default_factory=lambda: dict(DEFAULT_ACTIONS), description="action per sensitive type: mask | hash | drop | allow")
    default_action: Action = Field(default="mask", description="action for a type not named in actions")
    hash_key: SecretStr = Field(default=SecretStr("kubeward-dev-redaction-key"), description="HMAC key of the hash action")
    max_body_bytes: int = Field(default=262144, ge=1, description="bodies larger than this pass untouched (counted as too_large)")
    max_leaves: int = Field(default=20000, ge=1, description="bodies with more values than this pass untouched (too_many_leaves)")
    llm_hosts: tuple[str, ...] = Field(default=DEFAULT_LLM_HOSTS, description="request bodies to these hosts are redacted (a leading *. matches subdomains)")
    strip_accept_encoding: bool = Field(default=True, description="drop accept-encoding from requests whose responses are redacted, so upstreams answer uncompressed")
    offload_bytes: int = Field(default=16384, ge=0, description="bodies above this are redacted on a worker thread, off the event loop (0 = always inline)")

    def policy(self) -> RedactionPolicy:
        """The per-type policy these settings describe."""
        return RedactionPolicy(dict(self.actions), self.default_action, self.hash_key.get_secret_value().encode())

    def limits(self) -> RedactionLimits:
        """The body limits these settings describe."""
        return RedactionLimits(self.max_body_bytes, self.max_leaves)
