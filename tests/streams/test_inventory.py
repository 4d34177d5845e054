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
