"""BatchView.decode and hash64: the small-batch paths (plain Python, memo) give exactly what the vectorised paths give."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

import streams.batch as batch
from streams.batch import BatchView, hash64, present


@pytest.fixture
def vectorised_only() -> Iterator[None]:
    """Every array takes the vectorised path (no Python path, no memo)."""
    old = batch.SMALL_BATCH
    batch.SMALL_BATCH = 0
    try:
        yield
    finally:
        batch.SMALL_BATCH = old


def _rows(n: int) -> pa.Table:
    from deploy.lab.bench_worker import FreshRows
    from ingest.envelope import decode_messages, encode_rows

    rows = list(FreshRows.simulate(base_rows=n, users=50, rate_eps=200.0, start_time=time.time() - 60).base)
    rows[0] = dict(rows[0], principal="", decision="deny", outcome="auth_failure", method="")
    table, errors = decode_messages([encode_rows(rows)], 1 << 26)
    assert not errors and table is not None
    return table


def _fields(view: BatchView) -> dict[str, object]:
    return {name: getattr(view, name) for name in view.__dataclass_fields__ if name != "table"}


def test_decode_small_path_matches_vectorised(vectorised_only: None) -> None:
    table = _rows(300)
    slow = _fields(BatchView.decode(table))
    batch.SMALL_BATCH = 512
    fast = _fields(BatchView.decode(table))
    assert len(fast["actors"]) > 20  # type: ignore[arg-type]
    for name, value in slow.items():
        other = fast[name]
        if isinstance(value, pa.Array):
            assert value.equals(other), name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, other, err_msg=name)
        else:
            assert value == other, name
    assert fast["status"][0] == 0 and fast["auth_failed"][0]  # type: ignore[index]


def test_hash64_same_with_and_without_memo() -> None:
    values = pa.array([f"actor-{i % 37}" for i in range(200)] + [None, "", "x" * 300], pa.string())
    memoised = hash64(values)
    again = hash64(values)  # every string now comes from the memo
    plain = hash64(values, memo=False)
    np.testing.assert_array_equal(memoised, plain)
    np.testing.assert_array_equal(again, plain)
    assert plain[200] == 0 and len(set(plain[:37].tolist())) == 37


def test_memo_is_bounded() -> None:
    for start in range(0, batch._MEMO_CAP + 2000, 500):
        hash64(pa.array([f"unique-{start + i}" for i in range(500)], pa.string()))
    assert len(batch._MEMO) <= batch._MEMO_CAP + 1


def test_present_treats_empty_as_absent() -> None:
    assert present(pa.array(["a", "", None], pa.string())).to_pylist() == ["a", None, None]
    big = pa.array(["a", ""] * 600, pa.string())
    assert present(big).null_count == 600


def test_an_inspection_over_budget_is_not_an_inline_hit(summary_factory: object) -> None:
    """A scan cut off by its time budget says the machine was slow, not that the caller attacked."""
    from enforcement.inspection import OVER_BUDGET
    from ingest.envelope import decode_messages, encode_rows
    from ingest import summary_to_row

    assert OVER_BUDGET in batch._NOT_ATTACKS
    rows = [summary_to_row(summary_factory(id=f"r{i}", inline_findings=found))  # type: ignore[operator]
            for i, found in enumerate([[OVER_BUDGET], ["sqli"], ["sqli", OVER_BUDGET], []])]
    table, _ = decode_messages([encode_rows(rows)], 1 << 20)
    assert table is not None
    assert BatchView.decode(table).inline.tolist() == [0.0, 1.0, 1.0, 0.0]
