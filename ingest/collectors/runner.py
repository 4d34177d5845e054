"""The per-node collector process (edge): sources -> joiner -> summariser -> publisher, with metrics.

``Collector`` runs each ``Source`` in a thread of its own. A source's ``emit``
runs the pipeline in the caller's thread under one lock: observations enter the
``Joiner``; what it releases is summarised (``summarize_many``) and handed to
the publisher (``publish_rows``), whose backpressure therefore slows the
sources down instead of growing a queue. A maintenance thread, every
``tick_s``, releases joins held past ``hold_s``, sends lingering envelopes and
commits offsets; the Prometheus endpoint serves on ``metrics_port``.

Optional source capabilities, found by duck typing:

* ``on_reject`` attribute (None): set to this collector's dead-letter handler,
  which publishes ``ingest.schema.DeadLetter`` JSON to ``l7.summaries.dlq.v1``
  through ``dead_letters`` (``topic`` holds the input's origin, e.g. the file path).
* ``snapshot()`` / ``commit(snapshot)``: offsets. A snapshot is committed one
  ``checkpoint_s`` later, after a publisher flush: by then everything emitted
  before it has left the joiner (``checkpoint_s > hold_s``) and the broker has
  acknowledged it, so a crash replays at most one interval and loses nothing.
* ``counters()`` or a dataclass ``stats``: exported as
  ``kubeward_collector_source_events_total{source,event}``.

A graceful ``stop``: sources stop and return, the joiner is drained, every row
is summarised, published and flushed, and then offsets are committed. A source
that raises is a bug: it is logged and stops the collector (``failed``).
"""

from __future__ import annotations

import base64
import dataclasses
import gc
import logging
import threading
import time
from collections import Counter as TallyCounter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import orjson
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from ingest.collectors.accesslog import Rejected
from ingest.collectors.base import Emit, Source
from ingest.collectors.join import Joiner
from ingest.collectors.settings import CollectorSettings
from ingest.errors import PublishError
from ingest.observation import HttpObservation
from ingest.schema import DeadLetter

__all__ = ["Checkpointed", "Collector", "DeadLetterSink", "PublisherLike", "SummarizerLike", "tune_gc"]

#: the collector process's garbage-collector thresholds (``tune_gc``)
GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Tune the garbage collector for a collector process: what was loaded at start is frozen (never scanned again),
    and young collections run every 50,000 allocations instead of 700. Summaries wait in the publisher's buffer long
    enough to reach the oldest generation, so with the defaults full collections kept re-scanning them: a third of the
    collector's CPU (``deploy.lab.bench_collectors``: 13,500 entries per CPU-second with the defaults, 18,600 with the
    collector off). The rows hold no reference cycles; memory is still returned by reference counting."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

log = logging.getLogger("kubeward.collector")

DeadLetterSink = Callable[[bytes | None, bytes], None]
_LOG_EVERY = 1000


class SummarizerLike(Protocol):
    """``ingest.summarize.Summarizer`` as the collector uses it."""

    def summarize(self, obs: HttpObservation) -> dict[str, Any]:
        """The envelope row of one observation."""
        ...

    def summarize_many(self, observations: Sequence[HttpObservation]) -> list[dict[str, Any]]:
        """Rows of many observations, in order."""
        ...


