"""Sensitive data in HTTP bodies: counts by type and character spans, never the values.

Contract: pure (no I/O, no environment). ``scan_spans(text)`` finds typed
character spans in one string, ``scan_text(text)`` counts them by type and
``count_sensitive(leaves)`` counts over the ``(field path, value)`` leaves of a
parsed body (``ingest.bodies``), where field names add evidence. Results hold
offsets and counts only; a value never leaves this module.

Types (``SENSITIVE_TYPES``; a value is one of these or not sensitive):

==============  ============================================================
``email``       address with a dotted domain (file names such as a@2x.png excluded)
``phone``       E.164 ``+..``, US ``(555) 234-5678`` / ``555-234-5678`` forms; other
                digit groups only next to a phone word ("call", "mobile", ...) or
                in a phone-named field
``card``        12-19 digits, Luhn-valid, a known issuer prefix and its lengths
``iban``        country code, that country's length, mod-97 check
``ssn``         US SSN ``ddd-dd-dddd`` with valid area/group/serial; bare 9 digits
                only next to "SSN" or in an ssn-named field
``national_id`` UK National Insurance number (prefix rules); passport, driver
                licence and tax-id fields by name
``ip``          IPv4 (octets <= 255) and IPv6 (validated by ``ipaddress``)
``jwt``         ``eyJ<header>.eyJ<payload>.<signature>``
``secret``      vendor key formats with high-signal prefixes, PEM private keys,
                crypt password hashes, credentials in URLs, secret-named
                assignments (``password=...``, ``"api_key": "..."``), prefix-less
                vendor tokens under a key naming the vendor, Authorization
                headers and ``-u user -p pass`` command lines
``dob``         field name only (``dob``, ``date_of_birth``, ``birthdate``)
==============  ============================================================

Overlapping spans keep the higher-priority type (``jwt`` > ``secret`` >
``card`` > ``iban`` > ``ssn`` > ``national_id`` > ``email`` > ``ip`` > ``phone``).
The finders live in ``ingest.pii`` (personal data), ``ingest.credentials``
(secrets) and ``ingest.checksums`` (Luhn, mod 97, SSN ranges); every pattern is
linear (flat classes, bounded repeats, no nested quantifiers).

Speed (this runs on every body a collector sees): detectors are gated by
substring tests on the text and its lower-cased copy (no ``(?i)`` alternation
scans a body), and ``count_sensitive`` scans the leaves of a body joined into
one text after dropping those that cannot hold a pattern (short strings, single
words, whole UUIDs and timestamps, small numbers). Measured on a loaded 2-core
box: a leading lookbehind made one pattern over 850 characters cost 88 us
against 2 us with the lookbehind behind the first character, and a ``(?i)``
alternation 158 us against 5 us for ``str.lower`` plus substring tests;
``kubeward eval-sensitive --bench`` times a whole 2 KB body.
One RE2 set (``_GATES``, secret finders' gates from ``ingest.credentials``) first says which finders have a
candidate; the others are skipped. Same loaded box, before -> after: 3.4 KB of prose without candidates
895 -> 11 us; the values of a 20-user list (1.25 KB: names, emails, phones) 1458 -> ~400 us;
``redact_body`` on that 7.2 KB list 317 -> 133 us per KB (``python -m deploy.lab.redaction_eval``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

from ingest import pii
from ingest.credentials import SECRET_GATES, gate_set, is_secret_name, lower_text, secret_spans

__all__ = [
    "CARD", "DOB", "EMAIL", "IBAN", "IP", "JWT", "NATIONAL_ID", "PHONE", "SECRET", "SENSITIVE_TYPES", "SSN",
    "LeafInfo", "Span", "count_sensitive", "is_id_name", "leaf_info", "name_type", "scan_spans", "scan_text",
]

EMAIL, PHONE, CARD, IBAN, SSN = "email", "phone", "card", "iban", "ssn"
NATIONAL_ID, IP, JWT, SECRET, DOB = "national_id", "ip", "jwt", "secret", "dob"
#: every type name, in overlap priority order (first wins)
SENSITIVE_TYPES = (JWT, SECRET, CARD, IBAN, SSN, NATIONAL_ID, EMAIL, IP, PHONE, DOB)
_PRIORITY = {t: i for i, t in enumerate(SENSITIVE_TYPES)}

Scalar = str | int | float | bool | None


class Span(NamedTuple):
    """A typed character span ``text[start:end]`` (end exclusive)."""

    start: int
    end: int
    type: str


# ------------------------------------------------------------------ pre-pass
# One RE2 set finds which finders have a candidate, in one linear pass over the text (C++ DFA); each pattern
# matches a superset of what its finder reports (ASCII digits), so a finder that is skipped had nothing to find.
_PHONE_WORD = r"(?:^|[^A-Za-z])(?i:" + "|".join(pii.PHONE_WORDS) + r")(?:[^A-Za-z]|$)"
_GATES = (
    ("email", r"@[A-Za-z0-9][A-Za-z0-9.\-]*\.[A-Za-z]{2}"),
    ("jwt", r"eyJ[^.]{6,}\.eyJ"),
    ("card", r"\d(?:[ \-]?\d){11}"),
    ("ssn", r"\d{3}[\- ]?\d\d[\- ]?\d{4}"),
    ("phone", r"\+\d[\d ().\-]{6,22}\d|(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .\-])[2-9]\d\d[ .\-]\d{4}"),
    ("digits", r"[(\d][\d ().\-]{5,20}\d"),  # a local phone, when a phone word or a phone-named field says so
    ("phone_word", _PHONE_WORD),
    ("ipv4", r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"),
    ("ipv6", r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:"),
    ("iban", r"[A-Za-z]{2}\d\d[A-Za-z0-9 ]{10}"),
    ("nino", r"[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d\d ?\d\d ?\d\d ?[A-D]"),
    *SECRET_GATES,
)
_PRESENT = gate_set(_GATES)
_SECRET_GATE_NAMES = frozenset(name for name, _ in SECRET_GATES)
_NEEDS_LOW = _SECRET_GATE_NAMES | {"ssn", "phone", "digits"}
_JWT = re.compile(r"eyJ(?<![\w\-]eyJ)[\w\-]{6,}\.eyJ[\w\-]{6,}\.[\w\-]*")


# ------------------------------------------------------------------ field names
_NAME_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (DOB, ("dob", "dateofbirth", "birthdate", "birthday")),
    (SSN, ("ssn", "socialsecuritynumber", "socialsecurity")),
    (CARD, ("cardnumber", "creditcard", "creditcardnumber", "ccnumber", "cvv", "cvc", "cvv2", "cardcvc")),
    (IBAN, ("iban",)),
    (NATIONAL_ID, ("passport", "passportnumber", "nationalid", "nino", "taxid", "driverlicense", "driverslicense",
                   "drivinglicence", "driverlicensenumber", "nationalinsurancenumber")),
    (PHONE, ("phone", "phonenumber", "mobile", "telephone", "tel", "fax", "msisdn", "cellphone")),
    (EMAIL, ("email", "emailaddress", "mail")),
    (IP, ("ip", "ipaddress", "clientip", "remoteaddr", "remoteip")),
)
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_ID_SNAKE = re.compile(r"(?:^|[_\-.])(?:id|ids|uuid|uuids|guid|guids)$")
_ID_CAMEL = re.compile(r"[a-z0-9](?:Id|ID|Ids|IDs|Uuid|UUID|Guid|GUID)$")


@lru_cache(maxsize=4096)
def name_type(name: str) -> str | None:
    """The sensitive type a field or variable name announces (``"userPassword"`` -> ``"secret"``), else ``None``."""
    if is_secret_name(name):
        return SECRET
    words = [w.lower() for w in _WORDS.findall(name)]
    joined = "".join(words)
    for kind, suffixes in _NAME_SUFFIXES:  # a suffix under 4 characters ("ip", "tel") only as the whole name
        if any(joined == s or (len(words) > 1 and len(s) > 3 and joined.endswith(s)) for s in suffixes):
            return kind
    return None


@lru_cache(maxsize=4096)
def is_id_name(name: str) -> bool:
    """Whether a field name holds object identifiers: ``id``, ``*_id``, ``*Id``, ``uuid``, ``*_uuid``, ``ids``."""
    return bool(_ID_SNAKE.search(name.lower()) or _ID_CAMEL.search(name))


# ------------------------------------------------------------------ public
_NUMERIC = frozenset({CARD, PHONE, SSN, IBAN})
_NAME_COUNTED = frozenset({SECRET, DOB, SSN, CARD, IBAN, NATIONAL_ID})


def scan_spans(text: str, *, hint: str | None = None) -> list[Span]:
    """Typed, non-overlapping spans in ``text``; ``hint`` is the type a field name announced (context).

    >>> [s.type for s in scan_spans("mail bob@example.org or call +44 20 7946 0958")]
    ['email', 'phone']
    """
    if len(text) < 6:
        return []
    gates = _PRESENT(text)
    if not gates:
        return []
    low = lower_text(text) if gates & _NEEDS_LOW else text
    found: list[Span] = []
    if "email" in gates:
        found.extend(Span(s, e, EMAIL) for s, e in pii.emails(text))
    if "jwt" in gates:
        found.extend(Span(m.start(), m.end(), JWT) for m in _JWT.finditer(text))
    if gates & _SECRET_GATE_NAMES:
        found.extend(Span(s, e, SECRET) for s, e in secret_spans(text, low))
    if "ipv4" in gates or "ipv6" in gates:
        found.extend(Span(s, e, IP) for s, e in pii.ips(text))
    if "card" in gates:
        found.extend(Span(s, e, CARD) for s, e in pii.cards(text))
    if "ssn" in gates:
        found.extend(Span(s, e, SSN) for s, e in pii.ssns(text, low, hint == SSN))
    if "phone" in gates or ("digits" in gates and (hint == PHONE or "phone_word" in gates)):
        found.extend(Span(s, e, PHONE) for s, e in pii.phones(text, low, hint == PHONE, worded="phone_word" in gates))
    if "iban" in gates:
        found.extend(Span(s, e, IBAN) for s, e in pii.ibans(text))
    if "nino" in gates:
        found.extend(Span(s, e, NATIONAL_ID) for s, e in pii.ninos(text))
    return _resolve(found)


def _resolve(found: list[Span]) -> list[Span]:
    """Drop spans that overlap a higher-priority one, deciding within each chain of overlapping spans only.

    The same result as one greedy pass over all spans by priority, in O(n log n): a
    quadratic pass cost 100 us on the 40 spans of a 20-record user list.
    """
    if len(found) < 2:
        return found
    found.sort(key=_start)  # stable: equal starts keep the finders' order, as the greedy pass did
    kept: list[Span] = []
    group: list[Span] = [found[0]]
    reach = found[0].end
    for span in found[1:]:
        if span.start >= reach:
            kept.extend(_by_priority(group))
            group, reach = [span], span.end
        else:
            group.append(span)
            reach = max(reach, span.end)
    kept.extend(_by_priority(group))
    return kept


def _start(span: Span) -> int:
    return span.start


def _by_priority(group: list[Span]) -> list[Span]:
    if len(group) == 1:
        return group
    kept: list[Span] = []
    for span in sorted(group, key=lambda s: (_PRIORITY[s.type], s.start)):
        if all(span.end <= k.start or span.start >= k.end for k in kept):
            kept.append(span)
    return sorted(kept)


def scan_text(text: str) -> dict[str, int]:
    """Counts by type of the sensitive values in free text (no field names)."""
    counts: dict[str, int] = {}
    for span in scan_spans(text):
        counts[span.type] = counts.get(span.type, 0) + 1
    return counts


def _masked(value: str) -> bool:
    return not value.strip(" *xX\u2022#.-_") or "****" in value or "\u2022\u2022" in value


class LeafInfo(NamedTuple):
    """What a leaf's path says: its field name, the type that name announces, whether it names ids."""

    name: str
    hint: str | None
    is_id: bool


