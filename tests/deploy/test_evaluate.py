"""kubeward evaluate: the enforced loop counts calls before the verdict call by call, collateral, and the report's shape."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from deploy.lab.enforcer import EnforcedRun, OfflineShim, covers
from deploy.lab.evaluate import enforcing, evaluate, variant_registry
from deploy.lab.offline import OfflineDataPlane
from deploy.lab.scorecard import Scorecard
from ingest import Subject, Verdict, actor_key
from ingest.errors import SettingsError
from ingest.simulator.call import SimCall, new_call
from ingest.simulator.catalog import BY_KEY
from ingest.simulator.world import World
from streams import Outcome

SEED, USERS, T0 = 5, 200, 1.8e9
LOGIN = BY_KEY["identity/auth POST /login"]
ORDER = BY_KEY["shop/orders GET /orders/{id}"]


def _actor(row: dict[str, Any]) -> str:
    return actor_key(row["source"]["workload"] or row["source"]["ip"], row["principal"])


class TriggerReplay:
    """A stand-in for the pipeline: one block verdict for the actor of the row with id ``trigger``, issued at its batch's newest time."""

    def __init__(self, trigger: str) -> None:
        self.trigger = trigger
        self.fed: list[list[dict[str, Any]]] = []

    def feed(self, batch: list[dict[str, Any]]) -> Outcome:
        self.fed.append(batch)
        out = Outcome()
        newest = max(r["time"] for r in batch)
        for row in batch:
            if row["id"] == self.trigger:
                out.verdicts.append(Verdict(id=str(uuid.uuid4()), subject=Subject(kind="actor", value=_actor(row)), action="block",
                                            mode="enforce", expires_at=newest + 900, issued_at=newest, evidence_time=newest))
        return out


def _login(t: float, ip: str, malicious: bool = True) -> SimCall:
    return new_call(t, None, ip, True, None, "none", LOGIN, LOGIN.template, [], 401, 300, 120, {}, 5.0,
                    "stuffing" if malicious else "benign", "stuffing-1" if malicious else None, malicious)


def _service_call(t: float, workload: str, attack_id: str | None, malicious: bool) -> SimCall:
    ip = World(SEED, USERS).ips[workload][0]
    return new_call(t, workload, ip, False, None, "mtls", ORDER, "/orders/1001", ["1001"], 200, 300, 500, {}, 5.0,
                    "compromise" if attack_id else "benign", attack_id, malicious)


def _run(calls: list[SimCall], trigger_index: int, latency_s: float = 0.05) -> tuple[Scorecard, EnforcedRun, list[tuple[Any, ...]]]:
    plane = OfflineDataPlane(SEED, USERS)
    card, seen = Scorecard("stuffing"), []

    def on_call(call: Any, view: Any, decision: Any, row: dict[str, Any]) -> None:
        seen.append((view, decision, row))
        card.see(call.scenario, call.attack_id, call.malicious, _actor(row), decision.status in (403, 429), 0, view, (view.path, view.method))

    run = EnforcedRun(plane, OfflineShim(enforcing().policy, latency_s), TriggerReplay(f"e{trigger_index + 1}"), 0.005, on_call)  # type: ignore[arg-type]
    run.run(calls)
    return card, run, seen


def test_requests_before_verdict_is_counted_call_by_call() -> None:
    # the attacker logs in every 20 ms; the verdict comes from its 5th call (t=1.08) and reaches the shim 50 ms later (1.13):
    # its calls at 1.10 and 1.12 still pass, the one at 1.14 is the first refused, so 7 calls got through
    attacker = [_login(T0 + 1.0 + 0.02 * i, "203.0.113.9") for i in range(20)]
    benign = [_login(T0 + 0.5 + 0.3 * i, "198.51.100.7", malicious=False) for i in range(8)]
    calls = sorted(attacker + benign, key=lambda c: c.time)
    trigger = calls.index(attacker[4])
    card, run, seen = _run(calls, trigger)
    result = card.result(run.verdicts, covers)
    assert result["attackers"] == 1 and result["detected"] == 1 and result["stopped"] == 1
    assert result["requests_before_verdict"] == [7]
    refused = [c.time - T0 for c, (_, d, _) in zip(calls, seen) if d.status == 403]
    assert refused and min(refused) == pytest.approx(1.14)
    assert all(d.status == 403 for c, (_, d, _) in zip(calls, seen) if c.malicious and c.time >= attacker[7].time)
    # a refused call is what the shim reports: its status, no answer
    row = next(r for c, (_, d, r) in zip(calls, seen) if d.status == 403)
    assert row["status"] == 403 and row["response_bytes"] == 0 and row["decision"] == "deny"
    assert result["benign_actors"] == 1 and result["benign_actors_blocked"] == 0 and result["benign_requests_denied"] == 0


def test_shim_and_collector_name_the_same_actor() -> None:
    calls = [_login(T0 + 1.0, "203.0.113.9"), _service_call(T0 + 2.0, "shop/carts", None, False)]
    _, _, seen = _run(calls, trigger_index=99)
    for view, _, row in seen:
        assert view.subject_keys()[0] == f"actor:{_actor(row)}"


