"""A call counts once and its answer once: a shim's copy of an allowed call (no status: it reports before the upstream
answers) followed by the access log's copy (the upstream's status) must still count the 401s and 403/404s."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from models import REGISTRY, build_detectors
from streams.processor import BatchProcessor, ProcessorConfig
from streams.state import actor_hash
from tests.conftest import T0


def _processor() -> BatchProcessor:
    return BatchProcessor(ProcessorConfig(window_s=60), build_detectors(sorted(REGISTRY)))


def _cols(proc: BatchProcessor, actor: str, *names: str) -> tuple[float, ...]:
    rows, _ = proc.store.rows_for(np.array([actor_hash(actor)], dtype=np.uint64))
    frame = proc.frame(rows)
    return tuple(float(frame[name][0]) for name in names)


def _copies(summary_factory: Any, i: int, status: int, **kw: Any) -> tuple[Any, Any]:
    """(the shim's copy, the access log's copy) of one call, as ``enforcement.shim.summary_row`` and a collector write them."""
    shim = summary_factory(id=f"c{i}", time=T0 + i, reporter="shim", status=None, decision="allow", **kw)
    log = summary_factory(id=f"c{i}", time=T0 + i, reporter="access_log", status=status, **kw)
    return shim, log


@pytest.mark.parametrize("batching", ["shim batch, then log batch", "one batch", "call by call"])
def test_the_access_logs_status_counts_after_the_shims_copy(summary_factory: Any, table_of: Any, batching: str) -> None:
    proc = _processor()
    calls = [_copies(summary_factory, i, status, principal="p") for i, status in enumerate([401, 401, 403, 404, 200])]
    shims, logs = [c[0] for c in calls], [c[1] for c in calls]
    batches = {"shim batch, then log batch": [shims, logs], "one batch": [[r for c in calls for r in c]],
               "call by call": [[r] for c in calls for r in c]}[batching]
    for batch in batches:
        proc.process(table_of(batch))
    assert _cols(proc, "shop/web|p", "requests", "auth_failures", "denied") == (5, 2, 2)


def test_the_order_of_the_copies_does_not_matter(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    shim, log = _copies(summary_factory, 0, 401, principal="p")
    proc.process(table_of([log]))
    proc.process(table_of([shim]))
    assert _cols(proc, "shop/web|p", "requests", "auth_failures") == (1, 1)


def test_a_derived_login_failure_counts_once_after_the_shims_copy(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    shim = summary_factory(id="l1", time=T0, reporter="shim", status=None, decision="allow", principal=None)
    log = summary_factory(id="l1", time=T0 + 0.1, reporter="access_log", status=200, outcome="auth_failure", principal=None)
    ext = summary_factory(id="l1", time=T0 + 0.2, reporter="ext_proc", status=200, outcome="auth_failure", principal=None)
    for row in (shim, log, ext):
        proc.process(table_of([row]))
    assert _cols(proc, "shop/web|-", "requests", "auth_failures") == (1, 1)


def test_the_shims_refusal_is_the_answer_the_access_logs_403_of_it_is_not_a_denial(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    shim = summary_factory(id="r1", time=T0, reporter="shim", status=403, decision="deny", principal="p")
    log = summary_factory(id="r1", time=T0 + 0.1, reporter="access_log", status=403, principal="p")  # the data plane's local reply
    proc.process(table_of([shim]))
    proc.process(table_of([log]))
    assert _cols(proc, "shop/web|p", "requests", "denied") == (1, 0)


def test_an_object_created_counts_from_the_copy_that_saw_the_response(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    shim = summary_factory(id="o1", time=T0, reporter="shim", status=None, decision="allow", principal="p", method="POST",
                           path_template="/orders")
    log = summary_factory(id="o1", time=T0 + 0.1, reporter="ext_proc", status=201, principal="p", method="POST",
                          path_template="/orders", object_ids_created=["order-9"])
    proc.process(table_of([shim]))
    proc.process(table_of([log]))
    assert _cols(proc, "shop/web|p", "requests", "creates_long")[0] == 1 and _cols(proc, "shop/web|p", "creates_long")[0] > 0.9


def test_one_reporter_reusing_an_id_is_still_counted_call_by_call(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    rows = [summary_factory(id="same", time=T0 + i, reporter="access_log", status=401, principal="p") for i in range(4)]
    proc.process(table_of(rows[:2]))
    proc.process(table_of(rows[2:]))
    assert _cols(proc, "shop/web|p", "requests", "auth_failures") == (4, 4)
