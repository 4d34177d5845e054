"""The text of one MCP tool definition as the tool-poisoning rules read it.

Contract: pure and bounded. ``segments(name, description, input_schema,
annotations)`` returns ``Segments``: a tuple of ``(target, where, text)`` to
match rules against and the obfuscation flags found on the way. Targets:

- ``text``: the description, the annotation title, and from the input schema
  (walked recursively) every title, description, string default, enum value,
  const and example;
- ``param``: every schema property as ``name:type`` (``sidenote:string``), so
  rules can spot side-channel parameters and override switches by name;
- ``name``: the tool name.

Every text goes through ``normalize`` first:

1. Unicode tag characters (U+E0000-E007F, invisible "ASCII smuggling") are
   removed and, decoded to the ASCII they stand for, become a segment of their
   own (flag ``unicode_tags``; the tag run of a flag emoji is left alone);
2. zero-width and filler characters are removed (flag ``zero_width`` when one
   sat inside a word), bidi embedding/override/isolate controls too (flag
   ``bidi_control``);
3. NFKC (fullwidth and mathematical letters become ASCII);
4. words that mix Latin with Cyrillic or Greek letters are flagged
   (``mixed_script``; ``mixed_script_word`` when there is only one) and
   their look-alike letters mapped to Latin;
5. base64 and hex runs that decode to readable text (flag ``encoded_text``)
   become segments of their own, decoded once more if they hold another run.

Budget: each text is cut at ``MAX_TEXT`` characters, the schema walk stops
after ``MAX_NODES`` schema nodes or ``MAX_DEPTH`` levels, at most
``MAX_DECODED`` encoded runs are decoded per text and the whole definition
yields at most ``MAX_TOTAL`` characters; ``truncated`` says a cap was hit.
Measured: a median dev-set tool costs ~70 us here; crafted definitions at the
caps (64 KB of random text, look-alike or zero-width spam, 100 parameters)
cost 15-120 ms for the whole scan, rules included.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FLAGS", "MAX_DECODED", "MAX_DEPTH", "MAX_NODES", "MAX_TEXT", "MAX_TOTAL", "TARGETS", "Normalized", "Segments",
           "normalize", "segments"]

TARGETS = ("text", "param", "name")
#: obfuscation flags ``normalize`` raises
FLAGS = ("unicode_tags", "zero_width", "bidi_control", "mixed_script", "mixed_script_word", "encoded_text")
MAX_TEXT, MAX_TOTAL, MAX_NODES, MAX_DEPTH, MAX_DECODED = 16_384, 65_536, 512, 8, 8

_TAGS = re.compile("[\U000e0000-\U000e007f]+")
_FLAG_EMOJI = "\U0001f3f4"
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060-\u2064\ufeff\u180e\u00ad\u034f\u115f\u1160\u3164\uffa0]")
_BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
_MARKS = re.compile("[\u200e\u200f\u061c]")
_RTL = re.compile("[\u0590-\u08ff]")
_WORD = re.compile(r"\w+")
_LATIN = re.compile("[A-Za-z\u00c0-\u024f]")
_LOOKALIKE_SCRIPT = re.compile("[\u0370-\u03ff\u0400-\u052f]")
_B64 = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{24,}={0,2}")
_HEX = re.compile(r"(?<![0-9A-Za-z])(?:(?:\\x|0x)?[0-9A-Fa-f]{2}[ :,]?){12,}")
_HEX_DIGITS = re.compile(r"\\x|0x|[ :,]")

# Cyrillic and Greek letters drawn like Latin ones (our own list of the common look-alikes).
_CONFUSABLE = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "һ": "h", "і": "i", "ї": "i", "ј": "j", "к": "k", "м": "m", "н": "h",
    "о": "o", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X",
    "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S", "Ԁ": "D", "Ԛ": "Q", "Ԝ": "W", "Ӏ": "I",
    "α": "a", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O", "Ρ": "P",
    "Τ": "T", "Υ": "Y", "Χ": "X",
})  # fmt: skip


@dataclass(frozen=True)
class Normalized:
    """One text after ``normalize``: the clean text, texts decoded from it, and the flags raised."""

    text: str
    decoded: tuple[str, ...] = ()
    flags: frozenset[str] = frozenset()


@dataclass
class Segments:
    """What the rules read of one tool: ``(target, where, text)`` items, the flags raised and whether a cap was hit."""

    items: list[tuple[str, str, str]] = field(default_factory=list)
    flags: dict[str, str] = field(default_factory=dict)  # flag -> where first seen
    truncated: bool = False
    _size: int = 0

    def add(self, target: str, where: str, text: str) -> None:
        """Append one segment unless it is empty or the total budget is spent."""
        if not text:
            return
        if self._size + len(text) > MAX_TOTAL:
            self.truncated = True
            return
        self._size += len(text)
        self.items.append((target, where, text))

    def add_text(self, where: str, raw: str, target: str = "text") -> None:
        """Normalize ``raw`` and add it and everything decoded from it."""
        norm = normalize(raw)
        self.truncated = self.truncated or len(raw) > MAX_TEXT
        for flag in sorted(norm.flags):
            self.flags.setdefault(flag, where)
        self.add(target, where, norm.text)
        for i, text in enumerate(norm.decoded):
            self.add("text", f"{where}#decoded{i}", text)


def _tag_runs(text: str) -> tuple[str, str]:
    """``text`` without tag characters, and the ASCII the removed runs spell (flag emoji excepted)."""
    hidden: list[str] = []

    def strip(m: re.Match[str]) -> str:
        run = m.group(0)
        before = text[m.start() - 1] if m.start() else ""
        if before == _FLAG_EMOJI and run.endswith("\U000e007f") and len(run) <= 8:
            return run  # a subdivision flag such as Scotland's is drawn with tag characters
        hidden.append("".join(chr(ord(c) - 0xE0000) for c in run if 0xE0020 <= ord(c) <= 0xE007E))
        return ""

    return _TAGS.sub(strip, text), " ".join(h for h in hidden if h.strip())


def _invisible(text: str, flags: set[str]) -> str:
    """Remove zero-width, filler and bidi control characters, flagging the suspicious ones."""
    for m in _ZERO_WIDTH.finditer(text):
        i = m.start()
        if 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            flags.add("zero_width")
            break
    if _BIDI.search(text):
        flags.add("bidi_control")
    if _MARKS.search(text) and not _RTL.search(text):
        flags.add("bidi_control")  # direction marks in text without any right-to-left script
    return _MARKS.sub("", _BIDI.sub("", _ZERO_WIDTH.sub("", text)))


def _unmix(text: str, flags: set[str]) -> str:
    """Map look-alike letters of mixed-script words to Latin (and, once one is found, of all-look-alike words)."""
    if not _LOOKALIKE_SCRIPT.search(text):
        return text
    mixed = sum(1 for w in _WORD.findall(text) if _LATIN.search(w) and _LOOKALIKE_SCRIPT.search(w))
    if not mixed:
        return text
    flags.add("mixed_script" if mixed > 1 else "mixed_script_word")

    def fix(m: re.Match[str]) -> str:
        word = m.group(0)
        mapped = word.translate(_CONFUSABLE)
        return mapped if not _LOOKALIKE_SCRIPT.search(mapped) else word

    return _WORD.sub(fix, text)


def _readable(data: bytes) -> str | None:
    """``data`` as text when it reads as text (UTF-8, mostly printable, some letters), else None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(c.isprintable() or c in "\n\t\r" for c in text)
    letters = sum(c.isalpha() for c in text)
    return text if len(text) >= 8 and printable >= 0.95 * len(text) and letters >= 0.5 * len(text) else None


