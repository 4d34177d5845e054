"""Credential abuse per source and per target: the ``credentials`` enricher of the worker.

Contract: pure (numpy only), bounded. ``CredentialTables.enrich(batch)`` reads the
login attempts of a ``BatchView`` and returns one float per row for each name in
``SIGNALS``; rows that are not login attempts get 0 everywhere (a batch without any
login gets one shared, read-only array of zeros for every signal). A row is a login
attempt when it names an account (``credential_subject_hash``), or calls a
login-like endpoint (``ingest.loginsubject.is_login_path`` on POST), or failed
authentication (``auth_failed``: 401 or the derived ``auth_failure`` outcome, so an
API answering 403 or 200 with an error body counts). Tables (``streams.credstate``),
each keyed by a 64-bit hash, with exponentially decayed counters and, for distinct
counts, 32 time-stamped slots per key (linear counting over the slots set within
``horizon_s``):

* **source** (the trusted client address, ``source_ip_hash``): attempts, failures,
  successes (half-life ``success_half_life_s``), the accounts logged in to from it
  (a 32-bit mask), accounts with an *unresolved* failure (a later success of
  that account from that source clears it: a user who mistypes and then logs in
  leaves nothing behind, a corporate NAT where hundreds log in stays low). A
  *success* is a 2xx/3xx answer on a template that checks a password: a reset,
  registration or logout template (``_NO_PROOF``) answers 2xx for anyone, so
  its rows count as attempts and never as successes;
* **target** (the account, ``credential_subject_hash``): attempts, failures,
  sources with an unresolved failure on it, and the slots of sources that logged
  in successfully (its owner's devices). A target is *hot* when its failures reach
  ``hot_failures`` or its failing sources ``hot_sources``; every further failure on
  it from a source that never logged in to it is ``failure_on_hot_target``;
* **endpoint** (``edge_hash`` of the login call): failures on accounts that never
  logged in successfully (``unknown_account_failure``), over ``endpoint_half_life_s``;
* **campaign** (one gauge per worker partition, ``streams.credstate.Campaign``):
  slow stuffing from rotating addresses. ``stuffing_accounts`` is an address's
  unresolved failed accounts when the distinct accounts it logged in to (a
  32-bit mask per address: the first success per account counts, repeats and
  password-reset or registration calls never do) stay at most ``ok_ratio`` of
  them (else 0: a NAT or an office logs in). An address whose
  ``stuffing_accounts`` reaches ``campaign_accounts`` is enlisted, and joins the
  gauge (decayed, half-life ``campaign_half_life_s``, once per four half-lives)
  ``campaign_grace_s`` later if it still qualifies then (a user who tried their
  e-mail after their user name has logged in by then); ``stuffing_campaign`` is
  the gauge without the address's own share: how many *other* addresses did the
  same lately. Joins are judged at the start of a batch on the state before it.

Values are causal: a row's value includes the rows before it in the batch and the
row itself, never later ones; decays are evaluated against the batch's newest
login. Batches of at most ``small_batch`` rows are searched for logins, and
batches with at most ``small_batch`` login rows folded, row by row in
plain Python (``streams.credsmall``; the worker's batches hold a few rows, where
numpy's fixed cost per call dominated: 30-row batches of a simulated run cost
0.55-0.70 ms CPU per call vectorised, 0.10-0.13 ms row by row, on the loaded
2-core machine), larger ones vectorised (20k rows: ~4 M rows/s); both give the
same values (tested). Memory: each table holds at most its ``max_*`` keys (about
200 bytes each plus a dict entry), least recently updated evicted first (ties by
key) and counted (``evicted``); at most ``campaign_pending`` addresses wait to join
the campaign. ``export``/``restore`` carry every table as ``numpy.savez``
bytes (no pickle).
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ingest.loginsubject import is_login_path
from streams.batch import BatchView, Signals
from streams.credsmall import alive_after, fold_small, stuffing_of
from streams.credstate import SLOTS, Campaign, Groups, LoginTable, linear_count, linear_count_one, slot_of

__all__ = ["SIGNALS", "CredentialConfig", "CredentialTables"]

#: the per-row signals, in order
SIGNALS: tuple[str, ...] = (
    "login_attempt", "login_failure", "source_failures", "source_failure_share", "source_accounts_failed",
    "target_failures", "target_sources", "failure_on_hot_target", "unknown_account_failure",
    "endpoint_unknown_failures", "stuffing_accounts", "stuffing_campaign",
)
_POS = {name: i for i, name in enumerate(SIGNALS)}
_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]
_B = npt.NDArray[np.bool_]
#: a template that answers 2xx whatever the password (reset, registration, logout): its successes prove nothing
_NO_PROOF = re.compile(r"(?<![a-z])(?:forgot|reset|recover|regist|sign-?up|log-?out|sign-?out)", re.IGNORECASE)
#: the shared zero arrays (``_zeros``) hold at most this many bytes
_ZEROS_BYTES = 4 << 20


@dataclass(frozen=True)
class CredentialConfig:
    """Horizons, thresholds of the hot-target and campaign signals, memory budgets of ``CredentialTables``."""

    half_life_s: float = 1800.0  # source and target counters
    horizon_s: float = 3600.0  # distinct slots older than this are dead
    endpoint_half_life_s: float = 600.0
    success_half_life_s: float = 86_400.0  # an address's successful logins
    ok_ratio: float = 0.5  # an address with more successes than this share of its unresolved accounts is no stuffing source
    campaign_accounts: float = 1.9  # unresolved accounts (linear count: 2 accounts read 2.07) that join the gauge
    campaign_half_life_s: float = 3600.0
    campaign_grace_s: float = 45.0  # an enlisted address joins this long after if it still qualifies
    campaign_pending: int = 4096  # enlisted addresses waiting at once (more are dropped and counted)
    hot_failures: float = 5.5  # six failures in a short time (decay makes the sixth count a little under 6)
    hot_sources: float = 3.0
    max_sources: int = 65_536
    max_targets: int = 131_072
    max_endpoints: int = 1_024
    small_batch: int = 64  # rows up to which a batch's logins are selected, and login rows folded, row by row

    def __post_init__(self) -> None:
        for name in ("half_life_s", "horizon_s", "endpoint_half_life_s", "success_half_life_s", "ok_ratio", "campaign_accounts",
                     "campaign_half_life_s", "campaign_grace_s", "campaign_pending", "hot_failures", "hot_sources", "max_sources", "max_targets", "max_endpoints"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"CredentialConfig.{name}={value!r}: must be positive")
        if self.small_batch < 0:
            raise ValueError(f"CredentialConfig.small_batch={self.small_batch!r}: must be >= 0")


_ZEROS: dict[int, _F] = {}


def _zeros(n: int) -> _F:
    """A read-only array of ``n`` zeros, shared: every signal of a batch without a login (most small batches).

    The cache holds at most ``_ZEROS_BYTES``; a longer array is made for the call."""
    zeros = _ZEROS.get(n)
    if zeros is None:
        zeros = np.zeros(n)
        zeros.flags.writeable = False
        if 8 * n <= _ZEROS_BYTES // 4:
            if 8 * (n + sum(map(len, _ZEROS.values()))) > _ZEROS_BYTES:
                _ZEROS.clear()
            _ZEROS[n] = zeros
    return zeros


@dataclass
class _Batch:
    """The login rows of a large batch, as arrays."""

    idx: _I  # row of each login in the batch, in event order
    t: _F
    failed: _B
    ok: _B
    now: float  # the newest login's time: decays are evaluated against it
    alive_after: float  # distinct slots stamped before this (relative to ``base``) are dead


class CredentialTables:
    """The ``credentials`` enricher (``streams.batch.Enricher``): per-source, per-target, per-endpoint tables.

    >>> CredentialTables().signals[:3]
    ('login_attempt', 'login_failure', 'source_failures')
    """

    name = "credentials"
    signals = SIGNALS

    def __init__(self, config: CredentialConfig | None = None) -> None:
        self.config = c = config or CredentialConfig()
        self.sources = LoginTable(c.max_sources, SLOTS, (c.half_life_s, c.half_life_s, c.success_half_life_s))
        self.targets = LoginTable(c.max_targets, SLOTS, (c.half_life_s, c.half_life_s))
        self.endpoints = LoginTable(c.max_endpoints, 0, (c.endpoint_half_life_s,))
        self.campaign = Campaign(c.campaign_half_life_s, c.campaign_grace_s, c.campaign_pending)
        self.base: float | None = None  # slot times are float32 seconds after this
        self._login_edges: dict[int, bool] = {}
        self._proof_edges: dict[int, bool] = {}

    @property
    def evicted(self) -> dict[str, int]:
        """Keys evicted so far, per table."""
        return {"sources": self.sources.evicted, "targets": self.targets.evicted, "endpoints": self.endpoints.evicted}

    def _is_login_edge(self, batch: BatchView, edge: int, i: int) -> bool:
        """Whether row ``i``'s edge is a POST to a login-like template (decided once per edge)."""
        known = self._login_edges
        flag = known.get(edge)
        if flag is None:
            if len(known) >= 65_536:  # edges are few unless someone invents paths: start over then
                known.clear()
            flag = known[edge] = batch.method[i].as_py() == "POST" and is_login_path(batch.template[i].as_py() or "")
        return flag

    def proves(self, batch: BatchView, edge: int, i: int) -> bool:
        """Whether a success on row ``i``'s edge proves a password (not a reset, registration or logout template)."""
        known = self._proof_edges
        flag = known.get(edge)
        if flag is None:
            if len(known) >= 65_536:
                known.clear()
            flag = known[edge] = not _NO_PROOF.search(batch.template[i].as_py() or "")
        return flag

    def still_stuffing(self, row: int, alive_after: float) -> bool:
        """Whether the address at ``row`` of ``sources`` qualifies for the campaign on the table's state."""
        sources = self.sources
        unresolved = linear_count_one(sources.live_at(row, alive_after))
        resolved = linear_count_one(sources.bits_at(row).bit_count())
        return stuffing_of(unresolved, resolved, self.config.ok_ratio) >= self.config.campaign_accounts

    def begin(self, first: float, newest: float) -> float:
        """Open a batch of logins from ``first`` to ``newest``: the time base, the campaign's joins; returns the
        batch's ``alive_after``."""
        if self.base is None:
            self.base = first
        alive = alive_after(first, self.base, self.config.horizon_s)
        self.campaign.begin(newest, self.sources, lambda row: self.still_stuffing(row, alive))
        return alive

    def _login_rows(self, batch: BatchView) -> list[int] | _I:
        """Rows that are login attempts, each call's copy that carried its answer (``BatchView.answer``: the access log's 401,
        not the shim's earlier report of the same call without a status); a list for a small batch."""
        if batch.n <= self.config.small_batch:
            known, is_login = self._login_edges, self._is_login_edge
            rows = zip(batch.credential_subject_hash.tolist(), batch.auth_failed.tolist(), batch.answer.tolist(),
                       batch.edge_hash.tolist())
            return [i for i, (s, f, first, e) in enumerate(rows)
                    if first and (s or f or (known[e] if e in known else is_login(batch, e, i)))]
        groups = Groups.of(batch.edge_hash)
        starts = groups.order[groups.starts].tolist()
        flags = np.array([self._is_login_edge(batch, e, i) for e, i in zip(groups.keys.tolist(), starts)], dtype=bool)
        login = (batch.credential_subject_hash != 0) | batch.auth_failed | flags[groups.inverse]
        return np.flatnonzero(login & batch.answer)

    def enrich(self, batch: BatchView) -> Signals:
        """Per-row signals of this batch (``SIGNALS``; 0 on rows that are no login attempt)."""
        found = self._login_rows(batch) if batch.n else []
        if not len(found):
            return dict.fromkeys(SIGNALS, _zeros(batch.n))
        block = np.zeros((len(SIGNALS), batch.n))
        out: Signals = dict(zip(SIGNALS, block))
        if len(found) <= self.config.small_batch:
            fold_small(self, batch, found if isinstance(found, list) else found.tolist(), block, _POS)
            return out
        idx = np.asarray(found, dtype=np.intp)
        t = batch.time[idx]
        failed = batch.auth_failed[idx]
        status = batch.status[idx]
        ok = ~failed & (status >= 200) & (status < 400)
        if ok.any():
            edges, first, inverse = np.unique(batch.edge_hash[idx[ok]], return_index=True, return_inverse=True)
            rows = idx[ok][first].tolist()
            proof = np.array([self.proves(batch, e, i) for e, i in zip(edges.tolist(), rows)], dtype=bool)
            ok[ok] = proof[inverse]
        alive = self.begin(float(t.min()), float(t.max()))
        b = _Batch(idx, t, failed, ok, float(t.max()), alive)
        block[_POS["login_attempt"], idx] = 1.0
        block[_POS["login_failure"], idx] = failed
        self._by_source(batch, b, out)
        self._by_target(batch, b, out)
        return out

    def _by_source(self, batch: BatchView, b: _Batch, out: Signals) -> None:
        c = self.config
        src = batch.source_ip_hash[b.idx]
        has = src != 0
        if not has.any():
            return
        sel, t, failed, ok = b.idx[has], b.t[has], b.failed[has], b.ok[has]
        groups = Groups.of(src[has])
        group_rows = self.sources.rows_for(groups.keys)
        rows = group_rows[groups.inverse]
        counts = self.sources.count(groups, group_rows, t, np.stack([np.ones(len(sel)), failed, ok], axis=1), b.now)
        attempts, failures = counts[:, 0], counts[:, 1]
        out["source_failures"][sel] = failures
        out["source_failure_share"][sel] = failures / np.maximum(attempts, 1e-9)
        account = batch.credential_subject_hash[sel]
        judged = (account != 0) & (failed | ok)
        if not judged.any():
            return
        unresolved = np.zeros(len(sel))
        unresolved[judged] = self.sources.distinct(rows[judged], account[judged], failed[judged],
                                                   t[judged] - (self.base or 0.0), b.alive_after)
        resolved = linear_count(self.sources.union_bits(groups, rows, slot_of(account), ok & judged))
        stuffing = np.where(judged & (resolved <= c.ok_ratio * unresolved), unresolved, 0.0)
        out["source_accounts_failed"][sel[judged]] = unresolved[judged]
        out["stuffing_accounts"][sel] = stuffing
        mark = self.sources.mark[rows]
        out["stuffing_campaign"][sel[judged]] = self.campaign.at_many(t[judged], mark[judged])
        candidate = (stuffing >= c.campaign_accounts) & (mark < t - 4 * c.campaign_half_life_s)
        if candidate.any():
            self._enlist(groups, rows, t, candidate)

    def _enlist(self, groups: Groups, rows: _I, t: _F, candidate: _B) -> None:
        """Enlist each address at its first candidate event of the batch, in event order."""
        first = candidate & (groups.cumsum(candidate.astype(np.float64)) == 1)
        keys = self.sources.keys
        for j in np.flatnonzero(first).tolist():
            row = int(rows[j])
            self.campaign.enlist(float(t[j]), int(keys[row]), row, self.sources)

    def _by_target(self, batch: BatchView, b: _Batch, out: Signals) -> None:
        c = self.config
        named = batch.credential_subject_hash[b.idx] != 0
        if not named.any():
            return
        sel, t, failed, ok = b.idx[named], b.t[named], b.failed[named], b.ok[named]
        groups, table = Groups.of(batch.credential_subject_hash[sel]), self.targets
        group_rows = table.rows_for(groups.keys)
        rows = group_rows[groups.inverse]
        failures = table.count(groups, group_rows, t, np.stack([np.ones(len(sel)), failed], axis=1), b.now)[:, 1]
        source = batch.source_ip_hash[sel]
        slot = slot_of(source)
        bits = (np.uint32(1) << slot.astype(np.uint32)).astype(np.uint32)
        mask, okf = table.ok_mask[rows], ok.astype(np.float64)
        pairs = Groups.of(rows * SLOTS + slot)
        owner = ((mask & bits) != 0) | (pairs.cumsum(okf) > okf)  # this source logged in to it before this row
        unknown = failed & (mask == 0) & ~(groups.cumsum(okf) > okf)  # the account never logged in (in memory)
        judged = failed | ok
        sources = np.zeros(len(sel))
        if judged.any():
            sources[judged] = table.distinct(rows[judged], source[judged], failed[judged], t[judged] - (self.base or 0.0),
                                             b.alive_after)
        np.bitwise_or.at(table.ok_mask, rows[ok], bits[ok])
        hot = (failures >= c.hot_failures) | (sources >= c.hot_sources)
        out["target_failures"][sel] = failures
        out["target_sources"][sel] = sources
        out["failure_on_hot_target"][sel] = failed & hot & ~owner
        out["unknown_account_failure"][sel] = unknown
        edges = Groups.of(batch.edge_hash[sel])
        spread = self.endpoints.count(edges, self.endpoints.rows_for(edges.keys), t, unknown.astype(np.float64)[:, None], b.now)
        out["endpoint_unknown_failures"][sel] = spread[:, 0]

    def export(self) -> bytes:
        """Every table, the campaign (gauge and pending addresses) and the time base as ``numpy.savez`` bytes."""
        arrays: dict[str, npt.NDArray[np.generic]] = {"base": np.array([math.nan if self.base is None else self.base]),
                                                     **self.campaign.export()}
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
        self.campaign.restore(arrays)
        for label, table in (("sources", self.sources), ("targets", self.targets), ("endpoints", self.endpoints)):
            table.restore({k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith(label + ".")})
