"""Kafka topics of the Kubeward wire contract: names, keys and settings.

Every component takes topic names from here so that a rename happens in one
place. ``TopicSpec.config`` holds broker-side topic configs (compaction for the
verdict, policy and inventory topics).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ALL_TOPICS", "DLQ", "FINDINGS", "INVENTORY", "POLICY", "SUMMARIES", "TopicSpec", "VERDICTS"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, default partition count and broker configs."""

    name: str
    partitions: int = 1
    config: dict[str, str] = field(default_factory=dict)


_COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "60000"}

SUMMARIES = TopicSpec("l7.summaries.v1", partitions=4)
DLQ = TopicSpec("l7.summaries.dlq.v1", partitions=1)
VERDICTS = TopicSpec("enforcement.verdicts.v1", partitions=1, config=dict(_COMPACT))
POLICY = TopicSpec("enforcement.policy.v1", partitions=1, config=dict(_COMPACT))
FINDINGS = TopicSpec("security.findings.v1", partitions=1)
INVENTORY = TopicSpec("api.inventory.v1", partitions=1, config=dict(_COMPACT))

ALL_TOPICS: tuple[TopicSpec, ...] = (SUMMARIES, DLQ, VERDICTS, POLICY, FINDINGS, INVENTORY)
