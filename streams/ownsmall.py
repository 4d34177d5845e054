"""The ownership enricher's plain-Python path for small batches: the same state and signals as the vectorised path.

The live worker hands ``streams.ownership.OwnershipEnricher`` batches of 5-50
rows (a 5 ms gathering window). On such a batch the vectorised path pays
numpy's fixed cost per call some two hundred times (0.44 ms for 30 rows on the
loaded machine), while the work is a few table probes per object id. This path
reads the batch's columns once as Python lists, keys them with Python ints
(``streams.keytable.pair_key1``) and probes the enricher's ``KeyTable``s with
their plain-Python ``find_few`` / ``insert_few``.

Contract: for any batch, ``enrich_small`` leaves the tables as the vectorised
path would (the same keys and columns, the same slot of each key) and returns
the same signals: every step reads the state as the vectorised step reads it
(all of a step's reads before its writes; of several writes to one slot the
last wins, as numpy's fancy assignment), keys are inserted in the same
(sorted) order. ``tests/streams/test_ownership_small.py`` feeds one random
stream both ways and compares. The state codes and pair tags the two paths
share are defined here. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streams.batch import BatchView, Signals, column, hash64
from streams.keytable import GOLD, M1, M2, KeyTable, column_view, pair_key1

if TYPE_CHECKING:
    from streams.ownership import OwnershipEnricher

__all__ = ["CONFIRMED", "CREATED", "PROVISIONAL", "TAG_BLOCK", "TAG_OWNER", "TAG_PBLOCK", "TAG_PROBE", "TAG_PROBER",
           "enrich_small", "pairs1"]

#: object states: first principal answered (provisional), its return confirmed it, a creating call's principal
PROVISIONAL, CONFIRMED, CREATED = 1, 2, 3
#: kinds of pair keys: (principal, owner), (service, block), (principal, block), (principal, object) probes, (principal, 0)
TAG_OWNER, TAG_BLOCK, TAG_PBLOCK, TAG_PROBE, TAG_PROBER = 0x6F776E6572, 0x626C6F636B, 0x70626C6B, 0x70726F6265, 0x70726F6272

_M64 = (1 << 64) - 1
_GOLD, _M1, _M2 = int(GOLD), int(M1), int(M2)
_HEX = "0123456789abcdef"


def pairs1(a: Sequence[int], b: Sequence[int], tag: int = 0) -> list[int]:
    """``pair_key1`` of each (a, b) (one loop, no call per pair)."""
    out = []
    for x, y in zip(a, b):
        x = ((x * _GOLD) & _M64) ^ ((y + tag) & _M64)
        x ^= x >> 33
        x = (x * _M1) & _M64
        x ^= x >> 33
        x = (x * _M2) & _M64
        out.append((x ^ (x >> 33)) or 1)
    return out


def _upsert(table: KeyTable, keys: list[int]) -> tuple[list[int], list[bool]]:
    """(slot, absent before) of distinct sorted keys, inserting the absent ones."""
    slots = table.find_few(keys)
    absent = [s < 0 for s in slots]
    if any(absent):
        fresh = iter(table.insert_few([k for k, a in zip(keys, absent) if a]))
        slots = [next(fresh) if a else s for s, a in zip(slots, absent)]
    return slots, absent


def _popcount(x: int) -> int:
    return x.bit_count()


def _views(table: KeyTable) -> dict[str, memoryview[Any]]:
    """Every column of ``table`` as a memoryview (valid until the table grows or reloads)."""
    return {name: col.data for name, col in table.cols.items()}


class _Rows:
    """The batch's columns as Python lists (what every step reads)."""

    def __init__(self, batch: BatchView) -> None:
        self.n = batch.n
        self.status: list[int] = batch.status.tolist()
        self.records: list[float] = batch.records.tolist()
        self.time: list[float] = batch.time.tolist()
        self.principal: list[int] = batch.principal_hash.tolist()
        self.service: list[int] = batch.service_hash.tolist()
        self.object_row: list[int] = batch.object_row.tolist()
        self.object_hash: list[int] = batch.object_hash.tolist()
        self.refused = [s in (403, 404) and r > 0 for s, r in zip(self.status, self.records)]


