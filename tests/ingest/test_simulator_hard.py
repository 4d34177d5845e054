"""ingest.simulator.attacks_hard: every hard attack shows up in an evaluation-length run, the compromised export stays rare.

The generators are called directly on one ``World`` (no benign stream): a run of
540 s with a 300 s warmup is what ``kubeward evaluate`` simulates by default.
"""

from __future__ import annotations

import random
from collections import defaultdict
from functools import cache

import pytest

from ingest.privilege import Privilege, classify
from ingest.simulator import VARIANTS, SimCall
from ingest.simulator.attacks_hard import PRIVILEGED
from ingest.simulator.catalog import dependencies
from ingest.simulator.variants import VariantRun
from ingest.simulator.world import World

T0, WARMUP = 1.8e9, 300.0
HARD = ("bola-low-slow", "bola-distributed", "exfiltration-paged", "lateral-compromised-export", "bfla")
SEEDS = range(1000, 1040)


@cache
def world() -> World:
    """One small world shared by every run (the generators only read it, and pick ids from it)."""
    return World(5, 300)


def generate(name: str, seed: int, seconds: float = 540.0) -> tuple[VariantRun, list[SimCall]]:
    """The variant's own calls in a run of ``seconds`` (300 s warmup), and the run (for its compromised workloads)."""
    run = VariantRun(world(), seed, random.Random(f"{seed}:variant:{name}"), T0, T0 + seconds, WARMUP, 50.0, name)
    return run, VARIANTS[name].generate(run)


def by_attacker(calls: list[SimCall]) -> dict[str, list[SimCall]]:
    """Every call carrying an attack id, by attack id, in time order."""
    out: dict[str, list[SimCall]] = defaultdict(list)
    for c in sorted(calls, key=lambda c: c.time):
        if c.attack_id:
            out[c.attack_id].append(c)
    return out


@pytest.mark.parametrize("name", HARD)
def test_every_attacker_attacks_inside_an_evaluation_length_run(name: str) -> None:
    for seed in SEEDS:
        _, calls = generate(name, seed)
        attackers = by_attacker(calls)
        assert attackers, (name, seed)
        for aid, mine in attackers.items():
            bad = [c for c in mine if c.malicious]
            assert bad, (name, seed, aid)  # an attacker with only ordinary calls would vanish from the tally
            assert all(T0 + WARMUP <= c.time < T0 + 540.0 for c in bad), (name, seed, aid)


def test_a_compromised_workload_exports_now_and_then_a_few_times() -> None:
    counts: set[int] = set()
    for seconds in (540.0, 2700.0):
        for seed in SEEDS:
            run, calls = generate("lateral-compromised-export", seed, seconds)
            for aid, mine in by_attacker(calls).items():
                times = [c.time for c in mine]
                period = T0 + seconds - times[0]
                assert 3 <= len(mine) <= 8 and len(mine) <= max(3, period / 30.0 + 1), (seed, aid, len(mine))
                # one call per equal slice of the period: no two gaps' worth of silence, never a burst
                assert max(b - a for a, b in zip(times, times[1:])) < 2.0 * period / (len(mine) - 1), (seed, aid)
                assert times[0] <= T0 + WARMUP + 0.3 * (seconds - WARMUP) + period / 3
                workload = {c.source_workload for c in mine}
                assert len(workload) == 1 and run.compromised[workload.pop() or ""] == (aid, times[0])
                counts.add(len(mine))
    assert len(counts) >= 3  # drawn per seed, not one setting


def test_a_compromised_workload_calls_only_privileged_functions_outside_its_dependencies() -> None:
    for seed in SEEDS:
        _, calls = generate("lateral-compromised-export", seed)
        for c in calls:
            key = f"{c.dest_namespace}/{c.dest_service} {c.method} {c.path_template}"
            assert key in PRIVILEGED and classify(c.method, c.path_template) != Privilege.NONE
            assert f"{c.dest_namespace}/{c.dest_service}" not in dependencies()[c.source_workload or ""]
            assert c.malicious and c.principal is None and c.status < 400


@pytest.mark.parametrize("name", ("bola-low-slow", "bfla"))
def test_the_first_malicious_call_is_at_the_attackers_start(name: str) -> None:
    for seed in SEEDS:
        _, calls = generate(name, seed)
        for aid, mine in by_attacker(calls).items():
            assert mine[0].malicious, (seed, aid)  # its browsing starts after its first malicious call
