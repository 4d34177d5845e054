"""Identity floods through the worker as shipped (streams/enrichers.py, models/features.py, models/rules/identity.yaml):
the registered enricher fills the two per-source features, the rules turn a rotation flood into an observe-only
finding that names the address and the endpoint, and steady traffic with users arriving at a normal pace stays quiet."""

from __future__ import annotations

import random
from typing import Any

import pytest

from ingest.envelope import summary_row
from models.features import feature
from models.registry import REGISTRY
from streams.identityflood import IdentityFlood, IdentityFloodConfig
from streams.replay import Replay, ReplayResult
from streams.settings import WorkerSettings

T0 = 1_800_000_000.0
RULES = ("identity-flood-service", "identity-flood-source")


def _row(k: str, t: float, ip: str, principal: str | None, service: str = "orders", status: int = 200) -> dict[str, Any]:
    return summary_row(id=k, time=T0 + t, source={"ip": ip}, principal=principal, auth_type="api_key" if principal else "none",
                       method="GET", destination={"service": service, "namespace": "shop"}, path_template=f"/{service}/{{id}}", status=status)


def _steady(seconds: float, users: int = 60, every: float = 3.0, arrivals_per_min: float = 12.0, nat: str | None = None) -> list[dict[str, Any]]:
    """Known users from many networks calling every ``every`` s, and new users arriving at a steady pace (each then
    stays), from addresses of their own or all through one ``nat`` address."""
    rng = random.Random(5)
    rows = [_row(f"u{i}", i * every / users, f"198.51.{(i % users) % 50}.{i % users + 1}", f"jwt:user-{i % users}",
                 service=("orders", "catalog", "auth")[i % 3]) for i in range(int(seconds / every * users))]
    gap = 60.0 / arrivals_per_min
    for j in range(int(seconds / gap)):
        ip = nat or f"100.{rng.randint(64, 127)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        rows += [_row(f"n{j}-{c}", j * gap + c * 4.0, ip, f"jwt:newcomer-{j}", service="catalog") for c in range(int((seconds - j * gap) / 4.0))]
    return rows


def _rotation(start: float, count: int, rate: float, ip: str = "203.0.113.7") -> list[dict[str, Any]]:
    """One address presenting a fresh API key (or session cookie) on every call, answered: each call a new actor with empty counts.

    (Answered 401 instead, the address is blocked by ``login-failure-burst`` within seconds, and a key already blocked
    actor-wide raises no further finding until its verdict expires.)"""
    return [_row(f"r{i}", start + i / rate, ip, f"apikey:{i:012x}") for i in range(count)]


def _botnet(start: float, count: int, rate: float) -> list[dict[str, Any]]:
    """A fresh address in a fresh /24 and a fresh key on every call, all to one service."""
    rng = random.Random(9)
    return [_row(f"b{i}", start + i / rate, f"{rng.randint(11, 99)}.{rng.randint(0, 255)}.{i % 256}.{rng.randint(1, 254)}",
                 f"apikey:b{i:011x}", service="payments", status=401) for i in range(count)]


def _replay(rows: list[dict[str, Any]]) -> tuple[Replay, ReplayResult]:
    replay = Replay(WorkerSettings())  # shipped settings: 60 s windows, 3 learning windows, every rule and enricher
    ordered: list[dict[str, Any]] = sorted(rows, key=lambda r: float(r["time"]))
    return replay, replay.run(ordered, batch_rows=200)


def _flood_findings(result: ReplayResult) -> list[tuple[str, Any, Any]]:
    return [(str(f.finding_info.analytic["name"]), f, v) for f, v in zip(result.findings, result.verdicts)
            if str(f.finding_info.analytic["name"]).startswith("identity-flood")]


def test_the_worker_runs_the_enricher_and_its_rules_by_default() -> None:
    settings = WorkerSettings()
    assert "identityflood" in settings.enrichers and set(RULES) <= set(settings.detector_names()) <= set(REGISTRY)
    for name in ("identity_flood_source", "identity_flood_service"):
        declared = feature(name)
        assert (declared.key, declared.fold, declared.signal) == ("source", "max", name) and name in IdentityFlood.signals
    columns = Replay(settings).processor().spaces["source"].store.columns
    assert {"identity_flood_source", "identity_flood_service"} <= set(columns)


