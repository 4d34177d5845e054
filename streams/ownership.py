"""BOLA by ownership: who owns which object, learned from traffic, and per-row signals against it.

``OwnershipEnricher`` is an ``Enricher`` (``streams.batch``). Per destination
service it learns an owner principal for each object hash:

* **created** (strongest): ids a creating call (2xx) got back belong to its principal;
* **accessed**: the first principal that gets an object back (2xx, a call with 1 to
  ``list_max`` object ids: a single-object read or an own-list page) becomes its
  *provisional* owner; the same principal touching it again at least
  ``confirm_gap_s`` later *confirms* it. Another principal touching a provisional
  object marks it *contested*: it is never confirmed by access afterwards, so
  whoever came first (a support agent, a lucky attacker) cannot take it over,
  and the real owner's later reads are never counted as foreign either.
  Larger answers (bulk pages, exports) teach and contest nothing, so paging a
  whole collection cannot poison the table. Services (no principal) never own.

Signals, one float per row (names in ``OWNERSHIP_SIGNALS``):

* ``foreign_objects`` -- objects of the row whose confirmed or created owner is another principal;
* ``own_objects`` -- objects of the row the principal owns (any level);
* ``new_objects`` -- objects of the row never seen before (per service);
* ``denied_objects`` -- object ids of a row answered 403 or 404;
* ``foreign_owners`` -- foreign owners of the row this principal had not touched within ``horizon_s``;
* ``thin_owners`` -- +1 when a foreign owner is first touched, -1 when the principal
  touches a second object of that owner: summed (or decayed) it counts the owners
  touched through *one* object only. Enumeration is one object per owner; support
  staff read several objects of one customer, so their sum stays near 0;
* ``dense_blocks`` -- the row's ``object_blocks`` (``ingest.idblocks``) where, within
  ``horizon_s``, at least ``dense_principals`` distinct principals, or this principal
  with ``dense_objects`` distinct objects, had a denied or foreign touch; only rows
  that are themselves denied or foreign count. 0 when summaries carry no blocks.
  Like every signal here it is computed with the whole batch folded in (a burst is
  dense from its first row of the batch on), against the state before the batch.
* ``probes`` -- objects of the row the principal does not own (another's, or nobody's
  yet) that it *probed*: the call was refused (403/404), or it named one object whose
  id block is *crowded* (at least ``crowd_principals`` distinct principals were refused
  there an object not their own within ``horizon_s``: ids walked by many principals at once, where a leaking
  endpoint's 200 is one more step of the walk). Each (principal, object) counts once
  per ``horizon_s``, so retrying one dead link is one probe and an enumerator's every
  new id is another: 1 for a 403 (the object exists and is not yours) or a probe in a
  *walked* block (crowded, or where the principal had two denied or foreign objects),
  0.5 for a lone 404 (a dead link of a benign user looks the same). Summed per principal over hours it
  separates a prober (every access a first-seen object that is not its own) from a
  user who hit one stale link: it is the signal of low-and-slow and distributed
  enumeration, where each principal makes only a handful of calls.
* ``repeat_probes`` -- the row principal's strong (weight 1) probes past its first within
  ``horizon_s`` (on its first such row of the batch): what a *prober* adds. Summed per client
  address it counts what probers behind one address do, while a gateway of many
  users who each hit one dead link adds nothing.

State is three ``streams.keytable.KeyTable``s of 64-bit keys (objects, principal
pairs -- owners, probes and per-principal blocks -- and blocks; ``OwnershipConfig``
gives their budgets); after each batch, a table past its budget drops its least
recently touched keys (down to 90% of the budget), counted in ``evictions``.
``export``/``restore`` carry it as an ``.npz`` blob (no pickle). A batch is
vectorised (no Python work per row) unless it holds at most ``small_objects``
object ids: the worker's live batches of a few rows then take the plain-Python
path of ``streams.ownsmall`` (the same signals and state, tested against this
one), since on a 30-row batch numpy's fixed cost per call is most of the work.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streams.batch import BatchView, Signals, column, hash64, list_parts
from streams.keytable import KeyTable, pair_key
from streams.ownsmall import CONFIRMED, CREATED, PROVISIONAL, enrich_small
from streams.ownsmall import TAG_BLOCK as _TAG_BLOCK
from streams.ownsmall import TAG_OWNER as _TAG_OWNER
from streams.ownsmall import TAG_PBLOCK as _TAG_PBLOCK
from streams.ownsmall import TAG_PROBE as _TAG_PROBE
from streams.ownsmall import TAG_PROBER as _TAG_PROBER

__all__ = ["OWNERSHIP_SIGNALS", "OwnershipConfig", "OwnershipEnricher", "hex64"]

OWNERSHIP_SIGNALS: tuple[str, ...] = ("foreign_objects", "own_objects", "new_objects", "denied_objects",
                                      "foreign_owners", "thin_owners", "dense_blocks", "probes", "repeat_probes")

_U = npt.NDArray[np.uint64]
_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_B = npt.NDArray[np.bool_]



@dataclass(frozen=True)
class OwnershipConfig:
    """Budgets and thresholds of the ownership enricher (see the module docstring)."""

    objects: int = 1_000_000
    pairs: int = 1_000_000
    blocks: int = 262_144
    confirm_gap_s: float = 120.0
    horizon_s: float = 7200.0
    list_max: int = 25
    dense_principals: int = 4
    dense_objects: int = 4
    crowd_principals: int = 2
    #: batches with at most this many object ids take the plain-Python path (``streams.ownsmall``; 0 = never)
    small_objects: int = 48

    def __post_init__(self) -> None:
        for name in ("confirm_gap_s", "horizon_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"OwnershipConfig.{name}={getattr(self, name)} must be > 0")
        for name in ("list_max", "dense_principals", "dense_objects", "crowd_principals"):
            if getattr(self, name) < 1:
                raise ValueError(f"OwnershipConfig.{name}={getattr(self, name)} must be >= 1")
        if self.small_objects < 0:
            raise ValueError(f"OwnershipConfig.small_objects={self.small_objects} must be >= 0")


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def hex64(values: pa.Array) -> _U:
    """The 64-bit hashes of strings: 16 lower-case hex digits are read as the number they spell (what
    ``ingest.idblocks`` writes, ~10x cheaper than hashing), anything else goes through ``hash64``.

    >>> [int(h) for h in hex64(pa.array(["00000000000000ff", "000000000000000a"]))]
    [255, 10]
    """
    n = len(values)
    if n == 0 or values.null_count or pa.types.is_large_string(values.type):
        return hash64(values)
    offsets = np.frombuffer(values.buffers()[1], np.int32)[values.offset : values.offset + n + 1]
    if offsets[-1] - offsets[0] != 16 * n or not (np.diff(offsets) == 16).all():
        return hash64(values)
    raw = np.frombuffer(values.buffers()[2], np.uint8)[offsets[0] : offsets[-1]]
    nibbles = _HEX[raw].reshape(n, 16)
    if (nibbles == 255).any():
        return hash64(values)
    out = (nibbles.astype(np.uint64) << _NIBBLE_SHIFTS).sum(axis=1, dtype=np.uint64)
    out[out == 0] = 1
    return cast(_U, out)


def _bits(h: _U) -> _U:
    return cast(_U, np.left_shift(np.uint64(1), h & np.uint64(63)))


def _or_by(keys: _U, values: _U) -> tuple[_U, _I, _U]:
    """Distinct keys, the index of each key in them, and the OR of the values per distinct key."""
    uniq, inv = np.unique(keys, return_inverse=True)
    acc = np.zeros(len(uniq), np.uint64)
    np.bitwise_or.at(acc, inv, values)
    return uniq, inv.astype(np.intp), acc


class OwnershipEnricher:
    """Learns object owners per service and scores each row against them (see the module docstring)."""

    name = "ownership"
    signals = OWNERSHIP_SIGNALS

    def __init__(self, config: OwnershipConfig | None = None) -> None:
        self.config = c = config or OwnershipConfig()
        self.objects = KeyTable(c.objects, {"owner": np.uint64, "first": np.float64, "state": np.int8,
                                            "contested": np.bool_, "hits": np.int32})
        self.pairs = KeyTable(c.pairs, {"count": np.int32, "mask": np.uint64})
        self.blocks = KeyTable(c.blocks, {"start": np.float64, "mask": np.uint64, "refusers": np.uint64})
        #: no block is crowded after this time (a bound kept as blocks fill; it spares the crowd lookups)
        self.crowd_until = -np.inf

    @property
    def evictions(self) -> dict[str, int]:
        """Rows evicted per table since start (or restore)."""
        return {"objects": self.objects.evicted, "pairs": self.pairs.evicted, "blocks": self.blocks.evicted}

    def enrich(self, batch: BatchView) -> Signals:
        """Signals of this batch against the state, then learn from it (creations first); evict past the budgets.

        A batch with at most ``small_objects`` object ids (and as many created ids) goes through the plain-Python
        path of ``streams.ownsmall``: the same signals and state, without numpy's fixed cost per call.
        """
        if len(batch.object_row) <= self.config.small_objects and len(batch.created_row) <= self.config.small_objects:
            out = enrich_small(self, batch)
        else:
            out = {s: np.zeros(batch.n, np.float64) for s in self.signals}
            self._fold(batch, out)
        for table in (self.objects, self.pairs, self.blocks):
            table.evict_oldest()
        return out

    def _fold(self, batch: BatchView, out: Signals) -> None:
        self._learn_created(batch)
        refused = ((batch.status == 403) | (batch.status == 404)) & (batch.records > 0)
        out["denied_objects"] = np.where(refused, batch.records, 0.0)
        if not len(batch.object_row):
            return
        keys = pair_key(batch.service_hash[batch.object_row], batch.object_hash)
        slots = self.objects.find(keys)
        owner = self._score_objects(batch, slots, out)
        rows = batch.object_row
        notown = np.bincount(rows, owner != batch.principal_hash[rows], batch.n) > 0  # names an object not its own
        candidate = notown & (batch.records == 1) & ~refused & (batch.principal_hash != 0)  # one object, not refused
        strong = self._score_blocks(batch, refused, out["foreign_objects"] > 0, candidate, refused & notown, out)
        strong |= batch.status == 403
        self._score_probes(batch, keys, owner, refused | (strong & candidate), strong, out)
        self._learn_access(batch, keys, slots)

    def _learn_created(self, batch: BatchView) -> None:
        rows = batch.created_row
        ok = (batch.principal_hash[rows] != 0) & (batch.status[rows] // 100 == 2)
        if not ok.any():
            return
        rows = rows[ok]
        keys, first = np.unique(pair_key(batch.service_hash[rows], batch.created_hash[ok]), return_index=True)
        rows = rows[first]
        slots = self.objects.upsert(keys)[0]
        t = batch.time[rows]
        c = self.objects.cols
        c["owner"][slots], c["state"][slots], c["contested"][slots] = batch.principal_hash[rows], CREATED, False
        c["first"][slots], c["last_seen"][slots], c["hits"][slots] = t, t, 1

    def _score_objects(self, batch: BatchView, slots: _I, out: Signals) -> _U:
        """own, foreign and new objects per row (and the owners' pairs); each object's owner (0 = unknown)."""
        rows, n = batch.object_row, batch.n
        principal = batch.principal_hash[rows]
        known = slots >= 0
        owner = np.where(known, self.objects.cols["owner"][slots], np.uint64(0))
        state = np.where(known, self.objects.cols["state"][slots], 0)
        person = principal != 0
        own = known & person & (owner == principal)
        foreign = known & person & (owner != principal) & (state >= CONFIRMED)
        out["own_objects"] = np.bincount(rows, own, n).astype(np.float64)
        out["foreign_objects"] = np.bincount(rows, foreign, n).astype(np.float64)
        out["new_objects"] = np.bincount(rows, ~known, n).astype(np.float64)
        if foreign.any():
            self._score_owners(batch, rows[foreign], principal[foreign], owner[foreign], out)
        return cast(_U, owner)

    def _score_owners(self, batch: BatchView, rows: _I, principal: _U, owner: _U, out: Signals) -> None:
        """foreign_owners and thin_owners from the (principal, owner) pair table."""
        keys, first, counts = np.unique(pair_key(principal, owner, _TAG_OWNER), return_index=True, return_counts=True)
        rows, t = rows[first], batch.time[rows[first]]
        slots, absent, _ = self.pairs.upsert(keys)  # distinct keys: one row per key
        c = self.pairs.cols
        before = np.where(absent | (c["last_seen"][slots] < t - self.config.horizon_s), 0, c["count"][slots])
        after = np.minimum(before + counts, 1 << 20)
        c["count"][slots], c["last_seen"][slots] = after, t
        new = before == 0
        out["foreign_owners"] += np.bincount(rows, new, batch.n)
        thin = new.astype(np.float64) - ((before <= 1) & (after >= 2))
        out["thin_owners"] += np.bincount(rows, thin, batch.n)

    def _blocks_of(self, batch: BatchView) -> tuple[_I, _U] | None:
        """(row, block hash) of the rows with a principal; ``None`` when there are none."""
        if hasattr(batch, "block_row"):  # decoded once by BatchView when it carries blocks
            rows, hashes = getattr(batch, "block_row"), getattr(batch, "block_hash")
        elif batch.table.schema.get_field_index("object_blocks") >= 0:
            rows, values = list_parts(column(batch.table, "object_blocks"))
            if not len(rows):
                return None
            hashes = hex64(values)
        else:
            return None
        keep = batch.principal_hash[rows] != 0
        return (rows[keep], hashes[keep]) if keep.any() else None

    def _score_blocks(self, batch: BatchView, refused: _B, foreign: _B, candidate: _B, crowding: _B, out: Signals) -> _B:
        """dense_blocks of the suspect (refused or foreign) rows; the rows in a walked block: candidates in a block
        crowded by refusals, refused rows in such a block or in one where their principal had two suspect objects.

        Only ``crowding`` rows (refused on an object not the principal's own) crowd a block: a dead link to one's own
        object is no step of a walk.
        """
        walked, suspect = np.zeros(batch.n, np.bool_), refused | foreign
        person = batch.principal_hash != 0
        if not ((suspect & person).any() or (candidate.any() and self.crowd_until >= batch.time.max())):
            return walked
        found = self._blocks_of(batch)
        if found is None:
            return walked
        rows, block = found
        bkeys = pair_key(batch.service_hash[rows], block, _TAG_BLOCK)
        sus = suspect[rows]
        if sus.any():
            rows_s, bkeys_s = rows[sus], bkeys[sus]
            principal, t = batch.principal_hash[rows_s], batch.time[rows_s]
            crowd = self._fold_masks(self.blocks, bkeys_s, _bits(principal), t, "start", crowding[rows_s])
            hot = self.blocks.find(bkeys_s)
            crowd_s = np.bitwise_count(self.blocks.cols["refusers"][hot]) >= self.config.crowd_principals
            self.note_crowds(hot[crowd_s])
            obj_bits = np.zeros(batch.n, np.uint64)
            np.bitwise_or.at(obj_bits, batch.object_row, _bits(batch.object_hash))
            alone = self._fold_masks(self.pairs, pair_key(principal, bkeys_s, _TAG_PBLOCK), obj_bits[rows_s], t, "last_seen")
            dense = (np.bitwise_count(crowd) >= self.config.dense_principals) | (np.bitwise_count(alone) >= self.config.dense_objects)
            out["dense_blocks"] = np.bincount(rows_s, dense, batch.n).astype(np.float64)
            walked[rows_s[(crowd_s | (np.bitwise_count(alone) >= 2)) & refused[rows_s]]] = True
        single = candidate[rows]
        if single.any() and self.crowd_until >= batch.time.max():
            slot = self.blocks.find(bkeys[single])
            c = self.blocks.cols
            live = (slot >= 0) & (c["start"][slot] >= float(batch.time.max()) - self.config.horizon_s)
            mask = np.where(live, c["refusers"][slot], np.uint64(0))
            walked[rows[single][np.bitwise_count(mask) >= self.config.crowd_principals]] = True
        return walked

    def _score_probes(self, batch: BatchView, keys: _U, owner: _U, probing: _B, strong: _B, out: Signals) -> None:
        """probes: first touches (per principal and object, within the horizon) of objects not its own on probing rows,
        1 each on strong rows (a 403, a walked block), 0.5 for a lone 404 (a dead link looks the same)."""
        rows = batch.object_row
        principal = batch.principal_hash[rows]
        cand = (principal != 0) & (owner != principal) & probing[rows]
        if not cand.any():
            return
        uniq, first = np.unique(pair_key(principal[cand], keys[cand], _TAG_PROBE), return_index=True)
        rows = rows[cand][first]
        t = batch.time[rows]
        slots, absent, _ = self.pairs.upsert(uniq)
        last = self.pairs.cols["last_seen"]
        fresh = absent | (last[slots] < t - self.config.horizon_s)
        last[slots] = t
        weight = np.where(strong[rows], 1.0, 0.5)
        out["probes"] = np.bincount(rows, fresh * weight, batch.n).astype(np.float64)
        if (fresh & strong[rows]).any():
            self._score_probers(batch, rows[fresh & strong[rows]], out)

    def _score_probers(self, batch: BatchView, rows: _I, out: Signals) -> None:
        """repeat_probes: a principal's fresh strong probes past its first within the horizon, on its first such row."""
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        principal, first, counts = np.unique(batch.principal_hash[rows], return_index=True, return_counts=True)
        rows, t = rows[first], batch.time[rows[first]]
        slots, absent, _ = self.pairs.upsert(pair_key(principal, np.zeros_like(principal), _TAG_PROBER))
        c = self.pairs.cols
        before = np.where(absent | (c["last_seen"][slots] < t - self.config.horizon_s), 0, c["count"][slots])
        c["count"][slots], c["last_seen"][slots] = np.minimum(before + counts, 1 << 20), t
        out["repeat_probes"] = np.bincount(rows, counts - (before == 0), batch.n).astype(np.float64)

    def note_crowds(self, slots: _I | list[int]) -> None:
        """Blocks at these slots are crowded: none is after the latest of their starts plus the horizon."""
        if len(slots):
            self.crowd_until = max(self.crowd_until, float(self.blocks.cols["start"][slots].max()) + self.config.horizon_s)

    def _fold_masks(self, table: KeyTable, keys: _U, bits: _U, t: _F, since: str, refused: _B | None = None) -> _U:
        """OR ``bits`` into each key's mask (restarted when older than the horizon); the mask per entry.

        With ``refused``, the bits of the refused entries go into ``refusers`` as well.
        """
        uniq, inv, acc = _or_by(keys, bits)
        newest = float(t.max())
        slots, absent, _ = table.upsert(uniq)
        c = table.cols
        stale = absent | (c[since][slots] < newest - self.config.horizon_s)
        mask = np.where(stale, np.uint64(0), c["mask"][slots]) | acc
        c["mask"][slots], c["last_seen"][slots] = mask, newest
        if refused is not None:
            racc = np.zeros(len(uniq), np.uint64)
            np.bitwise_or.at(racc, inv[refused], bits[refused])
            c["refusers"][slots] = np.where(stale, np.uint64(0), c["refusers"][slots]) | racc
        if since != "last_seen":
            c[since][slots] = np.where(stale, newest, c[since][slots])
        return np.asarray(mask[inv], np.uint64)

    def _learn_access(self, batch: BatchView, keys: _U, slots: _I) -> None:
        """First successful access: provisional owner; its return after the gap confirms; others contest.

        ``slots`` are the objects' slots found before this batch (-1 = new). Rows
        are in time order, so plain assignment keeps the latest time.
        """
        rows = batch.object_row
        ok = ((batch.status // 100 == 2) & (batch.principal_hash != 0) & (batch.records <= self.config.list_max))[rows]
        if not ok.any():
            return
        keys, slot, rows = keys[ok], slots[ok], rows[ok]
        principal, t = batch.principal_hash[rows], batch.time[rows]
        if (slot < 0).any():
            slot = self._add_objects(keys, slot, principal, t)
        c = self.objects.cols  # after the insertions: growing reallocates the columns
        other = principal != c["owner"][slot]
        c["contested"][slot[other & (c["state"][slot] == PROVISIONAL)]] = True
        back = slot[~other & (t - c["first"][slot] >= self.config.confirm_gap_s)]
        c["hits"][back] += 1
        c["state"][back[(c["state"][back] == PROVISIONAL) & ~c["contested"][back]]] = CONFIRMED
        c["last_seen"][slot] = t

    def _add_objects(self, keys: _U, slot: _I, principal: _U, t: _F) -> _I:
        """Insert the objects first seen in this batch (first principal = provisional owner); every slot."""
        new = slot < 0
        uniq, first = np.unique(keys[new], return_index=True)
        fresh = self.objects.upsert(uniq)[0]
        c = self.objects.cols
        c["owner"][fresh], c["state"][fresh] = principal[new][first], PROVISIONAL
        c["first"][fresh], c["hits"][fresh] = t[new][first], 1
        slot = slot.copy()
        slot[new] = fresh[np.searchsorted(uniq, keys[new])]
        return slot

    def export(self) -> bytes:
        """The three tables as one ``.npz`` blob (no pickle)."""
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name, table in (("objects", self.objects), ("pairs", self.pairs), ("blocks", self.blocks)):
            arrays.update({f"{name}.{k}": v for k, v in table.arrays().items()})
            arrays[f"{name}.evictions"] = np.array([table.evicted])
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load a blob written by ``export`` (budgets stay this enricher's own; ``last`` is the older name of ``last_seen``)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            for name, table in (("objects", self.objects), ("pairs", self.pairs), ("blocks", self.blocks)):
                if f"{name}.keys" not in data:
                    raise ValueError(f"ownership state blob lacks {name!r} (keys: {sorted(data.files)[:8]})")
                arrays = {k.split(".", 1)[1]: data[k] for k in data.files if k.startswith(f"{name}.")}
                if "last" in arrays:
                    arrays.setdefault("last_seen", arrays.pop("last"))
                table.load(arrays)
                table.evicted = int(arrays["evictions"][0]) if "evictions" in arrays else 0
        crowded = np.bitwise_count(self.blocks.cols["refusers"][: len(self.blocks)]) >= self.config.crowd_principals
        self.crowd_until = -np.inf
        self.note_crowds(np.flatnonzero(crowded))
