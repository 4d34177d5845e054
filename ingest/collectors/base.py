"""The one protocol every collector source implements, and the pipeline they feed.

A ``Source`` runs until told to stop and hands batches of ``HttpObservation``
to ``emit``: servers (the Envoy access-log service, the ext_proc tap, OTLP/HTTP)
call it from their handlers, tailers (JSON access-log files) from their read
loop, replays (HAR, JSONL) until the input ends. What happens next is the same
for all: observations of one call are joined by request id
(``ingest.collectors.join.Joiner``), summarised (``ingest.summarize.Summarizer``)
and published (``ingest.publish.SummaryPublisher``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

from ingest.observation import HttpObservation

__all__ = ["Emit", "Source", "int64"]

Emit = Callable[[Sequence[HttpObservation]], None]
#: the range of an envelope's integer columns (Arrow int64)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def int64(value: int | None) -> int | None:
    """``value`` when an envelope's int64 column holds it, else None.

    A malformed input's absurd number (a status or byte count of 2**64) must not reach the publisher: one row
    that does not encode fails its whole envelope, other calls' rows with it.

    >>> int64(201), int64(2**64), int64(None)
    (201, None, None)
    """
    return value if value is None or INT64_MIN <= value <= INT64_MAX else None


class Source(Protocol):
    """A producer of observations (server, tailer or replay)."""

    name: str

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Emit observations until ``stop`` is set or the input ends; never raise on bad input."""
        ...
