"""The values of a structured body, gathered for redaction (pure: no I/O, no environment).

``BodyValues`` holds the string (and number) values of one JSON document or form
body, each with the field name it sits under and a *slot* saying where it lives
(``(container, key)`` for JSON, the pair's index for a form). ``spans`` scans the
distinct values together as one text (``ingest.sensitive.scan_spans``) and
yields, in order, each value with something to redact, field-name evidence
included (``leaf_info``: a field named ``ssn`` or ``password`` is redacted whole
when its value matched nothing and is not already masked). ``json_slots`` queues
every leaf of a parsed document. Values that cannot hold a pattern on their own
(short, one word of letters, a whole UUID or ISO date, a small number) are skipped
unless their field name announces a type. What replaces a value is the caller's
business: ``enforcement.redaction``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from ingest.sensitive import CARD, IBAN, PHONE, SSN, LeafInfo, Span, leaf_info, scan_spans

__all__ = ["BodyValues", "json_slots"]

_NUMERIC = frozenset({CARD, PHONE, SSN, IBAN})
_NAME_REDACTED = frozenset({"secret", "dob", SSN, CARD, IBAN, "national_id"})


def _already_masked(value: str) -> bool:
    return not value.strip(" *xX\u2022#.-_") or "****" in value or (value.startswith("[") and value.endswith("]"))


def _plain(text: str) -> bool:
    """A value that cannot hold a pattern on its own: short, one word of letters, a whole UUID or ISO date."""
    n = len(text)
    if n < 6 or text.isalpha():
        return True
    if n == 36:
        return text[8] == text[13] == text[18] == text[23] == "-" and not text.strip("0123456789abcdefABCDEF-")
    return (10 <= n <= 35 and text[4] == text[7] == "-" and text.count("-") <= 3
            and not text.strip("0123456789-:T .Z+") and (n == 10 or text[10] in "T "))


class BodyValues:
    """String (and number) values keyed by a field name, scanned together as one text; spans per value.

    ``hints`` memoises ``leaf_info`` per field name for one body (names repeat per record), and
    ``hinted`` lists the values whose field name announces a type: only those and the values the
    scan found something in need per-value work (the rest of a body costs one scan).
    """

    __slots__ = ("texts", "names", "slots", "hinted", "hints")

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.names: list[str] = []
        self.slots: list[Any] = []
        self.hinted: list[int] = []
        self.hints: dict[str, LeafInfo | None] = {}

    def info(self, name: str) -> LeafInfo | None:
        """``leaf_info(name)`` (None for no name), memoised for this body."""
        hints = self.hints
        if name in hints:
            return hints[name]
        found = hints[name] = leaf_info(name) if name else None
        return found

    def add(self, name: str, value: Any, slot: Any) -> None:
        """Queue one value (``slot`` says where it lives) unless it cannot hold anything."""
        cls = value.__class__
        if cls is str:
            if len(value) < 6 or value.isalpha() or _plain(value):
                info = self.info(name)
                if info is None or info.hint is None:
                    return
            text = value
        elif cls is not int and cls is not float:
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                return
            text = repr(value)  # an int or float subclass (form values are strings; orjson gives exact types)
        else:
            if -1_000_000 < value < 1_000_000:
                info = self.info(name)
                if info is None or info.hint is None:
                    return
            text = repr(value)
        self._queue(name, text, slot)

    def _queue(self, name: str, text: str, slot: Any) -> None:
        info = self.info(name)
        if info is not None and info.hint is not None:
            self.hinted.append(len(self.texts))
        self.texts.append(text)
        self.names.append(name)
        self.slots.append(slot)

    def spans(self) -> Iterator[tuple[int, list[Span]]]:
        """``(value index, spans)`` for each value with something to redact (field-name evidence included), in order.

        Distinct values are scanned once, joined by newlines into one text (one
        ``scan_spans`` call costs less than many; list responses repeat values).
        """
        texts = self.texts
        if not texts:
            return
        unique = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        distinct = list(unique)
        starts, at = [], 0
        for t in distinct:
            starts.append(at)
            at += len(t) + 1
        found: dict[int, list[Span]] = {}
        for span in scan_spans("\n".join(distinct)):
            i = bisect_right(starts, span.start) - 1
            end = min(span.end, starts[i] + len(distinct[i]))
            found.setdefault(i, []).append(Span(span.start - starts[i], end - starts[i], span.type))
        if found:
            wanted = set(self.hinted)
            wanted.update(i for i, t in enumerate(texts) if unique[t] in found)
            order: Iterable[int] = sorted(wanted)
        else:
            order = self.hinted
        for i in order:
            spans = self._leaf(i, texts[i], found.get(unique[texts[i]]))
            if spans:
                yield i, spans

    def _leaf(self, i: int, text: str, spans: list[Span] | None) -> list[Span] | None:
        info = self.info(self.names[i])
        if info is None or info.hint is None:
            return spans
        if not spans and info.hint in (PHONE, SSN):  # local formats count only in a field so named
            spans = scan_spans(text, hint=info.hint)
        if spans and info.is_id:
            spans = [s for s in spans if s.type not in _NUMERIC]
        if not spans and info.hint in _NAME_REDACTED and text.strip() and not _already_masked(text):
            return [Span(0, len(text), info.hint)]
        return spans


def json_slots(doc: Any, values: BodyValues, limit: int) -> bool:
    """Queue every leaf of a parsed document as ``(container, key)`` slots; False past ``limit`` leaves.

    ``BodyValues.add`` inlined for orjson's exact types, with a per-body ``name -> announces a type``
    dict: this loop runs once per leaf of every redacted body (measured on the 7 KB user list
    of ``deploy.lab.redaction_eval``, loaded box: 400 -> ~200 us).
    """
    stack: list[tuple[Any, str]] = [(doc, "")]
    seen = 0
    texts, names, slots, hinted = values.texts, values.names, values.slots, values.hinted
    named: dict[str, bool] = {}
    key: Any  # a str in an object, an int in an array
    while stack:
        node, name = stack.pop()
        is_dict = node.__class__ is dict
        for key, value in node.items() if is_dict else enumerate(node):
            seen += 1
            if seen > limit:
                return False
            child: str = key if is_dict else name
            cls = value.__class__
            if cls is dict or cls is list:
                stack.append((value, child))
                continue
            if cls is str:
                text = value
                plain = len(value) < 6 or value.isalpha() or _plain(value)
            elif cls is int or cls is float:
                plain = -1_000_000 < value < 1_000_000
                text = "" if plain else repr(value)
            else:
                continue
            announced = named.get(child)
            if announced is None:
                info = values.info(child)
                announced = named[child] = info is not None and info.hint is not None
            if announced:
                if cls is not str and plain:
                    text = repr(value)
                hinted.append(len(texts))
            elif plain:
                continue
            texts.append(text)
            names.append(child)
            slots.append((node, key))
    return True