def _blocks(batch: BatchView, wanted: list[bool]) -> list[tuple[int, int]]:
    """(row, block hash) of the ``wanted`` rows, as ``OwnershipEnricher._blocks_of`` reads them (hashes of every row)."""
    if hasattr(batch, "block_row"):
        return [(r, h) for r, h in zip(getattr(batch, "block_row").tolist(), getattr(batch, "block_hash").tolist()) if wanted[r]]
    if batch.table.schema.get_field_index("object_blocks") < 0:  # (``column_names`` builds a list: 25 us)
        return []
    col = column(batch.table, "object_blocks")
    lists = col.to_pylist()
    texts = [v for values in lists if values for v in values]
    hexes = pa.types.is_string(col.type.value_type) and None not in texts and set(map(len, texts)) == {16}
    if hexes and not "".join(texts).strip(_HEX):  # then read as hex64 reads 16 lower-case hex digits
        return [(r, int(v, 16) or 1) for r, values in enumerate(lists) if values and wanted[r] for v in values]
    # anything else: hash64 of the whole array, as hex64 falls back to
    hashes = iter(hash64(pa.array(texts, col.type.value_type)).tolist())
    return [(r, h) for r, values in enumerate(lists) if values for h in [next(hashes) for _ in values] if wanted[r]]


def enrich_small(enr: OwnershipEnricher, batch: BatchView) -> Signals:
    """The enricher's signals of ``batch`` and its state after it, computed in plain Python (see the module docstring)."""
    b = _Rows(batch)
    sig = {name: [0.0] * b.n for name in enr.signals}
    _learn_created(enr, batch, b)
    sig["denied_objects"] = [r if f else 0.0 for r, f in zip(b.records, b.refused)]
    if b.object_row:
        cfg, objects = enr.config, enr.objects
        keys = pairs1([b.service[r] for r in b.object_row], b.object_hash)
        slots = objects.find_few(keys)
        owners = _score_objects(enr, b, slots, sig)
        suspect = [f or g > 0 for f, g in zip(b.refused, sig["foreign_objects"])]
        candidate, crowding = _candidates(b, owners)
        strong = _score_blocks(enr, batch, b, suspect, candidate, crowding, sig)
        strong = [w or s == 403 for w, s in zip(strong, b.status)]
        probing = [f or (w and c) for f, w, c in zip(b.refused, strong, candidate)]
        _score_probes(enr, b, keys, owners, probing, strong, sig)
        _learn_access(enr, b, keys, slots, cfg.list_max, cfg.confirm_gap_s)
    names = list(sig)
    stacked = np.array([sig[name] for name in names], dtype=np.float64)
    return dict(zip(names, stacked))


def _learn_created(enr: OwnershipEnricher, batch: BatchView, b: _Rows) -> None:
    rows: list[int] = batch.created_row.tolist()
    if not rows:
        return
    first: dict[int, int] = {}
    for r, h in zip(rows, batch.created_hash.tolist()):
        if b.principal[r] and b.status[r] // 100 == 2:
            first.setdefault(pair_key1(b.service[r], h), r)
    if not first:
        return
    keys = sorted(first)
    slots, _ = _upsert(enr.objects, keys)
    c = _views(enr.objects)
    for key, s in zip(keys, slots):
        r = first[key]
        t = b.time[r]
        c["owner"][s], c["state"][s], c["contested"][s] = b.principal[r], CREATED, False
        c["first"][s], c["last_seen"][s], c["hits"][s] = t, t, 1


def _score_objects(enr: OwnershipEnricher, b: _Rows, slots: list[int], sig: dict[str, list[float]]) -> list[int]:
    """own / foreign / new objects per row, the owners' pairs; each object's owner (0 = unknown)."""
    c = _views(enr.objects)
    owner_col, state_col = c["owner"], c["state"]
    owners, foreign = [], []
    own_s, foreign_s, new_s = sig["own_objects"], sig["foreign_objects"], sig["new_objects"]
    for r, s in zip(b.object_row, slots):
        if s < 0:
            owners.append(0)
            new_s[r] += 1
            continue
        owner, p = owner_col[s], b.principal[r]
        owners.append(owner)
        if not p:
            continue
        if owner == p:
            own_s[r] += 1
        elif state_col[s] >= CONFIRMED:
            foreign_s[r] += 1
            foreign.append((r, p, owner))
    if foreign:
        _score_owners(enr, b, foreign, sig)
    return owners


def _score_owners(enr: OwnershipEnricher, b: _Rows, foreign: list[tuple[int, int, int]], sig: dict[str, list[float]]) -> None:
    first: dict[int, list[int]] = {}
    for r, p, owner in foreign:
        entry = first.setdefault(pair_key1(p, owner, TAG_OWNER), [r, 0])
        entry[1] += 1
    keys = sorted(first)
    slots, absent = _upsert(enr.pairs, keys)
    c, horizon = _views(enr.pairs), enr.config.horizon_s
    for key, s, new_key in zip(keys, slots, absent):
        r, count = first[key]
        t = b.time[r]
        before = 0 if new_key or c["last_seen"][s] < t - horizon else c["count"][s]
        after = min(before + count, 1 << 20)
        c["count"][s], c["last_seen"][s] = after, t
        sig["foreign_owners"][r] += before == 0
        sig["thin_owners"][r] += (before == 0) - (before <= 1 and after >= 2)


