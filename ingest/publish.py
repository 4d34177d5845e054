"""Hand ``RequestSummary`` rows to Kafka as Arrow IPC envelopes, one envelope per partition: the publish edge.

``SummaryPublisher`` is the I/O: it cuts rows into envelopes with the pure
``ingest.envelopebuffer.EnvelopeBuffer`` (one envelope per partition, keyed by
actor, as Kafka's default partitioner would place the key), encodes them
(``ingest.envelope.encode_rows``) and sends each to its partition with
kafka-python. Delivery is counted from the futures' callbacks; a failed send is
counted and logged (``kubeward.publish``), never raised from ``publish_rows``.
kafka-python 3.x has no ``buffer_memory`` bound, so backpressure is ours: when
buffered plus unacknowledged rows would pass ``max_buffered_rows`` the caller
waits for the broker. One lock guards every public method.

With ``spool_dir`` the publisher never waits and never loses an envelope to an
outage: an envelope goes to ``DiskSpool`` (one file per envelope, oldest first,
at most ``spool_max_bytes``) instead of the broker when unacknowledged rows would
pass ``max_buffered_rows``, when a send failed for a reason that may pass (the
broker unreachable, a delivery timeout, the producer closed with rows in flight)
or while older envelopes still wait on disk, so order is kept. ``flush_due``
(the background flusher) and ``flush`` replay the spool in sequence order once
every earlier send has settled, a window of at most ``max_buffered_rows`` rows at
a time, deleting each file when the broker acknowledges it. The spool outlives
the process: a publisher started on the same directory replays what a previous
one left. An envelope the spool cannot take (over the cap, or the disk refused
it) is dropped, counted (``rows_dropped``, ``kubeward_publish_spool_rows_total``)
and logged. Delivery is at least once: an envelope the broker wrote but never
acknowledged (the broker paused or restarted mid-request) is sent again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from ingest.envelope import encode_rows, summary_to_row
from ingest.envelopebuffer import Envelope, EnvelopeBuffer, row_actor
from ingest.errors import PublishError
from ingest.kafkaauth import KafkaSecurity
from ingest.schema import RequestSummary
from ingest.spool import DEFAULT_SPOOL_MAX_BYTES, SPOOL_BYTES, SPOOL_ROWS, DiskSpool, SpooledEnvelope, counter
from ingest.topics import SUMMARIES

__all__ = ["DiskSpool", "SpooledEnvelope", "SummaryPublisher"]

# DiskSpool and SpooledEnvelope live in ingest.spool; re-exported here, where the publisher uses them

log = logging.getLogger("kubeward.publish")

MAX_REQUEST_SIZE = 8 << 20
# The broker's default message.max.bytes is 1048588; a record batch above it is rejected.
MAX_MESSAGE_BYTES = 1_000_000
_BACKPRESSURE_TIMEOUT_S = 60.0
# Record-batch framing around one envelope (batch header, record header, key).
_FRAMING_BYTES = 4096
#: how long after a failed send the broker is taken as away (envelopes go straight to the spool)
SPOOL_RETRY_S = 1.0
_DROP_LOG_EVERY_S = 10.0


ROWS_TOTAL = counter("kubeward_publish_rows_total", "Summary rows published, by broker result.", ["result"])
ENVELOPES_TOTAL = counter("kubeward_publish_envelopes_total", "Envelopes the broker acknowledged.")
BYTES_TOTAL = counter("kubeward_publish_bytes_total", "Message value bytes the broker acknowledged.")


def _force_close(producer: Any) -> None:
    """Close a kafka-python producer whose sends will not settle (the broker is away).

    kafka-python 3.0.12's ``close(timeout)`` raises from its own flush before it reaches the forced close, so
    the sender thread would live on and retry forever: stop the sender (which fails what it still holds), then close.
    """
    sender = getattr(producer, "_sender", None)
    if sender is None:
        return
    sender.force_close()
    sender.join(5.0)
    try:
        producer.close(timeout=0)
    except KafkaTimeoutError:
        log.error("producer sender thread could not be stopped", extra={"alive": sender.is_alive()})


class SummaryPublisher:
    """Publish summary rows to ``l7.summaries.v1`` as Arrow IPC envelopes keyed by actor.

    An envelope whose encoding passes ``max_message_bytes`` (keep it under the
    topic's ``max.message.bytes``) is split in halves until it fits.
    ``enable_idempotence`` is off by default: in kafka-python 3.0.12 one fatal
    error (a record the broker rejects as too large) leaves an idempotent
    producer failing every later send. ``producer`` replaces the
    ``KafkaProducer`` built from the other arguments (tests pass a fake one).
    Rows are acknowledged with ``acks="all"``; ``stats()`` counts rows the
    broker acknowledged or rejected, and the spool's rows.

    ``spool_dir`` turns on the disk spool (module docstring), bounded by
    ``spool_max_bytes``; after a failed send the broker is taken as away for
    ``spool_retry_s`` (envelopes go straight to disk, no replay is tried);
    ``delivery_timeout_ms`` bounds how long kafka-python
    holds a record for an unreachable broker before the send fails (and, with a
    spool, the envelope goes to disk).
    """

    def __init__(self, bootstrap: str, topic: str = SUMMARIES.name, envelope_rows: int = 1000,
                 linger_ms: float = 5.0, max_buffered_rows: int = 200_000, compression: str | None = None,
                 client_id: str = "kubeward-publisher", *, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 enable_idempotence: bool = False, producer: Any = None, spool_dir: str | Path | None = None,
                 spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES, spool_retry_s: float = SPOOL_RETRY_S,
                 delivery_timeout_ms: int | None = None, security: KafkaSecurity | None = None) -> None:
        if max_buffered_rows < envelope_rows:
            raise ValueError(f"max_buffered_rows={max_buffered_rows} is below envelope_rows={envelope_rows}")
        self.topic = topic
        self.max_buffered_rows = max_buffered_rows
        self.max_message_bytes = min(max_message_bytes, MAX_REQUEST_SIZE)
        self.linger_ms = linger_ms
        self._producer = producer if producer is not None else self._connect(
            bootstrap, linger_ms, compression, client_id, enable_idempotence, delivery_timeout_ms, security or KafkaSecurity())
        try:
            partitions = self._producer.partitions_for(topic)
        except KafkaError as exc:
            self._producer.close(timeout=0)
            raise PublishError(f"no partitions for topic {topic!r} on {bootstrap!r}: {exc!r}") from exc
        self._buffer = EnvelopeBuffer(partitions, envelope_rows, linger_ms)
        self._lock = threading.RLock()
        self._stats_lock = threading.Lock()  # callbacks run on kafka-python's sender thread
        self.rows_sent = self.rows_failed = self.envelopes_sent = self.bytes_sent = 0
        self.rows_in_flight = 0
        self.rows_spooled = self.rows_replayed = self.rows_dropped = 0
        self._spool = DiskSpool(spool_dir, spool_max_bytes) if spool_dir is not None else None
        self._seq = itertools.count(self._spool.next_seq() if self._spool is not None else 0)
        self.spool_retry_s = spool_retry_s
        self._away_until = 0.0  # monotonic time until which the broker is taken as unreachable
        self._in_flight: dict[int, SpooledEnvelope] = {}  # direct sends not yet settled (with a spool only)
        self._last_drop_log = -_DROP_LOG_EVERY_S
        self._closing = self._closed = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if self._spool is not None and len(self._spool):
            log.info("spool holds envelopes from before; replaying them first",
                     extra={"directory": str(self._spool.directory), "rows": self._spool.rows})

    @staticmethod
    def _connect(bootstrap: str, linger_ms: float, compression: str | None, client_id: str,
                 enable_idempotence: bool, delivery_timeout_ms: int | None, security: KafkaSecurity) -> KafkaProducer:
        timeouts: dict[str, int] = {}
        if delivery_timeout_ms is not None:  # kafka-python wants delivery >= linger + request timeout
            timeouts = {"delivery_timeout_ms": delivery_timeout_ms,
                        "request_timeout_ms": max(1000, min(30000, delivery_timeout_ms - int(linger_ms) - 1))}
        try:
            return KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all",
                                 linger_ms=linger_ms, compression_type=compression, retries=5,
                                 max_request_size=MAX_REQUEST_SIZE, enable_idempotence=enable_idempotence,
                                 reconnect_backoff_max_ms=1000, **timeouts, **security.kafka_python())
        except KafkaError as exc:
            raise PublishError(f"cannot connect a producer to bootstrap={bootstrap!r}: {exc!r}") from exc

    @property
    def partitions(self) -> tuple[int, ...]:
        """The topic's partition ids, read once at start."""
        return self._buffer.partitions

    # ------------------------------------------------------------------ public API

    def publish_rows(self, rows: list[dict[str, Any]]) -> None:
        """Buffer rows (``RequestSummary.model_dump()`` with ``sensitive`` as pairs); send full envelopes."""
        with self._lock:
            self._check_open()
            step = self._buffer.envelope_rows
            for start in range(0, len(rows), step):
                chunk = rows[start:start + step]
                self._make_room(len(chunk))
                for envelope in self._buffer.add(chunk):
                    self._send_envelope(envelope)

    def publish(self, summaries: Sequence[RequestSummary]) -> None:
        """Convenience: ``publish_rows`` for records."""
        self.publish_rows([summary_to_row(s) for s in summaries])

    def publish_json(self, summary: RequestSummary) -> None:
        """Send one summary as a JSON message keyed by its actor (the single-record path)."""
        with self._lock:
            self._check_open()
            self._make_room(1)
            payload = summary.model_dump_json().encode("utf-8")
            self._send(summary.actor.encode("utf-8"), payload, None, 1, envelope=False)

    def flush_due(self) -> None:
        """Send the partitions whose oldest buffered row is older than ``linger_ms``; replay the spool when it may."""
        with self._lock:
            for envelope in self._buffer.due():
                self._send_envelope(envelope)
            self._replay()

    def flush(self, timeout: float = 30) -> None:
        """Send every buffered row (and, with a spool, every spooled one) and wait for the broker.

        PublishError if rows are still unacknowledged, or still on disk, after ``timeout`` s.
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            for envelope in self._buffer.drain():
                self._send_envelope(envelope)
            try:
                self._producer.flush(timeout=timeout)
            except KafkaTimeoutError as exc:
                if self._spool is None:
                    raise PublishError(f"{self.rows_in_flight} rows still unacknowledged after flush "
                                       f"timeout={timeout}s on topic {self.topic!r}") from exc
            if self._spool is not None:
                self._replay_all(deadline)

    def close(self, timeout: float = 30) -> None:
        """Stop the background flusher, flush, and close the producer (idempotent).

        With a spool, rows the broker has not acknowledged by then stay on disk for the next publisher.
        """
        self._stop.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout)
        with self._lock:
            if self._closed:
                return
            try:
                self.flush(timeout)
            except PublishError as exc:
                log.warning("publisher closed with rows undelivered", extra={"topic": self.topic, "error": str(exc)})
            finally:
                self._closed = self._closing = True
                self._close_producer(timeout)

    def _close_producer(self, timeout: float) -> None:
        """Close the producer; with a spool, what is still in flight goes to disk first (the flush already waited)."""
        if self._spool is not None:
            self._hand_over_in_flight()
            timeout = min(timeout, 1.0)
        try:
            self._producer.close(timeout=timeout)
        except KafkaTimeoutError:
            log.warning("producer closed with sends unsettled", extra={"topic": self.topic, "rows_in_flight": self.rows_in_flight})
            _force_close(self._producer)
        if self._spool is not None:
            if len(self._spool):
                log.warning("rows left in the spool for the next publisher", extra={
                    "directory": str(self._spool.directory), "rows": self._spool.rows})
            self._spool.close()

    def stats(self) -> dict[str, int]:
        """Rows acknowledged and failed, envelopes and bytes acknowledged, rows still buffered, and the spool's rows.

        Every row handed in is in exactly one of: sent, failed, dropped (spool full, disk error, or a spool file
        found unreadable), in the spool, in flight, buffered (``rows_spooled`` and ``rows_replayed`` count
        passages through the spool; replayed rows are also sent).
        """
        spool = self._spool
        with self._stats_lock:
            counts = {"rows_sent": self.rows_sent, "rows_failed": self.rows_failed,
                      "envelopes_sent": self.envelopes_sent, "bytes_sent": self.bytes_sent,
                      "rows_spooled": self.rows_spooled, "rows_replayed": self.rows_replayed,
                      "rows_dropped": self.rows_dropped + (spool.rows_corrupt if spool is not None else 0),
                      "rows_in_spool": spool.rows if spool is not None else 0,
                      "spool_bytes": spool.bytes if spool is not None else 0}
        # An int read is atomic; taking the main lock would stall a metrics scrape behind a flush.
        counts["rows_buffered"] = self._buffer.rows
        return counts

    def start_background_flush(self, interval_s: float | None = None) -> threading.Thread:
        """Start (once) a daemon thread calling ``flush_due`` every ``interval_s`` (default linger)."""
        with self._lock:
            if self._flusher is None:
                interval = self.linger_ms / 1000.0 if interval_s is None else interval_s
                self._flusher = threading.Thread(target=self._flush_loop, args=(interval,),
                                                 name="kubeward-publish-flush", daemon=True)
                self._flusher.start()
            return self._flusher

    def __enter__(self) -> SummaryPublisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError(f"publisher for topic {self.topic!r} is closed")

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush_due()
            except Exception:  # keep flushing; the failure is ours, so log it loudly
                log.exception("background flush failed", extra={"topic": self.topic})

    def _make_room(self, incoming: int) -> None:
        """Block until buffered + unacknowledged + incoming rows fit ``max_buffered_rows`` (with a spool: never)."""
        if self._buffer.rows + self.rows_in_flight + incoming <= self.max_buffered_rows:
            return
        if self._buffer.rows + incoming > self.max_buffered_rows:
            for envelope in self._buffer.drain():
                self._send_envelope(envelope)
        if self._spool is not None:
            return  # what does not fit goes to disk in _send
        try:
            self._producer.flush(timeout=_BACKPRESSURE_TIMEOUT_S)
        except KafkaTimeoutError as exc:
            log.warning("backpressure flush timed out", extra={
                "topic": self.topic, "rows_in_flight": self.rows_in_flight, "error": repr(exc)})

    def _send_envelope(self, envelope: Envelope) -> None:
        try:
            payload = encode_rows(envelope.rows)
        except Exception as exc:  # a malformed row must not take the rows of other calls down with it
            log.error("envelope could not be encoded", exc_info=True, extra={
                "topic": self.topic, "partition": envelope.partition, "rows": len(envelope.rows)})
            self._add_in_flight(len(envelope.rows))
            self._on_failure(len(envelope.rows), envelope.partition, None, exc)
            return
        if len(payload) + len(envelope.key) + _FRAMING_BYTES > self.max_message_bytes and len(envelope.rows) > 1:
            half = len(envelope.rows) // 2
            for rows in (envelope.rows[:half], envelope.rows[half:]):
                self._send_envelope(Envelope(envelope.partition, row_actor(rows[0]), rows))
            return
        self._send(envelope.key.encode("utf-8"), payload, envelope.partition, len(envelope.rows), envelope=True)

    def _send(self, key: bytes, payload: bytes, partition: int | None, rows: int, *, envelope: bool) -> None:
        item = None
        if self._spool is not None:
            item = SpooledEnvelope(next(self._seq), partition, key, payload, rows, envelope)
            if len(self._spool) or self._away() or self.rows_in_flight + rows > self.max_buffered_rows:
                self._to_spool(item)
                return
        self._add_in_flight(rows, item)
        try:
            future = self._producer.send(self.topic, key=key, value=payload, partition=partition)
        except KafkaError as exc:
            self._on_failure(rows, partition, item, exc)
            return
        future.add_callback(self._on_success, rows, len(payload), envelope, item, False)
        future.add_errback(self._on_failure, rows, partition, item)

    def _add_in_flight(self, rows: int, item: SpooledEnvelope | None = None) -> None:
        with self._stats_lock:
            self.rows_in_flight += rows
            if item is not None:
                self._in_flight[item.seq] = item

    def _settle(self, item: SpooledEnvelope | None, rows: int) -> bool:
        """Take a direct send out of flight; False when ``close`` already put it on disk (and counted it)."""
        with self._stats_lock:
            if item is not None and self._in_flight.pop(item.seq, None) is None:
                return False
            self.rows_in_flight -= rows
            return True

    def _on_success(self, rows: int, nbytes: int, envelope: bool, item: SpooledEnvelope | None, replayed: bool,
                    _metadata: Any) -> None:
        if replayed or not self._settle(item, rows):  # the envelope is on disk: the broker has it now
            assert self._spool is not None and item is not None
            self._spool.remove(item.seq)
            SPOOL_BYTES.set(self._spool.bytes)
        if replayed:
            SPOOL_ROWS.labels(result="replayed").inc(rows)
        with self._stats_lock:
            if replayed:
                self.rows_in_flight -= rows
                self.rows_replayed += rows
            self.rows_sent += rows
            self.bytes_sent += nbytes
            self.envelopes_sent += envelope
        ROWS_TOTAL.labels(result="sent").inc(rows)
        BYTES_TOTAL.inc(nbytes)
        if envelope:
            ENVELOPES_TOTAL.inc()

    def _passing(self, exc: BaseException) -> bool:
        """Whether a failed send may succeed later (worth the spool), rather than the record being refused."""
        return bool(getattr(exc, "retriable", False)) or self._closing

    def _on_failure(self, rows: int, partition: int | None, item: SpooledEnvelope | None, exc: BaseException) -> None:
        if item is not None and self._passing(exc):
            self._away_until = time.monotonic() + self.spool_retry_s
            with self._stats_lock:
                mine = self._in_flight.pop(item.seq, None) is not None
            if mine:  # to disk before the in-flight count drops: a replay waits for that count
                self._to_spool(item)
                with self._stats_lock:
                    self.rows_in_flight -= rows
            return
        if not self._settle(item, rows):
            return
        with self._stats_lock:
            self.rows_failed += rows
        ROWS_TOTAL.labels(result="failed").inc(rows)
        log.warning("publish failed", extra={
            "topic": self.topic, "partition": partition, "rows": rows, "error": repr(exc)})

    # ------------------------------------------------------------------ spool

    def _away(self) -> bool:
        return time.monotonic() < self._away_until

    def _to_spool(self, item: SpooledEnvelope) -> None:
        assert self._spool is not None
        if self._spool.put(item):
            result = "spooled"
            with self._stats_lock:
                self.rows_spooled += item.rows
        else:
            result = "dropped"
            with self._stats_lock:
                self.rows_dropped += item.rows
            now = time.monotonic()
            if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
                self._last_drop_log = now
                log.warning("spool full or unwritable: envelopes dropped", extra={
                    "directory": str(self._spool.directory), "max_bytes": self._spool.max_bytes,
                    "rows_dropped_total": self.rows_dropped})
        SPOOL_ROWS.labels(result=result).inc(item.rows)
        SPOOL_BYTES.set(self._spool.bytes)

    def _replay(self) -> int:
        """Send the oldest spooled envelopes once every earlier send has settled; the number sent."""
        spool = self._spool
        if spool is None or not len(spool) or self.rows_in_flight or self._away() or self._closing:
            return 0
        window = spool.peek(self.max_buffered_rows)
        for i, item in enumerate(window):
            self._add_in_flight(item.rows)
            try:
                future = self._producer.send(self.topic, key=item.key, value=item.payload, partition=item.partition)
            except KafkaError as exc:
                self._on_replay_failure(item, exc)
                return i
            future.add_callback(self._on_success, item.rows, len(item.payload), item.envelope, item, True)
            future.add_errback(self._on_replay_failure, item)
        return len(window)

    def _on_replay_failure(self, item: SpooledEnvelope, exc: BaseException) -> None:
        """A replayed envelope failed: it stays on disk (the broker is away again), or, refused, is counted failed."""
        assert self._spool is not None
        if self._passing(exc):
            self._away_until = time.monotonic() + self.spool_retry_s
            with self._stats_lock:
                self.rows_in_flight -= item.rows
            return
        self._spool.remove(item.seq)
        SPOOL_BYTES.set(self._spool.bytes)
        self._on_failure(item.rows, item.partition, None, exc)

    def _hand_over_in_flight(self) -> None:
        """At close: every direct send still unacknowledged goes to disk now (a late acknowledgement deletes the copy)."""
        with self._stats_lock:
            items = sorted(self._in_flight.values())
            self._in_flight.clear()
            self.rows_in_flight -= sum(item.rows for item in items)
        for item in items:
            self._to_spool(item)

    def _replay_all(self, deadline: float) -> None:
        """Replay until the spool is empty; PublishError at ``deadline`` with rows still on disk or in flight."""
        assert self._spool is not None
        while len(self._spool) or self.rows_in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PublishError(f"{self._spool.rows} rows still in the spool ({self._spool.directory}) and "
                                   f"{self.rows_in_flight} unacknowledged at the flush deadline on topic {self.topic!r}")
            if not self._replay():
                time.sleep(min(0.05, left))
            try:
                self._producer.flush(timeout=max(left, 0.001))
            except KafkaTimeoutError:
                pass
