"""Inline honeytoken check: any use of a declared honeytoken in a request is the finding ``honeytoken``.

Contract: pure and bounded. ``HoneytokenInspector(tokens).inspect(req)`` reads
the values of a request where a credential or an object id can travel:

- ``authorization``: a bearer token; a basic credential's password and account;
- the API-key headers (``ingest.identity.IdentityConfig.api_key_headers``) and
  every cookie value;
- each path segment (percent-decoded, and its stem before a short extension,
  as the templater reads ``{id}.json``), each query value;
- the body: a JSON body's string and number leaves, else form fields and other
  parts through ``enforcement.requestparts.body_parts`` (at most ``max_values``).
  When every declared value is one word (``Honeytokens.words``) and the body
  holds no backslash escape, a JSON body is read as the words of its raw bytes
  (``_JSON_WORDS``: quotes, brackets, commas, colons and whitespace are
  separators; keys and literals are words too), every step in C: 14-20 us/KB
  on a loaded 2-core machine against 18-24 for parsing and walking the
  document, which is the fallback (``enforcement.requestparts.json_document``,
  the parse the other inspectors share). A JSON body is read only when it is at
  most ``max_body_bytes``; a longer body's prefix is read as text or form fields.

Cost (the mix of ``deploy/lab/bench_inspection.sample_requests``, same run):
nothing declared 0.2-0.4 us; with honeytokens, 4-7 us per GET (a quarter of
the rule engines' cost) and 36-58 us per POST with a 0.5-8 KB JSON body
(about half of theirs), almost all of it listing the values, not probing them.

Each value costs one probe of ``Honeytokens.probes`` (a set of process-keyed
``hash()`` values): a request without honeytokens never computes a keyed hash.
A probe hit is confirmed with the keyed BLAKE2b hashes (``Honeytokens.credential_of``,
``Honeytokens.is_object``; an object id only for its own service, or any
service when the destination is unknown). A confirmed hit is
``Inspection(("honeytoken",), ("honeytoken:<credential|account|object>",), SCORE)``:
``SCORE`` is above any request's rule total, so ``honeytoken`` leads the
categories ``enforcement.inspection.Inspectors`` merges and names the denial
(``inline:honeytoken``); the shim reports it in the summary's ``inline_findings``.
No value is ever logged or returned.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote, unquote_plus

from enforcement.decision import Inspection, RequestView
from enforcement.requestparts import body_parts, json_document
from ingest.honeytokens import Honeytokens
from ingest.identity import IdentityConfig

__all__ = ["CATEGORY", "SCORE", "HoneytokenInspector"]

#: the inline finding category (and ``attack_class`` of the worker's rule)
CATEGORY = "honeytoken"
#: the score of a hit: far above any request's total of rule scores (a critical rule adds 5)
SCORE = 10_000
_MAX_DEPTH = 32
_DEFAULTS = IdentityConfig()
#: JSON's structural characters to spaces, so ``bytes.split()`` yields the words of a JSON text
_JSON_WORDS = bytes.maketrans(b'"{}[],:', b"       ")


class HoneytokenInspector:
    """The ``Inspector`` of declared honeytokens (see the module docstring)."""

    def __init__(self, tokens: Honeytokens, *, api_key_headers: tuple[str, ...] = _DEFAULTS.api_key_headers,
                 max_values: int = 512, max_body_bytes: int = 65536) -> None:
        self.tokens = tokens
        self._probes = tokens.probes
        self._key_headers = tuple(h.lower() for h in api_key_headers)
        self._max_values = max_values
        self._max_body = max_body_bytes
        self._words = tokens.words
        #: requests that used a honeytoken (a metric)
        self.hits = 0

    def inspect(self, req: RequestView) -> Inspection | None:
        """``Inspection(("honeytoken",), ...)`` when the request uses a declared honeytoken, else None."""
        probes = self._probes
        if not probes:
            return None
        values = self.values(req)
        words = self._json_words(req)
        if probes.isdisjoint(map(hash, values)) and (not words or probes.isdisjoint(map(hash, words))):
            return None  # the common case: C loops of set probes
        suspects = [v for v in values if hash(v) in probes]
        suspects += [w.decode("utf-8", "replace") for w in words if hash(w) in probes]
        kinds = {kind for kind in (self._confirm(v, req.service) for v in suspects) if kind is not None}
        if not kinds & {"credential", "object"} and not {"account", "password"} <= kinds:
            return None  # a decoy account name or password alone may be a real user's word: only the pair is a hit
        self.hits += 1
        return Inspection((CATEGORY,), tuple(sorted(f"{CATEGORY}:{k}" for k in kinds)), SCORE)

    def _confirm(self, value: str, service: str | None) -> str | None:
        found = self.tokens.credential_of(value)
        if found is None and self.tokens.is_object(value, service):
            return "object"
        return found

    def _json_words(self, req: RequestView) -> list[bytes]:
        """The words of a raw JSON body when that reading applies (see the module docstring), else []."""
        body = req.body
        if not body or not self._words or len(body) > self._max_body or b"\\" in body:
            return []
        start = body.lstrip()[:1]
        return body.translate(_JSON_WORDS).split() if start == b"{" or start == b"[" else []

    def values(self, req: RequestView) -> list[str]:
        """Every value of ``req`` a honeytoken may be, but the words of a JSON body ``_json_words`` reads."""
        out: list[str] = []
        headers = req.headers
        if headers:
            self._header_values(headers, out)
        path, _, query = req.path.partition("?")
        _segments(path, out)
        if query:
            for pair in query.split("&"):
                value = pair.partition("=")[2]
                if value:
                    out.append(unquote_plus(value) if "%" in value or "+" in value else value)
        if req.body and self._max_body > 0:
            self._body_values(req, headers, out)
        return out

    def _header_values(self, headers: dict[str, str], out: list[str]) -> None:
        auth = headers.get("authorization")
        if auth:
            _authorization(auth, out)
        for name in self._key_headers:
            key = headers.get(name)
            if key:
                out.append(key.strip())
        cookie = headers.get("cookie")
        if cookie:
            for part in cookie.split(";"):
                value = part.partition("=")[2].strip()
                if value:
                    out.append(unquote(value) if "%" in value else value)

    def _body_values(self, req: RequestView, headers: dict[str, str] | None, out: list[str]) -> None:
        body = req.body or b""
        whole = len(body) <= self._max_body
        if not whole:
            body = body[: self._max_body]  # the prefix, read as text or form fields (a cut JSON text does not parse)
        elif body.lstrip()[:1] in (b"{", b"["):
            if self._words and b"\\" not in body:
                return  # read as words by ``_json_words``
            parsed, doc = json_document(req)
            if parsed:
                cap = len(out) + self._max_values
                _leaves(doc, out, cap, 1)
                del out[cap:]
                return
        content_type = headers.get("content-type") if headers else None
        parts, _ = body_parts(body.decode("utf-8", "replace"), content_type, self._max_values)
        out.extend(value for location, _, value in parts if location == "body")


def _authorization(auth: str, out: list[str]) -> None:
    scheme, _, credential = auth.strip().partition(" ")
    credential = credential.strip()
    if not credential:
        return
    if scheme.lower() != "basic":
        out.append(credential)
        return
    try:
        user, _, password = base64.b64decode(credential, validate=True).decode("utf-8", "replace").partition(":")
    except (binascii.Error, ValueError):
        return
    out.append(user)
    if password:
        out.append(password)


def _segments(path: str, out: list[str]) -> None:
    if "%" in path:
        path = unquote(path)
    for segment in path.split("/"):
        if segment:
            out.append(segment)
            if "." in segment:
                stem = segment.rpartition(".")[0]
                if stem:
                    out.append(stem)


def _leaves(node: Any, out: list[str], cap: int, depth: int) -> None:
    """String and integer leaves of a parsed JSON container (booleans are not ids), depth-first, to ``_MAX_DEPTH``.

    The cap is checked per container, not per leaf (a check per leaf cost more than the leaves past it);
    the caller trims ``out`` to ``cap``. A body is at most ``max_body_bytes``, so a flat array is bounded too.
    """
    append = out.append
    for value in node.values() if node.__class__ is dict else node:
        cls = value.__class__
        if cls is str:
            append(value)
        elif cls is int:
            append(str(value))
        elif (cls is dict or cls is list) and depth < _MAX_DEPTH and len(out) < cap:
            _leaves(value, out, cap, depth + 1)