def _fold_masks(enr: OwnershipEnricher, table: KeyTable, keys: list[int], bits: list[int], newest: float, since: str,
                refused: list[bool] | None = None) -> tuple[list[int], list[int]]:
    """``OwnershipEnricher._fold_masks`` of a few entries: (the mask of each entry's key after the fold, its slot)."""
    acc: dict[int, int] = {}
    racc: dict[int, int] = {}
    for i, (key, bit) in enumerate(zip(keys, bits)):
        acc[key] = acc.get(key, 0) | bit
        if refused is not None:
            racc[key] = racc.get(key, 0) | (bit if refused[i] else 0)
    uniq = sorted(acc)
    slots, absent = _upsert(table, uniq)
    c, limit = _views(table), newest - enr.config.horizon_s
    after: dict[int, tuple[int, int]] = {}
    for key, s, new_key in zip(uniq, slots, absent):
        stale = new_key or c[since][s] < limit
        mask = (0 if stale else c["mask"][s]) | acc[key]
        c["mask"][s], c["last_seen"][s] = mask, newest
        if refused is not None:
            c["refusers"][s] = (0 if stale else c["refusers"][s]) | racc[key]
        if since != "last_seen" and stale:
            c[since][s] = newest
        after[key] = (mask, s)
    return [after[k][0] for k in keys], [after[k][1] for k in keys]


def _candidates(b: _Rows, owners: list[int]) -> tuple[list[bool], list[bool]]:
    """(rows a crowded block would make probes: one object, not refused, naming an object not the principal's own;
    rows that crowd a block: refused, naming an object not the principal's own)."""
    notown = [False] * b.n
    for r, owner in zip(b.object_row, owners):
        if owner != b.principal[r]:
            notown[r] = True
    candidate = [bool(p) and x and n == 1 and not f for p, x, n, f in zip(b.principal, notown, b.records, b.refused)]
    return candidate, [x and f for x, f in zip(notown, b.refused)]


def _score_blocks(enr: OwnershipEnricher, batch: BatchView, b: _Rows, suspect: list[bool], candidate: list[bool],
                  crowding: list[bool], sig: dict[str, list[float]]) -> list[bool]:
    """dense_blocks of the suspect rows; the rows in a walked block (``OwnershipEnricher._score_blocks``)."""
    walked = [False] * b.n
    hot = enr.crowd_until >= max(b.time)  # else no block is crowded before this batch's refusals
    if not (any(f and p for f, p in zip(suspect, b.principal)) or (hot and any(candidate))):
        return walked
    found = _blocks(batch, [bool(p) and (f or c) for p, f, c in zip(b.principal, suspect, candidate)])
    if not found:
        return walked
    bkeys = pairs1([b.service[r] for r, _ in found], [h for _, h in found], TAG_BLOCK)
    sus = [i for i, (r, _) in enumerate(found) if suspect[r]]
    if sus:
        _fold_blocks(enr, b, [found[i][0] for i in sus], [bkeys[i] for i in sus], crowding, walked, sig)
    single = [i for i, (r, _) in enumerate(found) if candidate[r]] if enr.crowd_until >= max(b.time) else []
    if single:
        c, limit, least = _views(enr.blocks), max(b.time) - enr.config.horizon_s, enr.config.crowd_principals
        for i, s in zip(single, enr.blocks.find_few([bkeys[i] for i in single])):
            if s >= 0 and c["start"][s] >= limit and _popcount(c["refusers"][s]) >= least:
                walked[found[i][0]] = True
    return walked


def _fold_blocks(enr: OwnershipEnricher, b: _Rows, rows: list[int], bkeys: list[int], crowding: list[bool],
                 walked: list[bool], sig: dict[str, list[float]]) -> None:
    """The suspect rows' touches folded into the blocks (crowds) and the (principal, block) pairs; dense_blocks,
    and ``walked`` set for the refused rows in a crowded block or where their principal had two suspect objects."""
    cfg = enr.config
    newest = max(b.time[r] for r in rows)
    crowd, slots = _fold_masks(enr, enr.blocks, bkeys, [1 << (b.principal[r] & 63) for r in rows], newest, "start",
                               [crowding[r] for r in rows])
    refusers = column_view(enr.blocks.cols["refusers"])
    crowd_s = [_popcount(refusers[s]) >= cfg.crowd_principals for s in slots]
    hot = [s for s, h in zip(slots, crowd_s) if h]
    if hot:
        enr.note_crowds(hot)
    obj_bits = [0] * b.n
    for r, h in zip(b.object_row, b.object_hash):
        obj_bits[r] |= 1 << (h & 63)
    pkeys = pairs1([b.principal[r] for r in rows], bkeys, TAG_PBLOCK)
    alone, _ = _fold_masks(enr, enr.pairs, pkeys, [obj_bits[r] for r in rows], newest, "last_seen")
    dense = sig["dense_blocks"]
    for r, m, a, h in zip(rows, crowd, alone, crowd_s):
        dense[r] += _popcount(m) >= cfg.dense_principals or _popcount(a) >= cfg.dense_objects
        if b.refused[r] and (h or _popcount(a) >= 2):
            walked[r] = True


