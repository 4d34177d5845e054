"""ingest.destination: one spelling per name, so a per-name policy (the shim's allow-list) cannot be stepped around."""

from __future__ import annotations

import pytest

from ingest.destination import Target, destination_from
from ingest.identity import IdentityConfig

C = IdentityConfig()


@pytest.mark.parametrize(("header", "route", "authority"), [
    (None, None, "ORDERS"), (None, None, "Orders:8080"), (None, None, "orders."), (None, None, "ORDERS.:80"),
    (None, "ORDERS", None), (None, "Orders", "whatever.example"), ("ORDERS", None, None), (None, "outbound|80||ORDERS", None),
])  # fmt: skip
def test_a_bare_service_name_is_one_name_whatever_its_case_or_root_dot(header: str | None, route: str | None, authority: str | None) -> None:
    assert destination_from(header, route, authority, C) == Target("orders")


def test_names_from_the_header_and_routes_are_lower_case() -> None:
    assert destination_from("Shop/Orders", None, None, C) == Target("orders", "shop")
    assert destination_from(None, "SHOP/ORDERS", "x", C) == Target("orders", "shop")
    assert destination_from(None, None, "Orders.Shop.SVC.Cluster.Local.:80", C) == Target("orders", "shop")


def test_an_external_host_is_one_name_whatever_its_case_or_root_dot() -> None:
    want = Target("api.psp.example.com", None, "api.psp.example.com", True)
    for authority in ("API.PSP.Example.COM", "api.psp.example.com.", "Api.Psp.Example.Com.:443"):
        assert destination_from(None, None, authority, C) == want
    assert destination_from(None, "outbound|443||API.psp.example.com.", None, C) == want


def test_an_address_with_a_root_dot_is_still_no_name() -> None:
    assert destination_from(None, None, "10.1.2.3.:8080", C).service is None
    assert destination_from(None, None, "[::1]:80", C).service is None
    assert destination_from(None, None, ".:80", C).service is None


def test_two_labels_stay_an_external_host_unless_the_route_says_otherwise() -> None:
    """``orders.shop`` resolves in a pod as service orders in namespace shop, but so would ``example.com`` look: without
    a list of namespaces nothing here can tell them apart; the route (a header, an Istio cluster name) can."""
    assert destination_from(None, None, "orders.shop", C) == Target("orders.shop", None, "orders.shop", True)
    assert destination_from(None, None, "example.com", C).external is True
    assert destination_from("shop/orders", None, "orders.shop", C) == Target("orders", "shop")
    assert destination_from(None, "outbound|80||orders.shop.svc.cluster.local", "orders.shop", C) == Target("orders", "shop")
