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

__all__ = ["COLUMNS", "SKETCH_BYTES", "ActorStore", "actor_hash", "distinct_estimate", "layout"]

SKETCH_BYTES = 32
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
        self.dirty = np.zeros(buckets, dtype=bool)
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

    def nbytes(self) -> int:
        """Bytes held by the used part of every column, the sketches and the index."""
        return self.size * self._row_dtype.itemsize + self._index_keys.nbytes + self._index_rows.nbytes

    def _grow(self, needed: int) -> None:
        capacity = len(self.cols["key"])
        if needed <= capacity:
            return
        new_capacity = max(needed, capacity * 2)
        for name, col in self.cols.items():
            if name not in self.f32_col:
                self.cols[name] = np.resize(col, new_capacity)
                self.cols[name][capacity:] = 0
        grown_f32 = np.zeros((new_capacity, self.f32.shape[1]), dtype=np.float32)
        grown_f32[:capacity] = self.f32
        self.f32 = grown_f32
        self._view_f32()
        for name, sketch in self.sketches.items():
            grown = np.zeros((new_capacity, SKETCH_BYTES), dtype=np.uint8)
            grown[:capacity] = sketch
            self.sketches[name] = grown

    def rows_for(self, keys: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
        """Rows of the given unique keys, creating missing ones; also says which are new."""
        pos = np.searchsorted(self._index_keys, keys)
        found = pos < len(self._index_keys)
        found[found] = self._index_keys[pos[found]] == keys[found]
        rows = np.empty(len(keys), dtype=np.intp)
        rows[found] = self._index_rows[pos[found]]
        new_keys = keys[~found]
        if len(new_keys):
            rows[~found] = self._append(new_keys)
        return rows, ~found

    def find(self, keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.intp]:
        """Rows of existing keys, -1 where a key is unknown (nothing is created)."""
        pos = np.searchsorted(self._index_keys, keys)
        found = pos < len(self._index_keys)
        found[found] = self._index_keys[pos[found]] == keys[found]
        rows = np.full(len(keys), -1, dtype=np.intp)
        rows[found] = self._index_rows[pos[found]]
        return rows

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
        """Every row of one bucket, packed behind the layout fingerprint (the changelog value)."""
        rows = np.nonzero((self.cols["key"][: self.size] & np.uint64(self.buckets - 1)) == bucket)[0]
        packed = np.zeros(len(rows), dtype=self._row_dtype)
        for name, col in self.cols.items():
            packed[name] = col[rows]
        for name, sketch in self.sketches.items():
            packed[name] = sketch[rows]
        return self._fingerprint + packed.tobytes()

    def drain_dirty(self) -> list[tuple[int, bytes]]:
        """Packed rows of every dirty bucket, clearing the dirty marks."""
        out = [(int(b), self.export_bucket(int(b))) for b in np.nonzero(self.dirty)[0]]
        self.dirty[:] = False
        return out

    def import_buckets(self, packed: Iterable[bytes]) -> int:
        """Load rows written by ``export_bucket`` (changelog recovery); returns rows loaded.

        A blob of another column layout (an older feature table) is skipped and counted in ``skipped_blobs``.
        """
        loaded = 0
        size = len(self._fingerprint)
        for blob in packed:
            body = blob[size:]
            if blob[:size] != self._fingerprint or len(body) % self._row_dtype.itemsize:
                self.skipped_blobs += 1
                continue
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
