"""Two reporters' records of one call count once; declared login outcomes count as authentication failures."""

from __future__ import annotations

from typing import Any

import numpy as np

from models import REGISTRY, build_detectors
from streams.processor import BatchProcessor, ProcessorConfig
from streams.state import actor_hash
from tests.conftest import T0


def _processor() -> BatchProcessor:
    return BatchProcessor(ProcessorConfig(window_s=60), build_detectors(sorted(REGISTRY)))


def _col(proc: BatchProcessor, actor: str, name: str) -> float:
    rows, _ = proc.store.rows_for(np.array([actor_hash(actor)], dtype=np.uint64))
    return float(proc.frame(rows)[name][0])  # the frame: rare columns live in the side table


def test_shim_and_access_log_records_of_one_call_count_once(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    shim = summary_factory(id="req-1", principal="p", time=T0, reporter="shim", status=403, inline_findings=["sqli"])
    log = summary_factory(id="req-1", principal="p", time=T0 + 0.01, reporter="access_log", status=403, sensitive={"email": 2})
    other = summary_factory(id="req-2", principal="p", time=T0 + 0.02, reporter="access_log", status=200)
    proc.process(table_of([shim]))
    proc.process(table_of([log, other]))
    actor = "shop/web|p"
    assert _col(proc, actor, "requests") == 2
    assert _col(proc, actor, "denied") == 1
    assert _col(proc, actor, "inline_hits") == 1
    assert _col(proc, actor, "pii") == 2


def test_login_answered_200_with_failure_outcome_is_an_auth_failure(summary_factory: Any, table_of: Any) -> None:
    proc = _processor()
    rows = [summary_factory(id=f"l{i}", principal=None, time=T0 + i, status=200, outcome="auth_failure" if i % 2 else "ok") for i in range(10)]
    proc.process(table_of(rows))
    assert _col(proc, "shop/web|-", "auth_failures") == 5
