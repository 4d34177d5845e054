"""The worker's honeytoken signal: calls of a batch that used a declared honeytoken.

Contract: pure and vectorised. ``HoneytokenEnricher(tokens).enrich(batch)``
returns ``{"honeytoken_hits": 0/1 per row}``; a row counts when any of these holds:

- one of its object ids (``BatchView.object_hash``) is a honeytoken object id
  of the row's destination service (``BatchView.service_hash``), compared as
  ``hash64`` of the keyed hashes ``ingest.honeytokens.Honeytokens.object_ids`` holds;
- its principal is the one a honeytoken credential yields (``Honeytokens.principals``:
  an API key, an opaque bearer token, a basic login's account);
- its ``credential_subject`` names a honeytoken account (``Honeytokens.subjects``);
- the shim reported the inline finding ``honeytoken`` on it.

The rule ``models/rules/honeytoken.yaml`` turns one such call into a block of the
actor. The enricher keeps no state (the declaration is configuration), so
``export`` is empty and ``restore`` has nothing to load. Cost: with no
honeytokens declared, one array of zeros; otherwise ``np.isin`` over the
batch's object hashes and two hash columns against a handful of values.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ingest.honeytokens import Honeytokens
from streams.batch import BatchView, Signals, column, hash64, list_parts
from streams.keytable import pair_key

__all__ = ["SIGNAL", "HoneytokenEnricher"]

#: the per-row signal this enricher produces (declared once in the feature table)
SIGNAL = "honeytoken_hits"
#: the inline finding category the shim reports for a honeytoken hit
_INLINE = "honeytoken"
_U = npt.NDArray[np.uint64]


def _hashes(values: list[str]) -> _U:
    return np.unique(hash64(pa.array(values, pa.string()))) if values else np.zeros(0, np.uint64)


class HoneytokenEnricher:
    """The ``streams.batch.Enricher`` of the ``honeytoken_hits`` signal (see the module docstring)."""

    name = "honeytokens"
    signals: tuple[str, ...] = (SIGNAL,)

    def __init__(self, tokens: Honeytokens) -> None:
        declared = sorted((service, i) for service, ids in tokens.object_ids.items() for i in ids)
        ids, services = [i for _, i in declared], [service for service, _ in declared]
        self._objects = _hashes(ids)
        self._object_pairs = np.unique(pair_key(hash64(pa.array(ids, pa.string())), hash64(pa.array(services, pa.string())))) if ids else self._objects
        self._principals = _hashes(sorted(tokens.principals))
        self._subjects = _hashes(sorted(tokens.subjects))
        self._empty = len(tokens) == 0
        #: rows flagged so far (a metric)
        self.hits = 0

    def enrich(self, batch: BatchView) -> Signals:
        """``honeytoken_hits``: 1.0 for every row that used a honeytoken, else 0.0."""
        n = batch.n
        if self._empty and not batch.inline.any():
            return {SIGNAL: np.zeros(n, np.float64)}
        hit = np.zeros(n, dtype=bool)
        if len(self._objects) and len(batch.object_hash):
            self._mark_objects(batch, hit)
        if len(self._principals):
            hit |= np.isin(batch.principal_hash, self._principals)
        if len(self._subjects):
            hit |= np.isin(batch.credential_subject_hash, self._subjects)
        if batch.inline.any():
            self._mark_inline(batch, hit)
        self.hits += int(hit.sum())
        return {SIGNAL: hit.astype(np.float64)}

    def _mark_objects(self, batch: BatchView, hit: npt.NDArray[np.bool_]) -> None:
        maybe = np.isin(batch.object_hash, self._objects)
        if not maybe.any():
            return
        rows = batch.object_row[maybe]
        same_service = np.isin(pair_key(batch.object_hash[maybe], batch.service_hash[rows]), self._object_pairs)
        hit[rows[same_service]] = True

    @staticmethod
    def _mark_inline(batch: BatchView, hit: npt.NDArray[np.bool_]) -> None:
        rows, values = list_parts(column(batch.table, "inline_findings"))
        found = np.asarray(pc.equal(values, _INLINE).fill_null(False), dtype=bool)
        hit[rows[found]] = True

    def export(self) -> bytes:
        """Nothing: the declaration is configuration, not state."""
        return b""

    def restore(self, blob: bytes) -> None:
        """Nothing to load (``export`` writes nothing)."""
        return None
