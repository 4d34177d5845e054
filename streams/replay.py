"""Replay: summary rows or Parquet through the same ``Pipeline`` and policy the worker runs.

Evaluation, notebooks, what-if runs and tests feed recorded or simulated
traffic here instead of through Kafka. ``replay(source, settings)`` cuts the
source into batches of ``batch_rows``, encodes each as the Arrow IPC envelope a
collector would publish, and hands it to ``Pipeline.handle_many`` (decode,
score, decide, sign, findings, checkpoints), all on one partition: per-actor
state does not depend on how actors are spread over partitions. The clock is the
replayed one: ``now`` is the newest event time fed so far, so verdict expiries
and changelog flushes follow the traffic, not the wall clock. Everything the
pipeline would publish is collected in a ``ReplayResult``; ``on_batch`` sees each
batch and its ``Outcome`` as it happens (evaluation scores detections against
ground truth there).

``Replay`` is the same, kept open: feed batches one at a time (on any
partition, at any clock), read its processors, and keep its changelog in a
dict to restore another ``Replay`` from it, as a restarted worker would.

A source is an iterable of envelope rows (``ingest.summary_row`` /
``SimCall.to_row`` shape) or ``RequestSummary`` records, an Arrow table, or the
path of a Parquet file with the ``RequestSummary`` schema (``ingest.simulator.
write_parquet``). A batch the worker would refuse (larger than
``max_message_bytes``, wrong column types) becomes a dead letter here too.
Pure apart from reading the Parquet file; no broker, no wall clock.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Union

import pyarrow as pa
import pyarrow.compute as pc

from ingest import SUMMARIES, DeadLetter, Finding, RequestSummary, Verdict, encode_rows, summary_to_row
from streams.pipeline import Outcome, Pipeline
from streams.processor import BatchProcessor, Detection
from streams.settings import WorkerSettings

__all__ = ["Replay", "ReplayResult", "replay"]

Row = Union[dict[str, Any], RequestSummary]
Batch = Union[list[dict[str, Any]], pa.RecordBatch]
Source = Union[Iterable[Row], pa.Table, str, os.PathLike[str]]
OnBatch = Callable[[Batch, Outcome], None]


@dataclass(frozen=True)
class ReplayResult:
    """What a replay produced: rows and batches fed, and what the pipeline would have published."""

    rows: int
    batches: int
    detections: tuple[Detection, ...]
    verdicts: tuple[Verdict, ...]
    findings: tuple[Finding, ...]
    dead_letters: tuple[DeadLetter, ...]


def _row_batches(rows: Iterable[Row], size: int) -> Iterator[list[dict[str, Any]]]:
    it = iter(rows)
    while chunk := list(itertools.islice(it, size)):
        yield [r if isinstance(r, dict) else summary_to_row(r) for r in chunk]


def _batches(source: Source, size: int) -> Iterator[Batch]:
    """The source cut into batches of at most ``size`` rows."""
    if size < 1:
        raise ValueError(f"batch_rows={size} must be >= 1")
    if isinstance(source, (str, os.PathLike)):
        import pyarrow.parquet as pq

        return iter(pq.ParquetFile(source).iter_batches(batch_size=size))
    if isinstance(source, pa.Table):
        return iter(source.to_batches(max_chunksize=size))
    return _row_batches(source, size)


def _encode(batch: Batch) -> bytes:
    """The envelope a collector would publish for this batch."""
    if isinstance(batch, list):
        return encode_rows(batch)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue().to_pybytes())


def _newest_time(batch: Batch) -> float | None:
    if isinstance(batch, list):
        return max((r["time"] for r in batch if r.get("time") is not None), default=None)
    if "time" not in batch.schema.names:
        return None
    newest = pc.max(batch.column("time")).as_py()
    return None if newest is None else float(newest)


class Replay:
    """One ``Pipeline`` fed batch by batch on the replayed clock.

    Parameters: ``settings`` (the worker's: detectors, windows, threshold,
    policy, signing key), ``changelog`` (a dict: state is restored from what it
    holds on first use of a partition, and every checkpoint the pipeline writes
    is kept in it; ``None`` discards checkpoints), ``topic`` (named in dead
    letters), ``declared`` (the declared endpoints of the specs, as the worker reads them).
    """

    def __init__(self, settings: WorkerSettings, changelog: MutableMapping[bytes, bytes] | None = None,
                 topic: str = SUMMARIES.name, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None) -> None:
        self.pipeline = Pipeline(settings, topic, declared)
        self.changelog = changelog
        self.clock = 0.0

    def _stored(self) -> Iterable[tuple[bytes, bytes]]:
        return () if self.changelog is None else self.changelog.items()

    def processor(self, partition: int = 0) -> BatchProcessor:
        """The partition's processor (restored from the changelog on first use)."""
        return self.pipeline.processor(partition, self._stored())

    def feed(self, batch: Batch | bytes, partition: int = 0, now: float | None = None) -> Outcome:
        """Hand one batch (rows, an Arrow batch, or an encoded message) to the pipeline.

        ``now`` defaults to the newest event time fed so far, this batch included;
        an encoded message needs it given.
        """
        if isinstance(batch, bytes):
            if now is None:
                raise ValueError("feed(bytes) needs now=: an encoded message's event times are not read here")
            value = batch
        else:
            value, newest = _encode(batch), _newest_time(batch)
            now = max(self.clock, newest if newest is not None else self.clock) if now is None else now
        self.clock = now
        out = self.pipeline.handle_many(partition, [(None, value, None)], now, self._stored())
        if self.changelog is not None:
            self.changelog.update(out.state_writes)
        return out

    def run(self, source: Source, batch_rows: int = 500, partition: int = 0, on_batch: OnBatch | None = None) -> ReplayResult:
        """Feed a whole source in batches of ``batch_rows``; collect what the pipeline produced."""
        rows = batches = 0
        detections: list[Detection] = []
        verdicts: list[Verdict] = []
        findings: list[Finding] = []
        dead: list[DeadLetter] = []
        for batch in _batches(source, batch_rows):
            out = self.feed(batch, partition)
            rows, batches = rows + len(batch), batches + 1
            detections += out.detections
            verdicts += out.verdicts
            findings += out.findings
            findings += out.exposures
            dead += [letter for _, letter in out.dead_letters]
            if on_batch is not None:
                on_batch(batch, out)
        findings += self.pipeline.drain()
        return ReplayResult(rows, batches, tuple(detections), tuple(verdicts), tuple(findings), tuple(dead))


def replay(source: Source, settings: WorkerSettings, batch_rows: int = 500, on_batch: OnBatch | None = None,
           declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None) -> ReplayResult:
    """Replay a source through a fresh pipeline built from ``settings`` (see the module docstring).

    >>> from ingest import summary_row
    >>> rows = [summary_row(id=f"r{i}", time=1.8e9 + i, source={"workload": "shop/web"}, principal="mallory",
    ...                     destination={"service": "orders"}, method="GET", path_template="/orders/{id}",
    ...                     status=404, object_ids=[f"{i:016x}"]) for i in range(60)]
    >>> result = replay(rows, WorkerSettings(), batch_rows=20)
    >>> (result.rows, result.batches, [d.attack_class for d in result.detections])
    (60, 3, ['bola'])
    """
    return Replay(settings, declared=declared).run(source, batch_rows, on_batch=on_batch)
