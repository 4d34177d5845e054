"""Object blocks: where in an id sequence a call landed, without saying which id.

``object_blocks(template, ids, key)`` maps each numeric id of a call to the
keyed hash of ``(template, id // BLOCK)``: 16 consecutive ids of one endpoint
share a block. Sequential or dense enumeration (one principal walking ids, or
dozens of principals sharing the walk) keeps hitting the same few blocks, which
the worker can count (``streams.ownership``) while the ids themselves stay
keyed hashes. Non-numeric ids (UUIDs, e-mails, tokens) have no order and no
block. The hash is the object-id hash (``ingest.templating.hash_object_id``)
with the same key, over ``"<template>#<block>"``, so it never equals an id's
hash. Pure, stdlib only.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.templating import hash_object_id

__all__ = ["BLOCK", "MAX_BLOCKS", "MAX_DIGITS", "object_blocks"]

#: ids per block
BLOCK = 16
#: blocks kept per call (a page of 200 records touches at most this many)
MAX_BLOCKS = 16
#: longer digit strings are not sequence numbers (card numbers, timestamps in ms are kept: 13 digits)
MAX_DIGITS = 18


def object_blocks(template: str, ids: Iterable[str], key: bytes, cap: int = MAX_BLOCKS) -> list[str]:
    """Distinct keyed block hashes of the numeric ids, in first-seen order, at most ``cap``.

    >>> k = b"k"
    >>> a = object_blocks("/orders/{id}", ["310017", "310032", "abc", "310020"], k)
    >>> len(a), a[0] == object_blocks("/orders/{id}", ["310016"], k)[0]
    (2, True)
    >>> object_blocks("/orders/{id}", ["x1", "-5", ""], k)
    []
    """
    seen: dict[str, None] = {}
    for raw in ids:
        if len(seen) >= cap:
            break
        if raw.isascii() and raw.isdigit() and len(raw) <= MAX_DIGITS:
            seen.setdefault(hash_object_id(f"{template}#{int(raw) // BLOCK}", key), None)
    return list(seen)