def test_no_rule_floor_is_above_the_enrichers_line() -> None:
    """The rule floors only set the score; a floor above the enricher's would drop floods the enricher marked."""
    config = IdentityFloodConfig.from_windows(60, 3)
    rules = {r.id: r for r in (REGISTRY[name]().rule for name in RULES)}  # type: ignore[attr-defined]
    assert rules["identity-flood-source"].floor <= config.source_floor and rules["identity-flood-service"].floor <= config.service_floor
    assert all(r.mode == "observe" and r.status == "experimental" and r.key == "source" for r in rules.values())


def test_a_key_rotation_flood_is_a_finding_on_its_address_and_endpoint() -> None:
    replay, result = _replay(_steady(420) + _rotation(300, 300, rate=5.0))  # after learning (180 s): 5 new keys a second
    found = _flood_findings(result)
    assert [name for name, _, _ in found] == ["identity-flood-source"]  # the next window's flood is the same finding (flag TTL)
    _, finding, verdict = found[0]
    assert verdict.subject.kind == "ip" and verdict.subject.value == "203.0.113.7" and verdict.mode == "observe"
    assert verdict.action == "throttle" and verdict.scope is not None and (verdict.scope.service, verdict.scope.path_template) == ("orders", "/orders/{id}")
    assert finding.severity_id == 3 and finding.finding_info.types == ["anomaly"]  # Medium: 50 / (50 + 30)
    assert verdict.evidence_time is not None and 300 + 49 / 5.0 <= verdict.evidence_time - T0 < 320  # the 50th new key's batch
    assert "identity_flood_source=50" in finding.finding_info.desc
    enricher = next(e for e in replay.processor().enrichers if isinstance(e, IdentityFlood))
    assert enricher.floods == 2  # one per window


def test_a_distributed_flood_is_a_finding_on_the_service() -> None:
    _, result = _replay(_steady(300) + _botnet(200, 600, rate=10.0))  # 400 new identities in [180, 240), 200 in [240, 300)
    found = _flood_findings(result)
    assert [name for name, _, _ in found] == ["identity-flood-service"] * 2  # once per window, each on another address
    assert len({v.subject.value for _, _, v in found}) == 2 and {f.severity_id for _, f, _ in found} == {3}  # 200 / (200 + 120)
    assert {(v.scope.service, v.scope.path_template) for _, _, v in found if v.scope} == {("payments", "/payments/{id}")}


@pytest.mark.parametrize("nat", [None, "192.0.2.10"], ids=["own-addresses", "one-nat"])
def test_steady_traffic_with_users_arriving_raises_no_identity_flood(nat: str | None) -> None:
    rows = _steady(600, arrivals_per_min=30.0, nat=nat)  # 30 new users a minute, 10 minutes; through one NAT: 30 a window from it
    replay, result = _replay(rows)
    assert _flood_findings(result) == []
    enricher = next(e for e in replay.processor().enrichers if isinstance(e, IdentityFlood))
    assert enricher.new_identities == len({r["principal"] for r in rows}) > 300 and enricher.floods == 0


@pytest.mark.parametrize(("flood", "rule", "first_after"), [
    (lambda: _rotation(324, 216, rate=1.0), "identity-flood-source", 36 + 49),  # 36 keys in [300, 360), then the 50th of [360, 420)
    (lambda: _botnet(200, 800, rate=4.0), "identity-flood-service", 40 + 199 / 4),  # 160 in [180, 240), the 200th of [240, 300)
], ids=["rotation-1-per-s", "botnet-4-per-s"])
def test_a_flood_starting_mid_window_is_a_finding_in_its_first_whole_window(flood: Any, rule: str, first_after: float) -> None:
    """A flood's first, partial window stays under the line but reaches half of it: it must not teach the baseline, or the
    line would rise above the flood itself (36 keys taught 7.2 and a line of 72 over 60 a minute) and it would never fire."""
    rows = flood()
    _, result = _replay(_steady(rows[-1]["time"] - T0 + 1) + rows)
    found = _flood_findings(result)
    assert found and {name for name, _, _ in found} == {rule}
    first = min(v.evidence_time for _, _, v in found if v.evidence_time is not None) - rows[0]["time"]
    assert first_after <= first < first_after + 5  # in its first whole window, not later


def test_near_is_a_share_of_the_line() -> None:
    assert IdentityFloodConfig().near == 0.5 and IdentityFloodConfig(near=1.0).near == 1.0  # 1.0: only flood windows are left out
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="near"):
            IdentityFloodConfig(near=bad)
