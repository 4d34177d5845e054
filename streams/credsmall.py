"""The credential tables folded one login at a time: ``streams.credentials`` for the worker's small batches.

Contract: pure. ``fold_small(tables, batch, logins, block, pos)`` computes for the
login rows ``logins`` of ``batch`` exactly what the vectorised folds of
``CredentialTables`` compute (same tables, same order of events, same decays
against the batch's newest login), in plain Python over the rows, and writes
them into ``block`` (one row of ``block`` per signal, at ``pos[name]``). A live
batch holds a few rows: there numpy's fixed cost per call (about 1 µs, some
hundred calls per batch) cost far more than the arithmetic, and a loop over the
rows with scalar updates is several times cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from streams.batch import BatchView
from streams.credstate import LoginTable, linear_count_one

if TYPE_CHECKING:
    from streams.credentials import CredentialTables

__all__ = ["alive_after", "fold_small", "stuffing_of"]

_F = npt.NDArray[np.float64]


def alive_after(first: float, base: float, horizon_s: float) -> float:
    """Distinct slots stamped before this (seconds after ``base``, as a float32 value like the slots) are dead."""
    return float(np.float32(first - base - horizon_s))


def stuffing_of(unresolved: float, resolved: float, ok_ratio: float) -> float:
    """An address's stuffing accounts: its unresolved accounts while it logged in to at most ``ok_ratio`` as many
    (distinct accounts, both linear counts), else 0.

    >>> stuffing_of(3.15, 1.02, 0.5), stuffing_of(2.07, 2.07, 0.5)
    (3.15, 0.0)
    """
    return unresolved if resolved <= ok_ratio * unresolved else 0.0


@dataclass
class _Run:
    """The running state of one small fold: per-table sums of this batch, slots touched, addresses enlisted."""

    now: float
    alive_after: float
    base: float
    counts: dict[str, dict[int, list[float]]] = field(default_factory=lambda: {"sources": {}, "targets": {}, "endpoints": {}})
    live: dict[str, dict[int, float]] = field(default_factory=lambda: {"sources": {}, "targets": {}})
    touched: dict[str, dict[int, bool]] = field(default_factory=lambda: {"sources": {}, "targets": {}})
    crossed: dict[int, float] = field(default_factory=dict)  # rows enlisted in this batch: their marks before


def _rows_of(table: LoginTable, keys: list[int]) -> dict[int, int]:
    """Table row of each distinct nonzero key."""
    distinct = [k for k in dict.fromkeys(keys) if k]
    return dict(zip(distinct, table.rows_of(distinct))) if distinct else {}


def _take(column: npt.NDArray[Any], rows: list[int], n: int) -> list[Any]:
    """The column's values at ``rows``, as Python objects."""
    if n <= 4 * len(rows) + 32:
        values = column.tolist()
        return [values[i] for i in rows]
    return column[rows].tolist()  # type: ignore[no-any-return]


def fold_small(tables: CredentialTables, batch: BatchView, logins: list[int], block: _F, pos: Mapping[str, int]) -> None:
    """Fold the login rows ``logins`` (in event order) one by one and write their signals into ``block``."""
    t_all, failed_all, status, src, acct, edge = (_take(column, logins, batch.n) for column in (
        batch.time, batch.auth_failed, batch.status, batch.source_ip_hash, batch.credential_subject_hash, batch.edge_hash))
    now = max(t_all)
    run = _Run(now, tables.begin(min(t_all), now), tables.base or 0.0)
    rows = (_rows_of(tables.sources, src), _rows_of(tables.targets, acct),
            _rows_of(tables.endpoints, [e if a else 0 for e, a in zip(edge, acct)]))  # endpoints of named logins only
    out = [[0.0] * len(pos) for _ in logins]
    for k, (t, failed) in enumerate(zip(t_all, failed_all)):
        v, ok = out[k], not failed and 200 <= status[k] < 400
        if ok:
            ok = tables.proves(batch, edge[k], logins[k])
        v[pos["login_attempt"]], v[pos["login_failure"]] = 1.0, float(failed)
        if src[k]:
            _source_event(tables, run, v, pos, (src[k], rows[0][src[k]]), acct[k], t, failed, ok)
        if acct[k]:
            _target_event(tables, run, v, pos, (rows[1][acct[k]], rows[2][edge[k]]), src[k], t, failed, ok)
    for name in ("sources", "targets", "endpoints"):
        if run.counts[name]:
            getattr(tables, name).settle(run.counts[name], now)
    block.T[logins] = out


def _source_event(tables: CredentialTables, run: _Run, v: list[float], pos: Mapping[str, int], key_row: tuple[int, int],
                  account: int, t: float, failed: bool, ok: bool) -> None:
    """One login's per-source signals: counters, unresolved and logged-in accounts, stuffing and the campaign gauge."""
    c, table = tables.config, tables.sources
    (key, row), m = key_row, table.nslots
    attempts, failures, _ = table.count_one(row, t, (1.0, float(failed), float(ok)), run.now, run.counts["sources"])
    v[pos["source_failures"]], v[pos["source_failure_share"]] = failures, failures / max(attempts, 1e-9)
    if not account or not (failed or ok):  # judged: a named account, and an answer that says whether the password was right
        return
    unresolved = table.distinct_one(row, account, failed, t - run.base, run.alive_after, run.live["sources"],
                                    run.touched["sources"])
    bits = table.bits_at(row)
    if ok:
        bits |= 1 << ((account >> 40) % m)
        table.set_bits(row, bits)
    stuffing = stuffing_of(unresolved, linear_count_one(bits.bit_count(), m), c.ok_ratio)
    v[pos["source_accounts_failed"]], v[pos["stuffing_accounts"]] = unresolved, stuffing
    crossed = run.crossed.get(row)
    mark = table.mark_at(row) if crossed is None else crossed  # the mark before this batch, as the vectorised fold
    v[pos["stuffing_campaign"]] = tables.campaign.at(t, mark)
    if stuffing >= c.campaign_accounts and crossed is None and mark < t - 4 * c.campaign_half_life_s:
        run.crossed[row] = mark
        tables.campaign.enlist(t, key, row, table)


def _target_event(tables: CredentialTables, run: _Run, v: list[float], pos: Mapping[str, int],
                  rows: tuple[int, int], source: int, t: float, failed: bool, ok: bool) -> None:
    """One login's per-account signals, and its endpoint's failures on unknown accounts."""
    c, table = tables.config, tables.targets
    row, edge_row = rows
    failures = table.count_one(row, t, (1.0, float(failed)), run.now, run.counts["targets"])[1]
    bit = 1 << ((source >> 40) % table.nslots)
    mask = table.bits_at(row)
    owner, unknown = bool(mask & bit), failed and mask == 0
    sources = 0.0
    if failed or ok:
        sources = table.distinct_one(row, source, failed, t - run.base, run.alive_after,
                                     run.live["targets"], run.touched["targets"])
    if ok:
        table.set_bits(row, mask | bit)
    hot = failures >= c.hot_failures or sources >= c.hot_sources
    v[pos["target_failures"]], v[pos["target_sources"]] = failures, sources
    v[pos["failure_on_hot_target"]] = float(failed and hot and not owner)
    v[pos["unknown_account_failure"]] = float(unknown)
    spread = tables.endpoints.count_one(edge_row, t, (float(unknown),), run.now, run.counts["endpoints"])[0]
    v[pos["endpoint_unknown_failures"]] = spread
