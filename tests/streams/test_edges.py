"""streams.edges.EdgeEnricher: learned call edges, rarity, privilege, rollouts, first-seen hosts, export/restore."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streams.batch import BatchView, Signals
from streams.edges import SIGNALS, EdgeConfig, EdgeEnricher
from tests.conftest import T0

CONFIG = EdgeConfig(learn_s=60.0, learn_calls=3, promote_calls=3, promote_s=30.0, promote_callers=3, promote_callers_privileged=5)
LEARNED = T0 + 100.0  # past every caller's learning period in these tests


@pytest.fixture
def call(summary_factory: Any, table_of: Any) -> Any:
    """``call(enricher, *summaries_kwargs) -> Signals`` for one batch of the given calls."""

    def run(enricher: EdgeEnricher, *rows: dict[str, Any]) -> Signals:
        return enricher.enrich(BatchView.decode(table_of([summary_factory(**r) for r in rows])))

    return run


def svc(t: float, service: str = "orders", template: str = "/orders/{id}", workload: str = "shop/web", **kw: Any) -> dict[str, Any]:
    """A service call (mTLS, no principal)."""
    return {"time": t, "principal": None, "workload": workload, "service": service, "path_template": template, **kw}


def user(t: float, principal: str, template: str = "/orders/{id}", service: str = "orders", **kw: Any) -> dict[str, Any]:
    """An end user's call through the gateway."""
    return {"time": t, "principal": principal, "workload": "edge/gateway", "service": service, "path_template": template, **kw}


def learned_enricher(call: Any, config: EdgeConfig = CONFIG) -> EdgeEnricher:
    """shop/web has learned orders GET /orders/{id}, shop/carts catalog GET /products; users GET /orders/{id}."""
    e = EdgeEnricher(config)
    call(e, *[svc(T0 + i) for i in range(5)], *[svc(T0 + i, "catalog", "/products", workload="shop/carts") for i in range(5)],
         *[user(T0 + i, f"u{i}") for i in range(5)])
    return e


def test_edges_seen_while_learning_are_learned_and_stay_quiet(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, svc(LEARNED), svc(LEARNED + 1, status=403), user(LEARNED, "u9"), user(LEARNED, "u1", status=401))
    assert all(not out[name].any() for name in SIGNALS)


def test_first_call_on_a_new_edge_after_learning_is_novel_once(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, svc(LEARNED, "carts", "/carts/{id}"), svc(LEARNED + 1, "carts", "/carts/{id}"))
    assert out["novel_edge"].tolist() == [1.0, 0.0]
    again = call(e, svc(LEARNED + 2, "carts", "/carts/{id}"))
    assert again["novel_edge"].tolist() == [0.0]


def test_an_edge_many_callers_use_is_ordinary(call: Any) -> None:
    e = EdgeEnricher(CONFIG)
    call(e, *[svc(T0 + i, "catalog", "/products", workload=f"ns/w{k}") for k in range(3) for i in range(4)], *[svc(T0 + i) for i in range(4)])
    out = call(e, svc(LEARNED, "catalog", "/products"), svc(LEARNED, "ledger", "/ledger/entries", method="POST"))
    assert out["novel_edge"].tolist() == [0.25, 1.0]  # 1 / (1 + 3 callers) against a never-called edge


def test_privileged_new_edges_score_their_privilege(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, svc(LEARNED, "ledger-admin", "/admin/balances"), svc(LEARNED, "orders", "/orders/{id}", method="DELETE"),
               svc(LEARNED, "orders", "/orders/{id}/items"))
    assert out["novel_privileged_edge"].tolist() == [1.0, 0.6, 0.0]
    assert out["novel_edge"].tolist() == [1.0, 1.0, 1.0]


def test_the_first_denial_on_a_new_edge_is_strong_evidence(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, svc(LEARNED, "ledger", "/ledger/entries", status=403), svc(LEARNED + 1, "ledger", "/ledger/entries", status=403))
    assert out["novel_edge_denied"].tolist() == [1.0, 0.0]
    later = call(e, svc(LEARNED + 2, "ledger", "/ledger/entries", status=401))
    assert later["novel_edge_denied"].tolist() == [0.0]


def test_a_rollout_dependency_settling_into_steady_success_is_learned_and_never_flagged(call: Any) -> None:
    e = learned_enricher(call)
    totals = {name: 0.0 for name in SIGNALS}
    for k in range(12):  # one call every 10 s for two minutes, all answered 200
        out = call(e, svc(LEARNED + 10 * k, "fraud-scorer", "/score", method="POST"))
        for name in SIGNALS:
            totals[name] += float(out[name].sum())
    assert totals["novel_edge"] == 1.0  # its first call is news once ...
    assert totals["novel_edge_denied"] == totals["novel_privileged_edge"] == totals["rare_function"] == 0.0
    out = call(e, svc(LEARNED + 200, "fraud-scorer", "/score", method="POST", status=403))
    assert all(not out[name].any() for name in SIGNALS)  # ... and once settled, not even a 403 is news
    fresh = call(e, svc(LEARNED + 201, "fraud-scorer", "/score", method="POST", workload="shop/carts"))
    assert fresh["novel_edge"].tolist() == [0.5]  # another caller's first call now meets a learned edge


def test_a_new_edge_with_denials_does_not_settle(call: Any) -> None:
    e = learned_enricher(call)
    call(e, svc(LEARNED, "ledger", "/ledger/entries", status=403))
    for k in range(1, 8):
        call(e, svc(LEARNED + 10 * k, "ledger", "/ledger/entries"))
    out = call(e, svc(LEARNED + 100, "ledger", "/ledger/entries", workload="shop/carts"))
    assert out["novel_edge"].tolist() == [1.0]  # still nobody's learned edge: rarity unchanged


