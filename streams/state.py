"""Per-key state as columns, derived from the feature table: one numpy array per field, one row per key.

A key (an actor, a client address) costs a few hundred bytes here
(``nbytes``), not a Python object: keys are 64-bit hashes, found with a sorted
index (``searchsorted``). The columns are those of ``models.features`` for the
store's key: window sums and maxima, EWMA baselines and long-horizon decayed
sums as float32, ages as uint16, flags as uint8, and a 256-bit linear-counting
sketch per ``distinct`` feature; plus the bookkeeping every key needs
(``key``, ``window_start``, ``flagged_until``, ``decay_at``) and any columns a
caller adds (``extra``). Rows are grouped in buckets (low bits of the key) so
that only the buckets a batch touched are written to the changelog; a bucket's
blob starts with a fingerprint of the column layout, so state written by a
different feature table is skipped (and counted), never misread.

Bounded: ``remove(rows)`` drops rows (evicted keys; ``streams.eviction`` picks
them by idle time on the event clock and by a memory budget, oldest first), the
remaining rows move down to stay dense, and the buckets of the dropped keys are
marked dirty, so their next changelog write leaves them out and a restore does not
bring them back. A key's last activity is its ``window_start`` (the start of the
window of its latest event): no column is spent on it. Growing the columns
allocates zeroed memory and copies the used rows, so capacity not yet used is not
resident (the process's RSS follows the rows held, not the doubling).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.features import Feature, features_for
from streams.batch import hash64

__all__ = ["COLUMNS", "PART_BYTES", "SKETCH_BYTES", "ActorStore", "actor_hash", "distinct_estimate", "layout", "part_of"]

SKETCH_BYTES = 32
#: a bucket's changelog value is cut into parts of at most this many bytes: Kafka refuses a record past the
#: producer's max_request_size (1,000,000 in Faust) and the broker's message.max.bytes (1 MiB) by default, and
#: one bucket passed that at ~3,600 actors of 275 bytes (with 32 buckets, ~116,000 actors per partition)
PART_BYTES = 900_000
_SKETCH_BITS = SKETCH_BYTES * 8
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint16)

#: columns every store has, whatever its features
BOOKKEEPING: dict[str, Any] = {"key": np.uint64, "window_start": np.uint32, "flagged_until": np.uint32, "decay_at": np.float64}
#: columns the actor store adds for destination novelty (masks of learned services)
DESTINATION_MASKS: dict[str, Any] = {"dest_lo": np.uint64, "dest_hi": np.uint64}
_DTYPE_OF_FOLD: dict[str, Any] = {"age": np.uint16, "flag": np.uint8}


def layout(features: Sequence[Feature], extra: Mapping[str, Any] = {}) -> tuple[dict[str, Any], tuple[str, ...]]:
    """(column name -> dtype, names of the sketch features) for a store of these features."""
    cols = dict(BOOKKEEPING)
    sketches = []
    for f in features:
        if f.fold == "distinct":
            sketches.append(f.name)
        else:
            cols[f.name] = _DTYPE_OF_FOLD.get(f.fold, np.float32)
    cols.update(extra)
    return cols, tuple(sketches)


#: the actor store's columns (name -> dtype), sketches excluded
COLUMNS: dict[str, Any] = layout(features_for("actor"), DESTINATION_MASKS)[0]


def actor_hash(actor: str) -> int:
    """Stable 64-bit hash of an actor key (the same on every worker and run; ``streams.batch.hash64``)."""
    return int(hash64(pa.array([actor], pa.string()))[0])


def part_of(name: str) -> tuple[int, int] | None:
    """(bucket, part) of a changelog name written by ``drain_dirty`` (``7``, ``7.2``), None for anything else."""
    bucket, _, part = name.partition(".")
    if not bucket.isdigit() or (part and not part.isdigit()):
        return None
    return int(bucket), int(part or 0)


def distinct_estimate(sketch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float64]:
    """Linear-counting estimate of distinct items per row of a (n, 32) bit sketch."""
    ones = _POPCOUNT[sketch].sum(axis=1).astype(np.float64)
    zeros = np.maximum(_SKETCH_BITS - ones, 0.5)
    return np.asarray(-_SKETCH_BITS * np.log(zeros / _SKETCH_BITS), dtype=np.float64)


class ActorStore:
    """Columnar per-key state with a sorted hash index and dirty-bucket tracking.

    ``features`` default to the actor's (``models.features.features_for("actor")``)
    with the destination masks; any other key passes its own features and no extra.
    """

    def __init__(self, capacity: int = 1024, buckets: int = 256, features: Sequence[Feature] | None = None,
                 extra: Mapping[str, Any] | None = None):
        if buckets & (buckets - 1):
            raise ValueError(f"buckets must be a power of two, got {buckets}")
        if features is None:
            features, extra = features_for("actor"), DESTINATION_MASKS if extra is None else extra
        self.features = tuple(features)
        self.columns, self.sketch_names = layout(self.features, extra or {})
        self.buckets = buckets
        self.size = 0
        #: float32 columns live side by side in one matrix (``cols[name]`` is a view of its column), so folds
        #: and frames touch every feature of a row in one numpy operation; ``f32_col`` names each column's index
        self.f32_col = {n: j for j, n in enumerate(n for n, t in self.columns.items() if np.dtype(t) == np.float32)}
        self.f32 = np.zeros((capacity, len(self.f32_col)), dtype=np.float32)
        self.cols: dict[str, npt.NDArray[Any]] = {n: np.zeros(capacity, dtype=t) for n, t in self.columns.items() if n not in self.f32_col}
        self._view_f32()
        self.sketches = {n: np.zeros((capacity, SKETCH_BYTES), dtype=np.uint8) for n in self.sketch_names}
        self._index_keys = np.zeros(0, dtype=np.uint64)
        self._index_rows = np.zeros(0, dtype=np.uint32)
        self._fresh_keys = np.zeros(0, dtype=np.uint64)
        self._fresh_rows = np.zeros(0, dtype=np.uint32)
        self.dirty = np.zeros(buckets, dtype=bool)
        #: parts each bucket's value was last written (or restored) in: parts no longer needed are written empty
        self.parts = np.ones(buckets, dtype=np.int64)
        self._row_dtype = np.dtype([(n, t) for n, t in self.columns.items()] + [(n, np.uint8, (SKETCH_BYTES,)) for n in self.sketch_names])
        self._fingerprint = hashlib.blake2b(repr(self._row_dtype.descr).encode(), digest_size=8).digest()
        #: changelog blobs skipped because another column layout wrote them
        self.skipped_blobs = 0

    def _view_f32(self) -> None:
        for name, j in self.f32_col.items():
            self.cols[name] = self.f32[:, j]

    @property
    def objects(self) -> npt.NDArray[np.uint8]:
        """The distinct-objects sketch (the actor store's first sketch)."""
        return self.sketches[self.sketch_names[0]]

    def __len__(self) -> int:
        return self.size

    @property
    def row_bytes(self) -> int:
        """Bytes one key costs here: its row (every column and sketch) and its two index entries."""
        return int(self._row_dtype.itemsize + self._index_keys.itemsize + self._index_rows.itemsize)

    def nbytes(self) -> int:
        """Bytes held by the used part of every column, the sketches and the index."""
        index = self._index_keys.nbytes + self._index_rows.nbytes + self._fresh_keys.nbytes + self._fresh_rows.nbytes
        return self.size * self._row_dtype.itemsize + index

    def _grow(self, needed: int) -> None:
        capacity = len(self.cols["key"])
        if needed <= capacity:
            return
        new_capacity = max(needed, capacity * 2)
        used = self.size
        # np.zeros maps fresh zero pages: the part not used yet costs address space, not resident memory
        for name, col in self.cols.items():
            if name not in self.f32_col:
                self.cols[name] = np.zeros(new_capacity, dtype=col.dtype)
                self.cols[name][:used] = col[:used]
        grown_f32 = np.zeros((new_capacity, self.f32.shape[1]), dtype=np.float32)
        grown_f32[:used] = self.f32[:used]
        self.f32 = grown_f32
        self._view_f32()
        for name, sketch in self.sketches.items():
            grown = np.zeros((new_capacity, SKETCH_BYTES), dtype=np.uint8)
            grown[:used] = sketch[:used]
            self.sketches[name] = grown

    def rows_for(self, keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Rows of the given unique keys, creating missing ones; also says which are new."""
        rows = self.find(keys)
        new = rows < 0
        if new.any():
            rows[new] = self._append(keys[new])
        return rows, new

    def find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        """Rows of existing keys, -1 where a key is unknown (nothing is created)."""
        rows = np.full(len(keys), -1, dtype=np.intp)
        for index_keys, index_rows in ((self._index_keys, self._index_rows), (self._fresh_keys, self._fresh_rows)):
            if len(index_keys):
                pos = np.minimum(np.searchsorted(index_keys, keys), len(index_keys) - 1)
                hit = index_keys[pos] == keys
                rows[hit] = index_rows[pos[hit]]
        return rows

    #: keys added since the last merge are kept in a second, small sorted index: adding keys to the main one
    #: (np.insert) copied the whole index for every batch that brought a new key (12 MB per batch at 1M keys)
    FRESH = 1 << 15

    def _append(self, new_keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        start = self.size
        self._grow(start + len(new_keys))
        rows = np.arange(start, start + len(new_keys), dtype=np.intp)
        self.cols["key"][rows] = new_keys
        self.size += len(new_keys)
        order = np.argsort(new_keys)
        at = np.searchsorted(self._fresh_keys, new_keys[order])
        self._fresh_keys = np.insert(self._fresh_keys, at, new_keys[order])
        self._fresh_rows = np.insert(self._fresh_rows, at, rows[order].astype(np.uint32))
        if len(self._fresh_keys) > self.FRESH:
            self._merge()
        return rows

    def _merge(self) -> None:
        """Move the fresh index into the main one."""
        if len(self._fresh_keys):
            at = np.searchsorted(self._index_keys, self._fresh_keys)
            self._index_keys = np.insert(self._index_keys, at, self._fresh_keys)
            self._index_rows = np.insert(self._index_rows, at, self._fresh_rows)
            self._fresh_keys, self._fresh_rows = self._fresh_keys[:0], self._fresh_rows[:0]

    def last_seen(self) -> npt.NDArray[np.uint32]:
        """Per used row, the start of the window of its latest event (what eviction orders keys by)."""
        return np.asarray(self.cols["window_start"][: self.size])

    def remove(self, rows: npt.NDArray[np.intp]) -> int:
        """Drop these rows; the others keep their order but move down (row numbers change: call between batches).

        The dropped keys' buckets are marked dirty, so the next checkpoint rewrites them without the keys.
        Returns how many rows were dropped.
        """
        drop = np.unique(np.asarray(rows, dtype=np.intp))
        if not len(drop):
            return 0
        n = self.size
        self.mark_dirty(drop)
        self._merge()
        keep = np.ones(n, dtype=bool)
        keep[drop] = False
        kept = np.flatnonzero(keep)
        m = len(kept)
        for name, col in self.cols.items():
            if name not in self.f32_col:
                col[:m] = col[kept]
                col[m:n] = 0  # rows past the size must read as zero: _append relies on it
        self.f32[:m] = self.f32[kept]
        self.f32[m:n] = 0
        for sketch in self.sketches.values():
            sketch[:m] = sketch[kept]
            sketch[m:n] = 0
        new_row = np.cumsum(keep) - 1  # the index stays sorted: drop its entries, renumber the rest
        held = keep[self._index_rows]
        self._index_keys = self._index_keys[held]
        self._index_rows = new_row[self._index_rows[held]].astype(np.uint32)
        self.size = m
        return n - m

    def mark_dirty(self, rows: npt.NDArray[np.intp]) -> None:
        """Remember the buckets of these rows for the next changelog flush."""
        self.dirty[(self.cols["key"][rows] & np.uint64(self.buckets - 1)).astype(np.intp)] = True

    def _bucket_rows(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(rows ordered by bucket, then row; where each bucket starts in it and where the last ends)."""
        codes = (self.cols["key"][: self.size] & np.uint64(self.buckets - 1)).astype(np.intp)
        order = np.argsort(codes, kind="stable")
        return order, np.searchsorted(codes[order], np.arange(self.buckets + 1))

    def export_bucket(self, bucket: int, part_bytes: int = 0, rows: npt.NDArray[np.intp] | None = None) -> list[bytes]:
        """Every row of one bucket, packed behind the layout fingerprint (the changelog value), in parts of at most
        ``part_bytes`` (0: one part) and at least one. ``rows``: the bucket's rows, when known."""
        if rows is None:
            rows = np.nonzero((self.cols["key"][: self.size] & np.uint64(self.buckets - 1)) == bucket)[0]
        per_part = max(1, (part_bytes - len(self._fingerprint)) // self._row_dtype.itemsize) if part_bytes else max(1, len(rows))
        out = []
        for start in range(0, max(1, len(rows)), per_part):
            part = rows[start : start + per_part]
            packed = np.zeros(len(part), dtype=self._row_dtype)
            for name, col in self.cols.items():
                packed[name] = col[part]
            for name, sketch in self.sketches.items():
                packed[name] = sketch[part]
            out.append(b"".join((self._fingerprint, packed.data)))  # one copy of the rows, not two (tobytes, then +)
        return out

    def drain_dirty(self, part_bytes: int | None = None) -> list[tuple[str, bytes]]:
        """(name, value) of every dirty bucket, clearing the dirty marks: ``<bucket>``, and ``<bucket>.<part>`` for the
        further parts of a bucket past ``part_bytes``; parts the bucket needed last time and no longer does are written
        empty, so a compacted changelog forgets their rows."""
        out: list[tuple[str, bytes]] = []
        dirty = np.nonzero(self.dirty)[0].tolist()
        if not dirty:
            return out
        grouped = self._bucket_rows() if len(dirty) > 4 else None  # many dirty buckets: one sort, not one pass each
        for b in dirty:
            rows = None if grouped is None else grouped[0][grouped[1][b] : grouped[1][b + 1]]
            parts = self.export_bucket(b, PART_BYTES if part_bytes is None else part_bytes, rows)
            parts += [self._fingerprint] * (int(self.parts[b]) - len(parts))
            self.parts[b] = len(parts)
            out += [(str(b) if p == 0 else f"{b}.{p}", blob) for p, blob in enumerate(parts)]
        self.dirty[:] = False
        return out

    def note_part(self, bucket: int, part: int) -> None:
        """Remember that the changelog holds this part of a bucket (at restore), so it is emptied when no longer needed."""
        if 0 <= bucket < self.buckets:
            self.parts[bucket] = max(int(self.parts[bucket]), part + 1)

    def accepts(self, blob: bytes) -> bool:
        """True when a changelog blob was written with this store's column layout."""
        body = len(blob) - len(self._fingerprint)
        return blob[: len(self._fingerprint)] == self._fingerprint and body >= 0 and body % self._row_dtype.itemsize == 0

    def import_buckets(self, packed: Iterable[bytes]) -> int:
        """Load rows written by ``export_bucket`` (changelog recovery); returns rows loaded.

        A blob of another column layout (an older feature table) is skipped and counted in ``skipped_blobs``.
        """
        loaded = 0
        size = len(self._fingerprint)
        for blob in packed:
            if not self.accepts(blob):
                self.skipped_blobs += 1
                continue
            body = blob[size:]
            records = np.frombuffer(body, dtype=self._row_dtype)
            if not len(records):
                continue
            rows, _ = self.rows_for(records["key"].copy())
            for name in self.cols:
                self.cols[name][rows] = records[name]
            for name in self.sketches:
                self.sketches[name][rows] = records[name]
            loaded += len(records)
        return loaded
