"""Call edges: a learned allow-list of caller -> (service, method, template), and first-seen external hosts.

``EdgeEnricher`` is an ``Enricher`` (``streams.batch``). A *caller* is the
source workload for service calls, a cohort for end users (every principal
behind one source workload) and two cohorts for callers with neither
(anonymous, inside or outside the cluster). For
its first ``learn_s`` seconds and ``learn_calls`` calls a caller's edges are
learned; afterwards an edge it never called is *provisional*: it is scored, and
it becomes learned when it settles (a service: ``promote_calls`` successful
calls spread over ``promote_s`` with no 401/403; a user cohort: successful calls
by ``promote_callers`` distinct principals, ``promote_callers_privileged`` for a
privileged template), so a legitimate new dependency of a rollout stops being
news after a few minutes and is never scored again. Signals, one float per row:

* ``novel_edge``: the first call of the caller (of the principal, for users) on
  a provisional edge, weighted by rarity ``1 / (1 + learned callers of the edge
  cluster-wide)``: an edge many callers use is ordinary.
* ``novel_privileged_edge``: the same times the privilege of the template
  (``ingest.privilege``: admin, export, delete, internal, credential, debug).
* ``novel_edge_denied``: the first 401/403 answer on a provisional edge of that
  caller (principal): being refused on a new edge is strong evidence.
* ``rare_function``: every call of an end user on a privileged function its
  cohort does not use, times privilege, times ``1 / (1 + principals that used it
  successfully)`` (BFLA: an admin-only delete or export, a credential change).
* ``new_external_host``: the first call of a source workload (or address) to an
  external host it never called, after the source's own learning period (a
  workload learns from all its calls, principals or not); ``new_host_bytes``:
  request bytes sent to an external host within ``host_settle_s`` of its first
  sighting (an upload to a first-seen host is how data leaves). The host is the
  destination service, which the collectors name after the external host.

The verdict of an edge signal is scoped to the edge: the processor names the edge of
the row that raised the signal (``streams.processor``), so a compromised
workload is cut off from the privileged edge it abused while its ordinary calls
go on. Batches of at most ``small_rows`` rows (the live worker's are 5-50) take the
plain-Python path of ``streams.edgesmall`` (the same state and signals): a
30-row batch costs 0.10 ms there against 0.51 ms vectorised. State is four
bounded tables (``streams.keytable.KeyTable``: vectorised open-addressing index,
numpy columns, oldest evicted past a budget and counted); ``export``/``restore``
round-trip it as ``.npz`` bytes (no pickle).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ingest.privilege import PrivilegeIndex
from streams.batch import BatchView, Signals, hash64
from streams.edgesmall import ANON, COHORT, HOST, SmallPath
from streams.keytable import KeyTable, mix, pair_key

__all__ = ["EdgeConfig", "EdgeEnricher"]

_I = npt.NDArray[np.intp]
_F = npt.NDArray[np.float64]
_U = npt.NDArray[np.uint64]
_B = npt.NDArray[np.bool_]

# Salts that keep the key spaces apart: user cohorts, anonymous cohorts, (principal, edge) pairs, host pairs.
_COHORT, _ANON = np.uint64(COHORT), np.uint64(ANON)
_HOST = np.uint64(HOST)

SIGNALS: tuple[str, ...] = ("novel_edge", "novel_privileged_edge", "novel_edge_denied", "rare_function", "new_external_host", "new_host_bytes")


@dataclass(frozen=True)
class EdgeConfig:
    """Learning, settling and memory budgets of ``EdgeEnricher`` (see the module docstring).

    ``from_windows(window_s, learn_windows)`` derives ``learn_s`` from the worker's windows.
    """

    learn_s: float = 180.0
    learn_calls: int = 20
    promote_calls: int = 5
    promote_s: float = 120.0
    promote_callers: int = 3
    promote_callers_privileged: int = 20
    host_settle_s: float = 3600.0
    max_callers: int = 100_000
    max_pairs: int = 400_000
    max_edges: int = 100_000
    max_hosts: int = 100_000

    def __post_init__(self) -> None:
        for name in ("learn_s", "promote_s", "host_settle_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"EdgeConfig.{name}={getattr(self, name)!r} must be >= 0")
        for name in ("learn_calls", "promote_calls", "promote_callers", "promote_callers_privileged", "max_callers", "max_pairs", "max_edges", "max_hosts"):
            if getattr(self, name) < 1:
                raise ValueError(f"EdgeConfig.{name}={getattr(self, name)!r} must be >= 1")

    @classmethod
    def from_windows(cls, window_s: float, learn_windows: int, **overrides: Any) -> EdgeConfig:
        """The worker's learning period (``learn_windows`` windows of ``window_s``), other settings as given."""
        return cls(learn_s=float(window_s * learn_windows), **overrides)


