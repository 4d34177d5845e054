"""ingest.privilege: privileged functions from the method and path template."""

from __future__ import annotations

import pytest

from ingest.privilege import Privilege, PrivilegeIndex, classify, names_account, weight


@pytest.mark.parametrize(
    ("method", "template", "expected"),
    [
        ("GET", "/admin/balances", Privilege.ADMIN),
        ("GET", "/v1/admin/export", Privilege.ADMIN | Privilege.EXPORT),
        ("GET", "/admin-api/v2/users", Privilege.ADMIN),
        ("POST", "/users/{id}/roles", Privilege.ADMIN),
        ("GET", "/orders/export", Privilege.EXPORT),
        ("GET", "/backups/{id}", Privilege.EXPORT),
        ("DELETE", "/orders/{id}", Privilege.DELETE),
        ("POST", "/accounts/{id}/purge", Privilege.DELETE),
        ("GET", "/internal/healthz", Privilege.INTERNAL),
        ("PUT", "/users/{id}/password", Privilege.CREDENTIAL),
        ("POST", "/users/{id}/reset_password", Privilege.CREDENTIAL),
        ("GET", "/secrets/{name}", Privilege.CREDENTIAL),
        ("GET", "/debug/pprof", Privilege.DEBUG),
        ("GET", "/internal/debug/vars", Privilege.INTERNAL | Privilege.DEBUG),
        ("GET", "/actuator/env", Privilege.DEBUG),
        ("GET", "/admin/keys", Privilege.ADMIN | Privilege.CREDENTIAL),
    ],
)
def test_privileged_templates_are_recognised(method: str, template: str, expected: Privilege) -> None:
    assert classify(method, template) == expected


@pytest.mark.parametrize(
    ("method", "template"),
    [
        ("GET", "/orders/{id}"),
        ("GET", "/documents/{id}/download"),
        ("POST", "/features/batch"),
        ("GET", "/env"),  # weak words alone are ordinary
        ("GET", "/keys"),
        ("GET", "/system/status"),
        ("GET", "/{admin}/x"),  # a parameter never matches, whatever its name
        ("POST", "/token/refresh"),
        ("GET", "/administrators-guide-pdf-viewer"),
    ],
)
def test_ordinary_templates_are_not_privileged(method: str, template: str) -> None:
    assert classify(method, template) == Privilege.NONE


def test_weight_takes_the_strongest_kind() -> None:
    assert weight(Privilege.NONE) == 0.0
    assert weight(Privilege.DELETE) == 0.6
    assert weight(Privilege.DELETE | Privilege.ADMIN) == 1.0
    assert 0.0 < weight(Privilege.EXPORT) < weight(Privilege.CREDENTIAL)


def test_names_account_needs_a_parameter_before_the_credential_segment() -> None:
    assert names_account("/users/{id}/password")
    assert names_account("/accounts/{id}/credentials/reset")
    assert not names_account("/me/password")
    assert not names_account("/users/{id}/orders")
    assert not names_account("/password/{token}")


def test_index_memoises_and_stays_bounded() -> None:
    idx = PrivilegeIndex(limit=2)
    assert idx.lookup("GET", "/admin/x") == (Privilege.ADMIN, 1.0)
    idx.weight("GET", "/a")
    assert len(idx) == 2
    idx.weight("GET", "/b")
    assert len(idx) == 1  # cleared when full, then refilled
    with pytest.raises(ValueError, match="limit=0"):
        PrivilegeIndex(limit=0)
