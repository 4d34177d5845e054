"""Changelog values of any size: a blob past ``streams.state.PART_BYTES`` is written as several records.

Kafka refuses a record past the producer's ``max_request_size`` (1,000,000 bytes in Faust) and the broker's
``message.max.bytes``; a worker whose enricher state grew past it crashed on its next checkpoint. The actor
store cuts its buckets itself (``<bucket>.<part>``); every other state value (enrichers, cohorts, tool pins)
goes through ``split``: a value up to the limit is written as it is, a larger one as ``<key>`` holding a
header (``MAGIC``, the number of parts, the value's length, a generation id drawn for this write) and the
first chunk, and ``<key>#1`` ... ``<key>#<n-1>`` each holding the generation id and the next chunk.
``join`` puts them together again at restore and accepts only parts of the head's generation adding up to
its length: parts a larger earlier value left behind, or a head whose parts a crash kept from being
written, never make a value out of two writes. A value that cannot be put together is dropped (its owner
starts empty, as with no changelog) and its key returned as broken. No state key contains ``#``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

__all__ = ["MAGIC", "join", "split"]

MAGIC = b"KWPARTS2"
_HEAD = struct.Struct(">IQ8s")  # parts, total length, generation
_GEN = 8
_SEP = b"#"
_HEAD_BYTES = len(MAGIC) + _HEAD.size


def split(writes: Iterable[tuple[bytes, bytes]], limit: int) -> list[tuple[bytes, bytes]]:
    """The changelog records for ``writes`` (key, value), none of them a value longer than ``limit`` bytes."""
    if limit <= _HEAD_BYTES + _GEN:
        raise ValueError(f"limit={limit} leaves no room for data after the {_HEAD_BYTES}-byte header")
    out: list[tuple[bytes, bytes]] = []
    for key, blob in writes:
        if _SEP in key:
            raise ValueError(f"state key {key!r} contains {_SEP!r}, which marks the parts of a split value")
        if len(blob) <= limit and not blob.startswith(MAGIC):
            out.append((key, blob))
            continue
        generation = os.urandom(_GEN)
        first, step = limit - _HEAD_BYTES, limit - _GEN
        rest = [blob[i : i + step] for i in range(first, len(blob), step)]
        out.append((key, MAGIC + _HEAD.pack(1 + len(rest), len(blob), generation) + blob[:first]))
        out += [(key + _SEP + str(i).encode(), generation + chunk) for i, chunk in enumerate(rest, 1)]
    return out


def join(stored: Iterable[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """(the values ``split`` wrote, whole again, keyed as they were written; the keys of values that cannot be put
    together: a part missing or of another write)."""
    whole: list[tuple[bytes, bytes]] = []
    parts: dict[bytes, dict[int, bytes]] = {}
    heads: list[tuple[bytes, bytes]] = []
    for key, blob in stored:
        base, sep, index = key.rpartition(_SEP)
        if sep and index.isdigit():
            parts.setdefault(base, {})[int(index)] = blob
        elif blob.startswith(MAGIC) and len(blob) >= _HEAD_BYTES:
            heads.append((key, blob))
        else:
            whole.append((key, blob))
    broken = []
    for key, blob in heads:
        count, length, generation = _HEAD.unpack_from(blob, len(MAGIC))
        mine = parts.get(key, {})
        chunks = [blob[_HEAD_BYTES:]]
        for i in range(1, count):
            part = mine.get(i)
            if part is None or part[:_GEN] != generation:
                break
            chunks.append(part[_GEN:])
        value = b"".join(chunks)
        if len(chunks) != count or len(value) != length:
            broken.append(key)
            continue
        whole.append((key, value))
    return whole, broken
