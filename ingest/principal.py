"""Who made a call: the principal, derived from the credentials the request carries.

From ``Authorization: Bearer <JWT>`` (``sub``, else ``client_id``, else
``azp``), ``Authorization: Basic`` (the user name, ``normalize_account``), an
API-key header or a session cookie; kept as a keyed hash (``jwt:<16 hex>``),
never the token. A JWT's signature is checked when a shared secret (HS256) or a
JWKS (RS256/ES256) is configured; a token that fails the check yields no
principal (``auth_type`` ``jwt-invalid``), so a forged ``sub`` can never frame
someone else. A token that is no well-formed JWS (``jwt_claims``: bad base64,
not UTF-8 JSON objects, nested past the parser's depth, or a lone UTF-16
surrogate escape such as ``"\\udfff"`` anywhere in header or claims) is read as
an opaque bearer token (``bearer:<16 hex>`` of the whole token), never as an
exception and never by patching the text.

Pure; ``ingest.identity.IdentityResolver`` calls ``principal_from_headers`` and
memoises its answer per distinct set of identity headers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ingest.templating import hash_object_id

if TYPE_CHECKING:
    from ingest.identity import IdentityConfig

__all__ = ["hash_principal", "jwt_claims", "normalize_account", "principal_from_headers"]

#: a UTF-16 surrogate on its own: what ``json.loads`` leaves of an unpaired ``\\ud800``-``\\udfff`` escape
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def hash_principal(kind: str, value: str, key: bytes) -> str:
    """``<kind>:<16 hex>``, a keyed BLAKE2b of the principal's id (stable per key, not reversible).

    >>> hash_principal("jwt", "user-00042", b"k") == hash_principal("jwt", "user-00042", b"k")
    True
    """
    return f"{kind}:{hash_object_id(value, key)}"


def _b64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _json_segment(segment: str) -> Any:
    """A header or claims segment as JSON; ``ValueError`` unless it is well-formed UTF-8 JSON (RFC 7515).

    ``json.loads`` reads a lone surrogate from an escape (``"\\udfff"``, or a pair in the wrong order) and,
    given bytes, even from raw surrogate bytes; no UTF-8 encodes one, so a principal hashed from it would
    fail downstream. Such a segment is refused like any other malformed one: replacing the surrogates with
    U+FFFD would let distinct subjects (``a\\ud800``, ``a\\udfff``, ``a\\ufffd``) share one principal.
    """
    text = _b64(segment).decode("utf-8")  # strict: raw surrogate bytes are no UTF-8
    value = json.loads(text)
    if "\\u" in text and _LONE_SURROGATE.search(json.dumps(value, ensure_ascii=False)):
        raise ValueError("a lone surrogate escape in a JWT segment")
    return value


def jwt_claims(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes] | None:
    """(header, claims, signing input, signature) of a compact JWS, or None when it is not a well-formed one.

    Not well-formed: bad base64url, a header or claims set that is not a UTF-8 JSON object, JSON nested
    deeper than the parser reads, a lone surrogate escape (see ``_json_segment``).

    >>> jwt_claims("eyJhbGciOiJub25lIn0.eyJzdWIiOiJcdWRmZmYifQ.c2ln") is None  # {"sub": "\\udfff"}
    True
    """
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header, claims = _json_segment(parts[0]), _json_segment(parts[1])
        signature = _b64(parts[2])
    except (ValueError, RecursionError):  # ValueError covers binascii.Error and UnicodeDecodeError
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _verify(header: Mapping[str, Any], signing_input: bytes, signature: bytes, config: IdentityConfig) -> bool:
    alg = header.get("alg")
    if alg == "HS256" and config.jwt_hs256_secret is not None:
        expected = hmac.new(config.jwt_hs256_secret, signing_input, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)
    if alg in ("RS256", "ES256") and config.jwks is not None:
        from ingest.jwks import verify_with_jwks

        return verify_with_jwks(config.jwks, header, signing_input, signature)
    return False


def _principal_from_jwt(token: str, config: IdentityConfig) -> tuple[str | None, str]:
    parsed = jwt_claims(token)
    if parsed is None:
        return hash_principal("bearer", token, config.principal_key), "bearer"
    header, claims, signing_input, signature = parsed
    checking = config.jwt_hs256_secret is not None or config.jwks is not None
    if checking and not _verify(header, signing_input, signature, config):
        return None, "jwt-invalid"
    subject = claims.get("sub") or claims.get("client_id") or claims.get("azp")
    if not isinstance(subject, str) or not subject:
        return None, "jwt-anonymous"
    return hash_principal("jwt", subject, config.principal_key), "jwt" if checking else "jwt-unverified"


def _cookie(header: str, names: tuple[str, ...]) -> str | None:
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() in names and value:
            return value
    return None


def principal_from_headers(headers: Mapping[str, str], config: IdentityConfig) -> tuple[str | None, str]:
    """(hashed principal, auth type) from the request headers (lower-case names)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, credential = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and credential:
            return _principal_from_jwt(credential.strip(), config)
        if scheme.lower() == "basic" and credential:
            try:
                user = base64.b64decode(credential.strip()).decode("utf-8", "replace").partition(":")[0]
            except ValueError:
                return None, "basic-invalid"
            return hash_principal("basic", normalize_account(user), config.principal_key), "basic"
    for name in config.api_key_headers:
        key = headers.get(name)
        if key:
            return hash_principal("apikey", key, config.principal_key), "api_key"
    cookie = headers.get("cookie")
    if cookie:
        session = _cookie(cookie, config.session_cookies)
        if session:
            return hash_principal("session", session, config.principal_key), "session"
    return None, "none"


def normalize_account(name: str) -> str:
    """An account name as identity providers compare it: NFKC (full-width letters are ASCII ones), case-folded.

    Without it one account splits into many identities by case or width alone (``Alice``, ``ａｌｉｃｅ``),
    each a fresh actor with counts of its own.

    >>> normalize_account("Ａｌｉｃｅ") == normalize_account("alice")
    True
    """
    if not name.isascii():
        name = unicodedata.normalize("NFKC", name)
    return name.casefold()

