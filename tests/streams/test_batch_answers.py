"""BatchView's ``first`` and ``answer``: which copy of a call counts the request, which its answer; same on every path."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import streams.batch as batch
from ingest.envelope import SUMMARY_SCHEMA, summary_row
from streams.batch import BatchView
from streams.repeats import RepeatFilter
from tests.conftest import T0
from tests.streams.test_batch import vectorised_only  # noqa: F401  (the fixture)


def _table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)


def _calls(n: int) -> list[dict[str, object]]:
    """Each call's shim copy (no status; some refused), then its access-log copy; some calls seen by one reporter only."""
    rows: list[dict[str, object]] = []
    for i in range(n):
        call = {"id": f"c{i}", "time": T0 + i, "source": {"workload": "shop/web"}, "principal": f"u{i % 7}", "method": "GET",
                "path_template": "/a", "destination": {"service": "orders"}}
        if i % 5:
            rows.append(summary_row(**call, reporter="shim", status=403 if i % 11 == 0 else None, decision="deny" if i % 11 == 0 else "allow"))
        if i % 4:
            rows.append(summary_row(**call, reporter="access_log", status=(200, 401, 404)[i % 3], outcome="auth_failure" if i % 13 == 0 else None))
    return rows


def test_without_the_filter_answer_is_first() -> None:
    table = _table(_calls(20))
    repeats = np.arange(table.num_rows) % 3 == 0
    for view in (BatchView.decode(table), BatchView.decode(table, repeats)):
        assert view.answer.tolist() == view.first.tolist()


def test_each_call_counts_once_and_its_answer_once() -> None:
    table = _table(_calls(40))
    view = BatchView.decode(table, ids=RepeatFilter(1000))
    ids = table["id"].to_pylist()
    assert sorted(i for i, f in zip(ids, view.first.tolist()) if f) == sorted(set(ids))
    answered = [i for i, a in zip(ids, view.answer.tolist()) if a]
    assert len(answered) == len(set(answered))
    calls_with_answer = {f"c{i}" for i in range(40) if i % 4 or i % 11 == 0 and i % 5}
    assert set(answered) == calls_with_answer


def test_the_vectorised_and_the_small_paths_judge_alike(vectorised_only: None) -> None:
    table = _table(_calls(900))
    vector = BatchView.decode(table, ids=RepeatFilter(10_000))
    batch.SMALL_BATCH = 512
    f = RepeatFilter(10_000)
    small = [BatchView.decode(table.slice(i, 100), ids=f) for i in range(0, table.num_rows, 100)]
    assert np.concatenate([v.first for v in small]).tolist() == vector.first.tolist()
    assert np.concatenate([v.answer for v in small]).tolist() == vector.answer.tolist()
