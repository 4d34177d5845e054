"""Tests of ingest.simulator.variants: the registry, ground truth, determinism, ranges, and the demo API's answers."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import defaultdict
from functools import cache

import pytest

from deploy.lab.offline import OfflineDataPlane
from ingest.errors import SettingsError
from ingest.simulator import VARIANTS, SimCall, Variant, register, variant_simulator
from ingest.simulator.credentials import LOGINS

SEED, USERS, SECONDS, RATE, WARMUP = 5, 300, 900.0, 5.0, 120.0
T0 = 1.8e9
ATTACKS = ("bola", "exfiltration", "credential-stuffing", "injection", "retired-api", "lateral-movement",
           "bola-low-slow", "bola-distributed", "exfiltration-paged", "stuffing-slow-rotating", "brute-force",
           "password-spraying", "lateral-compromised-export", "bfla")
NEGATIVES = ("support-staff", "nightly-batch", "rollout", "traffic-spike", "new-dependency", "own-heavy")
OURS = ATTACKS + NEGATIVES


@cache
def run(name: str, seed: int = SEED) -> tuple[SimCall, ...]:
    """A small run of one variant: 15 min at 5 benign calls/s, 300 users, 2 min warmup."""
    return tuple(variant_simulator(name, seed, SECONDS, rate=RATE, users=USERS, warmup_s=WARMUP).calls())


def own(name: str, seed: int = SEED) -> list[SimCall]:
    """The variant's calls, and any other call carrying one of its attack ids (a compromised workload's)."""
    return [c for c in run(name, seed) if c.scenario == name or c.attack_id]


@cache
def plane() -> OfflineDataPlane:
    """The demo API and Kubeward's derivation, in process, for the run's world."""
    return OfflineDataPlane(SEED, USERS)


# ---------------------------------------------------------------- registry


def test_every_asked_variant_is_registered_with_its_kind() -> None:
    assert {VARIANTS[n].kind for n in ATTACKS} == {"attack"}
    assert {VARIANTS[n].kind for n in NEGATIVES} == {"negative"}
    assert all(VARIANTS[n].attack_class == "benign" and VARIANTS[n].owasp == "" for n in NEGATIVES)
    assert all(re.match(r"^API\d+:2023$", VARIANTS[n].owasp) for n in ATTACKS)


def test_register_rejects_a_second_variant_of_a_name_and_bad_fields() -> None:
    with pytest.raises(SettingsError, match="already registered"):
        register(dataclasses.replace(VARIANTS["bola"], description="another"))
    assert register(VARIANTS["bola"]) is VARIANTS["bola"]
    with pytest.raises(SettingsError, match="kebab-case"):
        Variant("Bola_X", "bola", "attack", "API1:2023", "", lambda r: [])
    with pytest.raises(SettingsError, match="attack_class"):
        Variant("x", "benign", "attack", "", "", lambda r: [])
    with pytest.raises(SettingsError, match="kind"):
        Variant("x", "bola", "probe", "", "", lambda r: [])


def test_variant_simulator_rejects_unknown_names_and_short_runs() -> None:
    with pytest.raises(SettingsError, match="bola-low-slow"):
        variant_simulator("nope", 1, 900.0)
    with pytest.raises(SettingsError, match="seconds"):
        variant_simulator("bola", 1, 400.0, warmup_s=300.0)


# ---------------------------------------------------------------- ground truth, determinism, ranges


@pytest.mark.parametrize("name", OURS)
def test_ground_truth_of_every_call(name: str) -> None:
    calls = run(name)
    assert all(a.time <= b.time for a, b in zip(calls, calls[1:]))
    mine = [c for c in calls if c.scenario == name]
    assert mine and {c.scenario for c in calls} == {"benign", name}
    if VARIANTS[name].kind == "negative":
        assert all(c.attack_id is None and not c.malicious for c in calls)
        return
    bad = [c for c in mine if not re.fullmatch(rf"{name}-\d+", c.attack_id or "")]
    assert not bad and any(c.malicious for c in mine)
    malicious = [c for c in calls if c.malicious]
    assert all(c.scenario == name for c in malicious)
    assert all(T0 + WARMUP <= c.time < T0 + SECONDS for c in malicious)


@pytest.mark.parametrize("name", OURS)
def test_same_seed_same_calls_other_seed_other_parameters(name: str) -> None:
    again = tuple(variant_simulator(name, SEED, SECONDS, rate=RATE, users=USERS, warmup_s=WARMUP).calls())
    assert [dataclasses.astuple(c) for c in again] == [dataclasses.astuple(c) for c in run(name)]
    shapes = {(len(own(name, s)), round(sum(c.time for c in own(name, s)) / max(1, len(own(name, s))), 3))
              for s in (SEED, 6, 7)}
    assert len(shapes) == 3


def test_low_and_slow_bola_reads_a_foreign_object_every_thirty_to_ninety_seconds() -> None:
    for seed in (SEED, 6, 7, 8):
        by_attacker: dict[str | None, list[float]] = defaultdict(list)
        for c in own("bola-low-slow", seed):
            if c.malicious:
                by_attacker[c.attack_id].append(c.time)
        for times in by_attacker.values():
            mean_gap = (times[-1] - times[0]) / max(1, len(times) - 1)
            assert len(times) >= 4 and 15.0 <= mean_gap <= 140.0  # Poisson mean 30-90 s, a few draws


def test_distributed_bola_spreads_sequential_ids_over_many_principals_some_sharing_an_address() -> None:
    calls = [c for c in own("bola-distributed") if c.malicious]
    principals = {c.principal for c in calls}
    assert 20 <= len(principals) <= 60 and len({c.attack_id for c in calls}) == len(principals)
    by_ip: dict[str, set[str | None]] = defaultdict(set)
    for c in calls:
        if c.source_workload is None:
            by_ip[c.source_ip].add(c.principal)
    assert by_ip and max(len(p) for p in by_ip.values()) >= 3
    ids = sorted(int(c.object_ids[0]) for c in calls)
    assert len({c.path_template for c in calls}) == 1 and ids[-1] - ids[0] == len(ids) - 1


def test_paged_exfiltration_takes_small_pages_slowly() -> None:
    pages = [c for c in own("exfiltration-paged") if c.malicious and c.object_ids]
    assert all(5 <= len(c.object_ids) <= 25 for c in pages)
    by_attacker: dict[str | None, list[SimCall]] = defaultdict(list)
    for c in pages:
        by_attacker[c.attack_id].append(c)
    for calls in by_attacker.values():
        records = sum(len(c.object_ids) for c in calls)
        assert records <= 3000 and (calls[-1].time - calls[0].time) / len(calls) >= 1.0


def test_logins_name_the_attempted_account_in_the_body() -> None:
    api = plane()
    for name in ("stuffing-slow-rotating", "brute-force", "password-spraying"):
        calls = [c for c in own(name) if c.malicious]
        assert all(f"{c.dest_namespace}/{c.dest_service} {c.method} {c.raw_path}" in LOGINS for c in calls)
        for c in calls[:50]:
            _, _, body = api.requests.request_parts(c)
            assert json.loads(body or b"{}")["username"] == c.principal
    stuffing = [c for c in own("stuffing-slow-rotating") if c.malicious]
    per_ip: dict[str, int] = defaultdict(int)
    for c in stuffing:
        per_ip[c.source_ip] += 1
    assert len(per_ip) >= 5 and max(per_ip.values()) <= 6 and len({c.principal for c in stuffing}) == len(stuffing)
    brute = [c for c in own("brute-force") if c.malicious]
    assert len({c.principal for c in brute}) <= 3 and len({c.source_ip for c in brute}) >= 2
    sprayers: dict[str | None, list[SimCall]] = defaultdict(list)
    for c in own("password-spraying"):
        sprayers[c.attack_id].append(c)
    for spray in sprayers.values():  # one address, each account tried once or twice
        assert len({c.source_ip for c in spray}) == 1 and len({c.principal for c in spray}) >= len(spray) / 2


def test_a_compromised_workloads_ordinary_calls_carry_its_attack_id() -> None:
    calls = own("lateral-compromised-export")
    malicious = [c for c in calls if c.malicious]
    ordinary = [c for c in calls if not c.malicious]
    assert malicious and ordinary and all(c.scenario == "benign" for c in ordinary)
    first = {c.source_workload: c.time for c in reversed(malicious)}
    assert all(c.source_workload in first and c.time >= first[c.source_workload] for c in ordinary)
    assert all(c.attack_id is not None for c in ordinary)


def test_bfla_calls_admin_functions_with_someone_elses_id() -> None:
    calls = [c for c in own("bfla") if c.malicious]
    assert calls and all("/admin/" in c.path_template or c.path_template.startswith("/users/") for c in calls)


def test_own_heavy_users_read_only_their_own_many_objects() -> None:
    calls = [c for c in run("own-heavy") if c.scenario == "own-heavy"]
    by_user: dict[str | None, set[str]] = defaultdict(set)
    for c in calls:
        by_user[c.principal].update(c.object_ids)
    assert len(by_user) >= 3 and max(len(v) for v in by_user.values()) >= 20


# ---------------------------------------------------------------- the demo API answers every call


@pytest.mark.parametrize("name", OURS)
def test_the_demo_api_answers_every_call_of_the_variant(name: str) -> None:
    api, problems = plane(), []
    for i, c in enumerate(own(name)):
        obs = api.observation(c, f"v{i}")
        row = api.summarizer.summarize(obs)
        body = obs.response_body or b""
        login = f"{c.dest_namespace}/{c.dest_service} {c.method} {c.raw_path}" in LOGINS
        if login and c.status != 200:
            ok = row["outcome"] == "auth_failure"
        elif obs.status == 404:
            ok = c.status == 404 and b"not_found" in body
        else:
            ok = obs.status not in (400, 401) and row["path_template"] == c.path_template
        if not ok and VARIANTS[name].kind == "negative" and c.status >= 500:
            ok = True  # the benign generator models a few server errors the API does not have
        if not ok and name in ("bola", "exfiltration", "credential-stuffing", "injection", "retired-api",
                               "lateral-movement") and not login:
            ok = obs.status != 401  # the easy generators model answers loosely (an injector's run-time ids: 404)
        if not ok:
            problems.append((c.method, c.dest_service, c.raw_path, c.status, obs.status, row["outcome"]))
    assert not problems, problems[:5]
