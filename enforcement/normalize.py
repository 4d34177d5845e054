"""The forms of one raw request value that inline rules read.

Contract: pure, bounded and fast. ``variants(value, passes=2, form=False)``
returns a short tuple of distinct strings, the fully decoded form first:

1. **decoded**: up to ``passes`` rounds of percent-decoding (``%27``, IIS
   ``%u0027``; ``+`` is a space when ``form`` is true, as in query strings and
   form bodies), HTML entities (``&lt;``, ``&#x3c;``), JSON/JavaScript escapes
   (``\\x3c``, ``\\u003c``, ``\\/``), then Unicode NFKC (fullwidth ``＜`` is
   ``<``) and null bytes removed. A value still encoded after ``passes`` rounds
   keeps its remaining escapes (being encoded that often is itself a signal).
2. **canonical**: the decoded form with SQL/C comments replaced by a space
   (``UNION/**/SELECT``; MySQL ``/*!50000 SELECT*/`` keeps its content) and
   every run of whitespace collapsed to one space, so rules need not spell
   every evasion. Line breaks survive only in the decoded form (CRLF rules).
3. **raw**: the value as sent, so rules can also see an encoding itself.

Case is kept: rules use ``(?i)``. A value made only of characters no step
changes (letters, digits, ``_.,:;@/=-`` and single spaces) is returned as
``(value,)`` after one character-class match (measured 0.2 us; the full path
costs 2-6 us on an encoded value).
"""

from __future__ import annotations

import html
import re
import unicodedata
from urllib.parse import unquote

__all__ = ["canonical", "decode", "variants"]

# Nothing in this class is changed by any step below (no %, +, &, \, /*, control or non-ASCII characters).
_SAFE = re.compile(r"[A-Za-z0-9_.,:;@=!?'\"()<>|$~^\[\]{}#`/ -]*")
_PCT_U = re.compile(r"%u([0-9a-fA-F]{4})")
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u\{([0-9a-fA-F]{1,6})\}|u([0-9a-fA-F]{4})|([/\"'`\\])|([nrt]))")
_CONTROL = {"n": "\n", "r": "\r", "t": "\t"}
_COMMENT = re.compile(r"/\*!?(?:\d{5})?|\*/")
_SPACE_IN_LINE = re.compile(r"[^\S\n]{2,}|[^\S \n]")
# Overlong UTF-8 (``%c0%ae`` for '.', ``%c0%af`` for '/'): invalid bytes that some servers still decode.
_OVERLONG = re.compile("[\udcc0\udcc1][\udc80-\udcbf]")


def _overlong(m: re.Match[str]) -> str:
    first, second = (ord(c) - 0xDC00 for c in m.group(0))
    return chr(((first & 0x1F) << 6) | (second & 0x3F))


def _char(value: int) -> str:
    """The character of a decoded escape; a UTF-16 surrogate (``%uD800``, ``\\udfff``) alone is no character: U+FFFD."""
    return "\ufffd" if 0xD800 <= value <= 0xDFFF else chr(value)


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1) or m.group(2) or m.group(3)
    if code is None:
        return m.group(4) or _CONTROL[m.group(5)]
    value = int(code, 16)
    return _char(value) if value <= 0x10FFFF else m.group(0)


def _round(text: str, form: bool) -> str:
    """One decoding round: percent (and %u), entities, backslash escapes."""
    if "%" in text:
        if form:
            text = text.replace("+", " ")
        if "%u" in text or "%U" in text:
            text = _PCT_U.sub(lambda m: _char(int(m.group(1), 16)), text)
        text = unquote(text, errors="surrogateescape") if "%" in text else text
    elif form and "+" in text:
        text = text.replace("+", " ")
    if "&" in text:
        text = html.unescape(text)
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    return text


def decode(value: str, passes: int = 2, form: bool = False) -> str:
    """The fully decoded form of ``value`` (see the module docstring); at most ``passes`` rounds."""
    text = value
    for _ in range(passes):
        decoded = _round(text, form)
        form = False  # a '+' produced by decoding is a literal plus
        if decoded == text:
            break
        text = decoded
    if not text.isascii():
        text = _OVERLONG.sub(_overlong, text)
        text = unicodedata.normalize("NFKC", text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return text.replace("\x00", "") if "\x00" in text else text


def canonical(decoded: str, lines: bool = False) -> str:
    """Comments to spaces, whitespace runs to one space (the form most rules are written against); ``lines`` keeps line breaks."""
    # one-character tests first: ``in`` with a two-character needle costs ~1 us per KB of text, one character ~0.03
    if "*" in decoded and ("/*" in decoded or "*/" in decoded):
        decoded = _COMMENT.sub(" ", decoded)
    if lines:
        return _SPACE_IN_LINE.sub(" ", decoded)
    # str.split is ~20x faster than a regex substitution on long text (130 us -> 6 us on 4 KB)
    if "  " in decoded or "\t" in decoded or "\n" in decoded or "\r" in decoded or "\f" in decoded or "\v" in decoded:
        return " ".join(decoded.split())
    return decoded


def variants(value: str, passes: int = 2, form: bool = False, lines: bool = False) -> tuple[str, ...]:
    """Distinct forms of ``value`` for the rules: decoded first, then canonical, then raw.

    ``lines`` keeps line breaks in the canonical form (for many values joined by line breaks).

    >>> variants("id")
    ('id',)
    >>> variants("%3Cscript%3E")
    ('<script>', '%3Cscript%3E')
    >>> variants("1/**/UNION/**/SELECT")
    ('1/**/UNION/**/SELECT', '1 UNION SELECT')
    """
    if _SAFE.fullmatch(value) is not None and ("*" not in value or ("/*" not in value and "*/" not in value)) and "  " not in value:
        return (value,)
    decoded = decode(value, passes, form)
    canon = canonical(decoded, lines)
    out = [decoded]
    if canon != decoded:
        out.append(canon)
    if value != decoded:
        out.append(value)
    return tuple(out)
