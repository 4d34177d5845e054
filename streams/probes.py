"""BOLA probes: the ``probes``, ``repeat_probes`` and ``repeat_probers`` signals of ``streams.ownership``, vectorised.

``OwnershipEnricher`` decides which object entries of a batch are *eligible*
(not the principal's own, never answered 2xx to it, and, for an object of a
known other owner, the first object of that owner the principal touched within
the horizon) and which rows are *probing* (refused, or an answered read in a
crowded id block where the principal itself was refused two objects) and
*strong* (a refusal in a walked block, such a read). This module turns them
into signals:

* ``probes`` -- per row, 1 (strong) or 0.5 (any other refusal) when the row names at
  least one eligible object the principal has not probed within ``horizon_s``
  (one (principal, object) pair per probe), else 0: at most one probe per row,
  however many ids a refused bulk call names;
* ``repeat_probes`` -- 1 on each row with a strong probe that is not its
  principal's first strong probe row within the horizon (the row that made it,
  so a per-address sum follows the address of the call);
* ``repeat_probers`` -- 1 on the row of a principal's second strong probe row
  within the horizon: summed per address it counts the distinct principals
  probing from there, so one principal (lost access behind a NAT) cannot make
  an address look like many.

The plain-Python twins (``streams.ownsmall``) give the same signals and state;
pure, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from streams.batch import BatchView, Signals
from streams.keytable import pair_key
from streams.ownsmall import TAG_PROBE, TAG_PROBER, TAG_REFUSED

if TYPE_CHECKING:
    from streams.ownership import OwnershipEnricher

__all__ = ["bit64", "followed", "or_by", "score_probes"]

_U = npt.NDArray[np.uint64]
_I = npt.NDArray[np.intp]
_B = npt.NDArray[np.bool_]


def bit64(h: _U) -> _U:
    """One bit of 64 per hash (its low six bits): the masks of principals and objects."""
    return cast(_U, np.left_shift(np.uint64(1), h & np.uint64(63)))


def or_by(keys: _U, values: _U) -> tuple[_U, _I, _U]:
    """Distinct keys, the index of each key in them, and the OR of the values per distinct key."""
    uniq, inv = np.unique(keys, return_inverse=True)
    acc = np.zeros(len(uniq), np.uint64)
    np.bitwise_or.at(acc, inv, values)
    return uniq, inv.reshape(-1).astype(np.intp), acc


def followed(enr: OwnershipEnricher, batch: BatchView, keys: _U, notown: _B, refused: _B) -> _B:
    """The refused rows whose every object not their own was refused to another principal within the horizon (this
    batch included): people following the same dead or forbidden link, no step of a walk (a walk's principals each
    try new ids). ``notown``: per object entry, not the principal's own.

    Per such refused object a (service and object, 0) pair keeps the bits of the principals it was refused to.
    """
    rows = batch.object_row
    sel = refused[rows] & notown & (batch.principal_hash[rows] != 0)
    if not sel.any():
        return np.zeros(batch.n, np.bool_)
    rows, bits = rows[sel], bit64(batch.principal_hash[rows[sel]])
    uniq, inv, acc = or_by(pair_key(keys[sel], np.zeros(len(rows), np.uint64), TAG_REFUSED), bits)
    newest = float(batch.time[rows].max())
    slots, absent, _ = enr.pairs.upsert(uniq)
    c = enr.pairs.cols
    mask = np.where(absent | (c["last_seen"][slots] < newest - enr.config.horizon_s), np.uint64(0), c["mask"][slots]) | acc
    c["mask"][slots], c["last_seen"][slots] = mask, newest
    alone = (mask[inv] & ~bits) == 0
    return cast(_B, (np.bincount(rows, minlength=batch.n) > 0) & (np.bincount(rows, alone, batch.n) == 0))


def score_probes(enr: OwnershipEnricher, batch: BatchView, keys: _U, eligible: _B, half: _B, probing: _B, strong: _B,
                 out: Signals) -> None:
    """probes of the ``probing`` rows on their ``eligible`` object entries (``keys``: (service, object) per entry;
    ``half``: entries that make at most half a probe); repeat_probes and repeat_probers of the rows with a fresh
    whole probe. Updates ``enr.pairs``."""
    rows = batch.object_row
    cand = eligible & probing[rows]
    if not cand.any():
        return
    uniq, first = np.unique(pair_key(batch.principal_hash[rows[cand]], keys[cand], TAG_PROBE), return_index=True)
    rows, half = rows[cand][first], half[cand][first]
    t = batch.time[rows]
    slots, absent, _ = enr.pairs.upsert(uniq)
    last = enr.pairs.cols["last_seen"]
    fresh = absent | (last[slots] < t - enr.config.horizon_s)
    last[slots] = t
    hit = np.bincount(rows[fresh], minlength=batch.n) > 0
    whole = (np.bincount(rows[fresh & ~half], minlength=batch.n) > 0) & strong
    out["probes"] = np.where(whole, 1.0, np.where(hit, 0.5, 0.0))
    if whole.any():
        _score_probers(enr, batch, np.flatnonzero(whole), out)


def _score_probers(enr: OwnershipEnricher, batch: BatchView, rows: _I, out: Signals) -> None:
    """repeat_probes and repeat_probers of the rows (ascending) with a fresh strong probe, from each principal's
    count of such rows within the horizon ((principal, 0) pairs; stale at its first row of the batch)."""
    principal = batch.principal_hash[rows]
    order = np.argsort(principal, kind="stable")  # grouped by principal, rows ascending within a group
    rows, principal = rows[order], principal[order]
    uniq, start, counts = np.unique(principal, return_index=True, return_counts=True)
    slots, absent, _ = enr.pairs.upsert(pair_key(uniq, np.zeros_like(uniq), TAG_PROBER))
    c = enr.pairs.cols
    stale = absent | (c["last_seen"][slots] < batch.time[rows[start]] - enr.config.horizon_s)
    before = np.where(stale, 0, c["count"][slots])
    c["count"][slots] = np.minimum(before + counts, 1 << 20)
    c["last_seen"][slots] = batch.time[rows[start + counts - 1]]
    nth = np.repeat(before, counts) + np.arange(len(rows)) - np.repeat(start, counts) + 1  # this row's rank
    out["repeat_probes"] = np.bincount(rows, nth >= 2, batch.n).astype(np.float64)
    out["repeat_probers"] = np.bincount(rows, nth == 2, batch.n).astype(np.float64)