class PublisherLike(Protocol):
    """``ingest.publish.SummaryPublisher`` as the collector uses it."""

    def publish_rows(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows; send full envelopes."""
        ...

    def flush_due(self) -> None:
        """Send envelopes older than the linger."""
        ...

    def flush(self, timeout: float = 30) -> None:
        """Send everything and wait for the broker."""
        ...

    def stats(self) -> dict[str, int]:
        """Rows sent, failed and buffered."""
        ...


@runtime_checkable
class Checkpointed(Protocol):
    """A source whose read position can be saved: ``snapshot()`` of what was emitted, ``commit`` to store it."""

    name: str

    def snapshot(self) -> Any:
        """The positions of everything emitted so far."""
        ...

    def commit(self, snapshot: Any) -> None:
        """Store a snapshot durably."""
        ...


class _Bridge:
    """Expose the process-wide registry (publisher and process metrics) on the collector's own endpoint."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class _Live:
    """Metrics read at scrape time: joiner counts and pending, publisher buffer, source counters."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def collect(self) -> Iterator[Metric]:
        stats = self.collector.joiner.stats
        for name, value, doc in (("joined", stats.joined, "Calls released complete after merging two or more reporters."),
                                 ("join_expired", stats.expired, "Calls released incomplete after hold_s (or at stop)."),
                                 ("join_evicted", stats.evicted, "Calls released early because max_pending was reached."),
                                 ("join_reused", stats.reused, "Calls released early because a reporter repeated a request id.")):
            yield CounterMetricFamily(f"kubeward_collector_{name}", doc, value=value)
        yield GaugeMetricFamily("kubeward_collector_join_pending", "Calls held by the joiner.", value=len(self.collector.joiner))
        publisher = self.collector.publisher.stats()
        yield GaugeMetricFamily("kubeward_collector_publish_buffered_rows", "Rows buffered in the publisher.",
                                value=publisher.get("rows_buffered", 0))
        events = CounterMetricFamily("kubeward_collector_source_events", "Counters each source keeps.", labels=["source", "event"])
        for source in self.collector.sources:
            for event, value in _source_counters(source).items():
                events.add_metric([source.name, event], value)
        yield events


def _source_counters(source: Source) -> dict[str, int]:
    counters = getattr(source, "counters", None)
    if callable(counters):
        return dict(counters())
    stats = getattr(source, "stats", None)
    if stats is not None and dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        return {k: v for k, v in dataclasses.asdict(stats).items() if isinstance(v, int)}
    return {}


class _Metrics:
    """The collector's own counters and gauges, in a registry of its own (one per collector)."""

    def __init__(self, collector: Collector) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.observations = Counter("kubeward_collector_observations", "Observations received, by source.", ["source"], registry=r)
        self.published = Counter("kubeward_collector_published", "Summary rows handed to the publisher.", registry=r)
        self.dead_letters = Counter("kubeward_collector_dead_letters", "Unusable inputs sent to the dead-letter topic, by reason.", ["reason"], registry=r)
        self.lag = Gauge("kubeward_collector_lag_seconds", "Now minus the start time of the newest observation, by source.", ["source"], registry=r)
        r.register(_Live(collector))
        r.register(_Bridge())


class Collector:
    """Run sources and feed their observations through joiner, summariser and publisher (module docstring).

    ``dead_letters(key, value)`` sends one dead letter (the CLI gives a Kafka
    producer's send to ``l7.summaries.dlq.v1``); None logs them only.
    """

    def __init__(self, settings: CollectorSettings, sources: Sequence[Source], summarizer: SummarizerLike,
                 publisher: PublisherLike, dead_letters: DeadLetterSink | None = None, *,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        names = [s.name for s in sources]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must be unique, got {names}")
        self.settings, self.sources = settings, list(sources)
        self.summarizer, self.publisher, self.dead_letters = summarizer, publisher, dead_letters
        self._clock, self._wall = clock, wall
        join = settings.join
        self.joiner = Joiner(frozenset(join.expected), join.hold_s, join.max_pending, join.precedence)
        self.metrics = _Metrics(self)
        self.failed: list[str] = []
        self._dead_counts: TallyCounter[str] = TallyCounter()
        self.metrics_port: int | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._maintenance: threading.Thread | None = None
        self._server: Any = None
        self._pending_snapshots: list[tuple[Checkpointed, Any]] | None = None
        self._next_checkpoint = 0.0
        for source in self.sources:
            if hasattr(source, "on_reject") and getattr(source, "on_reject") is None:
                setattr(source, "on_reject", self._rejector(source.name))

    # ------------------------------------------------------------------ pipeline

    def emit_for(self, name: str) -> Emit:
        """The ``emit`` a source called ``name`` gets: count, join, summarise, publish."""
        counter, lag = self.metrics.observations.labels(name), self.metrics.lag.labels(name)

        def emit(observations: Sequence[HttpObservation]) -> None:
            if not observations:
                return
            counter.inc(len(observations))
            lag.set(self._wall() - observations[-1].time)
            with self._lock:
                self._publish(self.joiner.add_many(observations, self._clock()))

        return emit

    def _publish(self, released: list[HttpObservation]) -> None:
        if not released:
            return
        try:
            rows = self.summarizer.summarize_many(released)
        except Exception:
            log.exception("summarize_many failed; summarising one by one", extra={"observations": len(released)})
            rows = self._one_by_one(released)
        self.publisher.publish_rows(rows)
        self.metrics.published.inc(len(rows))

    def _one_by_one(self, released: list[HttpObservation]) -> list[dict[str, Any]]:
        from ingest.collectors.replay import observation_to_dict  # only on this error path

        rows = []
        for observation in released:
            try:
                rows.append(self.summarizer.summarize(observation))
            except Exception as exc:
                raw = orjson.dumps(observation_to_dict(observation))
                self._dead_letter("collector", Rejected("summarize_error", repr(exc), raw, observation.reporter))
        return rows

    def _rejector(self, name: str) -> Callable[[Rejected], None]:
        def reject(rejected: Rejected) -> None:
            self._dead_letter(name, rejected)

        return reject

    def _dead_letter(self, source: str, rejected: Rejected) -> None:
        self.metrics.dead_letters.labels(rejected.reason).inc()
        self._dead_counts[rejected.reason] += 1
        seen = self._dead_counts[rejected.reason]
        if seen % _LOG_EVERY == 1:
            log.warning("dead letter", extra={"source": source, "reason": rejected.reason, "detail": rejected.detail[:200],
                                              "origin": rejected.origin, "offset": rejected.offset, "count": int(seen)})
        if self.dead_letters is None:
            return
        raw = rejected.raw[: self.settings.dlq_raw_cap]
        letter = DeadLetter(error=f"{rejected.reason}: {rejected.detail}", source=f"collector/{source}", time=self._wall(),
                            topic=rejected.origin, offset=rejected.offset, raw_bytes=len(rejected.raw),
                            raw_b64=base64.b64encode(raw).decode())
        try:
            self.dead_letters(rejected.origin.encode(), letter.model_dump_json().encode())
        except Exception:
            log.exception("dead letter could not be sent", extra={"source": source, "reason": rejected.reason})

    # ------------------------------------------------------------------ maintenance

    def tick(self) -> None:
        """Release joins held past ``hold_s``, send lingering envelopes, commit offsets when due."""
        with self._lock:
            self._publish(self.joiner.expire(self._clock()))
        self.publisher.flush_due()
        if self._clock() >= self._next_checkpoint:
            self.checkpoint()
            self._next_checkpoint = self._clock() + self.settings.checkpoint_s

    def checkpoint(self) -> None:
        """Commit the snapshot taken one interval ago (after a flush), then take the next one."""
        previous = self._pending_snapshots
        with self._lock:
            self._pending_snapshots = self._snapshots()
        if previous:
            self._commit(previous)

    def _snapshots(self) -> list[tuple[Checkpointed, Any]]:
        return [(s, s.snapshot()) for s in self.sources if isinstance(s, Checkpointed)]

    def _commit(self, snapshots: list[tuple[Checkpointed, Any]]) -> None:
        try:
            self.publisher.flush(self.settings.stop_timeout_s)
        except PublishError as exc:
            log.warning("offsets not committed: the broker did not acknowledge", extra={"error": str(exc)})
            return
        for source, snapshot in snapshots:
            try:
                source.commit(snapshot)
            except OSError:
                log.exception("offsets could not be written", extra={"source": source.name})

    def _maintain(self) -> None:
        while not self._stop.wait(self.settings.tick_s):
            try:
                self.tick()
            except Exception:
                log.exception("collector maintenance failed")

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the metrics endpoint, every source thread and the maintenance thread."""
        if self.settings.metrics_port is not None:
            self._server, _ = start_http_server(self.settings.metrics_port, self.settings.metrics_host, registry=self.metrics.registry)
            self.metrics_port = int(self._server.server_port)
        self._next_checkpoint = self._clock() + self.settings.checkpoint_s
        for source in self.sources:
            thread = threading.Thread(target=self._run_source, args=(source,), name=f"kubeward-source-{source.name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._maintenance = threading.Thread(target=self._maintain, name="kubeward-collector-tick", daemon=True)
        self._maintenance.start()
        log.info("collector started", extra={"sources": [s.name for s in self.sources], "node": self.settings.node_name,
                                             "metrics_port": self.metrics_port, "join_expected": self.settings.join.expected})

    def _run_source(self, source: Source) -> None:
        try:
            source.run(self.emit_for(source.name), self._stop)
        except Exception:
            log.exception("source failed; stopping the collector", extra={"source": source.name})
            self.failed.append(source.name)
            self._stop.set()
        else:
            log.info("source ended", extra={"source": source.name})

    def running(self) -> bool:
        """True while some source thread is alive and no stop was requested."""
        return not self._stop.is_set() and any(t.is_alive() for t in self._threads)

    def wait(self, stop: threading.Event | None = None, poll_s: float = 0.2) -> None:
        """Block until ``stop`` is set, a source failed, or every source ended (replays end)."""
        while self.running():
            if stop is not None and stop.wait(poll_s):
                return
            if stop is None:
                self._stop.wait(poll_s)

    def stop(self) -> None:
        """Graceful stop: sources end, the joiner drains, rows are published and flushed, offsets committed."""
        self._stop.set()
        deadline = time.monotonic() + self.settings.stop_timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._maintenance is not None:
            self._maintenance.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            self._publish(self.joiner.drain())
            final = self._snapshots()
        self._commit(final)
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        log.info("collector stopped", extra={"published": self.publisher.stats(), "failed": self.failed})

    def run(self, stop: threading.Event | None = None) -> None:
        """``start``, ``wait`` and ``stop``: the whole life of a collector process."""
        self.start()
        try:
            self.wait(stop)
        finally:
            self.stop()
