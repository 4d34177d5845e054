"""Per-actor state as columns: one numpy array per field, one row per actor.

An actor costs about 120 bytes here (``bytes_per_actor``), not a Python object:
keys are 64-bit BLAKE2b hashes of the actor string, found with a sorted index
(``searchsorted``); counters cover the current tumbling window; distinct object
ids are counted with a 256-bit linear-counting sketch; destinations ever called
sit in a 128-bit mask; baselines are exponentially weighted means of past
windows. Rows are grouped in buckets (low bits of the key) so that only the
buckets a batch touched are written to the changelog.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ActorStore", "actor_hash", "distinct_estimate"]

SKETCH_BYTES = 32
_SKETCH_BITS = SKETCH_BYTES * 8
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)

COLUMNS: dict[str, type] = {
    "key": np.uint64,
    "window_start": np.uint32,
    "age_windows": np.uint16,
    "is_service": np.uint8,
    "requests": np.uint32,
    "denied": np.uint32,
    "auth_failures": np.uint32,
    "pii": np.uint32,
    "response_bytes": np.float32,
    "inline_hits": np.uint16,
    "retired_hits": np.uint16,
    "novel_destinations": np.uint16,
    "baseline_distinct": np.float32,
    "baseline_pii": np.float32,
    "dest_lo": np.uint64,
    "dest_hi": np.uint64,
    "flagged_until": np.uint32,
}
WINDOW_COUNTERS = ("requests", "denied", "auth_failures", "pii", "response_bytes", "inline_hits", "retired_hits", "novel_destinations")
_ROW_DTYPE = np.dtype([(n, t) for n, t in COLUMNS.items()] + [("objects", np.uint8, (SKETCH_BYTES,))])


def actor_hash(actor: str) -> int:
    """Stable 64-bit hash of an actor key (the same on every worker and run)."""
    return int.from_bytes(hashlib.blake2b(actor.encode(), digest_size=8).digest(), "little")


def distinct_estimate(sketch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Linear-counting estimate of distinct items per row of a (n, 32) bit sketch."""
    ones = _POPCOUNT[sketch].sum(axis=1).astype(np.float64)
    zeros = np.maximum(_SKETCH_BITS - ones, 0.5)
    return np.asarray(-_SKETCH_BITS * np.log(zeros / _SKETCH_BITS), dtype=np.float64)


class ActorStore:
    """Columnar per-actor state with a sorted hash index and dirty-bucket tracking."""

    def __init__(self, capacity: int = 1024, buckets: int = 256):
        if buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of two, got {buckets}")
        self.buckets = buckets
        self.size = 0
        self.cols: dict[str, npt.NDArray[Any]] = {n: np.zeros(capacity, dtype=t) for n, t in COLUMNS.items()}
        self.objects = np.zeros((capacity, SKETCH_BYTES), dtype=np.uint8)
        self._index_keys = np.zeros(0, dtype=np.uint64)
        self._index_rows = np.zeros(0, dtype=np.uint32)
        self.dirty = np.zeros(buckets, dtype=bool)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        """Bytes held by the used part of every column, the sketch and the index."""
        per_row = sum(np.dtype(t).itemsize for t in COLUMNS.values()) + SKETCH_BYTES
        return self.size * per_row + self._index_keys.nbytes + self._index_rows.nbytes

    def _grow(self, needed: int) -> None:
        capacity = len(self.cols["key"])
        if needed <= capacity:
            return
        new_capacity = max(needed, capacity * 2)
        for name, col in self.cols.items():
            self.cols[name] = np.resize(col, new_capacity)
            self.cols[name][capacity:] = 0
        objects = np.zeros((new_capacity, SKETCH_BYTES), dtype=np.uint8)
        objects[:capacity] = self.objects
        self.objects = objects

    def rows_for(self, keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Rows of the given unique keys, creating missing actors; also says which are new."""
        pos = np.searchsorted(self._index_keys, keys)
        found = pos < len(self._index_keys)
        found[found] = self._index_keys[pos[found]] == keys[found]
        rows = np.empty(len(keys), dtype=np.intp)
        rows[found] = self._index_rows[pos[found]]
        new_keys = keys[~found]
        if len(new_keys):
            rows[~found] = self._append(new_keys)
        return rows, ~found

    def _append(self, new_keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        start = self.size
        self._grow(start + len(new_keys))
        rows = np.arange(start, start + len(new_keys), dtype=np.intp)
        self.cols["key"][rows] = new_keys
        self.size += len(new_keys)
        order = np.argsort(new_keys)
        at = np.searchsorted(self._index_keys, new_keys[order])
        self._index_keys = np.insert(self._index_keys, at, new_keys[order])
        self._index_rows = np.insert(self._index_rows, at, rows[order].astype(np.uint32))
        return rows

    def mark_dirty(self, rows: npt.NDArray[np.intp]) -> None:
        """Remember the buckets of these rows for the next changelog flush."""
        self.dirty[(self.cols["key"][rows] & np.uint64(self.buckets - 1)).astype(np.intp)] = True

    def export_bucket(self, bucket: int) -> bytes:
        """Every row of one bucket, packed (the changelog value)."""
        rows = np.nonzero((self.cols["key"][: self.size] & np.uint64(self.buckets - 1)) == bucket)[0]
        packed = np.zeros(len(rows), dtype=_ROW_DTYPE)
        for name, col in self.cols.items():
            packed[name] = col[rows]
        packed["objects"] = self.objects[rows]
        return packed.tobytes()

    def drain_dirty(self) -> list[tuple[int, bytes]]:
        """Packed rows of every dirty bucket, clearing the dirty marks."""
        out = [(int(b), self.export_bucket(int(b))) for b in np.nonzero(self.dirty)[0]]
        self.dirty[:] = False
        return out

    def import_buckets(self, packed: Iterable[bytes]) -> int:
        """Load rows written by ``export_bucket`` (changelog recovery); returns rows loaded."""
        loaded = 0
        for blob in packed:
            records = np.frombuffer(blob, dtype=_ROW_DTYPE)
            if not len(records):
                continue
            rows, _ = self.rows_for(records["key"].copy())
            for name in self.cols:
                self.cols[name][rows] = records[name]
            self.objects[rows] = records["objects"]
            loaded += len(records)
        return loaded
