"""CredentialTables: per-source, per-target, per-endpoint and campaign credential-abuse signals on hand-made batches.

Every test runs on both folds (``make``): row by row, as the worker's small batches are, and vectorised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from ingest import summary_row
from ingest.envelope import SUMMARY_SCHEMA
from streams.batch import BatchView
from streams.credentials import SIGNALS, CredentialConfig, CredentialTables

T0 = 1.8e9


def _login(t: float, ip: str | None, account: str | None, *, fail: bool = False, status: int = 200,
           path_template: str = "/login", **kw: Any) -> dict[str, Any]:
    """A login the way the summarizer reports it: the demo API answers 200 with an error body, derived as auth_failure."""
    return summary_row(id=f"{t}-{ip}-{account}-{path_template}", time=T0 + t, source={"ip": ip, "external": True},
                       destination={"service": "auth", "namespace": "identity"}, method="POST", path_template=path_template,
                       status=status, outcome="auth_failure" if fail else None, credential_subject=account, **kw)


def _view(rows: list[dict[str, Any]], repeats: np.ndarray | None = None) -> BatchView:
    return BatchView.decode(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA), repeats)


Make = Callable[..., CredentialTables]


@pytest.fixture(params=["row-by-row", "vectorised"])
def make(request: pytest.FixtureRequest) -> Make:
    """``make(**config)``: fresh tables folding every batch row by row, or every batch vectorised."""
    small = 10**6 if request.param == "row-by-row" else 0
    return lambda **config: CredentialTables(CredentialConfig(small_batch=small, **config))


def _run(rows: list[dict[str, Any]], tables: CredentialTables) -> dict[str, np.ndarray]:
    return tables.enrich(_view(rows))


def test_every_signal_is_returned_and_other_calls_get_zero(make: Make) -> None:
    rows = [summary_row(id="g", time=T0, source={"ip": "1.1.1.1"}, method="GET", path_template="/orders/{id}", status=200),
            _login(1, "1.1.1.1", "ada", fail=True)]
    out = _run(rows, make())
    assert set(out) == set(SIGNALS) and all(len(v) == 2 for v in out.values())
    assert all(out[s][0] == 0 for s in SIGNALS)
    assert (out["login_attempt"][1], out["login_failure"][1], out["source_failures"][1]) == (1.0, 1.0, 1.0)


def test_stuffing_from_one_source_raises_its_failed_accounts_row_by_row(make: Make) -> None:
    out = _run([_login(i, "203.0.113.9", f"victim-{i}", fail=True) for i in range(12)], make())
    failed = out["source_accounts_failed"]
    assert np.all(np.diff(failed) >= 0) and failed[0] == pytest.approx(1, abs=0.1)
    assert failed[5] >= 5 and failed[-1] >= 9
    assert np.all(out["source_failure_share"] == 1.0)
    assert np.all(out["target_failures"] == 1.0) and not out["failure_on_hot_target"].any()


def test_a_mistype_then_success_resolves_the_account_and_a_nat_stays_low(make: Make) -> None:
    tables = make()
    out = _run([_login(0, "198.18.0.1", "ada", fail=True), _login(3, "198.18.0.1", "ada", fail=True), _login(9, "198.18.0.1", "ada")], tables)
    assert out["source_accounts_failed"].round(1).tolist() == [1.0, 1.0, 0.0]
    assert out["target_sources"][-1] == 0.0
    nat = [_login(10 + i, "192.0.2.1", f"emp{i}") for i in range(80)]
    nat += [_login(100, "192.0.2.1", "emp3", fail=True), _login(104, "192.0.2.1", "emp3")]
    out = _run(nat, tables)
    assert out["source_accounts_failed"].max() <= 1.1 and out["source_failure_share"][-1] < 0.05


def test_brute_force_on_one_account_makes_it_hot_but_spares_its_owner(make: Make) -> None:
    tables = make(hot_failures=5.5)
    _run([_login(0, "198.18.0.7", "ada")], tables)  # the owner logged in from home
    out = _run([_login(10 + i, "100.90.0.1", "ada", fail=True) for i in range(8)], tables)
    assert out["target_failures"] == pytest.approx(np.arange(1, 9), rel=3e-3)  # 1 s apart, half-life 30 min
    assert out["failure_on_hot_target"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert out["target_sources"].max() < 1.1 and out["source_accounts_failed"].max() < 1.1
    owner = _run([_login(30, "198.18.0.7", "ada", fail=True)], tables)
    assert owner["failure_on_hot_target"][0] == 0.0 and owner["target_failures"][0] > 8


def test_distributed_brute_force_counts_failing_sources_per_target(make: Make) -> None:
    out = _run([_login(i, f"100.80.0.{i}", "bob", fail=True) for i in range(5)], make(hot_sources=3))
    assert out["target_sources"].round(0).tolist() == [1, 2, 3, 4, 5]
    assert out["failure_on_hot_target"].tolist() == [0, 0, 1, 1, 1]
    assert np.all(out["source_failures"] == 1.0)


def test_unknown_accounts_feed_the_endpoint_signal_and_known_ones_do_not(make: Make) -> None:
    tables = make()
    _run([_login(0, "198.18.0.1", "ada")], tables)
    out = _run([_login(1, "100.64.0.1", "ada", fail=True), _login(2, "100.64.0.1", "x1", fail=True),
                _login(3, "100.64.0.2", "x2", fail=True)], tables)
    assert out["unknown_account_failure"].tolist() == [0, 1, 1]
    assert out["endpoint_unknown_failures"].round(2).tolist() == [0.0, 1.0, 2.0]


def test_403_and_error_bodies_fail_a_429_neither_fails_nor_resolves(make: Make) -> None:
    rows = [_login(0, "9.9.9.9", "ada", status=403, fail=True), _login(1, "9.9.9.9", "ada", status=429), _login(2, "9.9.9.9", "ada", status=401)]
    out = _run(rows, make())
    assert out["login_failure"].tolist() == [1, 0, 1]
    assert out["source_accounts_failed"].round(1).tolist() == [1.0, 0.0, 1.0]  # a 429 carries no distinct count


def test_a_login_path_without_a_named_account_still_counts_per_source(make: Make) -> None:
    out = _run([_login(i, "9.9.9.8", None, fail=True) for i in range(3)], make())
    assert out["login_attempt"].tolist() == [1, 1, 1] and out["source_failures"].round(2).tolist() == [1, 2, 3]
    assert not out["target_failures"].any() and not out["source_accounts_failed"].any()


def test_duplicate_reports_are_not_counted_twice(make: Make) -> None:
    rows = [_login(0, "9.9.9.7", "ada", fail=True), _login(0, "9.9.9.7", "ada", fail=True)]
    out = make().enrich(_view(rows, np.array([False, True])))
    assert out["login_failure"].tolist() == [1, 0] and out["source_failures"].tolist() == [1, 0]


def test_one_batch_or_two_give_the_same_signals(make: Make) -> None:
    rows = [_login(i, f"10.0.0.{i % 3}", f"acct{i % 5}", fail=i % 4 != 0) for i in range(30)]
    whole = _run(rows, make())
    tables = make()
    first, second = _run(rows[:13], tables), _run(rows[13:], tables)
    for name in SIGNALS:
        assert np.allclose(whole[name], np.concatenate([first[name], second[name]])), name


def test_counters_decay_with_the_half_life(make: Make) -> None:
    tables = make(half_life_s=60.0)
    _run([_login(0, "9.9.9.6", "ada", fail=True), _login(0, "9.9.9.6", "ada", fail=True)], tables)
    out = _run([_login(60, "9.9.9.6", "ada", fail=True)], tables)
    assert out["source_failures"][0] == pytest.approx(2.0) and out["target_failures"][0] == pytest.approx(2.0)


def test_distinct_slots_expire_past_the_horizon(make: Make) -> None:
    tables = make(horizon_s=100.0)
    _run([_login(i, "9.9.9.5", f"a{i}", fail=True) for i in range(4)], tables)
    assert _run([_login(50, "9.9.9.5", "b", fail=True)], tables)["source_accounts_failed"][0] >= 3.5
    assert _run([_login(500, "9.9.9.5", "c", fail=True)], tables)["source_accounts_failed"][0] < 1.5


def test_tables_stay_within_budget_and_count_evictions(make: Make) -> None:
    tables = make(max_sources=32, max_targets=32, max_endpoints=4)
    for b in range(5):
        _run([_login(100 * b + i, f"10.1.{b}.{i}", f"u{b}-{i}", fail=True) for i in range(20)], tables)
    assert tables.sources.size <= 32 and tables.targets.size <= 32
    assert tables.evicted["sources"] >= 100 - 32 and tables.evicted["targets"] >= 100 - 32
    again = _run([_login(1000, "10.1.4.19", "u4-19", fail=True)], tables)  # the newest survive
    assert again["source_failures"][0] > 1.5 and again["target_failures"][0] > 1.5
    with pytest.raises(ValueError, match="capacity=32"):
        _run([_login(2000 + i, f"10.2.0.{i}", None, fail=True) for i in range(40)], tables)


def test_export_then_restore_answers_the_next_batch_the_same(make: Make) -> None:
    warm = [_login(i, f"10.0.0.{i % 4}", f"acct{i % 6}", fail=i % 3 != 0) for i in range(40)]
    nxt = [_login(50 + i, f"10.0.0.{i % 5}", f"acct{i % 7}", fail=i % 2 == 0) for i in range(20)]
    original = make()
    _run(warm, original)
    copy = make()
    copy.restore(original.export())
    assert copy.base == original.base and copy.sources.size == original.sources.size
    a, b = _run(nxt, original), _run(nxt, copy)
    for name in SIGNALS:
        assert np.array_equal(a[name], b[name]), name
    empty = make()
    empty.restore(make().export())
    assert empty.base is None
    with pytest.raises(ValueError, match="capacity"):
        make(max_sources=8).restore(original.export())


def test_config_rejects_non_positive_values() -> None:
    with pytest.raises(ValueError, match="hot_sources=0"):
        CredentialConfig(hot_sources=0)


def test_stuffing_accounts_count_an_address_that_logs_in_to_none_and_never_a_nat(make: Make) -> None:
    tables = make()
    names = ["ann", "bob", "cid"]  # three accounts in three distinct slots
    out = _run([_login(i, "203.0.113.20", name, fail=True) for i, name in enumerate(names)], tables)
    assert out["stuffing_accounts"].round(2).tolist() == [1.02, 2.07, 3.15]
    nat = [_login(i, "192.0.2.9", f"emp{i}") for i in range(20)]
    nat += [_login(30, "192.0.2.9", "emp-new", fail=True), _login(31, "192.0.2.9", "emp-other", fail=True),
            _login(32, "192.0.2.9", "emp-third", fail=True)]
    out = _run(nat, tables)
    assert out["source_accounts_failed"][-1] > 3 and not out["stuffing_accounts"].any()  # its successes keep it out


def test_a_lucky_guess_does_not_hide_a_stuffing_address(make: Make) -> None:
    ip = "203.0.113.21"
    out = _run([_login(0, ip, "a", fail=True), _login(1, ip, "b"), _login(2, ip, "c", fail=True)], make())
    assert out["stuffing_accounts"].round(2).tolist() == [1.02, 0.0, 2.07]  # one success, two unresolved accounts


def test_the_campaign_counts_other_addresses_never_the_address_itself(make: Make) -> None:
    tables = make(campaign_grace_s=120.0)
    first = _run([_login(i, "203.0.113.30", f"x{i}", fail=True) for i in range(3)], tables)
    assert first["stuffing_campaign"].tolist() == [0.0, 0.0, 0.0]
    assert list(tables.campaign.pending.values()) == [T0 + 1 + 120.0]  # enlisted at its second account, joins after the grace
    second = _run([_login(600, "203.0.113.31", "y1", fail=True), _login(601, "203.0.113.31", "y2", fail=True)], tables)
    assert second["stuffing_campaign"][1] == pytest.approx(2 ** (-480 / 3600), rel=1e-6)  # joined at 121 s
    again = _run([_login(722, "203.0.113.30", "x9", fail=True)], tables)
    assert again["stuffing_campaign"][0] == pytest.approx(2 ** (-1 / 3600), rel=1e-6)  # the second one; not its own share


def test_an_address_joins_only_if_it_has_not_logged_in_by_the_end_of_the_grace(make: Make) -> None:
    tables = make(campaign_grace_s=60.0)
    _run([_login(0, "198.51.100.1", "carol", fail=True), _login(4, "198.51.100.1", "carol@example.com", fail=True)], tables)
    _run([_login(20, "198.51.100.1", "carol")], tables)  # user name, then e-mail, then the right password
    _run([_login(i, "203.0.113.40", f"leak-{i}", fail=True) for i in (30, 35)], tables)
    assert len(tables.campaign.pending) == 2
    out = _run([_login(200, "203.0.113.41", "z1", fail=True), _login(201, "203.0.113.41", "z2", fail=True)], tables)
    assert out["stuffing_campaign"][1] == pytest.approx(2 ** (-(201 - 95) / 3600), rel=1e-6)  # the stuffer only
    assert tables.campaign.value == pytest.approx(2 ** (-(201 - 95) / 3600), rel=1e-6)  # carol never joined
    assert sorted(np.isfinite(tables.sources.mark[list(tables.sources.index.values())]).tolist()) == [False, True, True]


def test_an_office_where_three_people_mistype_then_log_in_never_counts(make: Make) -> None:
    tables = make()
    ip = "192.0.2.77"
    out = _run([_login(0, ip, "emp-a", fail=True), _login(2, ip, "emp-b", fail=True), _login(4, ip, "emp-c", fail=True),
                _login(8, ip, "emp-a"), _login(9, ip, "emp-b"), _login(10, ip, "emp-c")], tables)
    assert out["stuffing_accounts"][-1] == 0.0 and out["source_accounts_failed"][-1] == 0.0
    _run([_login(300, "203.0.113.50", "q", fail=True)], tables)
    assert not tables.campaign.pending and tables.campaign.value == 0.0


def test_logins_to_one_own_account_count_once_and_resets_prove_nothing(make: Make) -> None:
    ip = "203.0.113.60"
    own = [_login(i, ip, "attacker-own") for i in range(3)]
    resets = [_login(3 + i, ip, f"decoy-{i}", path_template="/auth/password/forgot") for i in range(4)]
    leaked = [_login(10 + i, ip, name, fail=True) for i, name in enumerate(["ann", "bob", "cid"])]
    out = _run(own + resets + leaked, make())
    assert out["stuffing_accounts"][-3:].round(2).tolist() == [0.0, 2.07, 3.15]  # one account logged in to: 1.02 <= 0.5 x 2.07
    reset_then_fail = [_login(0, ip, "ann", fail=True), _login(1, ip, "ann", path_template="/auth/reset")]
    out = _run(reset_then_fail, make())
    assert out["source_accounts_failed"].round(2).tolist() == [1.02, 0.0]  # a reset is judged by nothing
    assert out["source_accounts_failed"][1] == 0.0 and out["login_attempt"][1] == 1.0


def test_mistyping_users_and_one_account_addresses_never_join_the_campaign(make: Make) -> None:
    tables = make()
    rows = []
    for u in range(30):
        ip = f"198.18.0.{u}"
        rows += [_login(10 * u + d, ip, f"user-{u}", fail=d < 6) for d in (0, 3, 6)]
        rows.append(_login(10 * u + 1, f"203.0.113.{u}", f"leak-{u}", fail=True))  # a rotating address tries one account
    out = _run(sorted(rows, key=lambda r: r["time"]), tables)
    assert out["stuffing_accounts"].max() < 1.1 and not out["stuffing_campaign"].any() and tables.campaign.value == 0.0


def _traffic(seed: int, n: int) -> list[dict[str, Any]]:
    """Random logins: a few addresses and accounts, failures, successes, 429s, rows without an account or address."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(3.0, n)) - rng.uniform(0.0, 2.0, n)  # mostly in order, some a little late
    rows = []
    for i in range(n):
        ip = None if rng.random() < 0.05 else f"10.9.{rng.integers(3)}.{rng.integers(12)}"
        account = None if rng.random() < 0.1 else f"acct-{rng.integers(25)}"
        status = int(rng.choice([200, 200, 401, 429]))
        fail = status == 200 and rng.random() < 0.6
        rows.append(_login(float(times[i]), ip, account, fail=fail, status=status))
    return rows


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_row_by_row_and_vectorised_folds_agree(seed: int) -> None:
    rows = _traffic(seed, 400)
    small, large = CredentialTables(CredentialConfig(small_batch=10**6)), CredentialTables(CredentialConfig(small_batch=0))
    cuts = np.cumsum(np.random.default_rng(seed).integers(1, 90, size=40))  # past 64 rows the selection is vectorised too
    for lo, hi in zip(np.concatenate([[0], cuts]), cuts):
        view = _view(rows[lo:hi]) if lo < len(rows) else None
        if view is None:
            break
        a, b = small.enrich(view), large.enrich(view)
        for name in SIGNALS:
            assert np.allclose(a[name], b[name], rtol=1e-9, atol=1e-9), (name, lo, hi)
    marks = [{int(k): float(m) for k, m in zip(t.sources.keys, t.sources.mark) if k} for t in (small, large)]
    assert marks[0] == marks[1] and any(np.isfinite(list(marks[0].values())))
    assert (small.campaign.value, small.campaign.last) == pytest.approx((large.campaign.value, large.campaign.last))
    assert small.campaign.pending == large.campaign.pending


