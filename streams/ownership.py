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
* ``probes`` -- at most one per row: 1 or 0.5 when the row *probed* an object it could
  not know (``streams.probes``). Probing rows are refused (403/404) or answered reads
  (2xx, one object) of another owner's object in a *crowded* id block (at least
  ``crowd_principals`` distinct principals refused objects not their own there within
  ``horizon_s``) where the reader itself was refused two distinct objects not its own:
  a walk of a leaking endpoint (one 404 before reading, a support agent meeting a
  deleted order, is not). An object counts only if it is not the principal's own, was
  never answered 2xx to it (the ``readers`` bits of the objects table: lost access, a
  viewer pressing Edit after reading), and each (principal, object) once per
  ``horizon_s``. A whole probe (1) is a refusal in a *walked* block (crowded, and one
  of its refusals a 403: objects of others exist there, so its 404s are gaps of a
  walk, not documents deleted under several people's bookmarks) or such a read, by a
  principal without *standing* in the service (no more answered object calls than
  refusals of objects not its own there within ``horizon_s``: support staff and
  employees meet restricted objects among many answered ones, the accounts of a
  distributed enumeration are refused more than answered);
  anything else refused is half (0.5): a lone 403 (a restricted link), a lone 404 (a
  dead link), a refusal of objects others were refused too (following one dead or
  forbidden link is no walk), a further object of a known owner the principal
  already touched (a colleague's documents). Summed per principal over hours it
  separates a prober (every access a first-seen object of someone else) from a user
  who hit a few stale or restricted links: the signal of low-and-slow and
  distributed enumeration, where each principal makes only a handful of calls.
* ``repeat_probes`` -- 1 on each row with a whole probe past its principal's first
  within ``horizon_s``, and ``repeat_probers`` -- 1 on the row of its second: summed
  per client address, what probers behind it do and how many distinct ones there are
  (one user who lost access to many objects is one prober; a gateway of users who
  each hit one dead link or open two restricted ones adds nothing: whole probes are
  steps of a walk).

State is three ``streams.keytable.KeyTable``s of 64-bit keys (objects, pairs --
owners, probes, probers, per-principal blocks, refused objects, answered and refused
calls per principal and service -- and blocks; ``OwnershipConfig``
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
from streams.ownsmall import TAG_ANSWERED as _TAG_ANSWERED
from streams.ownsmall import TAG_BLOCK as _TAG_BLOCK
from streams.ownsmall import TAG_DENIED as _TAG_DENIED
from streams.ownsmall import TAG_OWNER as _TAG_OWNER
from streams.ownsmall import TAG_PBLOCK as _TAG_PBLOCK
from streams.probes import bit64, followed, or_by, score_probes

__all__ = ["OWNERSHIP_SIGNALS", "OwnershipConfig", "OwnershipEnricher", "hex64"]

OWNERSHIP_SIGNALS: tuple[str, ...] = ("foreign_objects", "own_objects", "new_objects", "denied_objects",
                                      "foreign_owners", "thin_owners", "dense_blocks", "probes", "repeat_probes",
                                      "repeat_probers")

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


class OwnershipEnricher:
    """Learns object owners per service and scores each row against them (see the module docstring)."""

    name = "ownership"
    signals = OWNERSHIP_SIGNALS

    def __init__(self, config: OwnershipConfig | None = None) -> None:
        self.config = c = config or OwnershipConfig()
        self.objects = KeyTable(c.objects, {"owner": np.uint64, "first": np.float64, "state": np.int8,
                                            "contested": np.bool_, "hits": np.int32, "readers": np.uint64})
        self.pairs = KeyTable(c.pairs, {"count": np.int32, "mask": np.uint64})
        self.blocks = KeyTable(c.blocks, {"start": np.float64, "mask": np.uint64, "refusers": np.uint64,
                                          "forbidden": np.uint64})

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
        owner, eligible, half = self._score_objects(batch, slots, out)
        rows, p = batch.object_row, batch.principal_hash
        eligible &= refused[rows] | ~half  # a further object of an owner already touched: refusals only, as half
        notown = np.bincount(rows, owner != p[rows], batch.n) > 0  # names an object not its own
        crowding = refused & notown
        walked, self_refused = self._score_blocks(batch, refused | (out["foreign_objects"] > 0), crowding,
                                                  crowding & (batch.status == 403), out)
        read = self_refused & ~refused & (batch.records == 1) & (batch.status // 100 == 2)
        strong = ((walked & refused) | read) & ~self._standing(batch, crowding, read) & ~followed(self, batch, keys, owner != p[rows], refused)
        score_probes(self, batch, keys, eligible, half, refused | read, strong, out)
        self._learn_access(batch, keys, slots)

    def _standing(self, batch: BatchView, refusing: _B, read: _B) -> _B:
        """Rows whose principal has standing in the row's service: more answered object calls (no probe reads) than
        refusals on objects not its own there within the horizon, this batch folded in. A support agent or an
        employee with a working history meets restricted objects among hundreds of answered ones; the accounts of a
        distributed enumeration are refused more than they are answered. Only rows with objects and a principal count.
        """
        has = np.bincount(batch.object_row, minlength=batch.n) > 0
        rows = np.flatnonzero(has & (batch.principal_hash != 0))
        if not len(rows):
            return np.zeros(batch.n, np.bool_)
        answered = (batch.status[rows] // 100 == 2) & (batch.records[rows] <= self.config.list_max) & ~read[rows]
        principal, service = batch.principal_hash[rows], batch.service_hash[rows]
        ka, kd = pair_key(principal, service, _TAG_ANSWERED), pair_key(principal, service, _TAG_DENIED)
        every = np.concatenate([ka, kd])
        uniq, inv = np.unique(every, return_inverse=True)
        inv = inv.reshape(-1)
        add = np.bincount(inv, np.concatenate([answered, refusing[rows]]), len(uniq)).astype(np.int64)
        newest = float(batch.time[rows].max())
        slots, absent, _ = self.pairs.upsert(uniq)
        c = self.pairs.cols
        stale = absent | (c["last_seen"][slots] < newest - self.config.horizon_s)
        c["count"][slots] = np.minimum(np.where(stale, 0, c["count"][slots]) + add, 1 << 20)
        c["last_seen"][slots] = newest
        counts = c["count"][slots][inv]
        out = np.zeros(batch.n, np.bool_)
        out[rows] = counts[: len(rows)] > counts[len(rows):]
        return out

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

    def _score_objects(self, batch: BatchView, slots: _I, out: Signals) -> tuple[_U, _B, _B]:
        """own, foreign and new objects per row (and the owners' pairs); per entry, its owner (0 = unknown), whether
        it may be a probe (not the principal's own, never answered 2xx to it) and whether only half of one (a known
        other owner the principal touched before within the horizon)."""
        rows, n = batch.object_row, batch.n
        principal = batch.principal_hash[rows]
        known = slots >= 0
        owner = np.where(known, self.objects.cols["owner"][slots], np.uint64(0))
        state = np.where(known, self.objects.cols["state"][slots], 0)
        readers = np.where(known, self.objects.cols["readers"][slots], np.uint64(0))
        person = principal != 0
        own = known & person & (owner == principal)
        foreign = known & person & (owner != principal) & (state >= CONFIRMED)
        out["own_objects"] = np.bincount(rows, own, n).astype(np.float64)
        out["foreign_objects"] = np.bincount(rows, foreign, n).astype(np.float64)
        out["new_objects"] = np.bincount(rows, ~known, n).astype(np.float64)
        eligible = person & (owner != principal) & ((readers & bit64(principal)) == 0)
        half = np.zeros(len(rows), np.bool_)
        if foreign.any():
            at = np.flatnonzero(foreign)
            half[at[self._score_owners(batch, rows[at], principal[at], owner[at], out)]] = True
        return cast(_U, owner), eligible, half

    def _score_owners(self, batch: BatchView, rows: _I, principal: _U, owner: _U, out: Signals) -> _B:
        """foreign_owners and thin_owners from the (principal, owner) pair table; per entry, whether its owner was
        touched by the principal before (within the horizon, or by an earlier entry of the batch)."""
        every = pair_key(principal, owner, _TAG_OWNER)
        keys, first, inv, counts = np.unique(every, return_index=True, return_inverse=True, return_counts=True)
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
        inv = inv.reshape(-1)
        return cast(_B, (before[inv] > 0) | (np.arange(len(every)) != first[inv]))

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

    def _score_blocks(self, batch: BatchView, suspect: _B, crowding: _B, forbidding: _B, out: Signals) -> tuple[_B, _B]:
        """dense_blocks of the suspect (refused or foreign) rows; (the suspect rows in a *walked* block, those in a
        crowded block whose principal was itself refused two objects not its own there), within the horizon.

        Only ``crowding`` rows (refused on an object not the principal's own) crowd a block: a dead link to one's own
        object is no step of a walk. A block is crowded when ``crowd_principals`` principals were refused there, and
        walked when, besides, one of them was refused with a 403 (``forbidding``): objects of others exist there, so
        its 404s are gaps of a walk rather than deleted objects that several people had bookmarked.
        """
        walked, self_refused = np.zeros(batch.n, np.bool_), np.zeros(batch.n, np.bool_)
        found = self._blocks_of(batch) if (suspect & (batch.principal_hash != 0)).any() else None
        if found is None or not suspect[found[0]].any():
            return walked, self_refused
        sus = suspect[found[0]]
        rows, bkeys = found[0][sus], pair_key(batch.service_hash[found[0][sus]], found[1][sus], _TAG_BLOCK)
        principal, t, flagged = batch.principal_hash[rows], batch.time[rows], crowding[rows]
        crowd, refusers, forbidden = self._fold_blocks(bkeys, bit64(principal), t, flagged, forbidding[rows])
        obj_bits = np.zeros(batch.n, np.uint64)
        np.bitwise_or.at(obj_bits, batch.object_row, bit64(batch.object_hash))
        alone, mine = self._fold_pblocks(pair_key(principal, bkeys, _TAG_PBLOCK), obj_bits[rows], t, flagged)
        dense = (np.bitwise_count(crowd) >= self.config.dense_principals) | (np.bitwise_count(alone) >= self.config.dense_objects)
        out["dense_blocks"] = np.bincount(rows, dense, batch.n).astype(np.float64)
        hot = np.bitwise_count(refusers) >= self.config.crowd_principals
        walked[rows[hot & (forbidden != 0)]] = True
        self_refused[rows[hot & (mine >= 2)]] = True
        return walked, self_refused

    def _fold_blocks(self, keys: _U, bits: _U, t: _F, flagged: _B, forbidding: _B) -> tuple[_U, _U, _U]:
        """OR the principals' ``bits`` into each block's mask, the flagged ones into its refusers and the forbidding
        ones into its forbidden mask (all restarted when the block is older than the horizon); per entry, the three."""
        uniq, inv, acc = or_by(keys, bits)
        newest = float(t.max())
        slots, absent, _ = self.blocks.upsert(uniq)
        c = self.blocks.cols
        stale = absent | (c["start"][slots] < newest - self.config.horizon_s)
        got = []
        for name, sel in (("mask", None), ("refusers", flagged), ("forbidden", forbidding)):
            add = acc
            if sel is not None:
                add = np.zeros(len(uniq), np.uint64)
                np.bitwise_or.at(add, inv[sel], bits[sel])
            c[name][slots] = np.where(stale, np.uint64(0), c[name][slots]) | add
            got.append(np.asarray(c[name][slots][inv], np.uint64))
        c["last_seen"][slots] = newest
        c["start"][slots] = np.where(stale, newest, c["start"][slots])
        return got[0], got[1], got[2]

    def _fold_pblocks(self, keys: _U, bits: _U, t: _F, flagged: _B) -> tuple[_U, _U]:
        """OR the objects' ``bits`` into each (principal, block) pair's mask (restarted when not seen within the
        horizon) and count the flagged entries that bring bits the mask lacked (distinct refused objects, one per
        call); per entry, the mask and the count."""
        uniq, inv, acc = or_by(keys, bits)
        newest = float(t.max())
        slots, absent, _ = self.pairs.upsert(uniq)
        c = self.pairs.cols
        stale = absent | (c["last_seen"][slots] < newest - self.config.horizon_s)
        old = np.where(stale, np.uint64(0), c["mask"][slots])
        fresh = np.flatnonzero(flagged & ((bits & ~old[inv]) != 0))
        _, first = np.unique(pair_key(inv[fresh].astype(np.uint64), bits[fresh]), return_index=True)
        counts = np.where(stale, 0, c["count"][slots]) + np.bincount(inv[fresh[first]], minlength=len(uniq))
        c["count"][slots] = np.minimum(counts, 1 << 20)
        c["mask"][slots], c["last_seen"][slots] = old | acc, newest
        return np.asarray(c["mask"][slots][inv], np.uint64), np.asarray(c["count"][slots][inv], np.uint64)

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
        np.bitwise_or.at(c["readers"], slot[other], bit64(principal[other]))  # answered, not its owner
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
