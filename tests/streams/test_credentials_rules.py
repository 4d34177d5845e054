"""The shipped credential rules through the replay path: slow rotating stuffing is blocked per address on the
login edge once a campaign shows; users who mistype, try their e-mail after their user name, or share a NAT or an
office address never are; logging in to one's own account or asking for password resets hides nothing."""

from __future__ import annotations

from functools import cache
from typing import Any

from ingest import summary_row
from streams.replay import ReplayResult, replay
from streams.settings import WorkerSettings
from tests.conftest import T0

NAT = "192.0.2.50"


def _login(t: float, ip: str, account: str, fail: bool, path: str = "/login") -> dict[str, Any]:
    """A login as the summarizer reports it: the API answers 200 with an error body, derived as auth_failure."""
    return summary_row(id=f"{t}-{ip}-{account}-{path}", time=T0 + t, source={"ip": ip, "external": True},
                       destination={"service": "auth", "namespace": "identity"}, method="POST", path_template=path,
                       status=200, outcome="auth_failure" if fail else None, credential_subject=account)


def _replay(rows: list[dict[str, Any]]) -> ReplayResult:
    return replay(sorted(rows, key=lambda r: r["time"]), WorkerSettings(verdict_key="credential-rules-test"), batch_rows=1)


def _verdicts(result: ReplayResult, prefix: str) -> dict[str, Any]:
    return {v.subject.value: v for v in result.verdicts if v.subject.value.startswith(prefix)}


def _stuffers(decoys: int = 0) -> list[dict[str, Any]]:
    """Eight rotating addresses: the first tries four accounts, the others two each, 40 s apart; each may first log in
    ``decoys`` times to the attacker's own account and ask for as many password resets (200 whatever the account)."""
    rows = [_login(100 + 5 * i, "203.0.113.1", name, True) for i, name in enumerate(["ann", "bob", "cid", "dan"])]
    for k in range(2, 9):
        ip = f"203.0.113.{k}"
        rows += [_login(100 + 40 * k + d, ip, f"leak-{k}-{d}", True) for d in (0, 10)]
        rows += [_login(90 + 40 * k + j, ip, "attacker-own", False) for j in range(decoys)]
        rows += [_login(95 + 40 * k + j, ip, f"decoy-{k}-{j}", False, "/auth/password/forgot") for j in range(decoys)]
    return rows


def _benign() -> list[dict[str, Any]]:
    """Users who mistype, users who try their e-mail after their user name, a busy NAT, a cold office address."""
    rows = []
    for u in range(12):  # users on their own addresses, mistyping twice before they log in
        rows += [_login(95 + 30 * u + d, f"198.18.0.{u}", f"user-{u}", d < 6) for d in (0, 3, 6)]
    for u, start in enumerate((0, 150, 250)):  # user name, then e-mail, both with an old password, then the new one
        ip, name = f"198.51.100.{u}", f"person{u}"
        rows += [_login(start, ip, name, True), _login(start + 4, ip, f"{name}@example.com", True), _login(start + 20, ip, name, False)]
    rows += [_login(10 + i, NAT, f"emp-{i}", False) for i in range(40)]  # an office: people log in all day
    rows += [_login(300, NAT, "emp-new", True), _login(302, NAT, "emp-7", True), _login(304, NAT, "emp-7", False),
             _login(305, NAT, "emp-new", True), _login(309, NAT, "emp-new", False)]
    office = "192.0.2.77"  # no remembered login: three people each mistype once, then log in
    rows += [_login(200 + d, office, f"staff-{d}", True) for d in (0, 2, 4)]
    rows += [_login(208 + d, office, f"staff-{d}", False) for d in (0, 2, 4)]
    return rows


@cache
def _result() -> ReplayResult:
    return _replay(_stuffers() + _benign())


def test_rotating_addresses_are_blocked_on_the_login_edge_once_a_campaign_shows() -> None:
    verdicts = _verdicts(_result(), "203.0.113.")
    assert sorted(verdicts) == ["203.0.113.1"] + [f"203.0.113.{k}" for k in range(5, 9)]
    for v in verdicts.values():
        assert v.subject.kind == "ip" and v.action == "block"
        assert v.scope is not None and (v.scope.service, v.scope.path_template) == ("auth", "/login")
    first = verdicts["203.0.113.1"]
    assert first.issued_at == T0 + 115 and first.reasons[0].detector == "stuffing-unresolved-accounts"  # its fourth account
    for k in range(5, 9):  # three others failed on two accounts and had not logged in 45 s later: on the second
        assert verdicts[f"203.0.113.{k}"].issued_at == T0 + 110 + 40 * k
        assert verdicts[f"203.0.113.{k}"].reasons[0].detector == "rotating-credential-stuffing"


def test_users_who_mistype_or_mix_up_names_and_shared_addresses_get_no_verdict() -> None:
    subjects = {v.subject.value for v in _result().verdicts}
    assert not any(s.startswith(("198.18.", "198.51.100.", "192.0.2.")) for s in subjects)


def test_logins_to_the_attackers_own_account_and_reset_requests_hide_nothing() -> None:
    plain, decoyed = _verdicts(_result(), "203.0.113."), _verdicts(_replay(_stuffers(decoys=2) + _benign()), "203.0.113.")
    assert {s: v.issued_at for s, v in decoyed.items()} == {s: v.issued_at for s, v in plain.items()}


def test_a_name_mix_up_during_a_weak_campaign_is_not_blocked() -> None:
    rows = [_login(20 * k + d, f"203.0.113.{k}", f"leak-{k}-{d}", True) for k in (2, 3) for d in (0, 5)]
    rows += [_login(200, "198.51.100.7", "alice", True), _login(210, "198.51.100.7", "alice@example.com", True),
             _login(240, "198.51.100.7", "alice", False)]
    assert not _verdicts(_replay(rows), "198.51.100.7")
