"""Credential abuse per source and per target: the ``credentials`` enricher of the worker.

Contract: pure (numpy only), vectorised, bounded. ``CredentialTables.enrich(batch)``
reads the login attempts of a ``BatchView`` and returns one float per row for each
name in ``SIGNALS``; rows that are not login attempts get 0 everywhere. A row is a
login attempt when it names an account (``credential_subject_hash``), or calls a
login-like endpoint (``ingest.loginsubject.is_login_path`` on POST), or failed
authentication (``auth_failed``: 401 or the derived ``auth_failure`` outcome, so an
API answering 403 or 200 with an error body counts). Three tables, each keyed by a
64-bit hash, with exponentially decayed counters (half-life ``half_life_s``, so a
slow attack still adds up over hours) and, for distinct counts, 32 time-stamped
slots per key (linear counting over the slots set within ``horizon_s``):

* **source** (the trusted client address, ``source_ip_hash``): attempts, failures,
  accounts with an *unresolved* failure (a later success of that account from that
  source clears it: a user who mistypes and then logs in leaves nothing behind, a
  corporate NAT where hundreds log in stays low, stuffing and spraying climb);
* **target** (the account, ``credential_subject_hash``): attempts, failures,
  sources with an unresolved failure on it, and the slots of sources that logged
  in successfully (its owner's devices). A target is *hot* when its failures reach
  ``hot_failures`` or its failing sources ``hot_sources``; every further failure on
  it from a source that never logged in to it is ``failure_on_hot_target``;
* **endpoint** (``edge_hash`` of the login call): failures on accounts that never
  logged in successfully (``unknown_account_failure``), decayed over
  ``endpoint_half_life_s``: slow stuffing from rotating addresses, invisible per
  source and per target, still raises it.

Values are causal: a row's value includes the rows before it in the batch and the
row itself, never later ones. Memory: each table holds at most its ``max_*`` keys
(about 170 bytes each plus a dict entry); past that the least recently updated
keys are evicted in blocks of 1/16 and counted (``evicted``). ``export``/``restore``
carry every table as ``numpy.savez`` bytes (no pickle).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ingest.loginsubject import is_login_path
from streams.batch import BatchView, Signals

__all__ = ["SIGNALS", "CredentialConfig", "CredentialTables", "Groups", "grouped_cumsum", "linear_count"]

#: the per-row signals, in order
SIGNALS: tuple[str, ...] = (
    "login_attempt", "login_failure", "source_failures", "source_failure_share", "source_accounts_failed",
    "target_failures", "target_sources", "failure_on_hot_target", "unknown_account_failure",
    "endpoint_unknown_failures",
)
SLOTS = 32
_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]
_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]
_EMPTY = np.float32(-np.inf)


@dataclass(frozen=True)
class CredentialConfig:
    """Horizons, hot-target thresholds and memory budgets of ``CredentialTables``."""

    half_life_s: float = 1800.0  # source and target counters
    horizon_s: float = 3600.0  # distinct slots older than this are dead
    endpoint_half_life_s: float = 600.0
    hot_failures: float = 5.5  # six failures in a short time (decay makes the sixth count a little under 6)
    hot_sources: float = 3.0
    max_sources: int = 65_536
    max_targets: int = 131_072
    max_endpoints: int = 1_024

    def __post_init__(self) -> None:
        for name in ("half_life_s", "horizon_s", "endpoint_half_life_s", "hot_failures", "hot_sources",
                     "max_sources", "max_targets", "max_endpoints"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"CredentialConfig.{name}={value!r}: must be positive")


@dataclass(frozen=True, slots=True)
class Groups:
    """Events grouped by key: a stable sort puts each group's events together, event order kept inside."""

    order: _I  # event indices, grouped
    starts: _I  # where each group starts in ``order``
    sorted_group: _I  # group number of each position of ``order``
    inverse: _I  # group number of each event
    keys: npt.NDArray[Any]  # the key of each group (ascending)
    singletons: bool  # every event is a group of its own

    @classmethod
    def of(cls, keys: npt.NDArray[Any]) -> Groups:
        """Group events by their key (any sortable dtype)."""
        order = np.argsort(keys, kind="stable")
        k = keys[order]
        flag = np.empty(len(k), bool)
        flag[:1] = True
        np.not_equal(k[1:], k[:-1], out=flag[1:])
        starts = np.flatnonzero(flag)
        sorted_group = np.cumsum(flag) - 1
        inverse = np.empty(len(k), np.intp)
        inverse[order] = sorted_group
        return cls(order, starts, sorted_group, inverse, k[starts], len(starts) == len(k))

    def cumsum(self, values: _F) -> _F:
        """Inclusive running sum of ``values`` (1-d, or 2-d along axis 0) within each group."""
        if self.singletons:
            return values.copy()
        v = values[self.order]
        cs = np.cumsum(v, axis=0)
        out = np.empty_like(values)
        out[self.order] = cs - (cs - v)[self.starts][self.sorted_group]
        return out

    def totals(self, values: _F) -> _F:
        """Sum of ``values`` per group."""
        return values.copy() if self.singletons else np.add.reduceat(values[self.order], self.starts, axis=0)


