"""The API inventory: endpoints from traffic, classified against declared specs."""

from __future__ import annotations

import pyarrow as pa

from ingest import RequestSummary, Source, Destination, arrow_schema, summary_to_row
from streams.inventory import Inventory


def _table(*calls: tuple[float, str, str, str, str | None, dict[str, int]]) -> pa.Table:
    rows = [summary_to_row(RequestSummary(id=str(i), time=t, source=Source(workload="shop/frontend"), principal=p,
                                          destination=Destination(service=svc, namespace="shop"), method=m, path_template=tpl,
                                          status=200, sensitive=sens, auth_type="jwt"))
            for i, (t, svc, m, tpl, p, sens) in enumerate(calls)]
    return pa.Table.from_pylist(rows, schema=arrow_schema(RequestSummary))


DECLARED = {"shop/orders": {("GET", "/orders/{id}"): False, ("GET", "/v1/orders/{id}"): True}}


def test_status_from_specs_and_traffic() -> None:
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_table((1.0, "orders", "GET", "/orders/{id}", "a", {"email": 1}), (2.0, "orders", "GET", "/orders/{id}", "b", {}),
                      (3.0, "orders", "GET", "/v1/orders/{id}", "a", {}), (4.0, "orders", "GET", "/internal/debug", None, {}),
                      (5.0, "carts", "GET", "/carts/{id}", "a", {})))
    records = {r.key: r for r in inv.take_changed()}
    assert records["orders GET /orders/{id}"].spec_status == "declared"
    assert records["orders GET /orders/{id}"].callers == 2 and records["orders GET /orders/{id}"].data_types == ["email"]
    assert records["orders GET /v1/orders/{id}"].spec_status == "deprecated"
    assert records["orders GET /internal/debug"].spec_status == "shadow"
    assert records["carts GET /carts/{id}"].spec_status == "undeclared"
    assert inv.take_changed() == []
    assert "orders GET /v1/orders/{id}" in inv.zombie_keys()


def test_dormant_endpoint_called_again_is_a_zombie() -> None:
    inv = Inventory(DECLARED, dormant_after_s=100.0)
    inv.update(_table((1.0, "orders", "GET", "/orders/{id}", "a", {})))
    inv.update(_table((50.0, "orders", "GET", "/orders/{id}", "a", {})))
    assert "orders GET /orders/{id}" not in inv.zombie_keys()
    inv.update(_table((500.0, "orders", "GET", "/orders/{id}", "a", {})))
    assert "orders GET /orders/{id}" in inv.zombie_keys()
    assert inv.take_changed()[0].spec_status == "dormant"


def test_pipeline_publishes_inventory_and_counts_deprecated_calls_as_retired(summary_factory: object) -> None:
    from ingest import encode_envelope
    from streams import Pipeline, WorkerSettings
    from tests.conftest import T0

    make = summary_factory  # type: ignore[assignment]
    rows = [make(id=f"z{i}", principal="p", time=T0 + i, path_template="/v1/orders/{id}") for i in range(3)]  # type: ignore[operator]
    pipeline = Pipeline(WorkerSettings(inventory_interval_s=1.0), "t", declared=DECLARED)
    out = pipeline.handle(0, encode_envelope(rows), 0, T0 + 5)
    assert [r.spec_status for r in out.inventory] == ["deprecated"]
    assert [d.attack_class for d in out.detections] == ["retired_api"]


# --- the vectorised update against the per-row algorithm it replaced --------------------------------------------

from typing import Any  # noqa: E402

import pytest  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ingest import actor_key  # noqa: E402
from streams import inventory as inventory_module  # noqa: E402

_NAMES = st.sampled_from([None, "", "a", "b", "a b", "x|y"])
_ROW = st.fixed_dictionaries({
    "time": st.integers(0, 120).map(float),
    "source": st.fixed_dictionaries({"workload": _NAMES, "ip": _NAMES}),
    "principal": _NAMES,
    "destination": st.fixed_dictionaries({"service": st.sampled_from(["", "orders", "carts", "a b"]), "namespace": st.sampled_from([None, "", "shop", "ops"])}),
    "method": st.sampled_from(["GET", "POST"]),
    "path_template": st.sampled_from(["/a", "/b c", "/{id}"]),
    "status": st.sampled_from([None, 200, 404, 500]),
    "auth_type": st.sampled_from([None, "", "jwt", "mtls"]),
    "sensitive": st.one_of(st.none(), st.lists(st.tuples(st.sampled_from(["email", "card", "ssn"]), st.sampled_from([0, 1, 3])), max_size=3)),
})
#: a batch: its rows, where it is cut into two record batches (chunks), and whether a leading row is sliced off
_BATCH = st.tuples(st.lists(_ROW, min_size=1, max_size=12), st.integers(0, 12), st.booleans())
_CAP = 3  # the caller cap, lowered so small batches reach it


