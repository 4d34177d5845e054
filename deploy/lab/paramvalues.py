"""Realistic, seeded values for a declared path parameter, from what its schema says.

``values_for(info, rng, n)`` returns ``n`` distinct values (fewer distinct ones
only when the schema allows fewer, such as a two-value enum; then values
repeat). The schema decides the kind, in this order: ``enum`` (its values),
``integer``/``number`` (numbers of varied magnitude within ``minimum`` and
``maximum``), ``format`` (uuid, date, date-time, email, snowflake, country
code), ``pattern`` (a random string matching a small regex subset, checked
with ``re.fullmatch``), an ``example`` that carries digits or mixed case (the
example's shape with fresh characters: ``00ub0oNGTSWTBKOLGLNR`` gives another
20-character Okta-like id, ``enterprise_123456`` gives ``enterprise_4096817``),
a file-name example (a fresh name with a common extension), and otherwise a
*generic* string: plain words (``default``, ``kube-system``), slugs
(``billing-api``), Kubernetes object names (``nginx-7d9f8c6b5-x2k4p``), user
names (``john.doe``), codes (``AcmeStore``, ``ACME_STORE_01``). About a third
of generic values carry no digit at all, so a templater cannot rely on digits.
No value depends on the parameter's name or on which API it belongs to.
"""

from __future__ import annotations

import random
import re
import string
import uuid
from collections.abc import Callable

from ingest.openapi import ParamInfo

__all__ = ["generic_value", "values_for"]

WORDS = (
    "default kube-system production staging dev qa nginx redis postgres kafka frontend backend payments billing orders "
    "monitoring logging ingress web api worker cache auth search analytics reports marketing finance sales support "
    "admin platform data alpha beta gamma delta blue green main release library tools infra gateway checkout catalog "
    "inventory shipping mobile desktop internal public partners customers sandbox demo archive legacy nightly"
).split()
FIRST = "john jane alice bob carol dave erin frank grace heidi ivan judy mallory oscar peggy trent victor wendy".split()
LAST = "doe smith jones brown garcia miller davis martin lee walker".split()
COUNTRIES = "US GB DE FR CA AU NL SE ES IT JP BR MX IN IE NZ CH AT BE DK FI NO PL PT".split()
EXTENSIONS = (".jpg", ".png", ".pdf", ".txt", ".csv", ".docx")
_ALNUM = string.ascii_lowercase + string.digits


