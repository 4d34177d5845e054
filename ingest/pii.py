"""Personal data by pattern: emails, phone numbers, payment cards, IBANs, US SSNs, UK NINOs, IP addresses.

Contract: pure. Each finder takes one text and yields ``(start, end)`` of the values
it is sure of; ``ingest.sensitive`` types them, resolves overlaps and counts.
Candidates come from linear patterns (flat classes, bounded repeats, any
lookbehind after the first character so ``re`` skips positions in C) and are
validated in Python: ``ingest.checksums`` for cards, IBANs and SSNs,
``ipaddress`` for IPv6, shape rules for phones (7-15 digits, no dates, one pair
of parentheses, separators not mixed). A greedy run that swallowed the next
number is shortened token by token (``_shrink``).

Phones without a ``+`` or a US layout are only taken next to a phone word
("call", "mobile", "fax", ...: ``PHONE_WORDS``) or when the caller says the field
is a phone (``hinted``); bare nine digits are an SSN only next to "SSN"/"social
security" or when hinted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from ingest.checksums import IBAN_LENGTHS, card_checks, iban_checks, ssn_valid

__all__ = ["PHONE_WORDS", "cards", "emails", "ibans", "ips", "ninos", "phones", "ssns"]


# ------------------------------------------------------------------ email
_EMAIL_AT = re.compile(r"@[A-Za-z0-9][A-Za-z0-9.\-]{0,253}\.[A-Za-z]{2,24}(?![\w\-])")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_FILE_TLDS = frozenset("png jpg jpeg gif svg webp ico bmp js mjs css map json html htm txt pdf xml".split())


def emails(text: str) -> Iterator[tuple[int, int]]:
    """Addresses with a dotted domain; file names (``icon@2x.png``) and URL credentials excluded."""
    for m in _EMAIL_AT.finditer(text):
        at, end = m.span()
        start = at
        while start > 0 and at - start < 64 and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        domain = m.group()[1:]
        if start == at or (start and (text[start - 1] in _LOCAL_CHARS or text[start - 1] == "/")):
            continue
        if ".." in domain or domain.rsplit(".", 1)[1].lower() in _FILE_TLDS:
            continue
        if start and text[start - 1] == ":" and "://" in text[max(0, start - 80):start]:
            continue  # user:password@host inside a URL
        yield start, end


# ------------------------------------------------------------------ numbers
_CARD = re.compile(r"\d(?<![\w.\-]\d)[\d \-]{10,22}\d(?![\w\-])")
_SSN = re.compile(r"\d(?<![\w\-]\d)\d\d([\- ])(\d\d)\1(\d{4})(?![\w\-])")
_SSN_BARE = re.compile(r"\d(?<![\w\-]\d)\d{8}(?![\w\-])")
_IPV4 = re.compile(r"\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w.])")
_IPV6_HINT = re.compile(r"::|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:")
_IPV6 = re.compile(r"[0-9A-Fa-f:](?<![\w:.][0-9A-Fa-f:])[0-9A-Fa-f:]{1,38}(?![\w:])")
# anchored on the check digits (digits are rarer than letters, so re skips faster); the country code is behind
_IBAN = re.compile(r"\d\d(?<=[A-Za-z]{2}\d\d)(?<![A-Za-z0-9][A-Za-z]{2}\d\d)[A-Za-z0-9 ]{10,40}")
_NINO = re.compile(r"[A-CEGHJ-PR-TW-Z](?<![A-Za-z0-9][A-Z])[A-CEGHJ-NPR-TW-Z] ?\d\d ?\d\d ?\d\d ?[A-D](?![A-Za-z0-9])")
_NINO_BAD_PREFIX = frozenset({"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})


def _shrink(raw: str) -> Iterator[str]:
    """``raw``, then shorter prefixes without its last tokens: a greedy run may have swallowed the next number.

    Whole space-separated tokens are dropped (``+44 20 7946 0958 10.0.0.1``); a run
    without spaces is cut at its last dashes or dots.
    """
    yield raw
    sep = " " if " " in raw else ("-" if "-" in raw else ".")
    parts = raw.split(sep)
    for n in range(len(parts) - 1, max(len(parts) - 7, 0), -1):
        yield sep.join(parts[:n]).rstrip(" .-(")


def _card_ok(raw: str) -> bool:
    if "  " in raw or "--" in raw or (" " in raw and "-" in raw):
        return False
    if not raw.isdigit() and any(not 3 <= len(g) <= 8 for g in re.split(r"[ \-]", raw)):
        return False  # printed cards group digits in fours (Amex 4-6-5); "57 68 61 74 ..." is hex bytes
    return card_checks(raw.replace(" ", "").replace("-", ""))


def cards(text: str) -> Iterator[tuple[int, int]]:
    """Card numbers: 12-19 digits, plain or grouped, passing ``card_checks``."""
    for m in _CARD.finditer(text):
        found = next((c for c in _shrink(m.group()) if _card_ok(c)), None)
        if found:
            yield m.start(), m.start() + len(found)


def ssns(text: str, low: str, hinted: bool) -> Iterator[tuple[int, int]]:
    """US SSNs ``ddd-dd-dddd``/``ddd dd dddd``; bare nine digits next to "ssn" or when ``hinted`` (``low`` is ``text`` lower-cased)."""
    for m in _SSN.finditer(text):
        if ssn_valid(m.group()[:3], m.group(2), m.group(3)):
            yield m.start(), m.end()
    if not (hinted or "ssn" in low or "social security" in low):
        return
    for m in _SSN_BARE.finditer(text):
        d, before = m.group(), low[max(0, m.start() - 24):m.start()]
        if (hinted or "ssn" in before or "social security" in before) and ssn_valid(d[:3], d[3:5], d[5:]):
            yield m.start(), m.end()


def ibans(text: str) -> Iterator[tuple[int, int]]:
    """IBANs, compact or in groups of four, of a known country's length and passing mod 97."""
    for m in _IBAN.finditer(text):
        start = m.start() - 2
        want = IBAN_LENGTHS.get(text[start:start + 2].upper())
        if want is None:
            continue
        end, count = start, 0
        for end in range(start, m.end()):  # walk to the country's length, skipping spaces
            count += text[end] != " "
            if count == want:
                break
        iban = text[start: end + 1].replace(" ", "").upper()
        if (end + 1 == len(text) or not text[end + 1].isalnum()) and iban_checks(iban):
            yield start, end + 1