def _agree(a: dict[str, np.ndarray], b: dict[str, np.ndarray], where: object) -> None:
    for name in SIGNALS:
        assert np.allclose(a[name], b[name], rtol=1e-9, atol=1e-9), (name, where)


@pytest.mark.parametrize("seed", [4, 5])
def test_folds_agree_and_restores_answer_alike_when_the_tables_are_full(seed: int) -> None:
    budgets = {"max_sources": 16, "max_targets": 16, "max_endpoints": 2}
    rows = _traffic(seed, 300)
    small, large = (CredentialTables(CredentialConfig(small_batch=s, **budgets)) for s in (10**6, 0))
    cuts = np.cumsum(np.random.default_rng(seed).integers(1, 12, size=60))
    batches = [_view(rows[lo:hi]) for lo, hi in zip(np.concatenate([[0], cuts]), cuts) if lo < len(rows)]
    for b, view in enumerate(batches[:30]):
        _agree(small.enrich(view), large.enrich(view), b)
    assert small.evicted == large.evicted and small.evicted["sources"] > 0 and small.evicted["targets"] > 0
    copies = []
    for tables in (small, large):
        copy = CredentialTables(tables.config)
        copy.restore(tables.export())
        copies.append(copy)
    for b, view in enumerate(batches[30:], 30):
        outs = [t.enrich(view) for t in (small, large, *copies)]
        for other in outs[1:]:
            _agree(outs[0], other, b)
    assert small.sources.index.keys() == large.sources.index.keys() == copies[0].sources.index.keys()