def test_a_user_calling_a_privileged_function_the_cohort_never_calls(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, user(LEARNED, "mallory", "/orders/{id}", method="DELETE"), user(LEARNED + 1, "mallory", "/orders/{id}", method="DELETE"),
               user(LEARNED + 2, "mallory", "/users/{id}/password", service="identity", method="PUT"), user(LEARNED + 3, "bob"))
    assert out["rare_function"].tolist() == [0.6, 0.6, 1.0, 0.0]
    assert out["novel_edge"].tolist() == [1.0, 0.0, 1.0, 0.0]


def test_a_function_many_users_adopt_becomes_the_cohorts(call: Any) -> None:
    e = learned_enricher(call)
    for k in range(3):  # three distinct principals use a new (ordinary) endpoint successfully
        call(e, user(LEARNED + k, f"new{k}", "/orders/{id}/receipt"))
    out = call(e, user(LEARNED + 10, "late", "/orders/{id}/receipt"))
    assert out["novel_edge"].tolist() == [0.0]


def test_privileged_functions_need_more_distinct_users_to_settle(call: Any) -> None:
    e = learned_enricher(call)
    for k in range(3):
        call(e, user(LEARNED + k, f"admin{k}", "/admin/reports"))
    out = call(e, user(LEARNED + 10, "mallory", "/admin/reports"))
    assert out["rare_function"].tolist() == [0.25]  # privileged, used by 3 others: 1 / (1 + 3)
    for k in range(3, 6):
        call(e, user(LEARNED + 20 + k, f"admin{k}", "/admin/reports"))
    assert call(e, user(LEARNED + 40, "eve", "/admin/reports"))["rare_function"].tolist() == [0.0]


def test_first_seen_external_host_after_learning_and_the_bytes_sent_to_it(call: Any) -> None:
    e = learned_enricher(call)
    call(e, svc(T0 + 1, "api.mailer.example.com", "/v3/mail/send", method="POST", dest_external=True, request_bytes=900))
    out = call(e, svc(LEARNED, "api.mailer.example.com", "/v3/mail/send", method="POST", dest_external=True, request_bytes=900),
               svc(LEARNED, "paste.example.net", "/api/pastes", method="POST", dest_external=True, request_bytes=65536),
               svc(LEARNED + 1, "paste.example.net", "/api/pastes", method="POST", dest_external=True, request_bytes=65536))
    assert out["new_external_host"].tolist() == [0.0, 1.0, 0.0]
    assert out["new_host_bytes"].tolist() == [0.0, 65536.0, 65536.0]
    settled = call(e, svc(LEARNED + 3600, "paste.example.net", "/api/pastes", method="POST", dest_external=True, request_bytes=10))
    assert settled["new_host_bytes"].tolist() == [0.0]


def test_a_users_egress_is_judged_by_its_source_workload(call: Any) -> None:
    e = learned_enricher(call)
    call(e, *[svc(T0 + i, "feature-store", "/features/batch", workload="ml/notebook", method="POST") for i in range(5)])
    out = call(e, {**svc(LEARNED, "paste.example.net", "/api/pastes", workload="ml/notebook", method="POST", dest_external=True,
                          request_bytes=5000), "principal": "alice"})
    assert out["new_external_host"].tolist() == [1.0] and out["new_host_bytes"].tolist() == [5000.0]


def test_export_restore_gives_the_same_answers(call: Any) -> None:
    e = learned_enricher(call)
    call(e, svc(LEARNED, "ledger", "/ledger/entries"), user(LEARNED, "x", "/admin/x"))
    blob = e.export()
    twin = EdgeEnricher(CONFIG)
    twin.restore(blob)
    rows = [svc(LEARNED + 5, "ledger", "/ledger/entries"), svc(LEARNED + 5, "carts", "/carts/{id}", status=403),
            svc(LEARNED + 5), user(LEARNED + 6, "x", "/admin/x"), user(LEARNED + 6, "y", "/admin/x")]
    a, b = call(e, *rows), call(twin, *rows)
    assert all(a[n].tolist() == b[n].tolist() for n in SIGNALS)
    assert a["novel_edge"].tolist() == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert twin.export() == e.export()


def test_state_is_bounded_and_evictions_are_counted(call: Any) -> None:
    e = EdgeEnricher(EdgeConfig(learn_s=0.0, learn_calls=1, max_pairs=50))
    for k in range(10):
        call(e, *[svc(T0 + k, "orders", f"/p{k}/r{i}") for i in range(20)])
    assert len(e.pairs) <= 50 and e.pairs.evicted >= 150 and e.evicted >= e.pairs.evicted


def test_every_signal_is_one_float_per_row(call: Any) -> None:
    e = EdgeEnricher(CONFIG)
    out = call(e, svc(T0), user(T0, "a"))
    assert set(out) == set(SIGNALS) == set(e.signals)
    assert all(v.shape == (2,) and v.dtype == np.float64 for v in out.values())
    with pytest.raises(ValueError, match="learn_calls=0"):
        EdgeConfig(learn_calls=0)
    assert EdgeConfig.from_windows(10, 2).learn_s == 20.0


def test_a_learned_edge_stays_quiet_when_a_later_batch_carries_a_longer_template(call: Any) -> None:
    e = learned_enricher(call)
    out = call(e, svc(LEARNED), svc(LEARNED, "orders", "/orders/{id}/a-much-longer-template-than-any-before"))
    assert out["novel_edge"].tolist() == [0.0, 1.0]