def ips(text: str) -> Iterator[tuple[int, int]]:
    """IPv4 addresses (octets <= 255, no leading zeros) and IPv6 addresses ``ipaddress`` accepts."""
    if text.count(".") >= 3:
        for m in _IPV4.finditer(text):
            if all(int(o) <= 255 and (o == "0" or o[0] != "0") for o in m.group().split(".")):
                yield m.start(), m.end()
    if text.count(":") >= 2 and _IPV6_HINT.search(text):
        for m in _IPV6.finditer(text):
            cand = m.group()
            if cand.count(":") >= 2 and sum(c != ":" for c in cand) >= 4 and _is_ipv6(cand):
                yield m.start(), m.end()


def _is_ipv6(cand: str) -> bool:
    try:
        ipaddress.IPv6Address(cand)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------ phone
_PHONE_INTL = re.compile(r"\+(?<![\w+]\+)\d[\d ().\-]{6,22}\d(?: ?(?:x|ext\.?) ?\d{1,6})?(?!\d)")
# the US layout's core ("(555) 234-5678", "555-234-5678") starts on "(" or a digit, so re scans for it in C; the
# full pattern (optional "+1"/"001" and a lookbehind) is then matched a few characters before each core only:
# run over the whole text, its leading lookbehind cost 45 us per KB here against 4 us for the core
_PHONE_US_CORE = re.compile(r"(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .\-])[2-9]\d\d[ .\-]\d{4}")
_PHONE_US = re.compile(
    r"(?<![\w+.\-])(?:\+?1[ .\-]?|001[ .\-]?)?(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .\-])[2-9]\d\d[ .\-]\d{4}"
    r"(?: ?(?:x|ext\.?) ?\d{1,6})?(?!\d|-\d)"
)
_PHONE_LOCAL = re.compile(r"[(\d](?<![\w+.\-/:][(\d])[\d ().\-]{5,20}\d(?: ?x ?\d{1,6})?(?![\d:/])")
PHONE_WORDS = ("phone", "tel", "telephone", "mobile", "mob", "cell", "cellphone", "fax", "call", "calling", "contact",
                "reach", "sms", "whatsapp", "dial", "desk", "message", "messages", "answering", "ring", "hotline",
                "office", "home", "work")