def grouped_cumsum(group: _I, values: _F) -> _F:
    """Inclusive running sum of ``values`` within each group, in the given (event) order.

    >>> grouped_cumsum(np.array([0, 1, 0, 1]), np.array([1.0, 2.0, 3.0, 4.0])).tolist()
    [1.0, 2.0, 4.0, 6.0]
    """
    return Groups.of(group).cumsum(values)


def linear_count(live: _F, slots: int = SLOTS) -> _F:
    """Linear-counting estimate of distinct items from the number of live slots."""
    return np.asarray(-slots * np.log(np.maximum(slots - live, 0.5) / slots), dtype=np.float64)


class _Table:
    """Keys -> rows of decayed counters and time-stamped slots; evicts the least recently updated."""

    COUNTERS = ("attempts", "failures")

    def __init__(self, capacity: int, slots: int) -> None:
        self.capacity, self.nslots = capacity, slots
        self.index: dict[int, int] = {}
        self.keys = np.zeros(capacity, np.uint64)
        self.last = np.full(capacity, -np.inf)
        self.attempts = np.zeros(capacity)
        self.failures = np.zeros(capacity)
        self.slots = np.full((capacity, slots), _EMPTY, np.float32)
        self.ok_mask = np.zeros(capacity, np.uint32)
        self._free = np.arange(capacity - 1, -1, -1, dtype=np.intp)  # a stack: rows popped from the end
        self._nfree = capacity
        self.evicted = 0

    @property
    def size(self) -> int:
        """Keys held."""
        return len(self.index)

    def rows_for(self, keys: _U) -> _I:
        """Rows of the given distinct keys, allocating (and evicting) as needed."""
        get = self.index.get
        rows = np.fromiter((get(k, -1) for k in keys.tolist()), np.intp, len(keys))
        missing = np.flatnonzero(rows < 0)
        if len(missing):
            fresh = self._allocate(len(missing), rows[rows >= 0])
            rows[missing] = fresh
            self.index.update(zip(keys[missing].tolist(), fresh.tolist()))
            self.keys[fresh] = keys[missing]
        return rows

    def _allocate(self, count: int, keep: _I) -> _I:
        if count > self._nfree:
            self._evict(count - self._nfree, keep)
        self._nfree -= count
        return self._free[self._nfree : self._nfree + count].copy()

    def _evict(self, count: int, keep: _I) -> None:
        room = self.capacity - len(keep)
        if count > room - self._nfree:
            raise ValueError(f"credential table capacity={self.capacity}: one batch needs {count + len(keep)} keys")
        ages = np.where(self.keys != 0, self.last, np.inf)
        ages[keep] = np.inf
        k = min(max(count, self.capacity // 16), room - self._nfree)
        victims = np.argpartition(ages, k - 1)[:k]
        for key in self.keys[victims].tolist():
            del self.index[key]
        self.evicted += k
        self._clear(victims)
        self._free[self._nfree : self._nfree + k] = victims
        self._nfree += k

    def _clear(self, rows: _I) -> None:
        self.keys[rows] = 0
        self.last[rows] = -np.inf
        self.attempts[rows] = self.failures[rows] = 0.0
        self.slots[rows] = _EMPTY
        self.ok_mask[rows] = 0

    def count(self, groups: Groups, rows: _I, t: _F, weights: _F, half_life: float) -> _F:
        """Fold decayed (attempts, failures) of events grouped by key (``rows``: the table row of each group).

        ``weights`` is (events, 2); returns each event's (attempts, failures) just after it.
        """
        now = float(t.max())
        keep = np.exp2(-np.maximum(now - self.last[rows], 0.0) / half_life)
        prior = np.stack([self.attempts[rows] * keep, self.failures[rows] * keep], axis=1)
        up = np.exp2((t - now) / half_life)[:, None]
        scaled = weights * up
        after = (groups.cumsum(scaled) + prior[groups.inverse]) / up
        total = prior + groups.totals(scaled)
        self.attempts[rows], self.failures[rows] = total[:, 0], total[:, 1]
        self.last[rows] = np.maximum(self.last[rows], now)
        return after

    def distinct(self, rows: _I, elements: _U, failed: _B, t_rel: _F, horizon: float) -> _F:
        """Unresolved distinct failing elements per event's row, just after it (a success clears its slot)."""
        m = self.nslots
        pair = rows * m + (elements >> np.uint64(40)).astype(np.intp) % m
        flat = self.slots.reshape(-1)
        alive_after = float(t_rel.min()) - horizon
        f = failed.astype(np.float64)
        pg, rg = Groups.of(pair), Groups.of(rows)
        fs = f[pg.order]
        prev = np.empty_like(fs)
        prev[1:] = fs[:-1]
        prev[pg.starts] = flat[pg.keys] >= alive_after
        delta = np.empty_like(f)
        delta[pg.order] = fs - prev
        live_before = (self.slots[rg.keys] >= alive_after).sum(axis=1).astype(np.float64)
        live = live_before[rg.inverse] + rg.cumsum(delta)
        ends = np.append(pg.starts[1:] - 1, len(fs) - 1)
        flat[pg.keys] = np.where(fs[ends] > 0, t_rel[pg.order][ends], -np.inf).astype(np.float32)
        return linear_count(live, m)

    def export(self) -> dict[str, npt.NDArray[np.generic]]:
        """The used rows as named arrays."""
        used = np.flatnonzero(self.keys != 0)
        return {"keys": self.keys[used], "last": self.last[used], "attempts": self.attempts[used],
                "failures": self.failures[used], "slots": self.slots[used], "ok_mask": self.ok_mask[used],
                "meta": np.array([self.capacity, self.nslots, self.evicted], np.int64)}

    def restore(self, arrays: dict[str, npt.NDArray[np.generic]]) -> None:
        """Load what ``export`` gave (capacity and slot count must match this table's)."""
        capacity, nslots, evicted = (int(x) for x in arrays["meta"])
        if (capacity, nslots) != (self.capacity, self.nslots):
            raise ValueError(f"credential table: saved capacity/slots {(capacity, nslots)} != {(self.capacity, self.nslots)}")
        self._clear(np.arange(self.capacity))
        n = len(arrays["keys"])
        for name in ("keys", "last", "attempts", "failures", "slots", "ok_mask"):
            getattr(self, name)[:n] = arrays[name]
        self.evicted = evicted
        self.index = {k: i for i, k in enumerate(self.keys[:n].tolist())}
        self._free = np.arange(self.capacity - 1, n - 1, -1, dtype=np.intp)
        self._free = np.concatenate([self._free, np.zeros(n, np.intp)])
        self._nfree = self.capacity - n


def _weights(attempts: _F, failures: _B) -> _F:
    return np.stack([attempts, failures.astype(np.float64)], axis=1)


def _slot_bits(elements: _U) -> npt.NDArray[np.uint32]:
    """One bit per element, at the slot ``_Table.distinct`` gives it."""
    return (np.uint32(1) << ((elements >> np.uint64(40)) % np.uint64(SLOTS)).astype(np.uint32)).astype(np.uint32)


class CredentialTables:
    """The ``credentials`` enricher (``streams.batch.Enricher``): per-source, per-target, per-endpoint tables.

    >>> CredentialTables().signals[:3]
    ('login_attempt', 'login_failure', 'source_failures')
    """

    name = "credentials"
    signals = SIGNALS

    def __init__(self, config: CredentialConfig | None = None) -> None:
        self.config = c = config or CredentialConfig()
        self.sources = _Table(c.max_sources, SLOTS)
        self.targets = _Table(c.max_targets, SLOTS)
        self.endpoints = _Table(c.max_endpoints, 0)
        self.base: float | None = None  # slot times are float32 seconds after this
        self._login_edges: dict[int, bool] = {}

    @property
    def evicted(self) -> dict[str, int]:
        """Keys evicted so far, per table."""
        return {"sources": self.sources.evicted, "targets": self.targets.evicted, "endpoints": self.endpoints.evicted}

    def _login_edge(self, batch: BatchView) -> _B:
        """Per row: a POST to a login-like template (decided once per edge)."""
        groups = Groups.of(batch.edge_hash)
        known = self._login_edges
        flags = np.empty(len(groups.keys), bool)
        for j, (edge, i) in enumerate(zip(groups.keys.tolist(), groups.order[groups.starts].tolist())):
            flag = known.get(edge)
            if flag is None:
                if len(known) >= 65_536:  # edges are few unless someone invents paths: start over then
                    known.clear()
                flag = known[edge] = batch.method[i].as_py() == "POST" and is_login_path(batch.template[i].as_py() or "")
            flags[j] = flag
        return flags[groups.inverse]

    def enrich(self, batch: BatchView) -> Signals:
        """Per-row signals of this batch (``SIGNALS``; 0 on rows that are no login attempt)."""
        out: Signals = {s: np.zeros(batch.n) for s in SIGNALS}
        if batch.n == 0:
            return out
        subject, failed_all = batch.credential_subject_hash, batch.auth_failed
        idx = np.flatnonzero(((subject != 0) | failed_all | self._login_edge(batch)) & batch.first)
        if not len(idx):
            return out
        t = batch.time[idx]
        if self.base is None:
            self.base = float(t.min())
        failed = failed_all[idx]
        status = batch.status[idx]
        ok = ~failed & (status >= 200) & (status < 400)
        out["login_attempt"][idx] = 1.0
        out["login_failure"][idx] = failed
        self._by_source(batch, idx, t, failed, ok, out)
        self._by_target(batch, idx, t, failed, ok, out)
        return out

    def _by_source(self, batch: BatchView, idx: _I, t: _F, failed: _B, ok: _B, out: Signals) -> None:
        c = self.config
        src = batch.source_ip_hash[idx]
        has = src != 0
        if not has.any():
            return
        sel, t, failed, ok = idx[has], t[has], failed[has], ok[has]
        groups = Groups.of(src[has])
        group_rows = self.sources.rows_for(groups.keys)
        rows = group_rows[groups.inverse]
        counts = self.sources.count(groups, group_rows, t, _weights(np.ones(len(sel)), failed), c.half_life_s)
        attempts, failures = counts[:, 0], counts[:, 1]
        out["source_failures"][sel] = failures
        out["source_failure_share"][sel] = failures / np.maximum(attempts, 1e-9)
        account = batch.credential_subject_hash[sel]
        judged = (account != 0) & (failed | ok)
        if judged.any():
            out["source_accounts_failed"][sel[judged]] = self.sources.distinct(
                rows[judged], account[judged], failed[judged], t[judged] - (self.base or 0.0), c.horizon_s)

    def _by_target(self, batch: BatchView, idx: _I, t: _F, failed: _B, ok: _B, out: Signals) -> None:
        c = self.config
        named = batch.credential_subject_hash[idx] != 0
        if not named.any():
            return
        sel, t, failed, ok = idx[named], t[named], failed[named], ok[named]
        groups, table = Groups.of(batch.credential_subject_hash[sel]), self.targets
        group_rows = table.rows_for(groups.keys)
        rows = group_rows[groups.inverse]
        failures = table.count(groups, group_rows, t, _weights(np.ones(len(sel)), failed), c.half_life_s)[:, 1]
        source = batch.source_ip_hash[sel]
        bits = _slot_bits(source)
        mask, okf = table.ok_mask[rows], ok.astype(np.float64)
        pairs = Groups.of(rows * SLOTS + (source >> np.uint64(40)).astype(np.intp) % SLOTS)
        owner = ((mask & bits) != 0) | (pairs.cumsum(okf) > okf)  # this source logged in to it before this row
        unknown = failed & (mask == 0) & ~(groups.cumsum(okf) > okf)  # the account never logged in (in memory)
        judged = failed | ok
        sources = np.zeros(len(sel))
        if judged.any():
            sources[judged] = table.distinct(rows[judged], source[judged], failed[judged],
                                             t[judged] - (self.base or 0.0), c.horizon_s)
        np.bitwise_or.at(table.ok_mask, rows[ok], bits[ok])
        hot = (failures >= c.hot_failures) | (sources >= c.hot_sources)
        out["target_failures"][sel] = failures
        out["target_sources"][sel] = sources
        out["failure_on_hot_target"][sel] = failed & hot & ~owner
        out["unknown_account_failure"][sel] = unknown
        edges = Groups.of(batch.edge_hash[sel])
        spread = self.endpoints.count(edges, self.endpoints.rows_for(edges.keys), t, _weights(np.ones(len(sel)), unknown),
                                      c.endpoint_half_life_s)
        out["endpoint_unknown_failures"][sel] = spread[:, 1]

    def export(self) -> bytes:
        """Every table and the time base as ``numpy.savez`` bytes."""
        arrays: dict[str, npt.NDArray[np.generic]] = {"base": np.array([math.nan if self.base is None else self.base])}
        for label, table in (("sources", self.sources), ("targets", self.targets), ("endpoints", self.endpoints)):
            arrays.update({f"{label}.{k}": v for k, v in table.export().items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load what ``export`` wrote (same budgets); pickled objects are refused."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        base = float(arrays["base"][0])
        self.base = None if math.isnan(base) else base
        for label, table in (("sources", self.sources), ("targets", self.targets), ("endpoints", self.endpoints)):
            table.restore({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(label + ".")})