_LEAF_INFO: dict[str, LeafInfo] = {}


def leaf_info(path: str) -> LeafInfo:
    """``LeafInfo`` of a leaf path (``data[].user_id`` -> name ``user_id``); cached, since paths repeat per record.

    A plain dict, cleared when it reaches 8192 paths: a lookup costs a third of an
    ``lru_cache`` call, and this runs once per leaf of every body.
    """
    info = _LEAF_INFO.get(path)
    if info is None:
        name = path.rsplit(".", 1)[-1].removesuffix("[]")
        info = LeafInfo(name, name_type(name) if name else None, bool(name) and is_id_name(name))
        if len(_LEAF_INFO) >= 8192:
            _LEAF_INFO.clear()
        _LEAF_INFO[path] = info
    return info


def _uuid_or_date(text: str) -> bool:
    """A whole UUID or ISO-8601 date/time: frequent in bodies, never one of our types by value (index tests only)."""
    n = len(text)
    if n == 36:
        return text[8] == text[13] == text[18] == text[23] == "-" and not text.strip("0123456789abcdefABCDEF-")
    return (10 <= n <= 35 and text[4] == text[7] == "-" and text.count("-") <= 3
            and not text.strip("0123456789-:T .Z+") and (n == 10 or text[10] in "T "))


