"""streams.edgesmall: the plain-Python path for small batches leaves the same state and gives the same signals."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest

from ingest.envelope import decode_message, encode_rows
from ingest.simulator import variant_simulator
from streams.batch import BatchView
from streams.edges import SIGNALS, EdgeConfig, EdgeEnricher
from streams.edgesmall import SlotMemo
from streams.keytable import KeyTable, mix, mix1


@cache
def stream(name: str) -> tuple[BatchView, ...]:
    """A short simulated run with new, privileged, denied and external edges, cut into batches of 1-60 rows."""
    sim = variant_simulator(name, 3, 300.0, rate=10.0, users=200, warmup_s=60.0)
    rows = [c.to_row(f"r{i}", b"k") for i, c in enumerate(sim.calls())]
    rng = np.random.default_rng(5)
    out, i = [], 0
    while i < len(rows):
        size = int(rng.integers(1, 61))
        out.append(BatchView.decode(decode_message(encode_rows(rows[i : i + size]), max_bytes=1 << 30)))
        i += size
    return tuple(out)


def state(e: EdgeEnricher) -> dict[str, np.ndarray]:
    """Every table's arrays, by slot."""
    return {f"{name}.{col}": values for name in ("callers", "pairs", "edges", "hosts") for col, values in getattr(e, name).arrays().items()}


@pytest.mark.parametrize("name", ["lateral-movement", "exfiltration"])
@pytest.mark.parametrize("budget", [100_000, 30])
def test_small_batches_take_the_python_path_with_the_same_outcome(name: str, budget: int) -> None:
    config = EdgeConfig(learn_s=30.0, learn_calls=10, promote_s=20.0, max_callers=budget, max_pairs=budget, max_edges=budget)
    small, vector = EdgeEnricher(config), EdgeEnricher(config)
    vector.small_rows = 0
    seen = {s: 0.0 for s in SIGNALS}
    for batch in stream(name):
        a, b = small.enrich(batch), vector.enrich(batch)
        for s in SIGNALS:
            np.testing.assert_array_equal(a[s], b[s], err_msg=s)
            seen[s] += float(b[s].sum())
    assert seen["novel_edge"] > 0 and (name != "exfiltration" or seen["new_host_bytes"] > 0)  # the stream has news
    got, want = state(small), state(vector)
    assert got.keys() == want.keys()
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert small.evicted == vector.evicted and (budget > 1000 or vector.evicted > 0)


def test_a_restored_enricher_forgets_the_slots_it_remembered() -> None:
    batches = stream("lateral-movement")
    e, twin = EdgeEnricher(EdgeConfig(learn_s=30.0, learn_calls=10)), EdgeEnricher(EdgeConfig(learn_s=30.0, learn_calls=10))
    for batch in batches[: len(batches) // 2]:
        e.enrich(batch)
    blob = e.export()
    twin.enrich(batches[-1])  # slots of its own, remembered, then replaced by the restore
    twin.restore(blob)
    for batch in batches[len(batches) // 2 :]:
        a, b = e.enrich(batch), twin.enrich(batch)
        for s in SIGNALS:
            np.testing.assert_array_equal(a[s], b[s], err_msg=s)


def test_slot_memo_finds_inserts_and_keeps_last_seen() -> None:
    table = KeyTable(100, {"n": np.float64})
    memo = SlotMemo(table, limit=2)
    keys = np.array([11, 22, 33], dtype=np.uint64)

    def table_keys(rows: list[int]) -> np.ndarray:
        return keys[rows]

    slots, new_rows = memo.upsert([0, 1, 0], [5.0, 6.0, 7.0], lambda rows: keys[[0, 1, 0]][rows])
    assert slots == [0, 1, 0] and new_rows == [0, 1] and table.cols["last_seen"][:2].tolist() == [7.0, 6.0]
    slots, new_rows = memo.upsert([1, 2], [9.0, 1.0], lambda rows: keys[[1, 2]][rows])
    assert slots == [1, 2] and new_rows == [1] and len(memo.slots) <= 2  # emptied when full, the table still answers
    assert table.cols["last_seen"][:3].tolist() == [7.0, 9.0, 1.0] and table_keys([2]).tolist() == [33]


def test_mix1_is_the_tables_mix() -> None:
    xs = [0, 1, 2**63 + 5, 2**64 - 1, 0x5EED_C0_4057]
    assert [mix1(x) for x in xs] == mix(np.array(xs, dtype=np.uint64)).tolist()


WORKLOADS = ("shop/web", "shop/carts", "ml/notebook", None)
SERVICES = (("orders", "/orders/{id}", "GET"), ("orders", "/admin/orders/{id}", "DELETE"), ("ledger-admin", "/admin/balances", "GET"),
            ("identity", "/users/{id}/password", "PUT"), ("catalog", "/products", "GET"), ("invoices", "/invoices/export", "GET"))
HOSTS = ("api.psp.example.com", "paste.example.net", "hooks.example.org")


def _random_summary(summary_factory: Any, rng: np.random.Generator, t: float) -> Any:
    """Any kind of caller (workload, user behind it, anonymous inside or outside) on any edge, internal or external."""
    workload = WORKLOADS[int(rng.integers(len(WORKLOADS)))]
    principal = None if rng.random() < 0.5 else f"u{int(rng.integers(12))}"
    ip = f"10.0.0.{int(rng.integers(4))}" if workload else f"203.0.113.{int(rng.integers(6))}"
    if rng.random() < 0.15:
        service, template, method, external = HOSTS[int(rng.integers(len(HOSTS)))], "/upload", "POST", True
    else:
        (service, template, method), external = SERVICES[int(rng.integers(len(SERVICES)))], False
    status = int(rng.choice([200, 200, 200, 201, 401, 403, 404]))
    return summary_factory(time=t, workload=workload, ip=ip, source_external=workload is None and rng.random() < 0.5, principal=principal,
                           service=service, dest_external=external, path_template=template, method=method, status=status,
                           request_bytes=int(rng.integers(100, 400_000)))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_callers_and_edges_give_the_same_outcome_both_ways(summary_factory: Any, table_of: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    config = EdgeConfig(learn_s=20.0, learn_calls=5, promote_calls=2, promote_s=5.0, promote_callers=2, promote_callers_privileged=3,
                        host_settle_s=30.0, max_callers=12, max_pairs=40, max_edges=12, max_hosts=10)
    small, vector = EdgeEnricher(config), EdgeEnricher(config)
    vector.small_rows = 0
    t, news = 1_700_000_000.0, 0.0
    for _ in range(120):
        rows = []
        for _ in range(int(rng.integers(1, 25)) if rng.random() < 0.9 else 129 + int(rng.integers(40))):  # some take the numpy path
            t += float(rng.exponential(0.5))
            rows.append(_random_summary(summary_factory, rng, t))
        table = table_of(rows)
        repeats = rng.random(len(rows)) < 0.1  # some rows are second reports of a call
        a, b = small.enrich(BatchView.decode(table, repeats)), vector.enrich(BatchView.decode(table, repeats))
        for s in SIGNALS:
            np.testing.assert_array_equal(a[s], b[s], err_msg=s)
            news += float(b[s].sum() > 0)
        got, want = state(small), state(vector)  # after every batch: the tables are small
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert news > 20 and vector.evicted > 0