def _b64(run: str) -> str | None:
    if len(run.rstrip("=")) % 4 == 1 or not (re.search("[A-Z]", run) and re.search("[a-z]", run)):
        return None
    padded = run + "=" * (-len(run) % 4)
    try:
        data = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError):
        return None
    return _readable(data)


def _hex(run: str) -> str | None:
    digits = _HEX_DIGITS.sub("", run)
    try:
        return _readable(bytes.fromhex(digits[: len(digits) // 2 * 2]))
    except ValueError:
        return None


def _decode_runs(text: str) -> list[str]:
    """Readable texts hidden as base64 or hex runs in ``text`` (at most ``MAX_DECODED``)."""
    found: list[str] = []
    for pattern, decode in ((_HEX, _hex), (_B64, _b64)):
        for m in pattern.finditer(text):
            decoded = decode(m.group(0).strip(" :,"))
            if decoded:
                found.append(decoded)
            if len(found) >= MAX_DECODED:
                return found
    return found


def normalize(raw: str, depth: int = 2) -> Normalized:
    """``raw`` cut to ``MAX_TEXT``, de-obfuscated as the module docstring says; ``depth`` bounds nested decoding."""
    flags: set[str] = set()
    text, hidden = _tag_runs(raw[:MAX_TEXT])
    if hidden:
        flags.add("unicode_tags")
    text = _unmix(unicodedata.normalize("NFKC", _invisible(text, flags)), flags)
    decoded: list[str] = [normalize(hidden, depth - 1).text] if hidden else []
    for run in _decode_runs(text) if depth > 0 else []:
        inner = normalize(run, depth - 1)
        flags |= inner.flags | {"encoded_text"}
        decoded += [inner.text, *inner.decoded]
    return Normalized(text, tuple(decoded), frozenset(flags))


# ------------------------------------------------------------------ schema walk


def _type_name(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        return "|".join(str(k) for k in kind)
    return str(kind) if kind is not None else "any"


def _node_texts(node: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, text) of the human-readable strings of one schema node."""
    out = [(k, node[k]) for k in ("title", "description", "default", "const", "pattern") if isinstance(node.get(k), str)]
    for key in ("enum", "examples"):
        values = node.get(key)
        if isinstance(values, list):
            out += [(key, v) for v in values[:64] if isinstance(v, str)]
    return out


def _children(node: dict[str, Any], path: str) -> list[tuple[str, str | None, Any]]:
    """(path, property name or None, child node) of every subschema of ``node``."""
    out: list[tuple[str, str | None, Any]] = []
    for key in ("properties", "patternProperties", "$defs", "definitions"):
        props = node.get(key)
        if isinstance(props, dict):
            out += [(f"{path}.{name}", name if key == "properties" else None, sub) for name, sub in props.items()]
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out.append((f"{path}[{key}]", None, node[key]))
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            out += [(f"{path}[{key}{i}]", None, sub) for i, sub in enumerate(node[key])]
    return out


def _walk_schema(schema: Any, out: Segments) -> None:
    stack: list[tuple[str, str | None, Any, int]] = [("schema", None, schema, 0)]
    nodes = 0
    while stack:
        path, name, node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            out.truncated = True
            break
        if name is not None:
            out.add_text(f"{path}:name", f"{name}:{_type_name(node)}", target="param")
        for key, text in _node_texts(node):
            out.add_text(f"{path}.{key}", text)
        stack += [(p, n, sub, depth + 1) for p, n, sub in reversed(_children(node, path))]


def segments(name: str | None, description: str | None, input_schema: Any, annotations: Any = None) -> Segments:
    """Every text of a tool definition the rules read (see the module docstring)."""
    out = Segments()
    if name:
        out.add_text("name", name, target="name")
    if description:
        out.add_text("description", description)
    if isinstance(annotations, dict) and isinstance(annotations.get("title"), str):
        out.add_text("annotations.title", annotations["title"])
    _walk_schema(input_schema, out)
    return out