def count_sensitive(leaves: Iterable[tuple[str, Scalar]]) -> dict[str, int]:
    """Counts by type over ``(field path, value)`` leaves (``ingest.bodies``); the name is the last path segment.

    The values are scanned as one text (one line each). A field whose name announces
    a type is context: phone- and ssn-named fields are rescanned with that hint,
    and a ``password``/``ssn``/``card_number``/``iban``/``dob``/``passport`` field
    counts once as its type when its value is non-empty, unmasked and matched
    nothing. Numbers in id-named fields are not read as cards, phones, SSNs or IBANs.
    Strings under 6 characters, single words of letters, whole UUIDs and ISO dates,
    and numbers under 1,000,000 cannot hold a pattern and are only read for their
    field name (half the digits of a typical body are UUIDs and timestamps).
    """
    texts: list[str] = []
    infos: list[LeafInfo] = []
    hinted: list[int] = []
    for path, value in leaves:
        info = leaf_info(path)
        if isinstance(value, str):
            text = value
            if info.hint is None and (len(text) < 6 or text.isalpha() or _uuid_or_date(text)):
                continue
        elif value is None or isinstance(value, bool):
            continue
        else:
            if info.hint is None and -1_000_000 < value < 1_000_000:
                continue
            text = repr(value)
        if info.hint is not None:
            hinted.append(len(texts))
        texts.append(text)
        infos.append(info)
    return _count(texts, infos, hinted) if texts else {}


def _count(texts: list[str], infos: list[LeafInfo], hinted: list[int]) -> dict[str, int]:
    starts, at = [], 0
    for t in texts:
        starts.append(at)
        at += len(t) + 1
    by_leaf: dict[int, list[Span]] = {}
    for span in scan_spans("\n".join(texts)):
        by_leaf.setdefault(bisect_right(starts, span.start) - 1, []).append(span)
    counts: dict[str, int] = {}
    for i in sorted(set(by_leaf).union(hinted)):
        info, spans = infos[i], by_leaf.get(i)
        if info.hint in (PHONE, SSN):
            spans = scan_spans(texts[i], hint=info.hint)
        if spans and info.is_id:
            spans = [s for s in spans if s.type not in _NUMERIC]
        for span in spans or ():
            counts[span.type] = counts.get(span.type, 0) + 1
        if not spans and info.hint in _NAME_COUNTED and texts[i].strip() and not _masked(texts[i]):
            counts[str(info.hint)] = counts.get(str(info.hint), 0) + 1
    return counts
