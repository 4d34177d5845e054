"""Tests of ingest.simulator: determinism, rates, labels, benign bounds, record conversion."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections import defaultdict
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.envelope import arrow_schema
from ingest.errors import SettingsError
from ingest.schema import RequestSummary, actor_key
from ingest.simulator import (
    ATTACK_KINDS,
    SERVER_MODEL_FIELDS,
    AttackPlan,
    ClusterSimulator,
    SimCall,
    plan_attacks,
    write_jsonl,
    write_parquet,
)
from ingest.templating import hash_object_id

KEY = b"k" * 32
T0 = 1.8e9
SEED = 11


@cache
def attacked_run() -> tuple[ClusterSimulator, tuple[SimCall, ...]]:
    """120 s of traffic with one attacker of every kind after a 30 s warmup."""
    sim = ClusterSimulator(seed=SEED, attacks=plan_attacks(SEED, 120.0, 30.0))
    return sim, tuple(sim.calls(120.0))


@cache
def benign_run() -> tuple[SimCall, ...]:
    """60 s of benign traffic at the default 2000 calls/s."""
    return tuple(ClusterSimulator(seed=SEED).calls(60.0))


@cache
def short_run() -> tuple[SimCall, ...]:
    """A small mixed run for the round-trip property tests."""
    sim = ClusterSimulator(seed=5, users=300, benign_rate_eps=300.0, attacks=plan_attacks(5, 40.0, 5.0))
    return tuple(sim.calls(40.0))


def _windows(calls: tuple[SimCall, ...], keep: object) -> dict[tuple[str, int], set[str]]:
    objects: dict[tuple[str, int], set[str]] = defaultdict(set)
    for c in calls:
        if keep(c):  # type: ignore[operator]
            objects[(c.actor, int((c.time - T0) // 10))].update(c.object_ids)
    return objects


# ---------------------------------------------------------------- determinism and timing


def test_same_seed_yields_identical_calls() -> None:
    plans = plan_attacks(3, 60.0, 10.0)
    first = list(ClusterSimulator(seed=3, users=500, benign_rate_eps=500.0, attacks=plans).calls(60.0))
    second = list(ClusterSimulator(seed=3, users=500, benign_rate_eps=500.0, attacks=plans).calls(60.0))
    assert len(first) > 25_000
    assert first == second


# Digests of the first 20,000 calls of one run, computed with the single-module simulator (ingest/simulator.py
# as last changed in 3ab1cab) before it was split into a package: the split changed no call. ``records`` hashes every
# SimCall field by name; ``rows`` hashes ``to_row`` restricted to the keys it had then (the schema has grown).
_GOLDEN_RECORDS = "9806a0b41a4618d38c09015dca24155d6843b7b5805ef04cdbae2f54e8625b4c"
_GOLDEN_ROWS = "bb28a3316cab963cb0a5c620fdb099fc3f97caaf4efe50d0095d26ffec046320"
_GOLDEN_ROW_KEYS = (
    "auth_type", "decision", "destination", "duration_ms", "ground_truth", "id", "inline_findings", "llm", "mcp",
    "method", "object_ids", "path_template", "principal", "protocol", "raw_path", "reporter", "request_bytes",
    "response_bytes", "schema_version", "sensitive", "source", "status", "time", "trace_id",
)


def test_the_first_20000_calls_are_those_of_the_original_simulator() -> None:
    sim = ClusterSimulator(seed=11, users=500, benign_rate_eps=100.0, attacks=plan_attacks(11, 150.0, 20.0, per_kind=2))
    calls = list(itertools.islice(sim.calls(150.0), 20_000))
    assert len(calls) == 20_000 and {c.scenario for c in calls} == {"benign", *ATTACK_KINDS}
    records, rows = hashlib.sha256(), hashlib.sha256()
    for i, c in enumerate(calls):
        records.update(json.dumps(dataclasses.asdict(c), sort_keys=True).encode() + b"\n")
        row = c.to_row(f"sim-{i:010d}", b"determinism-test-key", with_raw_path=True)
        rows.update(json.dumps({k: row[k] for k in _GOLDEN_ROW_KEYS}, sort_keys=True).encode() + b"\n")
    assert records.hexdigest() == _GOLDEN_RECORDS
    assert rows.hexdigest() == _GOLDEN_ROWS


def test_calls_twice_on_one_simulator_is_identical() -> None:
    sim = ClusterSimulator(seed=4, users=200, benign_rate_eps=200.0)
    assert list(sim.calls(10.0)) == list(sim.calls(10.0))


def test_different_seed_yields_different_calls() -> None:
    a = list(ClusterSimulator(seed=1, users=500, benign_rate_eps=500.0).calls(10.0))
    b = list(ClusterSimulator(seed=2, users=500, benign_rate_eps=500.0).calls(10.0))
    assert a != b
    assert [c.raw_path for c in a[:200]] != [c.raw_path for c in b[:200]]


def test_time_is_non_decreasing_and_inside_the_run() -> None:
    _, calls = attacked_run()
    times = np.array([c.time for c in calls])
    assert np.all(np.diff(times) >= 0)
    assert times[0] >= T0 and times[-1] < T0 + 120.0


@pytest.mark.parametrize("rate", [2000.0, 500.0])
def test_benign_rate_is_within_ten_percent(rate: float) -> None:
    calls = benign_run() if rate == 2000.0 else tuple(ClusterSimulator(seed=SEED, benign_rate_eps=rate).calls(60.0))
    benign = sum(1 for c in calls if c.scenario == "benign")
    assert abs(benign / 60.0 - rate) <= 0.1 * rate


def test_service_to_service_share_is_about_thirty_percent() -> None:
    calls = benign_run()
    share = sum(1 for c in calls if c.principal is None and c.source_workload) / len(calls)
    assert 0.25 <= share <= 0.35


def test_benign_error_rates_are_ordinary() -> None:
    calls = benign_run()
    n = len(calls)
    assert 0.005 <= sum(c.status == 404 for c in calls) / n <= 0.02
    assert 0.002 <= sum(c.status >= 500 for c in calls) / n <= 0.01
    assert 0 < sum(c.status == 401 for c in calls) / n < 0.005


# ---------------------------------------------------------------- attacks


def test_plan_attacks_fits_every_attack_inside_the_run() -> None:
    plans = plan_attacks(9, 300.0, 60.0, per_kind=2)
    assert sorted({p.kind for p in plans}) == sorted(ATTACK_KINDS)
    assert len({p.attack_id for p in plans}) == len(plans) == 12
    for p in plans:
        assert p.start >= 60.0 and p.start + p.duration_s <= 300.0 + 1e-9
        assert 10.0 <= p.duration_s <= 30.0


def test_plan_attacks_rejects_a_run_too_short() -> None:
    with pytest.raises(SettingsError, match="warmup_s"):
        plan_attacks(1, 30.0, 25.0)


def test_attack_plan_rejects_unknown_kind() -> None:
    with pytest.raises(SettingsError, match="ddos"):
        AttackPlan("ddos", "ddos-1", 0.0, 10.0, 5.0)


def test_each_attack_yields_labelled_calls_inside_its_window() -> None:
    sim, calls = attacked_run()
    by_id: dict[str | None, list[SimCall]] = defaultdict(list)
    for c in calls:
        by_id[c.attack_id].append(c)
    assert set(by_id) == {None} | {p.attack_id for p in sim.attacks}
    for plan in sim.attacks:
        mine = by_id[plan.attack_id]
        malicious = [c for c in mine if c.malicious]
        assert all(c.scenario == plan.kind for c in mine)
        assert all(T0 + plan.start <= c.time <= T0 + plan.start + plan.duration_s for c in mine)
        assert 0.6 * plan.rate_eps * plan.duration_s <= len(mine) <= 1.4 * plan.rate_eps * plan.duration_s + 10
        assert len(malicious) >= 0.5 * len(mine)
    assert all(c.attack_id is None and not c.malicious for c in by_id[None])


def test_attackers_are_distinct_actors() -> None:
    sim, calls = attacked_run()
    actors = {c.attack_id: c.actor for c in calls if c.malicious}
    benign_actors = {c.actor for c in calls if c.scenario == "benign"}
    assert len(set(actors.values())) == len(sim.attacks)
    lateral = next(p.attack_id for p in sim.attacks if p.kind == "lateral_movement")
    assert {a for k, a in actors.items() if k != lateral}.isdisjoint(benign_actors)


def test_two_attackers_of_a_kind_are_distinct_actors() -> None:
    sim = ClusterSimulator(seed=2, users=300, benign_rate_eps=200.0, attacks=plan_attacks(2, 60.0, 10.0, per_kind=2))
    actors: dict[str, set[str]] = defaultdict(set)
    for c in sim.calls(60.0):
        if c.malicious:
            actors[c.scenario].add(c.actor)
    assert {kind: len(a) for kind, a in actors.items()} == {kind: 2 for kind in ATTACK_KINDS}


def test_actor_matches_the_schema_actor_key() -> None:
    _, calls = attacked_run()
    for c in calls[::997]:
        assert c.actor == actor_key(c.source_workload or c.source_ip, c.principal)
        assert c.actor == c.to_summary("x", KEY).actor


def test_credential_stuffing_is_external_and_mostly_401() -> None:
    _, calls = attacked_run()
    stuffing = [c for c in calls if c.scenario == "credential_stuffing"]
    assert sum(c.status == 401 for c in stuffing) / len(stuffing) > 0.9
    assert all(c.external and c.source_workload is None and c.principal is None for c in stuffing)
    assert all(c.auth_type == "none" and c.source_ip.startswith("203.0.113.") for c in stuffing)
    assert {c.path_template for c in stuffing} == {"/login"}


def test_bola_walks_other_users_orders_mostly_denied() -> None:
    _, calls = attacked_run()
    bola = [c for c in calls if c.scenario == "bola"]
    denied = sum(c.status in (403, 404) for c in bola) / len(bola)
    leaked = [c for c in bola if c.status == 200]
    assert denied > 0.6 and leaked
    assert all(c.sensitive for c in leaked)
    assert len({o for c in bola for o in c.object_ids}) == len(bola)
    assert {c.source_workload for c in bola} == {"shop/frontend"}
    assert all(c.principal and c.principal.startswith("user-9") for c in bola)


def test_exfiltration_reads_bulk_pii_and_uploads_to_a_new_host() -> None:
    sim, calls = attacked_run()
    exfil = [c for c in calls if c.scenario == "exfiltration"]
    reads = [c for c in exfil if not c.dest_external]
    uploads = [c for c in exfil if c.dest_external]
    known_hosts = {s.name for s in sim.catalog if s.namespace is None}
    assert all(sum(c.sensitive.values()) >= 40 and c.status == 200 for c in reads)
    assert 3 <= len(uploads) <= 5
    assert all(c.dest_service == "paste.example.net" and c.malicious for c in uploads)
    assert not any(c.dest_service == "paste.example.net" for c in calls if c.scenario == "benign")
    assert "paste.example.net" not in known_hosts


def test_injection_labels_only_payload_calls_malicious() -> None:
    _, calls = attacked_run()
    inj = [c for c in calls if c.scenario == "injection"]
    payloads = [c for c in inj if c.malicious]
    normal = [c for c in inj if not c.malicious]
    markers = ("%27", "'", "UNION", "SLEEP", "..", "%2e%2e", "jndi", "<script>", "%7B%7B")
    assert payloads and normal
    assert all(any(m in c.raw_path for m in markers) for c in payloads)
    assert not any(any(m in c.raw_path for m in markers) for c in normal)


def test_benign_calls_never_hit_retired_endpoints() -> None:
    sim, calls = attacked_run()
    retired = set(sim.retired_endpoints)
    key = lambda c: f"{c.dest_service} {c.method} {c.path_template}"  # noqa: E731
    assert len(retired) >= 3
    assert not any(key(c) in retired for c in calls if not c.malicious)
    retired_calls = [c for c in calls if c.scenario == "retired_api"]
    assert retired_calls and all(key(c) in retired for c in retired_calls)


def test_lateral_movement_goes_only_outside_the_dependency_graph() -> None:
    sim, calls = attacked_run()
    deps = sim.service_dependencies
    lateral = [c for c in calls if c.scenario == "lateral_movement"]
    workload = lateral[0].source_workload
    assert workload in deps and all(c.source_workload == workload for c in lateral)
    assert all(f"{c.dest_namespace}/{c.dest_service}" not in deps[workload] for c in lateral)
    assert 3 <= len({c.dest_service for c in lateral}) <= 6
    own = [c for c in calls if c.source_workload == workload and c.principal is None and not c.malicious]
    assert own[0].time < T0 + 5.0
    assert all(c.scenario == "benign" for c in own)
    assert {f"{c.dest_namespace}/{c.dest_service}" for c in own} <= set(deps[workload])


def test_dependency_graph_has_two_to_four_services_per_workload() -> None:
    deps = ClusterSimulator().service_dependencies
    assert "shop/frontend" in deps and "data/reporting" in deps
    assert all(2 <= len(v) <= 4 for v in deps.values())


# ---------------------------------------------------------------- benign behaviour bounds


def test_benign_users_touch_few_objects_per_ten_seconds() -> None:
    objects = _windows(benign_run(), lambda c: (c.principal or "").startswith("user-"))
    distinct = np.array([len(v) for v in objects.values()])
    assert len(distinct) > 10_000
    assert np.percentile(distinct, 50) <= 3
    assert np.percentile(distinct, 99.9) <= 12


def test_support_agents_read_others_objects_at_moderate_breadth() -> None:
    sim = ClusterSimulator(seed=SEED)
    agents = set(sim.support_agents)
    calls = benign_run()
    objects = _windows(calls, lambda c: c.principal in agents)
    assert 10 <= len(agents) <= 60
    assert objects and max(len(v) for v in objects.values()) <= 10


def test_benign_login_failures_stay_short() -> None:
    failures: dict[tuple[str, int], int] = defaultdict(int)
    for c in benign_run():
        if c.status == 401:
            failures[(c.actor, int((c.time - T0) // 10))] += 1
    assert failures and max(failures.values()) <= 3


# ---------------------------------------------------------------- records


def _summary_dump(call: SimCall, **kwargs: object) -> dict[str, object]:
    dumped = call.to_summary("id-1", KEY, **kwargs).model_dump()  # type: ignore[arg-type]
    for name in ("sensitive", "redacted"):  # the map fields are (key, value) pairs in rows
        dumped[name] = list(dumped[name].items())  # type: ignore[attr-defined]
    return dumped


def test_to_row_equals_to_summary_model_dump() -> None:
    _, calls = attacked_run()
    sample = list(calls[::503]) + [c for c in calls if c.malicious][::40]
    for c in sample:
        assert c.to_row("id-1", KEY) == _summary_dump(c)
    overrides = {"decision": "block", "reporter": "shim", "status": None, "response_bytes": 0,
                 "sensitive": {"email": 3}}
    assert sample[0].to_row("id-1", KEY, **overrides) == _summary_dump(sample[0], **overrides)  # type: ignore[arg-type]


def test_to_row_has_every_schema_field() -> None:
    assert set(short_run()[0].to_row("id-1", KEY)) == set(RequestSummary.model_fields)


def test_the_server_model_is_one_group_between_the_request_and_the_ground_truth() -> None:
    names = [f.name for f in dataclasses.fields(SimCall)]
    start = names.index(SERVER_MODEL_FIELDS[0])
    assert tuple(names[start : start + len(SERVER_MODEL_FIELDS)]) == SERVER_MODEL_FIELDS
    assert names[start + len(SERVER_MODEL_FIELDS) :] == ["scenario", "attack_id", "malicious"]
    request = {"method", "raw_path", "principal", "source_workload", "source_ip", "dest_service", "request_bytes"}
    assert request <= set(names[:start])


def test_to_row_fits_the_arrow_schema() -> None:
    schema = arrow_schema(RequestSummary)
    rows = [c.to_row(f"id-{i}", KEY) for i, c in enumerate(short_run()[:500])]
    batch = pa.RecordBatch.from_pylist(rows, schema=schema)
    assert batch.num_rows == 500 and batch.schema.equals(schema)


def test_object_ids_are_hashed_by_the_one_templating_function() -> None:
    call = next(c for c in short_run() if len(c.object_ids) > 1)
    long_key = b"x" * 100  # longer than BLAKE2b's key limit: hash_object_id reduces it first
    for key in (KEY, long_key):
        assert call.to_row("x", key)["object_ids"] == [hash_object_id(o, key) for o in call.object_ids]


def test_object_ids_are_keyed_hashes() -> None:
    call = next(c for c in benign_run() if c.object_ids)
    hashed = call.to_summary("x", KEY).object_ids
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashed)
    assert hashed != call.to_summary("x", b"other-key").object_ids
    assert call.to_summary("x", KEY).raw_path is None
    assert call.to_summary("x", KEY, with_raw_path=True).raw_path == call.raw_path


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_simulated_calls_survive_a_json_round_trip(pick: int) -> None:
    calls = short_run()
    call = calls[pick % len(calls)]
    summary = call.to_summary(f"id-{pick}", KEY, decision="allow")
    assert RequestSummary.model_validate_json(summary.model_dump_json()) == summary


_text = st.text(max_size=20)
_ints = st.integers(min_value=0, max_value=2**53)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_calls = st.builds(
    SimCall,
    time=_floats, source_workload=st.none() | _text, source_namespace=st.none() | _text, source_ip=_text,
    external=st.booleans(), principal=st.none() | _text, auth_type=st.sampled_from(["jwt", "mtls", "none"]),
    dest_service=_text, dest_namespace=st.none() | _text, dest_external=st.booleans(), method=_text,
    path_template=_text, raw_path=_text, object_ids=st.lists(_text, max_size=5), status=st.integers(100, 599),
    request_bytes=_ints, response_bytes=_ints, sensitive=st.dictionaries(_text, _ints, max_size=4),
    duration_ms=_floats, scenario=st.sampled_from(("benign",) + ATTACK_KINDS), attack_id=st.none() | _text,
    malicious=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(_calls)
def test_any_sim_call_survives_a_json_round_trip(call: SimCall) -> None:
    summary = call.to_summary("id", KEY)
    assert RequestSummary.model_validate_json(summary.model_dump_json()) == summary
    row = call.to_row("id", KEY)
    for name in ("sensitive", "redacted"):
        row[name] = dict(row[name])
    assert row == summary.model_dump()


# ---------------------------------------------------------------- writers


def test_write_jsonl_and_parquet_round_trip(tmp_path: object) -> None:
    calls = short_run()[:2000]
    jsonl, parquet = tmp_path / "calls.jsonl", tmp_path / "calls.parquet"  # type: ignore[operator]
    assert write_jsonl(calls, jsonl, KEY) == 2000
    assert write_parquet(calls, parquet, KEY, batch_rows=700) == 2000
    lines = jsonl.read_text().splitlines()
    first = RequestSummary.model_validate(json.loads(lines[0]))
    assert first == calls[0].to_summary("sim-0000000000", KEY)
    table = pq.read_table(parquet)
    assert table.num_rows == 2000 and table.schema.equals(arrow_schema(RequestSummary))
    assert table.column("id")[1999].as_py() == "sim-0000001999"
