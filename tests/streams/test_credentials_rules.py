"""The shipped credential rules through the replay path: slow rotating stuffing is blocked per address on the
login edge; users who mistype and a NAT where many log in never are."""

from __future__ import annotations

from functools import cache
from typing import Any

from ingest import summary_row
from streams.replay import ReplayResult, replay
from streams.settings import WorkerSettings
from tests.conftest import T0

NAT = "192.0.2.50"


def _login(t: float, ip: str, account: str, fail: bool) -> dict[str, Any]:
    """A login as the summarizer reports it: the API answers 200 with an error body, derived as auth_failure."""
    return summary_row(id=f"{t}-{ip}-{account}", time=T0 + t, source={"ip": ip, "external": True},
                       destination={"service": "auth", "namespace": "identity"}, method="POST", path_template="/login",
                       status=200, outcome="auth_failure" if fail else None, credential_subject=account)


def _campaign() -> list[dict[str, Any]]:
    """Six rotating addresses (the first tries three accounts, the others two each), mistyping users, a busy NAT."""
    rows = [_login(100 + 5 * i, "203.0.113.1", name, True) for i, name in enumerate(["ann", "bob", "cid"])]
    for k in range(2, 7):
        rows += [_login(100 + 40 * k + d, f"203.0.113.{k}", f"leak-{k}-{d}", True) for d in (0, 10)]
    for u in range(12):  # users on their own addresses, mistyping twice before they log in
        rows += [_login(95 + 30 * u + d, f"198.18.0.{u}", f"user-{u}", d < 6) for d in (0, 3, 6)]
    rows += [_login(10 + i, NAT, f"emp-{i}", False) for i in range(40)]  # an office: people log in all day
    rows += [_login(300, NAT, "emp-new", True), _login(302, NAT, "emp-7", True), _login(304, NAT, "emp-7", False),
             _login(305, NAT, "emp-new", True), _login(309, NAT, "emp-new", False)]
    return sorted(rows, key=lambda r: r["time"])


@cache
def _result() -> ReplayResult:
    return replay(_campaign(), WorkerSettings(verdict_key="credential-rules-test"), batch_rows=1)


def test_every_rotating_address_is_blocked_on_the_login_edge_only() -> None:
    verdicts = {v.subject.value: v for v in _result().verdicts if v.subject.value.startswith("203.0.113.")}
    assert sorted(verdicts) == [f"203.0.113.{k}" for k in range(1, 7)]
    for v in verdicts.values():
        assert v.subject.kind == "ip" and v.action == "block"
        assert v.scope is not None and (v.scope.service, v.scope.path_template) == ("auth", "/login")
    first = verdicts["203.0.113.1"]
    assert first.issued_at == T0 + 110 and first.reasons[0].detector == "stuffing-unresolved-accounts"  # its third account
    for k in range(2, 7):  # the others on their second account: another address did the same lately
        assert verdicts[f"203.0.113.{k}"].issued_at == T0 + 110 + 40 * k
        assert verdicts[f"203.0.113.{k}"].reasons[0].detector == "rotating-credential-stuffing"


def test_users_who_mistype_and_a_nat_where_many_log_in_get_no_verdict() -> None:
    subjects = {v.subject.value for v in _result().verdicts}
    assert not any(s.startswith("198.18.") or NAT in s for s in subjects)