_PHONE_BEFORE = re.compile(
    r"\b(?:phone|tel|telephone|mobile|mob|cell|cellphone|fax|call|calling|contact|reach|sms|whatsapp|dial|desk|"
    r"message|messages|answering|ring|hotline)\b"
)
_PHONE_AFTER = re.compile(r"[\s,(\-]{0,3}(?:phone|tel|mobile|cell|fax|office|desk|home|work)\b")
# one search for what a phone number never holds: a date, doubled or mixed separators
_NOT_PHONE = re.compile(r"\d{4}[\-.]\d\d?[\-.]\d\d?|\d\d?[\-.]\d\d?[\-.]\d{4}|  |--|\.\.| -|- | \.|\. ")


def _phone_shape(raw: str, lo: int, hi: int) -> bool:
    if _NOT_PHONE.search(raw):
        return False
    digits = sum(map(str.isdigit, raw)) - raw.count("(0)")
    if not lo <= digits <= hi:
        return False
    # one pair of parentheses at most; dots and spaces are never mixed in one number
    return raw.count("(") == raw.count(")") <= 1 and not ("." in raw and " " in raw)


def phones(text: str, low: str, hinted: bool, *, worded: bool | None = None) -> Iterator[tuple[int, int]]:
    """E.164 and US numbers anywhere; local digit groups next to a phone word or when ``hinted``.

    ``worded`` says whether ``low`` holds a phone word (``PHONE_WORDS``), when the caller knows.
    """
    intl: list[tuple[int, int]] = []
    if "+" in text:
        for m in _PHONE_INTL.finditer(text):
            if _phone_shape(m.group().split("x")[0], 8, 15):
                intl.append(m.span())
            elif (short := next((c for c in _shrink(m.group()) if _phone_shape(c, 8, 15)), None)) is not None:
                intl.append((m.start(), m.start() + len(short)))
        yield from intl
    yield from _us_phones(text, intl)
    if hinted or (_has_word(low, PHONE_WORDS) if worded is None else worded):
        yield from _local_phones(text, low, hinted)


def _us_phones(text: str, skip: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """US numbers, found by their core and matched in full from up to 4 characters before it (``+1-``, ``001 ``)."""
    done, k = 0, 0
    for core in _PHONE_US_CORE.finditer(text):
        while k < len(skip) and skip[k][1] <= core.start():
            k += 1  # both are in text order: one pointer walks the numbers already found
        if core.start() < done or (k < len(skip) and skip[k][0] <= core.start()):
            continue
        for at in range(max(done, core.start() - 4), core.start() + 1):
            m = _PHONE_US.match(text, at)
            if m and m.end() >= core.end():
                done = m.end()
                yield m.span()
                break


def _has_word(low: str, words: tuple[str, ...]) -> bool:
    """Whether one of ``words`` occurs as a whole word (``ring`` is not in ``springfield``)."""
    for w in words:
        i = low.find(w)
        while i != -1:
            j = i + len(w)
            if (i == 0 or not low[i - 1].isalpha()) and (j == len(low) or not low[j].isalpha()):
                return True
            i = low.find(w, j)
    return False


def _local_phones(text: str, low: str, hinted: bool) -> Iterator[tuple[int, int]]:
    """Digit groups that are phones only in context: a phone word before or after, or a phone-named field."""
    for m in _PHONE_LOCAL.finditer(text):
        before = hinted or _PHONE_BEFORE.search(low, max(0, m.start() - 32), m.start())
        for cand in _shrink(m.group().split("x")[0].strip()):
            end = m.start() + len(cand)
            if (before or _PHONE_AFTER.match(low, end)) and _phone_shape(cand, 8 if cand.isdigit() else 7, 15):
                yield m.start(), m.end() if cand == m.group() else end
                break


def ninos(text: str) -> Iterator[tuple[int, int]]:
    """UK National Insurance numbers (``AB 12 34 56 C``) with the prefixes HMRC never issues excluded."""
    return (m.span() for m in _NINO.finditer(text) if m.group()[:2] not in _NINO_BAD_PREFIX)
