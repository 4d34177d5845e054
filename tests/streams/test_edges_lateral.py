"""Lateral movement end to end: the edge learner's signals through the shipped rules (models/rules/lateral.yaml).

A compromised service calling a privileged export now and then is blocked on
that edge only; a legitimate new dependency is never blocked. Summaries go
through ``streams.replay`` with the worker's shipped settings (windows,
learning period, every rule and enricher).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import pytest

from ingest import RequestSummary
from streams.replay import ReplayResult, replay
from streams.settings import WorkerSettings
from tests.conftest import T0

COMPROMISED, NEW_DEPENDENCY = "shop/notifications", "shop/carts"


def _svc(summary_factory: Any, t: float, workload: str, service: str, template: str, method: str = "GET") -> RequestSummary:
    return summary_factory(time=t, principal=None, workload=workload, source_namespace=workload.split("/")[0], service=service,
                           path_template=template, method=method)


def _cluster(summary_factory: Any, until: float) -> list[RequestSummary]:
    """Services calling their dependencies; a batch job exporting invoices; the auth service reading secrets."""
    out = []
    for k in range(int(until // 2)):
        t = T0 + 2.0 * k
        out.append(_svc(summary_factory, t, COMPROMISED, "profiles", "/profiles/{id}/contact"))
        out.append(_svc(summary_factory, t + 0.5, NEW_DEPENDENCY, "catalog", "/products"))
        if k % 5 == 0:
            out.append(_svc(summary_factory, t + 1.0, "identity/auth", "secrets-broker", "/secrets/{name}"))
        if k % 20 == 0:
            out.append(_svc(summary_factory, t + 1.5, "data/reporting", "invoices", "/invoices/export"))
    return out


@cache
def _run(summary_factory: Any) -> ReplayResult:
    rows = _cluster(summary_factory, 600.0)
    # past every caller's learning period (3 windows of 60 s): a privileged export now and then ...
    rows += [_svc(summary_factory, T0 + t, COMPROMISED, "invoices", "/invoices/export") for t in (305.3, 371.7, 452.9, 530.1)]
    # ... and a new ordinary dependency, called steadily from then on
    rows += [_svc(summary_factory, T0 + 300.2 + 3.0 * k, NEW_DEPENDENCY, "orders", "/orders/{id}") for k in range(90)]
    rows.sort(key=lambda r: r.time)
    return replay(rows, WorkerSettings(verdict_key="lateral-test-key"), batch_rows=30)


@pytest.fixture
def result(summary_factory: Any) -> ReplayResult:
    return _run(summary_factory)


def test_a_compromised_service_exporting_now_and_then_is_blocked_on_that_edge_only(result: ReplayResult) -> None:
    mine = [v for v in result.verdicts if v.subject.value.startswith(COMPROMISED)]
    assert mine, [(v.subject.value, v.reasons[0].detector) for v in result.verdicts]
    assert all(v.scope is not None and (v.scope.service, v.scope.path_template) == ("invoices", "/invoices/export") for v in mine)
    assert {v.action for v in mine} == {"block"} and mine[0].reasons[0].detector == "lateral-new-privileged-edge"
    first = min(v.issued_at for v in mine)
    assert first < T0 + 371.7  # on its first export: the next one meets the verdict


def test_a_new_dependency_and_the_learned_callers_are_never_blocked(result: ReplayResult) -> None:
    others = [(v.subject.value, v.reasons[0].detector) for v in result.verdicts if not v.subject.value.startswith(COMPROMISED)]
    assert others == []
