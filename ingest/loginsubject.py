"""The account a login request names: user name, e-mail, login or client id, never the password.

Contract: pure and bounded. ``login_subject(method, path, headers, body)``
returns the account a login attempt names, or ``None`` when the request is not
a login or names no account. It reads, in this order:

1. a subject field of the request body (JSON, form, multipart, read by
   ``ingest.bodies.walk_body`` within ``SUBJECT_LIMITS``): user-name fields
   (``username``, ``user``, ``login``, ``account``, ...), then e-mail fields, then
   ``client_id``; the shallowest match of the best group wins, so
   ``{"user": {"email": ...}}`` and ``{"credentials": {"username": ...}}`` both work;
2. the user of ``Authorization: Basic`` (for OAuth token endpoints that is the
   client id, which is why a body user name wins over it).

A request is a login when its path is login-like (``LOGIN_PATH``: ``/login``,
``/signin``, ``/session(s)``, ``/token``, ``/oauth/token``, ``/auth``,
``/authenticate`` as a path segment; body subjects need a POST or PUT), or when
its body carries both a subject field and a password field (``password``,
``passwd``, ``pwd``, ``client_secret``, ...) on any POST, so
``/api/v2/customers/verify`` posting ``{"email", "password"}`` counts too.
``basic_anywhere=True`` also takes the Basic user on other endpoints (APIs that
authenticate every call with Basic credentials).

The value is stripped, NFKC-normalised and case-folded (``Alice@Example.com``,
``alice@example.com`` and the full-width ``ａｌｉｃｅ@example.com`` are one account for
nearly every identity provider, PRECIS's username profile maps width and case;
an attacker must not split one target into many by changing case or width),
as ``ingest.principal.normalize_account`` does for a Basic principal. Callers hash it
with a key before it leaves the node (``hash_object_id``); it is never logged.

>>> login_subject("POST", "/login", {"content-type": "application/json"}, b'{"username": "Ada", "password": "x"}')
'ada'
>>> login_subject("GET", "/orders", {}, None) is None
True
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping

from ingest.bodies import BodyLimits, Scalar, walk_body
from ingest.principal import normalize_account

__all__ = ["LOGIN_PATH", "SUBJECT_LIMITS", "is_login_path", "login_subject"]

#: login-like path segments (the same endpoints ``ingest.summarize`` derives outcomes for)
LOGIN_PATH = re.compile(r"(?:^|/)(?:login|signin|sign-in|session|sessions|token|oauth/token|authenticate|auth)(?:/|$)",
                        re.IGNORECASE)
#: a login body is small: read little of it
SUBJECT_LIMITS = BodyLimits(max_bytes=16_384, max_leaves=256, max_depth=8)
_MAX_SUBJECT_CHARS = 320  # an e-mail address is at most 254; anything longer is not an account name

_USER_NAMES = frozenset({"username", "user", "login", "userid", "loginid", "loginname", "account", "accountname",
                         "accountid", "principal", "identifier", "handle", "uid"})
_EMAIL_NAMES = frozenset({"email", "emailaddress", "mail", "useremail", "loginemail"})
_CLIENT_NAMES = frozenset({"clientid", "appid", "applicationid"})
_PASSWORD_NAMES = frozenset({"password", "passwd", "pass", "pwd", "passphrase", "secret", "clientsecret", "pin",
                             "otp", "userpassword", "currentpassword"})
_GROUPS = (_USER_NAMES, _EMAIL_NAMES, _CLIENT_NAMES)
_BODY_METHODS = frozenset({"POST", "PUT"})


def is_login_path(path: str) -> bool:
    """Whether a path or template (query ignored) has a login-like segment.

    >>> is_login_path("/api/v1/oauth/token?x=1"), is_login_path("/tokens/list"), is_login_path("/authors")
    (True, False, False)
    """
    return bool(LOGIN_PATH.search(path.partition("?")[0]))


def _name(path: str) -> str:
    """``credentials.user_name`` -> ``username``: the last segment, lower case, without separators."""
    last = path.rsplit(".", 1)[-1].replace("[]", "")
    return last.lower().replace("_", "").replace("-", "")


def _clean(value: Scalar) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    text = str(value).strip()
    return normalize_account(text) if 0 < len(text) <= _MAX_SUBJECT_CHARS else None


def _body_fields(body: bytes, content_type: str | None) -> tuple[str | None, bool]:
    """(the best subject field's value, whether a password field is present)."""
    walk = walk_body(body, content_type, limits=SUBJECT_LIMITS)
    if walk.kind not in ("json", "form", "multipart"):
        return None, False
    best: tuple[int, int, str] | None = None  # (group rank, depth, value)
    has_password = False
    for path, value in walk.leaves:
        name = _name(path)
        if name in _PASSWORD_NAMES:
            has_password = True
            continue
        rank = next((i for i, group in enumerate(_GROUPS) if name in group), None)
        if rank is None:
            continue
        clean = _clean(value)
        if clean is not None:
            candidate = (rank, path.count("."), clean)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    return (best[2] if best else None), has_password


def _basic_user(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8", errors="replace")
    except (binascii.Error, ValueError):
        return None
    user, sep, _ = decoded.partition(":")
    return _clean(user) if sep else None


def login_subject(method: str, path: str, headers: Mapping[str, str], body: bytes | None, *,
                  basic_anywhere: bool = False) -> str | None:
    """The account this request tries to log in as (stripped, case-folded), or ``None`` (see the module docstring).

    ``path`` may be the raw path or the template; ``headers`` have lower-case names.
    """
    login_path = is_login_path(path)
    method = method.upper()
    if body and method in _BODY_METHODS:
        subject, has_password = _body_fields(body, headers.get("content-type"))
        if subject is not None and (login_path or (has_password and method == "POST")):
            return subject
    if login_path or basic_anywhere:
        return _basic_user(headers)
    return None