def test_collateral_counted_when_a_verdict_blocks_a_workload_with_legitimate_calls() -> None:
    workload = "shop/carts"
    before = [_service_call(T0 + 1.0 + 0.1 * i, workload, None, False) for i in range(5)]
    attack = [_service_call(T0 + 1.55 + 0.1 * i, workload, "compromise-1", True) for i in range(3)]
    own = [_service_call(T0 + 1.62 + 0.1 * i, workload, "compromise-1", False) for i in range(4)]
    after = [_service_call(T0 + 2.5 + 0.1 * i, workload, None, False) for i in range(6)]
    other = [_login(T0 + 1.0 + 0.4 * i, "198.51.100.7", malicious=False) for i in range(6)]
    calls = sorted(before + attack + own + after + other, key=lambda c: c.time)
    card, run, _ = _run(calls, calls.index(attack[0]))
    result = card.result(run.verdicts, covers)
    # verdict at 1.55, in force from 1.60: every later call of the workload is refused, its legitimate ones too
    later = [c for c in calls if c.source_workload == workload and not c.malicious and c.time >= T0 + 1.6]
    assert later and result["collateral_requests_denied"] == len(later) == result["benign_requests_denied"]
    assert result["collateral_requests"] == len(before) + len(own) + len(after)
    assert result["benign_actors"] == 1 and result["benign_actors_blocked"] == 0
    assert result["detected"] == 1 and result["requests_before_verdict"] == [1]


def test_a_short_run_gives_the_report_shape() -> None:
    registry, _, _ = variant_registry()
    name = next(n for n, v in sorted(registry.items()) if v.kind == "attack")
    report = evaluate([name], seeds=[3], seconds=250.0, rate=4.0, users=USERS, warmup_s=0.0)
    v = report["variants"][name]
    for key in ("class", "kind", "seeds", "attackers", "detected", "requests_before_verdict_median", "benign_actors",
                "benign_actors_blocked", "benign_requests", "benign_requests_denied", "events", "seconds"):
        assert key in v, key
    assert v["class"] == registry[name].attack_class and v["seeds"] == [3]
    assert v["attackers"] >= 1 and v["benign_actors"] > 0 and v["events"] > v["benign_requests"] > 0
    assert set(report["totals"]) >= {"attackers", "detected", "benign_actors_blocked", "benign_requests_denied"}
    assert report["settings"]["worker"]["window_s"] == 60 and report["settings"]["worker"]["policy_mode"] == "enforce"


def test_a_changed_batch_window_is_recorded_and_named_in_the_table() -> None:
    from deploy.lab.evaluate import render

    registry, _, _ = variant_registry()
    name = next(n for n, v in sorted(registry.items()) if v.kind == "attack")
    shipped = evaluate([name], seeds=[3], seconds=250.0, rate=2.0, users=USERS, warmup_s=0.0)
    wide = evaluate([name], seeds=[3], seconds=250.0, rate=2.0, users=USERS, warmup_s=0.0, batch_s=0.25)
    assert shipped["settings"]["worker"]["batch_within_s"] == shipped["settings"]["worker"]["batch_within_s_shipped"]
    assert wide["settings"]["worker"]["batch_within_s"] == 0.25
    assert "(worker settings as shipped)" in render(shipped)
    assert "batches of 0.25 s of events" in render(wide) and "(worker settings as shipped)" not in render(wide)
    assert wide["variants"][name]["runs"][0]["batches"] < shipped["variants"][name]["runs"][0]["batches"]
    with pytest.raises(SettingsError, match="batch_s=0"):
        evaluate([name], seeds=[3], seconds=250.0, batch_s=0.0)


def test_the_real_pipeline_stops_a_stuffer_exactly_latency_after_its_verdict() -> None:
    # a reference run whose verdicts never reach the shim gives the rows, hence the verdict, of the enforced run up to its
    # first refusal; the enforced run must let through exactly the stuffer's calls before that verdict's time + latency
    attacker = [_login(T0 + 10.0 + 0.05 * i, "203.0.113.9") for i in range(400)]
    benign = [_login(T0 + 0.37 * i, f"198.51.100.{1 + i % 50}", malicious=False) for i in range(80)]
    calls = sorted(attacker + benign, key=lambda c: c.time)

    def run(latency_s: float) -> tuple[Scorecard, EnforcedRun]:
        settings = enforcing()
        plane = OfflineDataPlane(SEED, USERS)
        card = Scorecard("stuffing")

        def on_call(call: Any, view: Any, decision: Any, row: dict[str, Any]) -> None:
            card.see(call.scenario, call.attack_id, call.malicious, _actor(row), decision.status in (403, 429), 0, view, (view.path,))

        from streams.replay import Replay

        loop = EnforcedRun(plane, OfflineShim(settings.policy, latency_s), Replay(settings, declared=plane.declared), settings.batch_within_s, on_call)
        loop.run(calls)
        return card, loop

    reference, ref_loop = run(1e9)
    stuffer = next(iter(reference.attackers.values()))
    # the first verdict that refuses the stuffer (experimental rules only observe)
    first = min(v.issued_at for v in ref_loop.verdicts if v.mode == "enforce" and any(covers(v, p) for p in stuffer.probes.values()))
    card, loop = run(0.05)
    result = card.result(loop.verdicts, covers)
    assert result["detected"] == 1 and result["stopped"] == 1
    assert result["requests_before_verdict"] == [sum(c.time < first + 0.05 for c in attacker)]


def test_what_gets_through_after_the_first_refusal_is_counted() -> None:
    card = Scorecard("scraping")
    for i, refused in enumerate([False, False, True, False, True, False]):  # a throttle: some calls pass after the first refusal
        card.see("scraping", "scrape-1", True, "1.2.3.4|-", refused, sensitive_records=10)
    card.see("scraping", "scrape-1", False, "1.2.3.4|-", False)  # the attacker's own ordinary call is not malicious
    result = card.result()
    assert result["requests_before_verdict"] == [2]
    assert result["malicious_allowed_after_first_refusal"] == 2
    assert result["sensitive_records_after_first_refusal"] == 20
    assert result["by_attacker"]["scrape-1"]["malicious_allowed_after_first_refusal"] == 2