class _StringHashes:
    """``hash64`` of strings, memoised by value (a batch's 40 workload names cost a dictionary probe each)."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.memo: dict[str | None, int] = {None: 0}

    def __call__(self, values: pa.Array) -> _U:
        """One hash per value (0 for null) of an array of distinct values (a dictionary)."""
        return np.array(self.each(values.to_pylist()), dtype=np.uint64)

    def each(self, names: list[str | None]) -> list[int]:
        """One hash per name (0 for None), as Python ints."""
        memo = self.memo
        got = [memo.get(v) for v in names]
        if None not in got:
            return got  # type: ignore[return-value]
        missing = list(dict.fromkeys(v for v, h in zip(names, got) if h is None))
        if len(memo) + len(missing) > self.limit:
            memo.clear()
            memo[None] = 0
        fresh = dict(zip(missing, hash64(pa.array(missing, pa.string())).tolist()))
        memo.update(fresh)
        return [fresh[v] if h is None else h for v, h in zip(names, got)]


def _first_in_batch(slots: _I) -> _B:
    """Rows that are the first to name their slot in this batch."""
    out = np.zeros(len(slots), dtype=bool)
    out[np.unique(slots, return_index=True)[1]] = True
    return out


@dataclass
class _Rows:
    """The provisional rows of a batch and what each knows (indices into the batch)."""

    rows: _I
    allow: _I  # slot of the (caller, edge) pair
    subject: _I  # slot of the pair whose first call is news: the allow pair (services), (principal, edge) (users)
    novel: _B  # first call of the subject pair, caller past learning
    user: _B
    ok: _B
    denied: _B
    priv: _F


class EdgeEnricher:
    """Learned call edges and first-seen external hosts (an ``Enricher``; see the module docstring).

    >>> e = EdgeEnricher(EdgeConfig(learn_s=0.0, learn_calls=1))
    >>> e.name, e.signals[:2]
    ('edges', ('novel_edge', 'novel_privileged_edge'))
    """

    name = "edges"
    signals = SIGNALS
    #: batches of at most this many rows take the plain-Python path (``streams.edgesmall``: same state, same signals);
    #: measured per call, Python against numpy: 64 rows 0.21/0.59 ms, 128 0.33/0.66, 256 0.62/0.73, 512 1.51/0.80
    #: (so not ``streams.batch.SMALL_BATCH``, 512)
    small_rows = 128

    def __init__(self, config: EdgeConfig | None = None) -> None:
        self.config = config or EdgeConfig()
        c = self.config
        self.callers = KeyTable(c.max_callers, {"first_seen": np.float64, "calls": np.float64})
        self.pairs = KeyTable(c.max_pairs, {"ok_first": np.float64, "ok_last": np.float64, "ok_calls": np.float64,
                                            "denied": np.float64, "callers": np.float64, "learned": np.uint8, "edge": np.uint64})
        self.edges = KeyTable(c.max_edges, {"popularity": np.float64})
        self.hosts = KeyTable(c.max_hosts, {"first_seen": np.float64, "settled": np.uint8})
        self.privilege = PrivilegeIndex()
        self._priv: dict[int, float] = {}
        self._names = _StringHashes()
        self._small = SmallPath(self)

    @property
    def evicted(self) -> int:
        """Entries evicted from every table so far (a caller or edge forgotten is learned again, never scored)."""
        return self.callers.evicted + self.pairs.evicted + self.edges.evicted + self.hosts.evicted

    def enrich(self, batch: BatchView) -> Signals:
        """The per-row signals of one batch (see the module docstring), after updating the state with it."""
        out = {name: np.zeros(batch.n) for name in SIGNALS}
        if batch.n == 0:
            return out
        if batch.n <= self.small_rows:
            self._small.enrich(batch, out)
        else:
            caller, workload, learn, source_learn = self._callers(batch)
            self._edges(batch, caller, learn, out)
            self._hosts(batch, workload, source_learn, out)
        if self.callers.evict_oldest() + self.pairs.evict_oldest() + self.hosts.evict_oldest():
            self._small.clear()  # slots moved
        self.edges.evict_oldest()
        return out

    def _callers(self, batch: BatchView) -> tuple[_U, _U, _B, _B]:
        """Per row: caller key, source workload hash, is the caller learning, is the source workload learning.

        A caller is the source workload (service calls), its user cohort (calls
        with a principal) or an anonymous cohort, internal or external (neither).
        Callers are few per batch: each is keyed and counted once, by a small code.
        """
        encoded = pc.dictionary_encode(batch.source_workload, null_encoding="encode")
        names = self._names(encoded.dictionary)
        widx = np.asarray(encoded.indices, dtype=np.intp)
        workload = names[widx]
        kind = np.where(batch.is_service, np.where(workload == 0, 2 + batch.external.astype(np.intp), 0), 1)
        code = widx * 4 + kind
        size = 4 * len(names)
        present = np.flatnonzero(np.bincount(code, minlength=size))
        w, k = names[present // 4], present % 4
        keys = np.where(k == 0, w, np.where(k == 1, mix(w ^ _COHORT), mix(k.astype(np.uint64) ^ _ANON)))
        # a user cohort's source workload learns too: its age says when that workload's egress is news
        proxied = np.flatnonzero((k == 1) & (w != 0))
        counts = np.bincount(code, weights=batch.first, minlength=size)[present]
        first = np.full(size, np.inf)
        np.minimum.at(first, code, batch.time)
        times = np.concatenate([first[present], first[present[proxied]]])
        learning = self._learning(np.concatenate([keys, w[proxied]]), times, np.concatenate([counts, counts[proxied]]), float(batch.time.max()))
        slot_of_code = np.zeros(size, dtype=np.intp)
        slot_of_code[present] = np.arange(len(present))
        row = slot_of_code[code]
        source = learning[: len(present)].copy()
        source[proxied] = learning[len(present) :]
        return keys[row], workload, learning[row], source[row]

    def _learning(self, keys: _U, first: _F, counts: _F, newest: float) -> _B:
        """Per key: still learning at ``newest``? Records first sightings and adds ``counts`` calls."""
        c = self.config
        slots, _, new_slots = self.callers.upsert(keys, np.full(len(keys), newest))
        cols = self.callers.cols
        cols["first_seen"][new_slots] = np.inf
        np.minimum.at(cols["first_seen"], slots, first)
        before = cols["calls"][slots]
        np.add.at(cols["calls"], slots, counts)
        return (newest - cols["first_seen"][slots] < c.learn_s) | (before < c.learn_calls)

    def _priv_weights(self, batch: BatchView, rows: _I) -> _F:
        """Privilege weight of the given rows, classified once per distinct edge (memoised across batches)."""
        uniq, first_idx, inverse = np.unique(batch.edge_hash[rows], return_index=True, return_inverse=True)
        memo, weights = self._priv, np.empty(len(uniq))
        for j, (h, i) in enumerate(zip(uniq.tolist(), rows[first_idx].tolist())):
            w = memo.get(h)
            if w is None:
                if len(memo) >= 65536:
                    memo.clear()
                w = memo[h] = self.privilege.weight(str(batch.method[i].as_py() or "-"), str(batch.template[i].as_py() or "-"))
            weights[j] = w
        return weights[inverse.reshape(-1)]

    def _edges(self, batch: BatchView, caller: _U, learn: _B, out: Signals) -> None:
        """Learn (caller, edge) pairs; score the rows of provisional ones; settle them."""
        t, edge = batch.time, batch.edge_hash
        slots, new_first, new_slots = self.pairs.upsert(pair_key(caller, edge), t)
        cols = self.pairs.cols
        cols["ok_first"][new_slots] = np.inf
        cols["learned"][slots[new_first]] = learn[new_first]
        cols["edge"][slots[new_first]] = edge[new_first]
        self._popularity(edge[new_first & learn])
        rows = np.flatnonzero(batch.first & (cols["learned"][slots] == 0))
        if len(rows):
            self._score(batch, rows, slots, new_first, learn, out)

    def _score(self, batch: BatchView, rows: _I, slots: _I, new_first: _B, learn: _B, out: Signals) -> None:
        """Score the given rows (first calls on provisional pairs) and settle their pairs; the arrays are per batch row."""
        edge = batch.edge_hash
        p = self._provisional(batch, rows, slots, new_first, learn)
        rarity = 1.0 / (1.0 + self._popularity_of(edge[rows]))
        out["novel_edge"][rows] = p.novel * rarity
        out["novel_privileged_edge"][rows] = p.novel * rarity * p.priv
        cols = self.pairs.cols
        fresh = p.denied & ~learn[rows] & (cols["denied"][p.subject] == 0)
        fresh &= _first_in_batch(np.where(fresh, p.subject, -1 - np.arange(len(rows))))
        out["novel_edge_denied"][rows[fresh]] = 1.0
        self._settle(p, batch.time[rows], out)

    def _provisional(self, batch: BatchView, rows: _I, allow: _I, allow_new: _B, learn: _B) -> _Rows:
        """What the provisional rows know; users' (principal, edge) pairs are upserted here."""
        user = ~batch.is_service[rows]
        subject, novel = allow[rows].copy(), allow_new[rows].copy()
        u = np.flatnonzero(user)
        if len(u):
            keys = mix(batch.principal_hash[rows[u]] ^ mix(batch.edge_hash[rows[u]] ^ _COHORT))
            s_slots, s_new, s_created = self.pairs.upsert(keys, batch.time[rows[u]])
            self.pairs.cols["ok_first"][s_created] = np.inf
            self.pairs.cols["learned"][s_created] = 2  # a principal's pair: never an allow-list entry
            subject[u], novel[u] = s_slots, s_new
        status = batch.status[rows]
        denied = (status == 401) | (status == 403) | batch.auth_failed[rows]
        return _Rows(rows, allow[rows], subject, novel & ~learn[rows], user, (status >= 200) & (status < 400), denied,
                     self._priv_weights(batch, rows))

    def _settle(self, p: _Rows, t: _F, out: Signals) -> None:
        """Count answers on provisional pairs, score users' rare functions, promote pairs that settled."""
        cols, c = self.pairs.cols, self.config
        # principals other than this one that used the function successfully (before this batch)
        others = np.maximum(cols["callers"][p.allow] - (cols["ok_calls"][p.subject] > 0), 0.0)
        out["rare_function"][p.rows[p.user]] = (p.priv / (1.0 + others))[p.user]
        first_ok = p.ok & p.user & (cols["ok_calls"][p.subject] == 0)
        first_ok &= _first_in_batch(np.where(first_ok, p.subject, -1 - np.arange(len(p.rows))))
        np.add.at(cols["callers"], p.allow[first_ok], 1.0)
        np.add.at(cols["ok_calls"], p.allow[p.ok], 1.0)
        np.add.at(cols["ok_calls"], p.subject[p.ok & p.user], 1.0)
        np.add.at(cols["denied"], p.allow[p.denied], 1.0)
        np.add.at(cols["denied"], p.subject[p.denied & p.user], 1.0)
        np.minimum.at(cols["ok_first"], p.allow[p.ok], t[p.ok])
        np.maximum.at(cols["ok_last"], p.allow[p.ok], t[p.ok])
        a = p.allow
        service_ok = (cols["ok_calls"][a] >= c.promote_calls) & (cols["ok_last"][a] - cols["ok_first"][a] >= c.promote_s) & (cols["denied"][a] == 0)
        user_ok = cols["callers"][a] >= np.where(p.priv > 0, c.promote_callers_privileged, c.promote_callers)
        promote = np.unique(a[np.where(p.user, user_ok, service_ok)])
        promote = promote[cols["learned"][promote] == 0]
        cols["learned"][promote] = 1
        self._popularity(cols["edge"][promote])

    def _popularity(self, edges: _U) -> None:
        """One more learned caller for each edge given."""
        if len(edges):
            slots, _, _ = self.edges.upsert(edges, np.zeros(len(edges)))
            np.add.at(self.edges.cols["popularity"], slots, 1.0)

    def _popularity_of(self, edges: _U) -> _F:
        slots = self.edges.find(edges)
        return np.where(slots >= 0, self.edges.cols["popularity"][np.maximum(slots, 0)], 0.0)

    def _hosts(self, batch: BatchView, workload: _U, source_learn: _B, out: Signals) -> None:
        """First-seen external hosts per source workload (or address), and the bytes sent to them while new.

        The host is the destination service, which the collectors name after the external host.
        """
        rows = np.flatnonzero(batch.dest_external & batch.first)
        if not len(rows):
            return
        source = np.where(workload[rows] == 0, mix(batch.source_ip_hash[rows] ^ _HOST), workload[rows])
        t = batch.time[rows]
        quiet = source_learn[rows]
        anonymous = np.flatnonzero(workload[rows] == 0)
        if len(anonymous):  # an address calling out is a caller of its own
            ones = np.ones(len(anonymous))
            quiet[anonymous] = self._learning(source[anonymous], t[anonymous], ones, float(t.max()))
        slots, new_first, _ = self.hosts.upsert(mix(source ^ mix(batch.service_hash[rows] ^ _HOST)), t)
        cols = self.hosts.cols
        cols["settled"][slots[new_first]] = quiet[new_first]
        cols["first_seen"][slots[new_first]] = t[new_first]
        out["new_external_host"][rows[new_first & ~quiet]] = 1.0
        fresh = (cols["settled"][slots] == 0) & (t - cols["first_seen"][slots] < self.config.host_settle_s)
        out["new_host_bytes"][rows[fresh]] = batch.request_bytes[rows[fresh]]

    def export(self) -> bytes:
        """The state as ``.npz`` bytes (the changelog value)."""
        arrays: dict[str, npt.NDArray[np.generic]] = {}
        for name in ("callers", "pairs", "edges", "hosts"):
            for col, values in getattr(self, name).arrays().items():
                arrays[f"{name}.{col}"] = values
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        """Load state written by ``export`` (replaces the current state)."""
        with np.load(io.BytesIO(blob), allow_pickle=False) as data:
            for name in ("callers", "pairs", "edges", "hosts"):
                prefix = f"{name}."
                getattr(self, name).load({k[len(prefix):]: data[k] for k in data.files if k.startswith(prefix)})
        self._small.clear()
