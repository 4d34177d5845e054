"""Inputs for the fuzz targets (``deploy.lab.fuzz``): the seeded mutator, and fields read out of one input.

``Mutator`` makes each input from a seed of the target's corpus: byte mutations (bit flips, interesting bytes and
integers, deleted, repeated and inserted ranges, dictionary tokens, splices of two seeds) and, for seeds that are
JSON, mutations of the parsed tree (a value replaced by another type, a huge or negative number, deep nesting, an
unpaired surrogate escape, a key dropped or added; JSON text held in a string is mutated as a tree too) written
back as JSON. ``inputs(target, seed)`` numbers them: input ``i`` depends only on the seed, the target's name and
``i``. ``strategy(target)`` is the same for hypothesis.

A structured input is a JSON object of named fields (``record``; bodies as JSON text in strings); anything else is
read raw by the target, so byte-level mutations reach the decoders too. ``as_bytes``, ``as_text``, ``wire_text``,
``valid`` and ``as_headers`` turn fields into what a decoder is handed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deploy.lab.fuzz import Target

__all__ = ["SEP", "Mutator", "as_bytes", "as_headers", "as_text", "fields", "inputs", "pack", "record", "strategy", "valid", "wire_text"]

#: separates the fields of a structured input (``pack``/``fields``); rare in real traffic, and mutated like any byte
SEP = b"\x1f\x1e"
_INTERESTING_BYTES = b"\x00\x01\x7f\x80\xff\"\\{}[]:,\n\r\t %;=./?&#@-+eE0"
_INTERESTING_INTS = (0, 1, -1, 127, 128, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64,
                     -(2**63), -(2**64))
_GENERIC_TOKENS = (
    b"\xef\xbb\xbf", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\\u0000", b"\\ud800", b"\\udfff", b"%00", b"%ff",
    b"%25", b"%u0041", b"NaN", b"Infinity", b"-0", b"1e999", b"-1e999", b"1" * 30, b"9" * 5000, b"null", b"true", b"[]", b"{}",
    b'""', b"\r\n", b"\r\n\r\n", b"\n\n", b"\x00" * 8, b"\xff" * 10, b"=" * 4, b"../" * 8, b"\xe2\x80\xa8", b"\xc0\xaf",
)
_HUGE_TEXT = "A" * 70_000

# ---------------------------------------------------------------------- structured inputs


def pack(*parts: bytes | str) -> bytes:
    """One input holding several fields (``fields`` splits them back)."""
    return SEP.join(p.encode("utf-8", "surrogatepass") if isinstance(p, str) else p for p in parts)


def fields(data: bytes, count: int) -> list[bytes]:
    """``count`` fields of a packed input: missing ones are empty, extra ones stay in the last."""
    parts = data.split(SEP, count - 1)
    return parts + [b""] * (count - len(parts))


def record(data: bytes) -> dict[str, Any] | None:
    """A structured input: a JSON object of named fields (bodies as JSON text in strings, which the mutator mutates
    as trees too); None for any other input, which the target then reads raw."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def as_bytes(value: Any) -> bytes | None:
    """A field as bytes (text as UTF-8, unpaired surrogates kept as their bytes); None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return str(value).encode("utf-8", "surrogatepass")


def as_text(value: Any, default: str = "") -> str:
    """A field as text (numbers, lists... as their ``str``)."""
    if value is None:
        return default
    return value if isinstance(value, str) else str(value)


def wire_text(value: Any, default: str = "") -> str:
    """A field as a server would hand it over: its bytes read as Latin-1 (every byte a character below 256)."""
    return (as_bytes(value) or default.encode()).decode("latin-1")


def valid(text: str) -> str:
    """``text`` without unpaired surrogates: no decoder of the wire hands one on (protobuf and orjson refuse them,
    adapters decode bytes as UTF-8 or Latin-1), but a JSON escape in a structured input can make one."""
    return text.encode("utf-8", "replace").decode("utf-8")


def as_headers(value: Any) -> dict[str, str]:
    """A field of headers: an object of names to values, or a list of ``[name, value]`` pairs (repeats kept last)."""
    pairs = value.items() if isinstance(value, dict) else value if isinstance(value, list) else []
    out: dict[str, str] = {}
    for pair in pairs:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            out[as_text(pair[0])] = as_text(pair[1])
    return out


# ---------------------------------------------------------------------- mutation


class Mutator:
    """Deterministic inputs for one target: seeds mutated by bytes and, for JSON seeds, by tree."""

    def __init__(self, seeds: Sequence[bytes], tokens: Sequence[bytes] = (), rng: random.Random | None = None):
        if not seeds:
            raise ValueError("a target needs at least one seed")
        self.seeds = list(seeds)
        self.tokens = tuple(tokens) + _GENERIC_TOKENS
        self.rng = rng or random.Random(0)
        self._docs: dict[int, Any] = {}
        self._repeats = 0

    def next(self) -> bytes:
        """The next input."""
        rng = self.rng
        self._repeats = 0
        roll = rng.random()
        index = rng.randrange(len(self.seeds))
        seed = self.seeds[index]
        if roll < 0.03:
            return seed
        if roll < 0.06:
            return rng.randbytes(rng.choice((0, 1, 4, 16, 64, 512)))
        if roll < 0.40:
            doc = self._doc(index)
            if doc is not _NOT_JSON:
                try:
                    return self._json_mutation(doc)
                except (RecursionError, ValueError, OverflowError, _TooLarge):
                    pass  # a tree nested or grown past what the mutator handles: mutate the bytes instead
        data = bytearray(seed)
        for _ in range(1 + _draw(rng, 0.7, 12)):
            self._byte_mutation(data)
        return bytes(data)

    def _doc(self, index: int) -> Any:
        doc = self._docs.get(index, _UNSET)
        if doc is _UNSET:
            try:
                doc = json.loads(self.seeds[index])
            except (ValueError, UnicodeDecodeError, RecursionError):
                doc = _NOT_JSON
            self._docs[index] = doc
        return doc

    # -------------------------------------------------------------- bytes

    def _byte_mutation(self, data: bytearray) -> None:
        rng = self.rng
        op = rng.randrange(11)
        size = len(data)
        pos = rng.randrange(size + 1)
        if op == 0 and size:
            data[pos % size] ^= 1 << rng.randrange(8)
        elif op == 1 and size:
            data[pos % size] = rng.choice(_INTERESTING_BYTES)
        elif op == 2 and size:
            del data[pos:pos + 1 + _draw(rng, 0.1, 1 << 20)]
        elif op == 3:
            data[pos:pos] = rng.randbytes(1 + rng.randrange(8))
        elif op in (4, 5):
            data[pos:pos] = rng.choice(self.tokens)
        elif op == 6 and size:
            end = min(size, pos + 1 + _draw(rng, 0.05, size))
            data[pos:pos] = bytes(data[pos:end]) * rng.choice((1, 2, 16, 256))
        elif op == 7:
            other = rng.choice(self.seeds)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
        elif op == 8 and size:
            del data[pos:]
        elif op == 9:
            data[pos:pos] = str(rng.choice(_INTERESTING_INTS)).encode()
        else:
            self._number(data)

    def _number(self, data: bytearray) -> None:
        """Replace a digit run with an interesting number, or overwrite a protobuf varint with a long one."""
        rng = self.rng
        digits = [i for i in range(min(len(data), 4096)) if 48 <= data[i] <= 57]
        if digits and rng.random() < 0.7:
            start = end = rng.choice(digits)
            while end < len(data) and 48 <= data[end] <= 57:
                end += 1
            data[start:end] = str(rng.choice(_INTERESTING_INTS)).encode()
        else:
            pos = rng.randrange(len(data) + 1)
            data[pos:pos] = b"\xff" * rng.randrange(1, 11) + b"\x01"

    # -------------------------------------------------------------- JSON trees

    def _json_mutation(self, doc: Any) -> bytes:
        text = self._mutated_text(doc)
        if len(text) > _MAX_TEXT:
            raise _TooLarge(len(text))
        return text.encode("utf-8", "surrogatepass")

    def _mutated_text(self, doc: Any) -> str:
        """``doc`` (never changed) with a few tree mutations, as JSON text."""
        tree = copy.deepcopy(doc)
        for _ in range(1 + _draw(self.rng, 1.0, 5)):
            tree = self._mutate_tree(tree)
        return self._dump(tree)

    def _dump(self, tree: Any) -> str:
        """JSON text of a tree, with each deep-nesting marker replaced by nesting of a drawn depth."""
        rng = self.rng
        text = json.dumps(tree, ensure_ascii=rng.random() < 0.5, allow_nan=True)
        if _DEEP not in text and _DEEP_ESCAPED not in text:
            return text
        depth = rng.choice((2, 31, 201, 261, 601, 1101, 5001))
        opening, closing = rng.choice((("[", "]"), ('{"a":', "}")))
        deep = opening * depth + "1" + closing * depth
        return text.replace(f'"{_DEEP}"', deep).replace(f'"{_DEEP_ESCAPED}"', deep)

    def _mutate_tree(self, tree: Any) -> Any:
        rng = self.rng
        nodes: list[tuple[Any, Any]] = []  # (container, key) of every value, the root as (None, None)
        self._collect(tree, None, None, nodes, 0)
        container, key = rng.choice(nodes)
        old = tree if container is None else container[key]
        if isinstance(old, str) and old[:1] in ("{", "[") and rng.random() < 0.7:
            new = self._inner(old)  # JSON text inside a string (a body in a structured input): mutate its tree
        else:
            new = self._value(old)
        if container is None:
            return new
        op = rng.random()
        if op < 0.12 and isinstance(container, dict):
            container.pop(key, None)
        elif op < 0.25 and isinstance(container, dict):
            container[self._key()] = new
        elif op < 0.32 and isinstance(container, list):
            container.insert(key, new)
        else:
            container[key] = new
        return tree

    def _inner(self, text: str) -> Any:
        if text.count("[") + text.count("{") > _MAX_BRACKETS:
            return self._value(text)
        try:
            return self._mutated_text(json.loads(text))
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the mutator copies
            return self._value(text)

    def _collect(self, node: Any, container: Any, key: Any, out: list[tuple[Any, Any]], depth: int) -> None:
        out.append((container, key))
        if depth > 40 or len(out) > 2000:
            return
        if isinstance(node, dict):
            for k, v in node.items():
                self._collect(v, node, k, out, depth + 1)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                self._collect(v, node, i, out, depth + 1)

    def _key(self) -> str:
        rng = self.rng
        token = rng.choice(self.tokens)
        if rng.random() < 0.6 and token.isascii() and token[:1].isalpha():
            return token.decode()
        return rng.choice(("", "\ud800", "__proto__", "$where", "a" * 300, "id", "x-request-id", token.decode("latin-1")))

    def _value(self, old: Any) -> Any:
        """A replacement for ``old``: another type, an edge value, a repetition, a nesting of it."""
        rng = self.rng
        choice = rng.randrange(18)
        if choice == 0:
            return rng.choice((None, True, False, 0, "", [], {}))
        if choice == 1:
            return rng.choice(_INTERESTING_INTS)
        if choice == 2:
            return rng.choice((0.5, -0.0, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan))
        if choice == 3:
            return rng.choice(("", "-", " ", "\x00", "\ud800", "\udfff", "é", "😀", "\u2028", "%00", "1", "-1", "1e5", "0x10",
                               "null", "true", "[]", "{}"))
        if choice == 4:
            return _HUGE_TEXT[: rng.choice((300, 300, 5000, 5000, 70_000))]
        if choice == 5:
            return _DEEP
        if choice == 6:
            small = not isinstance(old, (dict, list, str)) or len(old) < 8
            self._repeats += 1  # one large repetition per input: repetitions of repetitions grow exponentially
            return [old] * (rng.choice((2, 100, 3000) if small else (2, 20)) if self._repeats == 1 else 2)
        if choice == 7:
            return {self._key(): old}
        if choice == 8:
            return [old]
        if choice == 9:
            return str(old)
        if choice == 10:
            return rng.choice(self.tokens).decode("latin-1")
        if choice == 11:
            seed = self._doc(rng.randrange(len(self.seeds)))
            return old if seed is _NOT_JSON else copy.deepcopy(seed)
        if isinstance(old, str) and old:
            cut = rng.randrange(len(old))
            return old[:cut] + rng.choice(self.tokens).decode("latin-1") + old[cut + rng.randrange(3):]
        if isinstance(old, bool) or old is None:
            return not old
        if isinstance(old, (int, float)):
            return rng.choice((-old, old * 1000, str(old), old + 1, int(old) if math.isfinite(old) else 0, float(old) if abs(old) < 1e300 else 0.5))
        return old


def _draw(rng: random.Random, rate: float, cap: int) -> int:
    """An exponentially distributed whole number, at most ``cap`` (hypothesis's ``randoms()`` can draw infinity)."""
    value = rng.expovariate(rate)
    return int(value) if value < cap else cap


class _TooLarge(Exception):
    """A mutated JSON input past ``_MAX_TEXT`` characters (repetitions of repetitions grow fast)."""


#: JSON text inside an input with more brackets than this is not parsed to be mutated as a tree: it may be nested
#: past what json and copy.deepcopy recurse through (the deep nesting the mutator itself wrote, mostly)
_MAX_BRACKETS = 900
#: the largest JSON input the mutator writes
_MAX_TEXT = 1 << 20
#: replaced by deep nesting when a tree is written (``Mutator._dump``)
_DEEP = "\u2063DEEP"
_DEEP_ESCAPED = "\\u2063DEEP"
_UNSET = object()
_NOT_JSON = object()


def inputs(target: Target, seed: int, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(index, input)`` of a target from ``start`` on; the same for the same seed and target name."""
    digest = hashlib.sha256(f"{seed}:{target.name}".encode()).digest()
    mutator = Mutator(target.seeds(), target.tokens, random.Random(int.from_bytes(digest[:8], "big")))
    index = 0
    while True:
        try:
            data = mutator.next()
        except Exception:  # noqa: BLE001 - a mutator bug must not end a campaign: this input is a seed
            data = mutator.seeds[index % len(mutator.seeds)]
        if index >= start:
            yield index, data
        index += 1


def strategy(target: Target) -> Any:
    """A hypothesis strategy of this target's inputs: raw bytes, or a seed mutated under a drawn random state."""
    from hypothesis import strategies as st

    seeds = target.seeds()

    def mutated(rng: random.Random) -> bytes:
        return Mutator(seeds, target.tokens, rng).next()

    return st.one_of(st.binary(max_size=2048), st.randoms(use_true_random=False).map(mutated), st.sampled_from(seeds))