def test_eviction_ties_are_broken_by_key_whatever_the_rows() -> None:
    outs = []
    for small_batch in (10**6, 0):
        tables = CredentialTables(CredentialConfig(max_sources=16, small_batch=small_batch))
        tables.enrich(_view([_login(0, f"10.0.0.{i}", None, fail=True) for i in range(16)]))  # one batch: equal ages
        tables.enrich(_view([_login(1, "10.0.1.1", None, fail=True)]))  # one more address: one of the 16 goes
        outs.append(tables.enrich(_view([_login(2, f"10.0.0.{i}", None, fail=True) for i in range(16)]))["source_failures"])
    assert outs[0].tolist() == outs[1].tolist() and sorted(outs[0].round(2).tolist()) == [1.0] + [2.0] * 15


def test_pending_addresses_survive_export_and_restore(make: Make) -> None:
    tables = make(campaign_grace_s=120.0)
    _run([_login(0, "203.0.113.70", "a", fail=True), _login(1, "203.0.113.70", "b", fail=True)], tables)
    copy = make(campaign_grace_s=120.0)
    copy.restore(tables.export())
    assert copy.campaign.pending == tables.campaign.pending and len(copy.campaign.pending) == 1
    later = [_login(200, "203.0.113.71", "c", fail=True), _login(201, "203.0.113.71", "d", fail=True)]
    a, b = _run(later, tables), _run(later, copy)
    assert a["stuffing_campaign"][1] == b["stuffing_campaign"][1] == pytest.approx(2 ** (-80 / 3600), rel=1e-6)