def _arrow(rows: list[dict[str, Any]], cut: int, sliced: bool) -> pa.Table:
    """The rows as a table of up to two chunks, optionally a slice (non-zero offsets), as decoded envelopes can be."""
    schema = arrow_schema(RequestSummary)
    rows = ([dict(rows[0], sensitive=[("lead", 9)], principal="lead")] if sliced else []) + rows
    cut = min(cut, len(rows))
    table = pa.concat_tables([pa.Table.from_pylist(part, schema=schema) for part in (rows[:cut], rows[cut:]) if part])
    return table.slice(1) if sliced else table


def _oracle(batches: list[list[dict[str, Any]]], dormant_after_s: float) -> dict[str, dict[str, Any]]:
    """The per-row algorithm ``Inventory.update`` had before it was vectorised."""
    eps: dict[str, dict[str, Any]] = {}
    for rows in batches:
        for row in rows:
            dest, src = row["destination"] or {}, row["source"] or {}
            service = dest.get("service") or "-"
            key, t = f"{service} {row['method']} {row['path_template']}", float(row["time"])
            ep = eps.get(key)
            if ep is None:
                ep = eps[key] = {"service": service, "namespace": dest.get("namespace"), "method": row["method"], "template": row["path_template"],
                                 "first_seen": t, "last_seen": t, "calls": 0, "callers": {}, "auth_types": set(), "data_types": set(),
                                 "statuses": {}, "woke_from_dormancy": False}
            elif t - ep["last_seen"] >= dormant_after_s:
                ep["woke_from_dormancy"] = True
            ep["calls"] += 1
            ep["first_seen"], ep["last_seen"] = min(ep["first_seen"], t), max(ep["last_seen"], t)
            actor = actor_key(src.get("workload") or src.get("ip"), row["principal"])
            if actor in ep["callers"] or len(ep["callers"]) < _CAP:
                ep["callers"][actor] = ep["callers"].get(actor, 0) + 1
            if row["auth_type"]:
                ep["auth_types"].add(row["auth_type"])
            ep["data_types"].update(k for k, v in (row["sensitive"] or []) if v > 0)
            status = str(row["status"]) if row["status"] is not None else "none"
            ep["statuses"][status] = ep["statuses"].get(status, 0) + 1
    return eps


def _state(inv: Inventory) -> dict[str, dict[str, Any]]:
    """The inventory's endpoints as plain dicts; callers as an ordered list (ties in top callers follow insertion order)."""
    fields = ("service", "namespace", "method", "template", "first_seen", "last_seen", "calls", "auth_types", "data_types", "statuses", "woke_from_dormancy")
    return {k: {**{f: getattr(ep, f) for f in fields}, "callers": list(ep.callers.items())} for k, ep in inv.endpoints.items()}


@settings(max_examples=400, deadline=None)
@given(batches=st.lists(_BATCH, min_size=1, max_size=4), dormant_after_s=st.sampled_from([10.0, 50.0, 1e9]))
def test_update_equals_the_per_row_algorithm(batches: list[tuple[list[dict[str, Any]], int, bool]], dormant_after_s: float) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(inventory_module, "_CALLER_CAP", _CAP)
        inv = Inventory(DECLARED, dormant_after_s=dormant_after_s)
        for rows, cut, sliced in batches:
            inv.update(_arrow(rows, cut, sliced))
    expected = _oracle([rows for rows, _, _ in batches], dormant_after_s)
    for ep in expected.values():
        ep["callers"] = list(ep["callers"].items())
    assert _state(inv) == expected
    assert {r.key for r in inv.take_changed()} == set(expected)
    assert inv.zombie_keys() == {k for k, ep in expected.items() if ep["woke_from_dormancy"]} | {"orders GET /v1/orders/{id}"}
