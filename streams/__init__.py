"""Kubeward streams: the Faust worker that turns request summaries into verdicts.

Contract: read ``l7.summaries.v1`` (Arrow envelopes or JSON summaries), fold
each actor's calls into compact columnar state with windowed counters and
baselines, score the touched actors with every ``models`` detector, and publish
a signed ``Verdict`` (``enforcement.verdicts.v1``) plus an OCSF ``Finding``
(``security.findings.v1``) for each newly flagged actor. Unreadable messages go
to ``l7.summaries.dlq.v1`` with the reason; a bug in our own code stops the
worker. ``streams.app`` is the only module that imports faust; the rest is pure.
"""

from streams.pipeline import Outcome, Pipeline, processor_config
from streams.policy import decide, to_finding
from streams.processor import BatchProcessor, Detection, ProcessorConfig
from streams.replay import Replay, ReplayResult, replay
from streams.settings import WorkerSettings
from streams.state import ActorStore

__all__ = [
    "ActorStore",
    "BatchProcessor",
    "Detection",
    "Outcome",
    "Pipeline",
    "ProcessorConfig",
    "Replay",
    "ReplayResult",
    "WorkerSettings",
    "decide",
    "processor_config",
    "replay",
    "to_finding",
]
