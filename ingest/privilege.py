"""Which API functions are privileged, read from the method and the path template alone.

Contract: pure and stateless apart from a bounded memo. ``classify(method,
template)`` returns a ``Privilege`` flag set: ``ADMIN`` (administration, roles,
impersonation), ``EXPORT`` (bulk export, dumps, backups), ``DELETE`` (the
DELETE method or a destructive verb segment), ``INTERNAL`` (routes meant for
the cluster only), ``CREDENTIAL`` (passwords, secrets, API keys, MFA) and
``DEBUG`` (debug, profiling, actuator endpoints). Only literal segments are
read (``{id}`` parameters never match); each is lower-cased and also split on
``-``, ``_`` and ``.``, so ``/admin-api/v1``, ``/users/{id}/reset_password``
and ``/debug/pprof`` are recognised, while ``/documents/{id}/download`` is not.
``weight(flags)`` turns a set into a score in [0, 1] (the strongest kind
wins); ``names_account(template)`` says a credential route names its account in
the path (``/users/{id}/password``: whether that account is someone else is
for the ownership analyser to tell). ``PrivilegeIndex`` memoises both per
(method, template), bounded.

>>> classify("GET", "/admin/export/{id}") == Privilege.ADMIN | Privilege.EXPORT
True
>>> classify("GET", "/orders/{id}")
<Privilege.NONE: 0>
>>> weight(classify("PUT", "/users/{id}/password"))
1.0
"""

from __future__ import annotations

import enum
import re

__all__ = ["Privilege", "PrivilegeIndex", "classify", "names_account", "weight"]


class Privilege(enum.IntFlag):
    """Kinds of privileged function (a set: a template can be several)."""

    NONE = 0
    ADMIN = 1
    EXPORT = 2
    DELETE = 4
    INTERNAL = 8
    CREDENTIAL = 16
    DEBUG = 32


_WORDS: dict[Privilege, frozenset[str]] = {
    Privilege.ADMIN: frozenset(
        "admin admins administration administrator superuser sudo impersonate impersonation roles role permissions "
        "grants acl acls privileges backoffice staff manage management".split()
    ),
    Privilege.EXPORT: frozenset("export exports dump dumps backup backups bulkexport extract".split()),
    Privilege.DELETE: frozenset("delete purge destroy wipe truncate erase".split()),
    Privilege.INTERNAL: frozenset("internal private _internal system sysadmin ops".split()),
    Privilege.CREDENTIAL: frozenset(
        "password passwords passwd pwd credential credentials secret secrets apikey apikeys api-key api-keys mfa 2fa "
        "totp otp recovery reset-password change-password keys".split()
    ),
    Privilege.DEBUG: frozenset("debug pprof heapdump threaddump actuator phpinfo _profiler __debug__ trace vars env".split()),
}
# Strength of each kind when it is the only one: taking over accounts or the control plane beats deleting one object.
_WEIGHTS: dict[Privilege, float] = {
    Privilege.ADMIN: 1.0,
    Privilege.CREDENTIAL: 1.0,
    Privilege.EXPORT: 0.8,
    Privilege.INTERNAL: 0.8,
    Privilege.DEBUG: 0.8,
    Privilege.DELETE: 0.6,
}
# Words that are privileged only together with a neighbour that says so ("env" alone is too common; "vars" in debug).
_WEAK = frozenset({"env", "vars", "keys", "trace", "manage", "management", "staff", "ops", "system"})
_SPLIT = re.compile(r"[-_.]")
_PARAM = re.compile(r"^\{[^}]*\}")


def _tokens(segment: str) -> set[str]:
    """The segment lower-cased, and its parts split on ``-``, ``_`` and ``.`` (a parameter yields nothing)."""
    if not segment or _PARAM.match(segment):
        return set()
    low = segment.lower()
    return {low, *(p for p in _SPLIT.split(low) if p)}


def _kinds(tokens: set[str]) -> Privilege:
    out = Privilege.NONE
    for kind, words in _WORDS.items():
        if tokens & words:
            out |= kind
    return out


def classify(method: str, template: str) -> Privilege:
    """The privilege kinds of a call (see the module docstring); ``Privilege.NONE`` for an ordinary one."""
    segments = [_tokens(s) for s in template.split("?", 1)[0].split("/")]
    strong = [t - _WEAK for t in segments]
    found = Privilege.NONE
    for i, toks in enumerate(segments):
        kinds = _kinds(strong[i])
        weak = _kinds(toks & _WEAK)
        # a weak word counts only next to a strong one (``/debug/vars``, ``/admin/keys``)
        if weak and (kinds or any(_kinds(strong[j]) for j in (i - 1, i + 1) if 0 <= j < len(segments))):
            kinds |= weak
        found |= kinds
    if method.upper() == "DELETE":
        found |= Privilege.DELETE
    return found


def weight(flags: Privilege) -> float:
    """How privileged, in [0, 1]: the weight of the strongest kind present (0.0 for none)."""
    return max((w for kind, w in _WEIGHTS.items() if flags & kind), default=0.0)


def names_account(template: str) -> bool:
    """A credential route whose path names an account (a parameter before the credential segment).

    >>> names_account("/users/{id}/password"), names_account("/me/password"), names_account("/orders/{id}")
    (True, False, False)
    """
    seen_param = False
    for segment in template.split("?", 1)[0].split("/"):
        if _PARAM.match(segment):
            seen_param = True
        elif seen_param and _kinds(_tokens(segment)) & Privilege.CREDENTIAL:
            return True
    return False


class PrivilegeIndex:
    """``classify`` and ``weight`` memoised per (method, template); at most ``limit`` entries (cleared when full).

    >>> idx = PrivilegeIndex()
    >>> idx.weight("DELETE", "/orders/{id}"), len(idx)
    (0.6, 1)
    """

    def __init__(self, limit: int = 65536) -> None:
        if limit < 1:
            raise ValueError(f"PrivilegeIndex limit={limit!r} must be >= 1")
        self.limit = limit
        self._memo: dict[tuple[str, str], tuple[Privilege, float]] = {}

    def __len__(self) -> int:
        return len(self._memo)

    def lookup(self, method: str, template: str) -> tuple[Privilege, float]:
        """(kinds, weight) of one call."""
        key = (method, template)
        hit = self._memo.get(key)
        if hit is None:
            if len(self._memo) >= self.limit:
                self._memo.clear()
            flags = classify(method, template)
            hit = self._memo[key] = (flags, weight(flags))
        return hit

    def weight(self, method: str, template: str) -> float:
        """The weight of one call (see ``weight``)."""
        return self.lookup(method, template)[1]
