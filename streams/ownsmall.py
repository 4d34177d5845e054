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
(sorted) order. ``_followed``, ``_score_probes`` and ``_score_probers`` are the
twins of ``streams.probes``. ``tests/streams/test_ownership_small.py`` feeds
random streams both ways (with eviction and restore) and compares. The state codes and pair tags the two paths
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

__all__ = ["CONFIRMED", "CREATED", "PROVISIONAL", "TAG_BLOCK", "TAG_OWNER", "TAG_PBLOCK", "TAG_PROBE", "TAG_PROBER", "TAG_REFUSED",
           "TAG_ANSWERED", "TAG_DENIED",
           "enrich_small", "pairs1"]

#: object states: first principal answered (provisional), its return confirmed it, a creating call's principal
PROVISIONAL, CONFIRMED, CREATED = 1, 2, 3
#: kinds of pair keys: (principal, owner), (service, block), (principal, block), (principal, object) probes, (principal, 0)
TAG_OWNER, TAG_BLOCK, TAG_PBLOCK, TAG_PROBE, TAG_PROBER = 0x6F776E6572, 0x626C6F636B, 0x70626C6B, 0x70726F6265, 0x70726F6272
#: (service and object, 0): the principals a refused object was refused to
TAG_REFUSED = 0x72656675736564
#: (principal, service): its answered object calls that were no probe, and its refusals on objects not its own
TAG_ANSWERED, TAG_DENIED = 0x616E73776572, 0x64656E696564

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
        owners, eligible, half = _score_objects(enr, b, slots, sig)
        eligible = [e and (b.refused[r] or not h) for e, h, r in zip(eligible, half, b.object_row)]
        notown = [False] * b.n
        for r, owner in zip(b.object_row, owners):
            notown[r] = notown[r] or owner != b.principal[r]
        suspect = [f or g > 0 for f, g in zip(b.refused, sig["foreign_objects"])]
        crowding = [x and f for x, f in zip(notown, b.refused)]
        walked, mine = _score_blocks(enr, batch, b, suspect, crowding, sig)
        read = [m and not f and n == 1 and s // 100 == 2 for m, f, n, s in zip(mine, b.refused, b.records, b.status)]
        standing = _standing(enr, b, crowding, read)
        strong = [((c and f) or d) and not g and not w
                  for c, f, d, g, w in zip(walked, b.refused, read, standing, _followed(enr, b, keys, owners))]
        probing = [f or d for f, d in zip(b.refused, read)]
        _score_probes(enr, b, keys, eligible, half, probing, strong, sig)
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


def _score_objects(enr: OwnershipEnricher, b: _Rows, slots: list[int],
                   sig: dict[str, list[float]]) -> tuple[list[int], list[bool], list[bool]]:
    """own / foreign / new objects per row, the owners' pairs; per entry, its owner (0 = unknown), whether it may be a
    probe and whether only half of one (``OwnershipEnricher._score_objects``)."""
    c = _views(enr.objects)
    owner_col, state_col, readers = c["owner"], c["state"], c["readers"]
    owners, eligible, foreign = [], [], []
    own_s, foreign_s, new_s = sig["own_objects"], sig["foreign_objects"], sig["new_objects"]
    for i, (r, s) in enumerate(zip(b.object_row, slots)):
        p = b.principal[r]
        if s < 0:
            owners.append(0)
            eligible.append(bool(p))
            new_s[r] += 1
            continue
        owner = owner_col[s]
        owners.append(owner)
        eligible.append(bool(p) and owner != p and not readers[s] >> (p & 63) & 1)
        if not p:
            continue
        if owner == p:
            own_s[r] += 1
        elif state_col[s] >= CONFIRMED:
            foreign_s[r] += 1
            foreign.append((i, r, p, owner))
    half = [False] * len(owners)
    if foreign:
        for i, old in zip([f[0] for f in foreign], _score_owners(enr, b, foreign, sig)):
            half[i] = old
    return owners, eligible, half


def _score_owners(enr: OwnershipEnricher, b: _Rows, foreign: list[tuple[int, int, int, int]], sig: dict[str, list[float]]) -> list[bool]:
    """foreign_owners, thin_owners; per entry, whether its owner was touched before (``OwnershipEnricher._score_owners``)."""
    first: dict[int, list[int]] = {}
    every = []
    for _, r, p, owner in foreign:
        key = pair_key1(p, owner, TAG_OWNER)
        every.append(key)
        entry = first.setdefault(key, [r, 0])
        entry[1] += 1
    keys = sorted(first)
    slots, absent = _upsert(enr.pairs, keys)
    c, horizon = _views(enr.pairs), enr.config.horizon_s
    seen: dict[int, bool] = {}
    for key, s, new_key in zip(keys, slots, absent):
        r, count = first[key]
        t = b.time[r]
        before = 0 if new_key or c["last_seen"][s] < t - horizon else c["count"][s]
        after = min(before + count, 1 << 20)
        c["count"][s], c["last_seen"][s] = after, t
        sig["foreign_owners"][r] += before == 0
        sig["thin_owners"][r] += (before == 0) - (before <= 1 and after >= 2)
        seen[key] = before > 0
    old = []
    for key in every:
        old.append(seen[key])
        seen[key] = True
    return old


def _fold_blocks(enr: OwnershipEnricher, keys: list[int], bits: list[int], newest: float, flagged: list[bool],
                 forbidding: list[bool]) -> list[tuple[int, int, int]]:
    """``OwnershipEnricher._fold_blocks`` of a few entries: per entry, its block's (mask, refusers, forbidden)."""
    acc: dict[int, list[int]] = {}
    for key, bit, flag, forbid in zip(keys, bits, flagged, forbidding):
        got = acc.setdefault(key, [0, 0, 0])
        got[0] |= bit
        got[1] |= bit if flag else 0
        got[2] |= bit if forbid else 0
    uniq = sorted(acc)
    slots, absent = _upsert(enr.blocks, uniq)
    c, limit = _views(enr.blocks), newest - enr.config.horizon_s
    after: dict[int, tuple[int, int, int]] = {}
    for key, s, new_key in zip(uniq, slots, absent):
        stale = new_key or c["start"][s] < limit
        got = acc[key]
        for name, add in zip(("mask", "refusers", "forbidden"), got):
            c[name][s] = (0 if stale else c[name][s]) | add
        c["last_seen"][s] = newest
        if stale:
            c["start"][s] = newest
        after[key] = (c["mask"][s], c["refusers"][s], c["forbidden"][s])
    return [after[k] for k in keys]


def _fold_pblocks(enr: OwnershipEnricher, keys: list[int], bits: list[int], newest: float,
                  flagged: list[bool]) -> list[tuple[int, int]]:
    """``OwnershipEnricher._fold_pblocks`` of a few entries: per entry, its pair's (mask, count of distinct refusals)."""
    acc: dict[int, int] = {}
    for key, bit in zip(keys, bits):
        acc[key] = acc.get(key, 0) | bit
    uniq = sorted(acc)
    slots, absent = _upsert(enr.pairs, uniq)
    c, limit = _views(enr.pairs), newest - enr.config.horizon_s
    old = {key: (0 if new_key or c["last_seen"][s] < limit else c["mask"][s]) for key, s, new_key in zip(uniq, slots, absent)}
    fresh = {(key, bit) for key, bit, flag in zip(keys, bits, flagged) if flag and bit & ~old[key]}
    added = dict.fromkeys(uniq, 0)
    for key, _ in fresh:
        added[key] += 1
    after: dict[int, tuple[int, int]] = {}
    for key, s, new_key in zip(uniq, slots, absent):
        stale = new_key or c["last_seen"][s] < limit
        c["count"][s] = min((0 if stale else c["count"][s]) + added[key], 1 << 20)
        c["mask"][s], c["last_seen"][s] = old[key] | acc[key], newest
        after[key] = (c["mask"][s], c["count"][s])
    return [after[k] for k in keys]


def _score_blocks(enr: OwnershipEnricher, batch: BatchView, b: _Rows, suspect: list[bool], crowding: list[bool],
                  sig: dict[str, list[float]]) -> tuple[list[bool], list[bool]]:
    """dense_blocks of the suspect rows; (suspect rows in a walked block, those in a crowded block whose principal was
    refused two objects there) (``OwnershipEnricher._score_blocks``)."""
    walked, mine = [False] * b.n, [False] * b.n
    if not any(f and p for f, p in zip(suspect, b.principal)):
        return walked, mine
    found = _blocks(batch, [bool(p) and f for p, f in zip(b.principal, suspect)])
    if not found:
        return walked, mine
    cfg = enr.config
    rows = [r for r, _ in found]
    bkeys = pairs1([b.service[r] for r in rows], [h for _, h in found], TAG_BLOCK)
    newest, flagged = max(b.time[r] for r in rows), [crowding[r] for r in rows]
    forbidding = [crowding[r] and b.status[r] == 403 for r in rows]
    blocks = _fold_blocks(enr, bkeys, [1 << (b.principal[r] & 63) for r in rows], newest, flagged, forbidding)
    obj_bits = [0] * b.n
    for r, h in zip(b.object_row, b.object_hash):
        obj_bits[r] |= 1 << (h & 63)
    pkeys = pairs1([b.principal[r] for r in rows], bkeys, TAG_PBLOCK)
    pblocks = _fold_pblocks(enr, pkeys, [obj_bits[r] for r in rows], newest, flagged)
    dense = sig["dense_blocks"]
    for r, (crowd, refusers, forbidden), (alone, refused) in zip(rows, blocks, pblocks):
        dense[r] += _popcount(crowd) >= cfg.dense_principals or _popcount(alone) >= cfg.dense_objects
        if _popcount(refusers) >= cfg.crowd_principals:
            walked[r] = walked[r] or forbidden != 0
            mine[r] = mine[r] or refused >= 2
    return walked, mine


def _standing(enr: OwnershipEnricher, b: _Rows, refusing: list[bool], read: list[bool]) -> list[bool]:
    """``OwnershipEnricher._standing``."""
    has = [False] * b.n
    for r in b.object_row:
        has[r] = True
    counted: dict[int, int] = {}
    entries: list[tuple[int, int, int]] = []
    for r in range(b.n):
        p = b.principal[r]
        if not p or not has[r]:
            continue
        answered = b.status[r] // 100 == 2 and b.records[r] <= enr.config.list_max and not read[r]
        ka, kd = pair_key1(p, b.service[r], TAG_ANSWERED), pair_key1(p, b.service[r], TAG_DENIED)
        counted[ka] = counted.get(ka, 0) + answered
        counted[kd] = counted.get(kd, 0) + refusing[r]
        entries.append((r, ka, kd))
    out = [False] * b.n
    if not entries:
        return out
    newest = max(b.time[r] for r, _, _ in entries)
    uniq = sorted(counted)
    slots, absent = _upsert(enr.pairs, uniq)
    c, limit = _views(enr.pairs), newest - enr.config.horizon_s
    after = {}
    for key, s, new_key in zip(uniq, slots, absent):
        c["count"][s] = min((0 if new_key or c["last_seen"][s] < limit else c["count"][s]) + counted[key], 1 << 20)
        c["last_seen"][s] = newest
        after[key] = c["count"][s]
    for r, ka, kd in entries:
        out[r] = after[ka] > after[kd]
    return out


def _followed(enr: OwnershipEnricher, b: _Rows, keys: list[int], owners: list[int]) -> list[bool]:
    """``streams.probes.followed``."""
    acc: dict[int, int] = {}
    entries = []
    for r, k, owner in zip(b.object_row, keys, owners):
        if b.refused[r] and b.principal[r] and owner != b.principal[r]:
            key, bit = pair_key1(k, 0, TAG_REFUSED), 1 << (b.principal[r] & 63)
            acc[key] = acc.get(key, 0) | bit
            entries.append((r, key, bit))
    out = [False] * b.n
    if not entries:
        return out
    newest = max(b.time[r] for r, _, _ in entries)
    uniq = sorted(acc)
    slots, absent = _upsert(enr.pairs, uniq)
    c, limit = _views(enr.pairs), newest - enr.config.horizon_s
    for key, s, new_key in zip(uniq, slots, absent):
        acc[key] |= 0 if new_key or c["last_seen"][s] < limit else c["mask"][s]
        c["mask"][s], c["last_seen"][s] = acc[key], newest
    alone = [False] * b.n
    for r, key, bit in entries:
        out[r] = True
        alone[r] = alone[r] or not acc[key] & ~bit
    return [o and not a for o, a in zip(out, alone)]


def _score_probes(enr: OwnershipEnricher, b: _Rows, keys: list[int], eligible: list[bool], half: list[bool],
                  probing: list[bool], strong: list[bool], sig: dict[str, list[float]]) -> None:
    """``streams.probes.score_probes``."""
    first: dict[int, tuple[int, bool]] = {}
    for r, key, ok, h in zip(b.object_row, keys, eligible, half):
        if ok and probing[r]:
            first.setdefault(pair_key1(b.principal[r], key, TAG_PROBE), (r, h))
    if not first:
        return
    uniq = sorted(first)
    slots, absent = _upsert(enr.pairs, uniq)
    last, horizon, probes = column_view(enr.pairs.cols["last_seen"]), enr.config.horizon_s, sig["probes"]
    for key, s, new_key in zip(uniq, slots, absent):
        r, h = first[key]
        t = b.time[r]
        if new_key or last[s] < t - horizon:
            probes[r] = 1.0 if probes[r] == 1.0 or (strong[r] and not h) else 0.5
        last[s] = t
    whole = [r for r in range(b.n) if probes[r] == 1.0]
    if whole:
        _score_probers(enr, b, whole, sig)


def _score_probers(enr: OwnershipEnricher, b: _Rows, rows: list[int], sig: dict[str, list[float]]) -> None:
    """``streams.probes._score_probers`` (``rows``: the rows with a fresh strong probe, ascending)."""
    group: dict[int, list[int]] = {}
    for r in rows:
        group.setdefault(b.principal[r], []).append(r)
    keys = {pair_key1(p, 0, TAG_PROBER): p for p in group}
    uniq = sorted(keys)
    slots, absent = _upsert(enr.pairs, uniq)
    c, horizon = _views(enr.pairs), enr.config.horizon_s
    for key, s, new_key in zip(uniq, slots, absent):
        mine = group[keys[key]]
        before = 0 if new_key or c["last_seen"][s] < b.time[mine[0]] - horizon else c["count"][s]
        c["count"][s], c["last_seen"][s] = min(before + len(mine), 1 << 20), b.time[mine[-1]]
        for nth, r in enumerate(mine, before + 1):
            sig["repeat_probes"][r] = float(nth >= 2)
            sig["repeat_probers"][r] = float(nth == 2)


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
    readers = c["readers"]
    back: dict[int, None] = {}
    for _, s, r in entries:
        t = b.time[r]
        if b.principal[r] != owner[s]:
            if state[s] == PROVISIONAL:
                contested[s] = True
            readers[s] |= 1 << (b.principal[r] & 63)  # answered, not its owner
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
