"""Changelog values of any size: a blob past ``streams.state.PART_BYTES`` is written as several records.

Kafka refuses a record past the producer's ``max_request_size`` (1,000,000 bytes in Faust) and the broker's
``message.max.bytes``; a worker whose enricher state grew past it crashed on its next checkpoint. The actor
store cuts its buckets itself (``<bucket>.<part>``); every other state value (enrichers, cohorts, tool pins)
goes through ``split``: a value up to the limit is written as it is, a larger one as ``<key>`` holding a
header (``MAGIC``, the number of parts) and the first chunk, and ``<key>#1`` ... ``<key>#<n-1>`` holding the
rest. ``join`` puts them together again at restore: parts a larger earlier value left behind (a header now
says fewer, or the value is whole again) are ignored, and a value with a part missing is dropped (its
owner starts empty, as with no changelog) and counted in the returned list of broken keys.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

__all__ = ["MAGIC", "join", "split"]

MAGIC = b"KWPARTS1"
_HEADER = struct.Struct(">I")
_SEP = b"#"


def split(writes: Iterable[tuple[bytes, bytes]], limit: int) -> list[tuple[bytes, bytes]]:
    """The changelog records for ``writes`` (key, value), none of them a value longer than ``limit`` bytes."""
    out: list[tuple[bytes, bytes]] = []
    head = len(MAGIC) + _HEADER.size
    for key, blob in writes:
        if len(blob) <= limit and not blob.startswith(MAGIC):
            out.append((key, blob))
            continue
        first = limit - head
        rest = [blob[i : i + limit] for i in range(first, len(blob), limit)]
        out.append((key, MAGIC + _HEADER.pack(1 + len(rest)) + blob[:first]))
        out += [(key + _SEP + str(i).encode(), chunk) for i, chunk in enumerate(rest, 1)]
    return out


def join(stored: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """(the values ``split`` wrote, whole again, keyed as they were written; the keys of values with a part missing)."""
    whole: list[tuple[bytes, bytes]] = []
    parts: dict[bytes, dict[int, bytes]] = {}
    heads: list[tuple[bytes, bytes]] = []
    for key, blob in stored:
        base, sep, index = key.rpartition(_SEP)
        if sep and index.isdigit():
            parts.setdefault(base, {})[int(index)] = blob
        elif blob.startswith(MAGIC):
            heads.append((key, blob))
        else:
            whole.append((key, blob))
    broken = []
    skip = len(MAGIC) + _HEADER.size
    for key, blob in heads:
        (count,) = _HEADER.unpack_from(blob, len(MAGIC))
        mine = parts.get(key, {})
        if any(i not in mine for i in range(1, count)):
            broken.append(key)
            continue
        whole.append((key, b"".join([blob[skip:], *(mine[i] for i in range(1, count))])))
    return whole, broken
