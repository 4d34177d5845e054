"""Hand ``RequestSummary`` rows to Kafka as Arrow IPC envelopes, one envelope per partition.

``EnvelopeBuffer`` is the pure half: it keys each row by its actor
(``ingest.schema.actor_key``), gives the key the partition Kafka's default
partitioner would (murmur2 of the UTF-8 key, made positive, modulo the sorted
partition list), buffers rows per partition and cuts an envelope when a
partition holds ``envelope_rows`` rows or its oldest row is ``linger_ms`` old.
One envelope therefore never mixes partitions, and one actor's rows always land
in one partition, whichever row of the envelope supplies the message key.

``SummaryPublisher`` is the I/O half: it encodes the envelopes
(``ingest.envelope.encode_rows``) and sends each to its partition with
kafka-python. Delivery is counted from the futures' callbacks; a failed send is
counted and logged (``kubeward.publish``), never raised from ``publish_rows``.
kafka-python 3.x has no ``buffer_memory`` bound, so backpressure is ours: when
buffered plus unacknowledged rows would pass ``max_buffered_rows`` the caller
waits for the broker. One lock guards every public method.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.partitioner.default import murmur2
from prometheus_client import REGISTRY, Counter

from ingest.envelope import encode_rows, summary_to_row
from ingest.errors import PublishError
from ingest.schema import RequestSummary, actor_key
from ingest.topics import SUMMARIES

__all__ = ["Envelope", "EnvelopeBuffer", "SummaryPublisher", "default_partition", "row_actor"]

log = logging.getLogger("kubeward.publish")

MAX_REQUEST_SIZE = 8 << 20
# The broker's default message.max.bytes is 1048588; a record batch above it is rejected.
MAX_MESSAGE_BYTES = 1_000_000
_KEY_CACHE_SIZE = 1 << 16
_BACKPRESSURE_TIMEOUT_S = 60.0
# Record-batch framing around one envelope (batch header, record header, key).
_FRAMING_BYTES = 4096


def _counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    """Register a counter once per process; a reloaded module gets the registered one back."""
    try:
        return Counter(name, doc, labels)
    except ValueError:  # duplicated timeseries: the module was imported again (importlib.reload)
        existing = REGISTRY._names_to_collectors[name]
        assert isinstance(existing, Counter), f"{name} is registered as {type(existing).__name__}"
        return existing


ROWS_TOTAL = _counter("kubeward_publish_rows_total", "Summary rows published, by broker result.", ["result"])
ENVELOPES_TOTAL = _counter("kubeward_publish_envelopes_total", "Envelopes the broker acknowledged.")
BYTES_TOTAL = _counter("kubeward_publish_bytes_total", "Message value bytes the broker acknowledged.")


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


class SummaryPublisher:
    """Publish summary rows to ``l7.summaries.v1`` as Arrow IPC envelopes keyed by actor.

    An envelope whose encoding passes ``max_message_bytes`` (keep it under the
    topic's ``max.message.bytes``) is split in halves until it fits.
    ``enable_idempotence`` is off by default: in kafka-python 3.0.12 one fatal
    error (a record the broker rejects as too large) leaves an idempotent
    producer failing every later send. ``producer`` replaces the
    ``KafkaProducer`` built from the other arguments (tests pass a fake one).
    Rows are acknowledged with ``acks="all"``; ``stats()`` counts rows the
    broker acknowledged or rejected.
    """

    def __init__(self, bootstrap: str, topic: str = SUMMARIES.name, envelope_rows: int = 1000,
                 linger_ms: float = 5.0, max_buffered_rows: int = 200_000, compression: str | None = None,
                 client_id: str = "kubeward-publisher", *, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 enable_idempotence: bool = False, producer: Any = None) -> None:
        if max_buffered_rows < envelope_rows:
            raise ValueError(f"max_buffered_rows={max_buffered_rows} is below envelope_rows={envelope_rows}")
        self.topic = topic
        self.max_buffered_rows = max_buffered_rows
        self.max_message_bytes = min(max_message_bytes, MAX_REQUEST_SIZE)
        self.linger_ms = linger_ms
        self._producer = producer if producer is not None else self._connect(
            bootstrap, linger_ms, compression, client_id, enable_idempotence)
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
        self._closed = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    @staticmethod
    def _connect(bootstrap: str, linger_ms: float, compression: str | None, client_id: str,
                 enable_idempotence: bool) -> KafkaProducer:
        try:
            return KafkaProducer(bootstrap_servers=bootstrap, client_id=client_id, acks="all",
                                 linger_ms=linger_ms, compression_type=compression, retries=5,
                                 max_request_size=MAX_REQUEST_SIZE, enable_idempotence=enable_idempotence)
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
        """Send the partitions whose oldest buffered row is older than ``linger_ms``."""
        with self._lock:
            for envelope in self._buffer.due():
                self._send_envelope(envelope)

    def flush(self, timeout: float = 30) -> None:
        """Send every buffered row and wait for the broker; PublishError if that takes over ``timeout`` s."""
        with self._lock:
            for envelope in self._buffer.drain():
                self._send_envelope(envelope)
            try:
                self._producer.flush(timeout=timeout)
            except KafkaTimeoutError as exc:
                raise PublishError(f"{self.rows_in_flight} rows still unacknowledged after flush "
                                   f"timeout={timeout}s on topic {self.topic!r}") from exc

    def close(self, timeout: float = 30) -> None:
        """Stop the background flusher, flush, and close the producer (idempotent)."""
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
                self._closed = True
                self._producer.close(timeout=timeout)

    def stats(self) -> dict[str, int]:
        """Rows acknowledged and failed, envelopes and bytes acknowledged, rows still buffered."""
        with self._stats_lock:
            counts = {"rows_sent": self.rows_sent, "rows_failed": self.rows_failed,
                      "envelopes_sent": self.envelopes_sent, "bytes_sent": self.bytes_sent}
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
        """Block until buffered + unacknowledged + incoming rows fit ``max_buffered_rows``."""
        if self._buffer.rows + self.rows_in_flight + incoming <= self.max_buffered_rows:
            return
        if self._buffer.rows + incoming > self.max_buffered_rows:
            for envelope in self._buffer.drain():
                self._send_envelope(envelope)
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
            self._on_failure(len(envelope.rows), envelope.partition, exc)
            return
        if len(payload) + len(envelope.key) + _FRAMING_BYTES > self.max_message_bytes and len(envelope.rows) > 1:
            half = len(envelope.rows) // 2
            for rows in (envelope.rows[:half], envelope.rows[half:]):
                self._send_envelope(Envelope(envelope.partition, row_actor(rows[0]), rows))
            return
        self._send(envelope.key.encode("utf-8"), payload, envelope.partition, len(envelope.rows), envelope=True)

    def _send(self, key: bytes, payload: bytes, partition: int | None, rows: int, *, envelope: bool) -> None:
        self._add_in_flight(rows)
        try:
            future = self._producer.send(self.topic, key=key, value=payload, partition=partition)
        except KafkaError as exc:
            self._on_failure(rows, partition, exc)
            return
        future.add_callback(self._on_success, rows, len(payload), envelope)
        future.add_errback(self._on_failure, rows, partition)

    def _add_in_flight(self, rows: int) -> None:
        with self._stats_lock:
            self.rows_in_flight += rows

    def _on_success(self, rows: int, nbytes: int, envelope: bool, _metadata: Any) -> None:
        with self._stats_lock:
            self.rows_in_flight -= rows
            self.rows_sent += rows
            self.bytes_sent += nbytes
            self.envelopes_sent += envelope
        ROWS_TOTAL.labels(result="sent").inc(rows)
        BYTES_TOTAL.inc(nbytes)
        if envelope:
            ENVELOPES_TOTAL.inc()

    def _on_failure(self, rows: int, partition: int | None, exc: BaseException) -> None:
        with self._stats_lock:
            self.rows_in_flight -= rows
            self.rows_failed += rows
        ROWS_TOTAL.labels(result="failed").inc(rows)
        log.warning("publish failed", extra={
            "topic": self.topic, "partition": partition, "rows": rows, "error": repr(exc)})
