"""Rows cut into envelopes, one envelope per Kafka partition (pure: no I/O, no broker).

``EnvelopeBuffer`` keys each ``RequestSummary`` row by its actor
(``ingest.schema.actor_key``, ``row_actor``), gives the key the partition
Kafka's default partitioner would (``default_partition``: murmur2 of the UTF-8
key, made positive, modulo the sorted partition list), buffers rows per
partition and cuts an ``Envelope`` when a partition holds ``envelope_rows`` rows
or its oldest row is ``linger_ms`` old. One envelope therefore never mixes
partitions, and one actor's rows always land in one partition, whichever row of
the envelope supplies the message key. The publish edge that encodes and sends
the envelopes is ``ingest.publish``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from kafka.partitioner.default import murmur2

from ingest.schema import actor_key

__all__ = ["Envelope", "EnvelopeBuffer", "default_partition", "row_actor"]

_KEY_CACHE_SIZE = 1 << 16


def default_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition kafka-python's ``DefaultPartitioner`` picks for a non-null ``key``."""
    ordered = sorted(partitions)
    index: int = (murmur2(key) & 0x7FFFFFFF) % len(ordered)
    return ordered[index]


def row_actor(row: dict[str, Any]) -> str:
    """The actor key of a row shaped like ``RequestSummary.model_dump()``."""
    source = row["source"]
    return actor_key(source.get("workload") or source.get("ip"), row.get("principal"))


class Envelope(NamedTuple):
    """Rows bound for one partition; ``key`` is the actor key of the first row."""

    partition: int
    key: str
    rows: list[dict[str, Any]]


class _Pending:
    __slots__ = ("key", "rows", "since")

    def __init__(self, key: str, since: float) -> None:
        self.key = key
        self.rows: list[dict[str, Any]] = []
        self.since = since


class EnvelopeBuffer:
    """Group rows by the partition of their actor key and cut them into envelopes (no Kafka).

    Parameters
    ----------
    partitions: the topic's partition ids.
    envelope_rows: an envelope is cut as soon as a partition holds this many rows.
    linger_ms: ``due`` returns partitions whose oldest row is at least this old.
    clock: monotonic seconds, used when ``add``/``due`` get no ``now``.

    >>> buf = EnvelopeBuffer([0, 1, 2, 3], envelope_rows=2)
    >>> row = {"source": {"workload": "shop/api", "ip": None}, "principal": "u1"}
    >>> buf.add([row])
    []
    >>> [len(env.rows) for env in buf.add([row])]
    [2]
    """

    def __init__(self, partitions: Iterable[int], envelope_rows: int = 1000, linger_ms: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.partitions = tuple(sorted(partitions))
        if not self.partitions:
            raise ValueError("partitions is empty; the topic has no partitions")
        if envelope_rows < 1:
            raise ValueError(f"envelope_rows must be >= 1, got {envelope_rows!r}")
        self.envelope_rows = envelope_rows
        self.linger_s = linger_ms / 1000.0
        self._clock = clock
        self._pending: dict[int, _Pending] = {}
        self._partition_of: dict[str, int] = {}
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def partition_for(self, key: str) -> int:
        """The partition of an actor key (cached: murmur2 in pure Python costs ~6 us a key)."""
        partition = self._partition_of.get(key)
        if partition is None:
            if len(self._partition_of) >= _KEY_CACHE_SIZE:
                self._partition_of.clear()
            partition = default_partition(key.encode("utf-8"), self.partitions)
            self._partition_of[key] = partition
        return partition

    def add(self, rows: Iterable[dict[str, Any]], now: float | None = None) -> list[Envelope]:
        """Buffer rows; return the envelopes that reached ``envelope_rows``."""
        now = self._clock() if now is None else now
        full: list[Envelope] = []
        for row in rows:
            key = row_actor(row)
            partition = self.partition_for(key)
            pending = self._pending.get(partition)
            if pending is None:
                pending = self._pending[partition] = _Pending(key, now)
            pending.rows.append(row)
            self.rows += 1
            if len(pending.rows) >= self.envelope_rows:
                full.append(self._cut(partition))
        return full

    def due(self, now: float | None = None) -> list[Envelope]:
        """Cut the partitions whose oldest buffered row is at least ``linger_ms`` old."""
        now = self._clock() if now is None else now
        return [self._cut(p) for p, pending in list(self._pending.items()) if now - pending.since >= self.linger_s]

    def drain(self) -> list[Envelope]:
        """Cut every partition that holds rows."""
        return [self._cut(p) for p in list(self._pending)]

    def _cut(self, partition: int) -> Envelope:
        pending = self._pending.pop(partition)
        self.rows -= len(pending.rows)
        return Envelope(partition, pending.key, pending.rows)
