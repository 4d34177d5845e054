"""The pure core of the worker: an Arrow batch of summaries in, detections out.

``BatchProcessor.process`` folds a batch into the per-actor columnar state
(``streams.state``), rolls actors whose tumbling window ended, builds the
feature frame (``models.features``) of the actors the batch touched, scores it
with every detector and returns a ``Detection`` for each actor whose best score
reaches the threshold and that is not already flagged. Everything is
vectorised with numpy/Arrow compute; no Python object is made per summary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ingest import Reason
from models import Detector
from streams.state import WINDOW_COUNTERS, ActorStore, actor_hash, distinct_estimate

__all__ = ["BatchProcessor", "Detection", "ProcessorConfig"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ProcessorConfig:
    """Window length, baseline smoothing, score threshold and state bucketing."""

    window_s: int = 60
    baseline_alpha: float = 0.3
    score_threshold: float = 0.5
    flag_ttl_s: int = 900
    learn_windows: int = 3
    buckets: int = 256
    retired_endpoints: frozenset[str] = field(default_factory=frozenset)
    request_id_memory: int = 200_000


@dataclass(frozen=True)
class Detection:
    """One actor whose window crossed at least one detector's threshold."""

    actor: str
    attack_class: str
    score: float
    reasons: tuple[Reason, ...]
    evidence_time: float
    destination_namespace: str | None
    destination_service: str | None
    features: dict[str, float]


@dataclass
class _Batch:
    """Per-row arrays of one decoded batch, indexed by the batch's unique actors."""

    actors: list[str]
    actor_of_row: _I
    time: _F
    status: npt.NDArray[np.int64]
    response_bytes: _F
    pii: _F
    inline: _F
    retired: _F
    dest_bit: _I
    is_service: npt.NDArray[np.bool_]
    object_actor: _I
    object_bit: _I
    destination: pa.StructArray
    auth_failed: npt.NDArray[np.bool_]
    repeat: npt.NDArray[np.bool_]


_BYTE_WEIGHTS = np.array([1, 1 << 8, 1 << 16, 1 << 24], dtype=np.uint64)


def _string_bits(values: pa.Array) -> _I:
    """A bit index in [0, 256) per string, mixing its length and its first and last four bytes.

    Published ids are keyed hashes (uniform already); raw ids often share a prefix or a suffix, not both.
    """
    if len(values) == 0:
        return np.zeros(0, dtype=np.intp)
    offsets = _offsets(values)
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] is not None else np.zeros(1, np.uint8)
    starts, lengths = offsets[:-1].astype(np.int64), np.diff(offsets).astype(np.int64)
    span = np.arange(4)
    last = max(len(data) - 1, 0)
    head = data[np.clip(starts[:, None] + np.minimum(span, np.maximum(lengths[:, None] - 1, 0)), 0, last)]
    tail = data[np.clip(starts[:, None] + np.maximum(lengths[:, None] - 4, 0) + np.minimum(span, np.maximum(lengths[:, None] - 1, 0)), 0, last)]
    x = (head @ _BYTE_WEIGHTS) | ((tail @ _BYTE_WEIGHTS) << np.uint64(32))
    x ^= lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    for multiplier in (np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)):  # murmur3's 64-bit finalizer
        x ^= x >> np.uint64(33)
        x *= multiplier
    x ^= x >> np.uint64(33)
    return (x & np.uint64(255)).astype(np.intp)


def _chunk(column: pa.ChunkedArray) -> pa.Array:
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _offsets(arr: pa.Array) -> npt.NDArray[np.int32]:
    """The value offsets of a string or list array, honouring the array's own offset (no kernel call)."""
    return np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]


def _list_parts(column: pa.ChunkedArray) -> tuple[_I, pa.Array]:
    """(row index of each element, the elements) of a list or map column."""
    arr = _chunk(column)
    if isinstance(arr, pa.MapArray):
        arr = pa.ListArray.from_arrays(arr.offsets, arr.items)
    offsets = _offsets(arr) if len(arr) else np.zeros(1, np.int32)
    parents = np.repeat(np.arange(len(arr), dtype=np.intp), np.diff(offsets))
    return parents, arr.values.slice(offsets[0], offsets[-1] - offsets[0])


