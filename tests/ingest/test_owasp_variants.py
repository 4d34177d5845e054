"""The OWASP API Top 10 variants (ingest/simulator/owasp*.py): registered, seeded, labelled, answered by the demo API."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.driver import expected_actor
from deploy.lab.offline import OfflineDataPlane
from deploy.runtime.demoapi import ROUTES, seed_db
from ingest.honeytokens import load_honeytokens
from ingest.identity import IdentityConfig
from ingest.simulator.owasp_catalog import (
    DEBUG_KEYS,
    HONEYTOKENS,
    LEAK_FLAGS,
    OWASP_BY_KEY,
    PER_VARIANT,
    SHADOW_KEYS,
    honeytokens_yaml,
)
from ingest.simulator.world import World
from ingest.templating import hash_object_id

owasp = pytest.importorskip("ingest.simulator.owasp")
variants = pytest.importorskip("ingest.simulator.variants")

SEED, USERS, T0, SPAN, WARMUP = 11, 200, 1.8e9, 420.0, 120.0
NAMES = [v.name for v in owasp.OWASP_VARIANTS]
EXPECTED = {
    "scraping": ("business_flow", "API6:2023"), "bulk-purchase": ("business_flow", "API6:2023"),
    "resource-consumption": ("resource_consumption", "API4:2023"), "ssrf": ("ssrf", "API7:2023"),
    "misconfiguration": ("misconfiguration", "API8:2023"), "shadow-api": ("inventory", "API9:2023"),
    "zombie-api": ("inventory", "API9:2023"), "unsafe-consumption": ("unsafe_consumption", "API10:2023"),
    "mass-assignment": ("mass_assignment", "API3:2023"), "excessive-data-exposure": ("data_exposure", "API3:2023"),
    "honeytoken": ("honeytoken", "API2:2023"),
}


def _run(name: str, seed: int = SEED, span: float = SPAN) -> tuple[Any, list[Any]]:
    run = variants.VariantRun(World(seed, USERS), seed, random.Random(f"{seed}:variant:{name}"), T0, T0 + span,
                              WARMUP, 100.0, name)
    return run, variants.VARIANTS[name].generate(run)


def _fingerprint(calls: list[Any]) -> list[tuple[Any, ...]]:
    return [(c.time, c.method, c.dest_service, c.raw_path, getattr(c, "body", None), getattr(c, "headers", ()),
             c.principal, c.source_ip, c.attack_id, c.malicious) for c in calls]


@pytest.fixture(scope="module")
def plane() -> OfflineDataPlane:
    return OfflineDataPlane(SEED, USERS)


@pytest.fixture(scope="module")
def answered(plane: OfflineDataPlane) -> dict[str, list[tuple[Any, dict[str, Any]]]]:
    """Each variant's calls of a short run with the summary row the offline data plane derived from the API's answer."""
    out = {}
    for name in NAMES:
        _, calls = _run(name, span=WARMUP + 150.0)
        out[name] = list(zip(calls, plane.rows(calls, name)))
    return out


def test_every_variant_is_registered_with_its_class_and_owasp_id() -> None:
    assert sorted(NAMES) == sorted(EXPECTED)
    for name, (attack_class, owasp_id) in EXPECTED.items():
        v = variants.VARIANTS[name]
        assert (v.attack_class, v.kind, v.owasp) == (attack_class, "attack", owasp_id), name
        assert attack_class in variants.ATTACK_CLASSES


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_calls(name: str) -> None:
    assert _fingerprint(_run(name)[1]) == _fingerprint(_run(name)[1])


@pytest.mark.parametrize("name", NAMES)
def test_parameters_vary_across_seeds(name: str) -> None:
    runs = [_run(name, seed)[1] for seed in (21, 22, 23, 24)]
    rates = set()
    for calls in runs:
        by_id: dict[str, list[float]] = defaultdict(list)
        for c in calls:
            by_id[c.attack_id].append(c.time)
        rates |= {round(len(ts) / max(1e-9, ts[-1] - ts[0]), 3) for ts in by_id.values() if len(ts) > 1}
        assert len(by_id) == PER_VARIANT
    assert len({len(c) for c in runs}) > 1, "the same number of calls on every seed"
    assert len(rates) >= 4, f"attack rates hardly vary: {rates}"


@pytest.mark.parametrize("name", NAMES)
def test_ground_truth(name: str) -> None:
    run, calls = _run(name)
    assert calls and [c.time for c in calls] == sorted(c.time for c in calls)
    assert all(run.t0 + run.warmup_s <= c.time < run.t1 for c in calls)
    assert {c.scenario for c in calls} == {name}
    assert {c.attack_id for c in calls} == {f"{name}-{k}" for k in range(1, PER_VARIANT + 1)}
    key = IdentityConfig().principal_key
    actors: dict[str, set[str]] = defaultdict(set)
    for c in calls:
        actors[c.attack_id].add(expected_actor(c, key))
    assert all(len(a) == 1 for a in actors.values()), actors  # one actor per attack id
    assert len(set().union(*actors.values())) == PER_VARIANT  # and distinct attackers
    assert all(any(c.malicious for c in calls if c.attack_id == a) for a in actors)


@pytest.mark.parametrize("name", NAMES)
def test_every_call_is_answered_by_the_demo_api(name: str, answered: dict[str, list[tuple[Any, dict[str, Any]]]]) -> None:
    pairs = answered[name]
    assert pairs
    for call, row in pairs:
        assert row["status"] is not None and row["status"] < 500, (call.raw_path, row["status"])
        assert row["ground_truth"] == {"scenario": name, "attack_id": call.attack_id, "malicious": call.malicious}
    if name != "misconfiguration":  # a scanner mostly gets 404; everything else reaches a route
        missing = [c.raw_path for c, r in pairs if r["status"] == 404 and c.dest_namespace]
        assert len(missing) <= 0.1 * len(pairs), missing[:5]


def test_ssrf_urls_meet_the_inline_rules_and_cover_calls_do_not(answered: dict[str, list[Any]]) -> None:
    pairs = answered["ssrf"]
    assert any("ssrf" in r["inline_findings"] for c, r in pairs if c.malicious)
    assert not any("ssrf" in r["inline_findings"] for c, r in pairs if not c.malicious)


def test_misconfiguration_probes_undocumented_debug_endpoints(answered: dict[str, list[Any]], plane: OfflineDataPlane) -> None:
    pairs = answered["misconfiguration"]
    live = [r for _, r in pairs if r["status"] == 200]
    assert live, "no probe found a live debug endpoint"
    for r in live:
        service = f"{r['destination']['namespace']}/{r['destination']['service']}"
        assert ("GET", r["path_template"]) not in plane.declared.get(service, {})


def test_inventory_variants_call_shadow_and_deprecated_routes(answered: dict[str, list[Any]], plane: OfflineDataPlane) -> None:
    def status(row: dict[str, Any]) -> bool | None:
        service = f"{row['destination']['namespace']}/{row['destination']['service']}"
        return plane.declared.get(service, {}).get((row["method"], row["path_template"]))

    assert all(status(r) is None for c, r in answered["shadow-api"] if c.malicious)
    assert all(status(r) is True for c, r in answered["zombie-api"] if c.malicious)
    assert all(status(r) is False for c, r in answered["zombie-api"] if not c.malicious)


def test_data_exposure_leaks_sensitive_properties_only_on_attack_calls(answered: dict[str, list[Any]]) -> None:
    leaked = {f for fields in LEAK_FLAGS.values() for f in fields}
    pairs = answered["excessive-data-exposure"]
    assert all(leaked & set(r["response_properties"]) for c, r in pairs if c.malicious)
    assert not any(leaked & set(r["response_properties"]) for c, r in pairs if not c.malicious)


def test_mass_assignment_bodies_carry_privileged_properties() -> None:
    privileged = {"role", "is_admin", "verified", "credit", "plan", "tenant_id", "price", "total", "status", "discount",
                  "owner", "acl", "owner_id", "retention", "amount", "discount_pct", "currency", "captured", "email_verified"}
    _, calls = _run("mass-assignment")
    for c in calls:
        keys = set(json.loads(c.body))
        assert bool(keys & privileged) == c.malicious, (c.raw_path, keys)


def test_unsafe_consumption_fetches_then_forwards_payloads(answered: dict[str, list[Any]]) -> None:
    pairs = answered["unsafe-consumption"]
    fetched = [c for c, _ in pairs if c.dest_external and c.dest_service.startswith("api.")]
    assert fetched and any(c.malicious for c in fetched) and any(not c.malicious for c in fetched)
    forwarded = [r for c, r in pairs if c.malicious and not c.dest_external]
    assert forwarded and any(r["inline_findings"] for r in forwarded)
    assert all(c.principal is None and c.source_workload for c, _ in pairs)  # the consuming service itself


def test_honeytoken_uses_reach_the_summaries(answered: dict[str, list[Any]]) -> None:
    key = b"kubeward-dev-object-key"
    planted = {hash_object_id(o["id"], key) for o in HONEYTOKENS["object_ids"]}
    forms: set[str] = set()
    for seed in range(30, 36):
        calls = _run("honeytoken", seed)[1]
        assert all(c.malicious == _uses_token(c) for c in calls)
        forms |= {"api_key" if c.headers else "login" if c.raw_path == "/login" else "object" for c in calls if c.malicious}
    assert forms == {"api_key", "login", "object"}  # every form shows up on some seed
    pairs = answered["honeytoken"]
    hits = [r for c, r in pairs if c.malicious]
    assert hits and all(planted & set(r["object_ids"]) or r["principal"] and r["principal"].startswith("apikey:")
                        or r["path_template"] == "/login" for r in hits)


def _uses_token(call: Any) -> bool:
    values = {c["value"] for c in HONEYTOKENS["credentials"]} | {o["id"] for o in HONEYTOKENS["object_ids"]}
    sent = call.raw_path + (call.body or b"").decode() + "".join(v for _, v in call.headers)
    return any(v in sent for v in values)


def test_honeytokens_file_is_the_planted_set_and_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "runtime" / "honeytokens.yaml"
    assert path.read_text() == honeytokens_yaml()
    tokens = load_honeytokens(path)
    assert sum(len(v) for v in tokens.object_ids.values()) == len(HONEYTOKENS["object_ids"])
    assert len(tokens.credentials) + len(tokens.passwords) == len(HONEYTOKENS["credentials"])


def test_planted_objects_exist_but_no_page_returns_them() -> None:
    db = seed_db(SEED, USERS)
    world_ids = set(World(SEED, USERS).exists)
    for o in HONEYTOKENS["object_ids"]:
        assert o["id"] in db.kinds and o["id"] not in world_ids
        assert all(o["id"] not in ids for ids in db.by_kind.values())


def test_demo_api_serves_every_owasp_route_with_its_spec_status() -> None:
    routes = {f"{r.service} {r.method} {r.template}": r for r in ROUTES}
    for key, ep in OWASP_BY_KEY.items():
        route = routes[key]
        assert route.deprecated == ep.retired, key
        assert route.documented == (key not in SHADOW_KEYS + DEBUG_KEYS), key

