"""The pure core of the worker: an Arrow batch of summaries in, detections out.

``BatchProcessor.process`` decodes a batch once (``streams.batch.BatchView``),
computes the per-row *signals* (base ones here, the rest from the enrichers:
ownership, call edges, credential tables...), folds them into the state of
every key the feature table declares (``streams.keyspace``: the actor, the
trusted client address), rolls windows that ended, builds the feature frames
of the keys the batch touched and hands them, with the detectors of that key, to
``streams.detection.Flagger``, which scores them and returns a ``Detection`` for
each key whose best score reaches the threshold and that is not already flagged.
Everything is vectorised with numpy/Arrow compute; no Python object is made per
summary.

State is bounded: after a batch, keys idle for ``idle_ttl_s`` of event time, and
past ``state_budget_bytes`` the least recently active ones, are evicted
(``streams.eviction``: the consequence for an evicted key is documented there);
``state_stats`` counts them. The actor columns that are zero for nearly every
actor live in a side table (``streams.sidetable``) that holds only the actors
using them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from models import Detector, features_for
from models.features import KEYS
from streams.batch import SMALL_BATCH, BatchView, Enricher, hash64
from streams.detection import Detection, Flagger
from streams.eviction import Eviction, EvictionConfig
from streams.keyspace import Elements, KeySpace
from streams.repeats import RepeatFilter
from streams.sidetable import SideTable, split
from streams.state import DESTINATION_MASKS, ActorStore, part_of

# Detection is defined in streams.detection; it stays importable from here for the streams modules that read it here
__all__ = ["BatchProcessor", "Detection", "ProcessorConfig"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
#: the changelog suffix of the service -> bit assignment
DESTINATIONS = "destinations"
#: the changelog prefix of the side table's buckets (``rare:<bucket>``)
SIDE_TABLE = "rare"


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
    #: ``service METHOD /template`` of every declared endpoint, and the services that have a spec (for shadow calls)
    declared_endpoints: frozenset[str] = field(default_factory=frozenset)
    declared_services: frozenset[str] = field(default_factory=frozenset)
    request_id_memory: int = 200_000
    #: evict keys idle this long (seconds of event time; 0 = never) and, per partition, the least recently active
    #: past this many bytes of per-key tables (0 = no budget): ``streams.eviction``
    idle_ttl_s: float = 86_400.0
    state_budget_bytes: int = 256 << 20


log = logging.getLogger("kubeward.worker")


def _restore_or_start_empty(suffix: str, restore: Callable[[bytes], None], blob: bytes) -> None:
    """Restore one value; one that cannot be read (a changelog written by another release, a damaged record) is
    logged and skipped (a processor being restored holds nothing yet), rather than the worker failing on every restart."""
    try:
        restore(blob)
    except Exception:  # noqa: BLE001 - whatever the blob holds, the worker must come up
        log.exception("state value unreadable; skipped", extra={"suffix": suffix, "bytes": len(blob)})


class BatchProcessor:
    """Stateful, pure batch scorer for the keys of one partition."""

    def __init__(self, config: ProcessorConfig, detectors: Sequence[Detector], enrichers: Sequence[Enricher] = ()):
        self.config = config
        self.detectors = list(detectors)
        self.enrichers = list(enrichers)
        self.spaces: dict[str, KeySpace] = {}
        for key in KEYS:
            cohort = _cohort_features(self.detectors, key)
            kept, rare = split(features_for(key), cohort) if key == "actor" else (features_for(key), ())
            self.spaces[key] = KeySpace(key, kept, config.window_s, config.baseline_alpha, config.buckets,
                                        DESTINATION_MASKS if key == "actor" else None, cohort)
            if key == "actor":
                age = next(f.name for f in kept if f.fold == "age")
                self.side = SideTable(rare, age, config.window_s, config.baseline_alpha, config.buckets)
                #: frames list the actor's features in declaration order, whichever table holds them
                self._actor_order = [f.name for f in features_for(key)] + [f"cohort:{name}" for name in cohort]
        self.eviction = Eviction(EvictionConfig(config.idle_ttl_s, config.state_budget_bytes, config.window_s))
        self._dest_index: dict[str, int] = {}
        self._dest_exported = 0
        # endpoints as the batch's edge hashes ("service METHOD template"), services as its service hashes
        self._retired_set = hash64(pa.array(sorted(config.retired_endpoints), type=pa.string()), memo=False)
        self._declared_set = hash64(pa.array(sorted(config.declared_endpoints), type=pa.string()), memo=False)
        self._declared_services = hash64(pa.array(sorted(config.declared_services), type=pa.string()), memo=False)
        self.newest_time: float | None = None
        self._ids = RepeatFilter(config.request_id_memory)
        self._by_key: tuple[list[Detector] | None, dict[str, list[Detector]]] = (None, {})
        #: the anomaly model scored beside the rules (``use_models``), if any
        self.model: Detector | None = None
        #: scores a key space's frames and remembers what it flagged (``streams.detection``)
        self._flagger = Flagger(config.score_threshold, config.flag_ttl_s, config.request_id_memory)

    def _detectors_of(self, key: str) -> list[Detector]:
        """The detectors that score one key's frames (cached until the detector list changes)."""
        if self._by_key[0] is not self.detectors:
            self._by_key = (self.detectors, {k: [d for d in self.detectors if getattr(d, "key", "actor") == k] for k in self.spaces})
        return self._by_key[1][key]

    def use_models(self, models: Sequence[Detector]) -> None:
        """Score these (fitted) models beside the rules from the next batch on, replacing the previous ones."""
        self.detectors = [d for d in self.detectors if getattr(d, "rule", None) is not None] + list(models)
        self.model = models[0] if models else None

    @property
    def store(self) -> ActorStore:
        """The actor state."""
        return self.spaces["actor"].store

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

    def checkpoint(self, everything: bool = False) -> list[tuple[str, bytes]]:
        """State to write to the changelog, as (suffix, blob): touched buckets of every key (``<bucket>`` for
        actors, ``source:<bucket>``, ``rare:<bucket>``; ``.<part>`` added for the further parts of a large bucket:
        ``streams.state.PART_BYTES``), the destination index when it changed, and, when ``everything``,
        the enrichers' state (``enricher:<name>``) and the cohort histograms (``cohorts:<key>``)."""
        out = self.store.drain_dirty()
        for key, space in self.spaces.items():
            if key != "actor":
                out += [(f"{key}:{b}", blob) for b, blob in space.store.drain_dirty()]
        out += [(f"{SIDE_TABLE}:{b}", blob) for b, blob in self.side.store.drain_dirty()]
        if self.destinations_changed():
            out.append((DESTINATIONS, self.export_destinations()))
            self.mark_destinations_exported()
        if everything:
            out += [(f"enricher:{e.name}", e.export()) for e in self.enrichers]
            out += [(f"cohorts:{key}", space.cohorts.export()) for key, space in self.spaces.items() if space.cohorts.features]
        return out

    def restore(self, stored: Iterable[tuple[str, bytes]]) -> None:
        """Load what ``checkpoint`` wrote (suffixes as there); unknown suffixes are ignored."""
        enrichers = {f"enricher:{e.name}": e for e in self.enrichers}
        buckets: dict[str, list[bytes]] = {key: [] for key in (*self.spaces, SIDE_TABLE)}
        stores = {**{key: space.store for key, space in self.spaces.items()}, SIDE_TABLE: self.side.store}
        for suffix, blob in stored:
            head, _, tail = suffix.partition(":")
            key, part = ("actor", part_of(head)) if not tail else (head, part_of(tail))
            if suffix == DESTINATIONS:
                self.import_destinations(blob)
            elif suffix in enrichers:
                _restore_or_start_empty(suffix, enrichers[suffix].restore, blob)
            elif head == "cohorts" and tail in self.spaces:
                _restore_or_start_empty(suffix, self.spaces[tail].cohorts.restore, blob)
            elif key in buckets and part is not None:
                buckets[key].append(blob)
                stores[key].note_part(*part)
        self.side.store.import_buckets(buckets.pop(SIDE_TABLE))
        own = [blob for blob in buckets["actor"] if self.store.accepts(blob)]
        self.side.migrate([blob for blob in buckets["actor"] if not self.store.accepts(blob)], self.store,
                          features_for("actor"), DESTINATION_MASKS)
        buckets["actor"] = own
        for key, blobs in buckets.items():
            self.spaces[key].store.import_buckets(blobs)

    def _dest_bits(self, services: pa.Array) -> _I:
        index = self._dest_index
        if len(services) <= SMALL_BATCH:
            return np.array([index.setdefault(n, len(index)) % 128 for n in services.to_pylist()], dtype=np.intp)
        encoded = pc.dictionary_encode(services)
        names = encoded.dictionary.to_pylist()
        bits = np.array([self._dest_index.setdefault(n, len(self._dest_index)) % 128 for n in names], dtype=np.intp)
        return bits[np.asarray(encoded.indices, dtype=np.intp)]

    def _retired(self, b: BatchView) -> _F:
        if not self.config.retired_endpoints:
            return np.zeros(b.n)
        return np.isin(b.edge_hash, self._retired_set).astype(np.float64)

    def _shadow(self, b: BatchView) -> _F:
        """Per row: a call to an endpoint in no spec of a service that has one (a shadow API)."""
        if not self.config.declared_services:
            return np.zeros(b.n)
        specced = np.isin(b.service_hash, self._declared_services)
        return (specced & ~np.isin(b.edge_hash, self._declared_set)).astype(np.float64)

    def _signals(self, b: BatchView) -> dict[str, _F]:
        """The base per-row signals, then every enricher's. A call counts once (``first``), its answer once
        (``answer``: a shim's copy of an allowed call has no status; the access log's copy brings it)."""
        first, answer = b.first.astype(np.float64), b.answer.astype(np.float64)
        out = {
            "request": first,
            "denied": ((b.status == 403) | (b.status == 404)) * answer,
            "auth_failure": b.auth_failed * answer,
            "sensitive": b.sensitive,
            "response_bytes": b.response_bytes,
            "records": b.records,
            "inline": (b.inline > 0).astype(np.float64),
            "retired": self._retired(b),
            "service": b.is_service.astype(np.float64),
            "request_bytes": b.request_bytes,
            "creates": np.bincount(b.created_row, minlength=b.n).clip(0, 1) * answer,
            "shadow": self._shadow(b) * first,
        }
        for enricher in self.enrichers:
            out.update(enricher.enrich(b))
        return out

    def _novel(self, b: BatchView, rows: _I) -> _F:
        """Per row: a first call to a destination outside the actor's learned mask; learning actors extend it."""
        cols = self.store.cols
        row_of_event = rows[b.actor_of_row]
        dest_bit = self._dest_bits(b.service)
        lo = dest_bit < 64
        bit = np.uint64(1) << (dest_bit % 64).astype(np.uint64)
        mask = np.where(lo, cols["dest_lo"][row_of_event], cols["dest_hi"][row_of_event])
        known = (mask & bit) != 0
        learning = cols["age_windows"][row_of_event] < self.config.learn_windows
        for name, sel in (("dest_lo", lo & learning), ("dest_hi", ~lo & learning)):
            np.bitwise_or.at(cols[name], row_of_event[sel], bit[sel])
        return np.asarray(~known & ~learning & b.first, dtype=np.float64)

    @staticmethod
    def _latest(group: _I, k: int, time: _F) -> _F:
        latest = np.full(k, -np.inf)
        mine = group >= 0
        np.maximum.at(latest, group[mine], time[mine])
        return latest

    def process(self, table: pa.Table) -> list[Detection]:
        """Fold one batch into the state; return detections for newly flagged keys."""
        if table.num_rows == 0:
            return []
        b = BatchView.decode(table, ids=self._ids)  # second reporters' copies: streams.repeats
        self.eviction.advance(b.time)
        signals = self._signals(b)
        with_principal = np.flatnonzero(b.principal_hash != 0)
        elements: dict[str, Elements] = {"objects": (b.object_row, b.object_hash),
                                         "principals": (with_principal, b.principal_hash[with_principal])}
        self.newest_time = float(b.time.max())
        out: list[Detection] = []
        for key, space in self.spaces.items():
            keys, group, labels = self._group(key, b)
            if not len(keys):
                continue
            rows, new = space.store.rows_for(keys)
            latest = self._latest(group, len(keys), b.time)
            space.roll(rows, new, latest)
            if key == "actor":
                signals["novel_destination"] = self._novel(b, rows)
            space.fold(rows, group, len(keys), latest, b.time, signals, elements)
            side = self.side.fold(space.store, keys, rows, group, latest, b.time, signals, elements) if key == "actor" else None
            out += self._detect(key, space, b, group, labels, rows, latest, signals, side)
        self.evict()
        return out

    def state_bytes(self) -> int:
        """Bytes of the per-key tables (actor, side table, client address): what ``state_budget_bytes`` bounds."""
        return sum(space.store.nbytes() for space in self.spaces.values()) + self.side.store.nbytes()

    def evict(self) -> int:
        """Evict idle keys, and the least recently active past the budget, when due (``streams.eviction``); how many."""
        held = self.state_bytes()
        if not self.eviction.due(held):
            return 0
        names = list(self.spaces)
        tables = []
        for name in names:
            store = self.spaces[name].store
            cost = np.full(len(store), store.row_bytes, dtype=np.int64)
            if name == "actor" and len(self.side.store):
                cost[self.side.store.find(store.cols["key"][: len(store)]) >= 0] += self.side.store.row_bytes
            tables.append((name, store.last_seen(), cost))
        dropped = 0
        drops, swept = self.eviction.select(tables, held)
        for name, rows in zip(names, drops):
            if len(rows):
                store = self.spaces[name].store
                if name == "actor":
                    self.side.forget(store.cols["key"][rows])
                dropped += store.remove(rows)
        if swept:
            self.side.store.remove(self.side.empty(self.eviction.clock))
        return dropped

    def state_stats(self) -> dict[str, Any]:
        """Keys and bytes per table, keys evicted so far (``<table>:<reason>``), the event clock of eviction."""
        tables = {**{name: space.store for name, space in self.spaces.items()}, SIDE_TABLE: self.side.store}
        return {"keys": {name: len(store) for name, store in tables.items()},
                "bytes": {name: store.nbytes() for name, store in tables.items()},
                "evicted": dict(self.eviction.evicted), "clock": self.eviction.clock}

    def take_evictions(self) -> dict[str, int]:
        """Keys evicted since the previous call, by ``<table>:<reason>`` (for Prometheus counters)."""
        return self.eviction.take_counts()

    @staticmethod
    def _group(key: str, b: BatchView) -> tuple[npt.NDArray[np.uint64], _I, list[str]]:
        """(unique key hashes, each row's index among them or -1, each key's label) for one key of the batch."""
        if key == "actor":
            return hash64(b.actor_keys), b.actor_of_row, b.actors
        if b.n <= SMALL_BATCH:  # plain Python: cheaper than the numpy and Arrow calls for a few rows
            index: dict[int, int] = {}
            labels: list[str] = []
            rows = []
            for h, ip in zip(b.source_ip_hash.tolist(), b.source_ip.to_pylist()):
                if not h:
                    rows.append(-1)
                    continue
                if h not in index:
                    index[h] = len(index)
                    labels.append(str(ip))
                rows.append(index[h])
            keys = np.array(list(index), dtype=np.uint64)
            if not len(keys):  # no row names a client address
                return keys, np.full(b.n, -1, dtype=np.intp), []
            order = np.argsort(keys)  # keys in hash order, as np.unique gives them below
            rank = np.empty(len(order), dtype=np.intp)
            rank[order] = np.arange(len(order))
            got = np.array(rows, dtype=np.intp)
            return keys[order], np.where(got >= 0, rank[np.maximum(got, 0)], -1), [labels[i] for i in order.tolist()]
        present = b.source_ip_hash != 0
        uniq, first, inverse = np.unique(b.source_ip_hash[present], return_index=True, return_inverse=True)
        group = np.full(b.n, -1, dtype=np.intp)
        group[present] = inverse
        ips = b.source_ip.filter(pa.array(present)).take(pa.array(first)).to_pylist() if len(uniq) else []
        return uniq, group, [str(ip) for ip in ips]

    def frame(self, rows: _I, key: str = "actor") -> dict[str, _F]:
        """The feature frame of these rows of one key's state."""
        frame = self.spaces[key].frame(rows)
        if key != "actor":
            return frame
        return self._with_rare(frame, len(rows), self.side.lookup(self.store.cols["key"][rows]))

    def _with_rare(self, frame: dict[str, _F], n: int, side: tuple[_I, _I]) -> dict[str, _F]:
        self.side.extend(frame, n, *side)
        return {name: frame[name] for name in self._actor_order}

    def _detect(self, key: str, space: KeySpace, b: BatchView, group: _I, labels: list[str], rows: _I, latest: _F,
                signals: dict[str, _F], side: tuple[_I, _I] | None = None) -> list[Detection]:
        detectors = self._detectors_of(key)
        if not detectors:
            return []
        frame = space.frame(rows) if side is None else self._with_rare(space.frame(rows), len(rows), side)
        return self._flagger.detect(key, space, detectors, b, frame, group, labels, rows, latest, signals)


def _cohort_features(detectors: Sequence[Detector], key: str) -> list[str]:
    """Features some rule of this key compares with its cohort."""
    rules = [getattr(d, "rule", None) for d in detectors if getattr(d, "key", "actor") == key]
    return sorted({r.feature for r in rules if r is not None and r.cohort_factor})
