"""Reading a topic once, from the start (or a time) to where it ended when reading began, leaving no trace.

``records_to_end(consumer, topic, since)`` drives a consumer created by the caller with ``group_id=None``: it is
assigned every partition of ``topic``, seeks to the beginning or to the first offset at ``since`` (epoch
seconds), and yields each record below the end offsets taken at the start, so a busy topic still ends. Nothing
is committed, so workers and other consumers never see it. A read that makes no progress for ``timeout_s``
raises ``SettingsError`` naming the topic. Used by ``kubeward whatif``, ``kubeward policy suggest`` and
``kubeward blueprint``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from ingest.errors import SettingsError

__all__ = ["records_to_end"]


def _seek(consumer: Any, parts: list[Any], since: float | None, end: dict[Any, int]) -> None:
    if since is None:
        consumer.seek_to_beginning(*parts)
        return
    found = consumer.offsets_for_times({tp: int(since * 1000) for tp in parts})
    for tp in parts:
        consumer.seek(tp, found[tp].offset if found.get(tp) is not None else end[tp])


def records_to_end(consumer: Any, topic: str, since: float | None = None, timeout_s: float = 30.0,
                   max_records: int = 2000) -> Iterator[Any]:
    """The records of ``topic`` from ``since`` (or the beginning) up to its end offsets at the start."""
    from kafka import TopicPartition

    ids = consumer.partitions_for_topic(topic)
    if not ids:
        raise SettingsError(f"no topic {topic!r} on the broker (kubeward kafka up creates it)")
    parts = [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(parts)
    end = consumer.end_offsets(parts)
    _seek(consumer, parts, since, end)
    deadline = time.monotonic() + timeout_s
    while any(consumer.position(tp) < end[tp] for tp in parts):
        polled = consumer.poll(timeout_ms=500, max_records=max_records)
        if polled:
            deadline = time.monotonic() + timeout_s
        elif time.monotonic() > deadline:
            raise SettingsError(f"no progress reading {topic!r} for {timeout_s:g} s")
        for records in polled.values():
            for record in records:
                if record.offset < end[TopicPartition(record.topic, record.partition)]:
                    yield record