def _chars(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _k8s_name(rng: random.Random) -> str:
    word = rng.choice(WORDS)
    kind = rng.randrange(3)
    if kind == 0:
        return f"{word}-{_chars(rng, string.hexdigits[:16], rng.choice((9, 10)))}-{_chars(rng, _ALNUM, 5)}"
    return f"{word}-{_chars(rng, _ALNUM, 5)}" if kind == 1 else f"{word}-{rng.randrange(10)}"


def _person(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return rng.choice((f"{first}.{last}", f"{first}{rng.randrange(10, 100)}", f"{first}-{last}", f"{first[0]}{last}"))


def _code(rng: random.Random) -> str:
    a, b = rng.choice(WORDS).split("-")[0], rng.choice(WORDS).split("-")[0]
    return rng.choice((f"{a.title()}{b.title()}", f"{a.upper()}_{b.upper()}_{rng.randrange(1, 100):02d}", f"{a.title()}{b.title()}{rng.randrange(1, 1000)}"))


def generic_value(rng: random.Random) -> str:
    """One realistic free-text identifier: a word, slug, Kubernetes name, user name or code."""
    kind = rng.random()
    if kind < 0.15:
        return rng.choice(WORDS)
    if kind < 0.35:
        return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}"
    if kind < 0.60:
        return _k8s_name(rng)
    if kind < 0.80:
        return _person(rng)
    if kind < 0.90:
        return f"{rng.choice(WORDS)}{rng.choice(('', '-'))}{rng.randrange(1, 100)}"
    return _code(rng)


def _integer(info: ParamInfo, rng: random.Random) -> str:
    low = int(info.minimum) if info.minimum is not None else 1
    high = int(info.maximum) if info.maximum is not None else low + 10 ** rng.randint(1, 7)
    return str(rng.randint(low, max(low, high)))


def _mutate(example: str, rng: random.Random) -> str:
    """The example's shape with fresh characters; lower-case words between separators are kept.

    A hex example stays hex; a lone run of digits may grow by up to three digits.
    """
    hexlike = re.fullmatch(r"[0-9a-f-]*\d[0-9a-f-]*|[0-9A-F-]*\d[0-9A-F-]*", example)
    if hexlike and (re.search(r"[a-fA-F]", example) or len(example) >= 32):
        hexdigits = string.hexdigits[:16] if example.lower() == example else string.digits + "ABCDEF"
        return "".join(rng.choice(hexdigits) if c != "-" else c for c in example)
    runs = list(re.finditer(r"\d+|[A-Za-z]+|[^A-Za-z\d]+", example))
    grow = sum(m.group().isdigit() for m in runs) == 1
    out = []
    for m in runs:
        run, before, after = m.group(), example[m.start() - 1 : m.start()], example[m.end() : m.end() + 1]
        if run.isdigit():
            out.append(_chars(rng, string.digits, len(run) + (rng.randint(0, 3) if grow else 0)))
        elif run.isalpha() and not (run.islower() and len(run) >= 3 and not before.isdigit() and not after.isdigit()):
            out.append("".join(rng.choice(string.ascii_uppercase if c.isupper() else string.ascii_lowercase) for c in run))
        else:
            out.append(run)
    return "".join(out)


def _from_example(example: str) -> Callable[[random.Random], str] | None:
    if re.fullmatch(r"[A-Za-z][\w-]*\.(jpg|jpeg|png|pdf|txt|csv|docx?|xlsx?|json|zip)", example, re.IGNORECASE):
        return lambda rng: f"{generic_value(rng)}{rng.choice(EXTENSIONS)}"
    has_digit = any(c.isdigit() for c in example)
    mixed_case = any(c.isupper() for c in example) and any(c.islower() for c in example) and len(example) >= 8
    if has_digit or mixed_case:
        return lambda rng: _mutate(example, rng)
    return None


_FORMATS: dict[str, Callable[[random.Random], str]] = {
    "uuid": lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    "date": lambda rng: f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
    "date-time": lambda rng: f"20{rng.randint(10, 29)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
    "email": lambda rng: f"{_person(rng)}@{rng.choice(WORDS).split('-')[0]}.example.com",
    "snowflake": lambda rng: str(rng.randint(10**17, 2**62)),
    "iso-country-code": lambda rng: rng.choice(COUNTRIES),
}


def _generator(info: ParamInfo | None) -> Callable[[random.Random], str]:
    if info is None:
        return generic_value
    if info.enum:
        enum = info.enum
        return lambda rng: rng.choice(enum)
    if info.type in ("integer", "number"):
        return lambda rng: _integer(info, rng)
    if info.format in _FORMATS:
        return _FORMATS[info.format]
    if info.pattern and (gen := _pattern_generator(info.pattern)) is not None:
        return gen
    if info.example and (gen := _from_example(info.example)) is not None:
        return gen
    return generic_value


def values_for(info: ParamInfo | None, rng: random.Random, n: int) -> list[str]:
    """``n`` values for one parameter, distinct whenever the schema allows ``n`` distinct values."""
    gen, out = _generator(info), list[str]()
    for _ in range(50 * n):
        if len(out) == n:
            break
        value = gen(rng)
        if value and value not in out:
            out.append(value)
    while len(out) < n:
        out.append(rng.choice(out) if out else generic_value(rng))
    return out


# A small regex subset: literals, escapes (\d \w \.), classes with ranges, (a|b) groups, quantifiers.
_CLASS_ESCAPES = {"d": string.digits, "w": string.ascii_letters + string.digits + "_"}


def _pattern_generator(pattern: str) -> Callable[[random.Random], str] | None:
    body = pattern.removeprefix("(?i)").removeprefix("^").removesuffix("$")
    try:
        regex = re.compile(pattern)
        _Pattern(body).generate(random.Random(0))
    except (re.error, ValueError, IndexError):
        return None

    def gen(rng: random.Random) -> str:
        for _ in range(20):
            value = _Pattern(body).generate(rng)
            if regex.fullmatch(value):
                return value
        return generic_value(rng)

    return gen


class _Pattern:
    """Random strings for the regex subset above (anything else raises ValueError)."""

    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def generate(self, rng: random.Random) -> str:
        out = self._alternation(rng)
        if self.pos != len(self.text):
            raise ValueError(f"pattern={self.text!r}: unsupported at {self.pos}")
        return out

    def _alternation(self, rng: random.Random) -> str:
        branches = [self._sequence(rng)]
        while self.pos < len(self.text) and self.text[self.pos] == "|":
            self.pos += 1
            branches.append(self._sequence(rng))
        return rng.choice(branches)

    def _sequence(self, rng: random.Random) -> str:
        out = []
        while self.pos < len(self.text) and self.text[self.pos] not in "|)":
            start = self.pos
            atom = self._atom(rng)
            low, high = self._quantifier()
            count = rng.randint(low, high)
            out.append(atom if count else "")
            for _ in range(count - 1):
                self.pos = start
                out.append(self._atom(rng))
                self._quantifier()
        return "".join(out)

    def _atom(self, rng: random.Random) -> str:
        c = self.text[self.pos]
        self.pos += 1
        if c == "(":
            self.pos += 2 if self.text.startswith("?:", self.pos) else 0
            inner = self._alternation(rng)
            if self.text[self.pos] != ")":
                raise ValueError(f"pattern={self.text!r}: unbalanced group")
            self.pos += 1
            return inner
        if c == "[":
            end = self.text.index("]", self.pos)
            return rng.choice(self._class(self.text[self.pos : end]))
        if c == "\\":
            e = self.text[self.pos]
            self.pos += 1
            return rng.choice(_CLASS_ESCAPES[e]) if e in _CLASS_ESCAPES else e
        if c in ".*+?{^$":
            raise ValueError(f"pattern={self.text!r}: unsupported {c!r}")
        return c

    def _class(self, spec: str) -> str:
        if spec.startswith("^"):
            raise ValueError(f"class={spec!r}: negation unsupported")
        chars, i = list[str](), 0
        while i < len(spec):
            if i + 2 < len(spec) and spec[i + 1] == "-":
                chars.extend(chr(o) for o in range(ord(spec[i]), ord(spec[i + 2]) + 1))
                i += 3
            else:
                chars.append(spec[i])
                i += 1
        self.pos += len(spec) + 1
        return "".join(chars)

    def _quantifier(self) -> tuple[int, int]:
        if self.pos >= len(self.text):
            return 1, 1
        c = self.text[self.pos]
        if c in "?*+":
            self.pos += 1
            return {"?": (0, 1), "*": (0, 8), "+": (1, 8)}[c]
        if c == "{":
            end = self.text.index("}", self.pos)
            low, _, high = self.text[self.pos + 1 : end].partition(",")
            self.pos = end + 1
            return int(low), int(high) if high else (int(low) + 8 if _ else int(low))
        return 1, 1
