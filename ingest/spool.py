"""The publisher's disk spool: envelopes waiting for the broker, one file each, handed back oldest first.

``SummaryPublisher`` (``ingest.publish``) puts an envelope here when the broker
cannot take it (see that module); this module is the files alone: a bounded
directory, CRC-checked, written then renamed, one publisher per directory.
"""

from __future__ import annotations

import fcntl
import heapq
import logging
import os
import struct
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from prometheus_client import REGISTRY, Counter, Gauge

from ingest.errors import PublishError

__all__ = ["DEFAULT_SPOOL_MAX_BYTES", "DiskSpool", "SpooledEnvelope", "counter"]

log = logging.getLogger("kubeward.publish")

DEFAULT_SPOOL_MAX_BYTES = 1 << 30


def _registered(kind: type[Any], name: str, doc: str, labels: Sequence[str] = ()) -> Any:
    """Register a metric once per process; a reloaded module gets the registered one back."""
    try:
        return kind(name, doc, labels)
    except ValueError:  # duplicated timeseries: the module was imported again (importlib.reload)
        existing = REGISTRY._names_to_collectors[name]
        assert isinstance(existing, kind), f"{name} is registered as {type(existing).__name__}"
        return existing


def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    counter: Counter = _registered(Counter, name, doc, labels)
    return counter


SPOOL_ROWS = counter("kubeward_publish_spool_rows_total",
                      "Summary rows through the disk spool: spooled, replayed (acknowledged after), dropped (spool full or disk error).",
                      ["result"])
SPOOL_BYTES: Gauge = _registered(Gauge, "kubeward_publish_spool_bytes", "Bytes waiting in the disk spool.")


class SpooledEnvelope(NamedTuple):
    """One encoded message waiting for the broker: its place in the send order, where it goes, what it holds."""

    seq: int
    partition: int | None
    key: bytes
    payload: bytes
    rows: int
    envelope: bool  # an Arrow envelope (True) or a single JSON summary


# magic, flags (1: Arrow envelope), rows, partition (-1: the producer picks), key bytes, payload bytes, CRC-32
_HEADER = struct.Struct("<4sIIiIII")
_MAGIC = b"KWS1"


class DiskSpool:
    """A bounded directory of envelopes waiting for the broker, handed back oldest (lowest ``seq``) first.

    Each envelope is one file ``<seq>.env`` (a header with the row count, partition
    and CRC-32, then key and payload), written as ``.tmp`` and renamed, so a crash
    never leaves half a file under its final name; leftover ``.tmp`` files are
    removed at open. ``put`` refuses an envelope that would take the files past
    ``max_bytes``. An unreadable file is renamed ``.bad`` and counted in
    ``corrupt``, never replayed. One spool per directory: a lock file held with
    ``flock`` makes a second publisher on it fail. Thread-safe.
    """

    def __init__(self, directory: str | Path, max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError(f"spool max_bytes must be >= 1, got {max_bytes!r}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = (self.directory / ".lock").open("a")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock_file.close()
            raise PublishError(f"spool directory {str(self.directory)!r} is in use by another publisher") from exc
        self._lock = threading.Lock()
        self._index: dict[int, tuple[int, int]] = {}  # seq -> (file bytes, rows)
        self.bytes = self.rows = self.corrupt = 0
        #: rows of files that turned unreadable after they were indexed here (dropped, never replayed)
        self.rows_corrupt = 0
        self._scan()

    def _path(self, seq: int, suffix: str = ".env") -> Path:
        return self.directory / f"{seq:020d}{suffix}"

    def _scan(self) -> None:
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink(missing_ok=True)
        for path in self.directory.glob("*.env"):
            try:
                seq = int(path.stem)
                with path.open("rb") as f:
                    magic, _, rows, _, klen, plen, _ = _HEADER.unpack(f.read(_HEADER.size))
                size = path.stat().st_size
                if magic != _MAGIC or size != _HEADER.size + klen + plen:
                    raise ValueError(f"bad header or length ({size} bytes)")
            except (OSError, ValueError, struct.error) as exc:
                self._set_aside(path, exc)
                continue
            self._index[seq] = (size, rows)
            self.bytes += size
            self.rows += rows

    def _set_aside(self, path: Path, exc: BaseException) -> None:
        self.corrupt += 1
        log.error("unreadable spool file set aside", extra={"file": str(path), "error": repr(exc)})
        path.rename(path.with_suffix(".bad"))

    def __len__(self) -> int:
        return len(self._index)

    def next_seq(self) -> int:
        """One past the newest envelope on disk (a new publisher numbers its envelopes from here)."""
        with self._lock:
            return max(self._index, default=-1) + 1

    def put(self, item: SpooledEnvelope) -> bool:
        """Write one envelope; False when it would pass ``max_bytes`` or the disk refused it (the caller counts the drop)."""
        crc = zlib.crc32(item.payload, zlib.crc32(item.key))
        header = _HEADER.pack(_MAGIC, int(item.envelope), item.rows, -1 if item.partition is None else item.partition,
                              len(item.key), len(item.payload), crc)
        size = len(header) + len(item.key) + len(item.payload)
        with self._lock:
            if self.bytes + size > self.max_bytes:
                return False
            tmp = self._path(item.seq, ".tmp")
            try:
                with tmp.open("wb") as f:
                    f.write(header + item.key + item.payload)
                os.replace(tmp, self._path(item.seq))
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                log.error("spool write failed", extra={"directory": str(self.directory), "error": repr(exc)})
                return False
            self._index[item.seq] = (size, item.rows)
            self.bytes += size
            self.rows += item.rows
        return True

    def peek(self, max_rows: int, max_items: int = 1000) -> list[SpooledEnvelope]:
        """The oldest envelopes, in order, up to ``max_rows`` rows (at least one envelope); they stay until ``remove``."""
        with self._lock:
            seqs = heapq.nsmallest(max_items, self._index)
        out: list[SpooledEnvelope] = []
        rows = 0
        for seq in seqs:
            item = self._read(seq)
            if item is None:
                continue
            if out and rows + item.rows > max_rows:
                break
            out.append(item)
            rows += item.rows
        return out

    def _read(self, seq: int) -> SpooledEnvelope | None:
        path = self._path(seq)
        try:
            data = path.read_bytes()
            magic, flags, rows, partition, klen, plen, crc = _HEADER.unpack_from(data)
            key, payload = data[_HEADER.size:_HEADER.size + klen], data[_HEADER.size + klen:]
            if magic != _MAGIC or len(payload) != plen or zlib.crc32(payload, zlib.crc32(key)) != crc:
                raise ValueError("bad magic, length or CRC")
        except (OSError, ValueError, struct.error) as exc:
            with self._lock:
                size, lost = self._index.pop(seq, (0, 0))
                self.bytes -= size
                self.rows -= lost
                self.rows_corrupt += lost
                SPOOL_ROWS.labels(result="dropped").inc(lost)
                try:
                    self._set_aside(path, exc)
                except OSError:
                    pass
            return None
        return SpooledEnvelope(seq, None if partition < 0 else partition, key, payload, rows, bool(flags & 1))

    def remove(self, seq: int) -> None:
        """Forget an envelope the broker acknowledged (delete its file)."""
        with self._lock:
            entry = self._index.pop(seq, None)
            if entry is None:
                return
            self.bytes -= entry[0]
            self.rows -= entry[1]
            self._path(seq).unlink(missing_ok=True)

    def close(self) -> None:
        """Release the directory (files stay for the next publisher)."""
        with self._lock:
            if not self._lock_file.closed:
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()