def _has_blank(values: pa.Array) -> bool:
    """Any empty (non-null) string? Nulls have zero length too, so compare with the null count."""
    return len(values) > 0 and int(np.count_nonzero(np.diff(_offsets(values)) == 0)) > values.null_count


def _present(values: pa.Array) -> pa.Array:
    """Empty strings count as absent, as in ``ingest.actor_key`` (``x or '-'``)."""
    if _has_blank(values):
        return pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    return values


def _numbers(values: pa.Array, dtype: type) -> npt.NDArray[Any]:
    """A numeric column as numpy, nulls as 0."""
    if values.null_count:
        values = values.fill_null(0)
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype)


class BatchProcessor:
    """Stateful, pure batch scorer for the actors of one partition."""

    def __init__(self, config: ProcessorConfig, detectors: Sequence[Detector]):
        self.config = config
        self.detectors = list(detectors)
        self.store = ActorStore(buckets=config.buckets)
        self._dest_index: dict[str, int] = {}
        self._dest_exported = 0
        self._retired_set = pa.array(sorted(config.retired_endpoints), type=pa.string())
        self.newest_time: float | None = None
        self._seen_ids: dict[str, None] = {}

    def _repeats(self, ids: pa.Array) -> npt.NDArray[np.bool_]:
        """Rows whose request id was seen before: a second reporter's record of a call already counted.

        The shim reports a call's decision and inline findings, the access log and
        the ext_proc tap its response; both carry Envoy's request id. The call is
        counted once; the fields only one reporter fills (findings; bytes, personal
        data) add up harmlessly, and object ids go into an idempotent sketch.
        """
        seen, cap = self._seen_ids, self.config.request_id_memory
        out = np.zeros(len(ids), dtype=bool)
        for i, rid in enumerate(ids.to_pylist()):
            if rid in seen:
                out[i] = True
            else:
                seen[rid] = None
        while len(seen) > cap:
            del seen[next(iter(seen))]
        return out

    def export_destinations(self) -> bytes:
        """The service -> bit assignment (part of the state: masks mean nothing without it)."""
        return json.dumps(self._dest_index, sort_keys=True).encode()

    def import_destinations(self, blob: bytes) -> None:
        """Restore the service -> bit assignment written by ``export_destinations``."""
        self._dest_index = {str(k): int(v) for k, v in json.loads(blob).items()}
        self._dest_exported = len(self._dest_index)

    def destinations_changed(self) -> bool:
        """True when services were added since the last export (then it must be checkpointed)."""
        return len(self._dest_index) != self._dest_exported

    def mark_destinations_exported(self) -> None:
        """Record that the current assignment has been checkpointed."""
        self._dest_exported = len(self._dest_index)

    def _dest_bits(self, services: pa.Array) -> _I:
        encoded = pc.dictionary_encode(services.fill_null("-") if services.null_count else services)
        names = encoded.dictionary.to_pylist()
        bits = np.array([self._dest_index.setdefault(n, len(self._dest_index)) % 128 for n in names], dtype=np.intp)
        return bits[np.asarray(encoded.indices, dtype=np.intp)]

    def _retired(self, table: pa.Table, service: pa.Array) -> _F:
        if not self.config.retired_endpoints:
            return np.zeros(table.num_rows)
        joined = pc.binary_join_element_wise(service.fill_null("-"), _chunk(table["method"]), _chunk(table["path_template"]), " ")
        return np.asarray(pc.is_in(joined, value_set=self._retired_set), dtype=np.float64)

    def _extract(self, table: pa.Table) -> _Batch:
        n = table.num_rows
        source, destination = _chunk(table["source"]), _chunk(table["destination"])
        source_id = pc.coalesce(_present(source.field("workload")), _present(source.field("ip")), "-")
        principal = _present(_chunk(table["principal"]))
        encoded = pc.dictionary_encode(pc.binary_join_element_wise(source_id, principal.fill_null("-"), "|"))
        service = destination.field("service")
        obj_parent, obj_values = _list_parts(table["object_ids"])
        sens_parent, sens_values = _list_parts(table["sensitive"])
        inline_parent, _ = _list_parts(table["inline_findings"])
        actor_of_row = np.asarray(encoded.indices, dtype=np.intp)
        return _Batch(
            actors=encoded.dictionary.to_pylist(),
            actor_of_row=actor_of_row,
            time=_numbers(_chunk(table["time"]), np.float64),
            status=_numbers(_chunk(table["status"]), np.int64),
            response_bytes=_numbers(_chunk(table["response_bytes"]), np.float64),
            pii=np.bincount(sens_parent, weights=_numbers(sens_values, np.float64), minlength=n).astype(np.float64),
            inline=np.bincount(inline_parent, minlength=n).astype(np.float64),
            retired=self._retired(table, service),
            dest_bit=self._dest_bits(service),
            is_service=np.asarray(principal.is_null(), dtype=bool) if principal.null_count else np.zeros(n, dtype=bool),
            object_actor=actor_of_row[obj_parent],
            object_bit=_string_bits(obj_values),
            destination=destination,
            auth_failed=np.asarray(pc.equal(_chunk(table["outcome"]), "auth_failure").fill_null(False), dtype=bool)
            if "outcome" in table.column_names else np.zeros(n, dtype=bool),
            repeat=self._repeats(_chunk(table["id"])),
        )

    def _roll_windows(self, rows: _I, latest: _F) -> None:
        """Close the windows of actors whose latest event passed their window's end."""
        cols, w = self.store.cols, self.config.window_s
        start = (latest // w * w).astype(np.uint32)
        fresh = cols["age_windows"][rows] == 0
        fresh &= cols["requests"][rows] == 0
        cols["window_start"][rows[fresh]] = start[fresh]
        ended = cols["window_start"][rows] + w <= latest
        closing = rows[ended]
        if not len(closing):
            return
        a = self.config.baseline_alpha
        distinct = distinct_estimate(self.store.objects[closing])
        # A window that raised a flag says nothing about normal behaviour: keep it out of the baseline.
        clean = cols["flagged_until"][closing] <= cols["window_start"][closing]
        first = cols["age_windows"][closing] == 0
        for base, value in (("baseline_distinct", distinct), ("baseline_pii", cols["pii"][closing])):
            old = cols[base][closing]
            updated = np.where(first, value, (1 - a) * old + a * value)
            cols[base][closing] = np.where(clean, updated, old)
        elapsed = (start[ended].astype(np.int64) - cols["window_start"][closing]) // w
        age = cols["age_windows"][closing].astype(np.int64) + np.maximum(elapsed, 1)
        cols["age_windows"][closing] = np.minimum(age, np.iinfo(np.uint16).max).astype(np.uint16)
        cols["window_start"][closing] = start[ended]
        for name in WINDOW_COUNTERS:
            cols[name][closing] = 0
        self.store.objects[closing] = 0

    def _accumulate(self, b: _Batch, rows: _I) -> None:
        cols, k = self.store.cols, len(b.actors)
        status, first = b.status, ~b.repeat
        sums = {
            "requests": np.bincount(b.actor_of_row, weights=first, minlength=k),
            "denied": np.bincount(b.actor_of_row, weights=((status == 403) | (status == 404)) & first, minlength=k),
            "auth_failures": np.bincount(b.actor_of_row, weights=((status == 401) | b.auth_failed) & first, minlength=k),
            "pii": np.bincount(b.actor_of_row, weights=b.pii, minlength=k),
            "response_bytes": np.bincount(b.actor_of_row, weights=b.response_bytes, minlength=k),
            "inline_hits": np.bincount(b.actor_of_row, weights=b.inline > 0, minlength=k),
            "retired_hits": np.bincount(b.actor_of_row, weights=b.retired, minlength=k),
            "novel_destinations": self._novel(b, rows),
        }
        for name, add in sums.items():
            col = cols[name]
            col[rows] = (col[rows] + add).astype(col.dtype)
        cols["is_service"][rows] |= (np.bincount(b.actor_of_row, weights=b.is_service, minlength=k) > 0).astype(np.uint8)
        obj_rows = rows[b.object_actor]
        np.bitwise_or.at(self.store.objects, (obj_rows, b.object_bit >> 3), (1 << (b.object_bit & 7)).astype(np.uint8))

    def _novel(self, b: _Batch, rows: _I) -> _F:
        """Calls to destinations outside each actor's learned mask; learning actors extend it."""
        cols = self.store.cols
        row_of_event = rows[b.actor_of_row]
        lo = b.dest_bit < 64
        bit = (np.uint64(1) << (b.dest_bit % 64).astype(np.uint64))
        mask = np.where(lo, cols["dest_lo"][row_of_event], cols["dest_hi"][row_of_event])
        known = (mask & bit) != 0
        learning = cols["age_windows"][row_of_event] < self.config.learn_windows
        for name, sel in (("dest_lo", lo & learning), ("dest_hi", ~lo & learning)):
            np.bitwise_or.at(cols[name], row_of_event[sel], bit[sel])
        return np.bincount(b.actor_of_row, weights=~known & ~learning & ~b.repeat, minlength=len(b.actors)).astype(np.float64)

    def frame(self, rows: _I) -> dict[str, _F]:
        """The feature frame (``models.features.FEATURES``) of these actor rows."""
        cols = self.store.cols
        out = {name: cols[name][rows].astype(np.float64) for name in WINDOW_COUNTERS}
        out["distinct_objects"] = distinct_estimate(self.store.objects[rows])
        for name in ("baseline_distinct", "baseline_pii", "age_windows", "is_service"):
            out[name] = cols[name][rows].astype(np.float64)
        return out

    def process(self, table: pa.Table) -> list[Detection]:
        """Fold one batch into the state; return detections for newly flagged actors."""
        if table.num_rows == 0:
            return []
        b = self._extract(table)
        keys = np.fromiter((actor_hash(a) for a in b.actors), dtype=np.uint64, count=len(b.actors))
        rows, _ = self.store.rows_for(keys)
        latest = np.full(len(b.actors), -np.inf)
        np.maximum.at(latest, b.actor_of_row, b.time)
        self.newest_time = float(latest.max())
        self._roll_windows(rows, latest)
        self._accumulate(b, rows)
        self.store.mark_dirty(rows)
        return self._detect(b, rows, latest)

    def _detect(self, b: _Batch, rows: _I, latest: _F) -> list[Detection]:
        if not self.detectors:
            return []
        frame = self.frame(rows)
        scores = np.vstack([d.score_many(frame) for d in self.detectors])
        best = scores.max(axis=0)
        flagged_until = self.store.cols["flagged_until"][rows]
        hit = np.nonzero((best >= self.config.score_threshold) & (flagged_until <= latest))[0]
        last_row = np.zeros(len(b.actors), dtype=np.intp)
        last_row[b.actor_of_row] = np.arange(len(b.actor_of_row))
        out = []
        for i in hit:
            out.append(self._detection(b, frame, scores[:, i], int(i), int(last_row[i]), float(latest[i])))
        if len(hit):
            self.store.cols["flagged_until"][rows[hit]] = (latest[hit] + self.config.flag_ttl_s).astype(np.uint32)
        return out

    def _detection(self, b: _Batch, frame: dict[str, _F], scores: _F, i: int, last: int, t: float) -> Detection:
        row = {name: float(col[i]) for name, col in frame.items()}
        top = self.detectors[int(np.argmax(scores))]
        # the scores are already known: build the reasons from them rather than re-scoring with explain()
        reasons = tuple(
            Reason(detector=d.name, score=round(float(s), 4), evidence=d.evidence(row))
            for d, s in zip(self.detectors, scores)
            if s >= self.config.score_threshold
        )
        dest = b.destination[last].as_py()
        return Detection(b.actors[i], top.attack_class, float(scores.max()), reasons, t, dest.get("namespace"), dest.get("service"), row)