def _score_probes(enr: OwnershipEnricher, b: _Rows, keys: list[int], owners: list[int], probing: list[bool], strong: list[bool],
                  sig: dict[str, list[float]]) -> None:
    first: dict[int, int] = {}
    for r, key, owner in zip(b.object_row, keys, owners):
        p = b.principal[r]
        if p and owner != p and probing[r]:
            first.setdefault(pair_key1(p, key, TAG_PROBE), r)
    if not first:
        return
    uniq = sorted(first)
    slots, absent = _upsert(enr.pairs, uniq)
    last, horizon, probes = column_view(enr.pairs.cols["last_seen"]), enr.config.horizon_s, sig["probes"]
    fresh: list[int] = []
    for key, s, new_key in zip(uniq, slots, absent):
        r = first[key]
        t = b.time[r]
        if new_key or last[s] < t - horizon:
            probes[r] += 1.0 if strong[r] else 0.5
            if strong[r]:
                fresh.append(r)
        last[s] = t
    if fresh:
        _score_probers(enr, b, sorted(fresh), sig)


def _score_probers(enr: OwnershipEnricher, b: _Rows, rows: list[int], sig: dict[str, list[float]]) -> None:
    """``OwnershipEnricher._score_probers`` (``rows``: the rows of the fresh probes, sorted)."""
    first: dict[int, list[int]] = {}
    for r in rows:
        entry = first.setdefault(b.principal[r], [r, 0])
        entry[1] += 1
    principals = sorted(first)
    keys = [pair_key1(p, 0, TAG_PROBER) for p in principals]
    order = sorted(range(len(keys)), key=keys.__getitem__)
    slots, absent = _upsert(enr.pairs, [keys[i] for i in order])
    c, horizon, repeat = _views(enr.pairs), enr.config.horizon_s, sig["repeat_probes"]
    for i, s, new_key in zip(order, slots, absent):
        r, count = first[principals[i]]
        t = b.time[r]
        before = 0 if new_key or c["last_seen"][s] < t - horizon else c["count"][s]
        c["count"][s], c["last_seen"][s] = min(before + count, 1 << 20), t
        repeat[r] += count - (before == 0)


def _learn_access(enr: OwnershipEnricher, b: _Rows, keys: list[int], slots: list[int], list_max: int, gap: float) -> None:
    """``OwnershipEnricher._learn_access``: its reads see the state as the vectorised step's do.

    owner, state and first are read before any of them is written; ``contested`` and ``last_seen``, written
    on the way, are read only by the confirmation at the end (as there).
    """
    entries = [(k, s, r) for k, s, r in zip(keys, slots, b.object_row)
               if b.status[r] // 100 == 2 and b.principal[r] and b.records[r] <= list_max]
    if not entries:
        return
    if any(s < 0 for _, s, _ in entries):
        entries = _add_objects(enr, b, entries)
    c = _views(enr.objects)  # after the insertions: growing reallocates the columns
    owner, state, first, contested, last = c["owner"], c["state"], c["first"], c["contested"], c["last_seen"]
    back: dict[int, None] = {}
    for _, s, r in entries:
        t = b.time[r]
        if b.principal[r] != owner[s]:
            if state[s] == PROVISIONAL:
                contested[s] = True
        elif t - first[s] >= gap:
            back[s] = None
        last[s] = t
    hits = c["hits"]
    for s in back:
        hits[s] += 1
        if state[s] == PROVISIONAL and not contested[s]:
            state[s] = CONFIRMED


def _add_objects(enr: OwnershipEnricher, b: _Rows, entries: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Insert the objects first seen here (first principal = provisional owner); the entries with their slots."""
    first: dict[int, int] = {}
    for k, s, r in entries:
        if s < 0:
            first.setdefault(k, r)
    uniq = sorted(first)
    fresh = dict(zip(uniq, enr.objects.insert_few(uniq)))
    c = _views(enr.objects)
    for key, s in fresh.items():
        r = first[key]
        c["owner"][s], c["state"][s], c["first"][s], c["hits"][s] = b.principal[r], PROVISIONAL, b.time[r], 1
    return [(k, fresh[k] if s < 0 else s, r) for k, s, r in entries]
