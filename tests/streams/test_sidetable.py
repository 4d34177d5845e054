"""streams.sidetable: the rare actor columns in a side table give the same frames and detections as one table,
hold rows only for the actors that use them, and read state written with one table."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ingest import decode_message, encode_rows, summary_row
from ingest.simulator import ClusterSimulator, plan_attacks
from models import REGISTRY, build_detectors, features_for
from streams import sidetable
from streams.detection import Detection
from streams.enrichers import ENRICHERS, EnricherContext, build_enrichers
from streams.processor import BatchProcessor, ProcessorConfig
from streams.sidetable import RARE, split

_RULES = {"overrides": {"novel_destination": {"status": "stable"}}}


def _processor(one_table: bool, monkeypatch: pytest.MonkeyPatch, **config: Any) -> BatchProcessor:
    with monkeypatch.context() as m:
        if one_table:
            m.setattr(sidetable, "RARE", frozenset())
        proc = ProcessorConfig(**config)
        return BatchProcessor(proc, build_detectors([*sorted(REGISTRY), "novel_destination"], **_RULES),
                              build_enrichers(sorted(ENRICHERS), EnricherContext(proc.window_s, proc.learn_windows)))


def _agent_rows(t0: float, seconds: float, seed: int) -> list[dict[str, Any]]:
    """Model calls (a steady client, then a probing one) and MCP tool calls of two agents, some injected."""
    rng, rows = random.Random(seed), []
    for i in range(int(seconds * 4)):
        t = t0 + i / 4
        probing = t > t0 + seconds / 2 and i % 2
        rows.append(summary_row(id=f"llm{i}", time=t, source={"ip": "10.7.0.9"}, principal="bearer:eval" if probing else "bearer:app",
                                method="POST", destination={"service": "llm-gateway", "namespace": "ai"}, path_template="/v1/chat/completions",
                                status=200, llm={"operation": "chat", "model": "m", "sent_sensitive": 0,
                                                 "prompt_hash": f"p{i if probing else i % 5}", "prompt_shape": f"s{i % 3}"}))
        if i % 3 == 0:
            tool = rng.choice(["search", "orders", "profiles", "export"] if t > t0 + seconds / 3 else ["search", "orders"])
            rows.append(summary_row(id=f"mcp{i}", time=t, source={"workload": f"agents/bot{i % 2}", "namespace": "agents"},
                                    principal=f"user-{i % 7}", method="POST", destination={"service": "mcp-shop", "namespace": "tools"},
                                    path_template="/mcp", status=200, sensitive={"email": rng.randint(0, 3)},
                                    mcp={"jsonrpc_method": "tools/call", "tool_name": tool, "injection": 0.9 if i % 40 == 0 else None}))
    return rows


def _traffic(seed: int, seconds: float, rate: float) -> Iterator[list[dict[str, Any]]]:
    """Simulated cluster traffic with one attacker of every kind, and agent traffic, in time order, in batches."""
    t0 = 1.8e9
    sim = ClusterSimulator(seed=seed, users=400, start_time=t0, benign_rate_eps=rate, attacks=plan_attacks(seed, seconds, seconds / 3))
    rows = [call.to_row(f"s{i}", b"test-key") for i, call in enumerate(sim.calls(seconds))] + _agent_rows(t0, seconds, seed)
    rows.sort(key=lambda r: r["time"])
    sizes = random.Random(seed).choices([1, 7, 60, 400], k=len(rows))
    i = 0
    for size in sizes:
        if i >= len(rows):
            break
        yield rows[i : i + size]
        i += size


def _key(d: Detection) -> tuple[Any, ...]:
    return (d.actor, d.attack_class, d.score, d.subject_kind, d.scope, d.evidence_time, tuple(sorted(d.features.items())))


def _frames(proc: BatchProcessor, clock: float | None = None) -> dict[int, dict[str, float]]:
    """Every actor's frame, but the window sums of a window that ended two windows ago (the actor's next event resets
    them before anything reads them; the side table may have released them: ``SideTable.empty``)."""
    n = len(proc.store)
    frame = proc.frame(np.arange(n))
    assert list(frame) == [f.name for f in features_for("actor")] + [k for k in frame if k.startswith("cohort:")]
    stale = proc.store.cols["window_start"][:n].astype(np.float64) + 2 * 60 <= (proc.eviction.clock if clock is None else clock)
    sums = {f.name for f in features_for("actor") if f.name in RARE and f.fold == "sum"}
    return {int(k): {name: float(v[i]) for name, v in frame.items() if not (stale[i] and name in sums)}
            for i, k in enumerate(proc.store.cols["key"][:n])}


@pytest.mark.parametrize("seed", [3, 8])
def test_a_side_table_gives_the_frames_and_detections_of_one_table(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {"idle_ttl_s": 240.0, "learn_windows": 2}  # short: sweeps every window, so idle actors and empty side rows go
    one, two = _processor(True, monkeypatch, **config), _processor(False, monkeypatch, **config)
    assert not one.side.features and set(two.side.names) == RARE - {"thin_owners_long"}  # a BOLA rule compares it with its cohort
    found: dict[bool, list[tuple[Any, ...]]] = {True: [], False: []}
    held = []
    for rows in _traffic(seed, 420.0, 60.0):
        table = decode_message(encode_rows(rows), 1 << 30)
        for proc, is_one in ((one, True), (two, False)):
            found[is_one] += [_key(d) for d in proc.process(table)]
        held.append(len(two.side.store) / max(1, len(two.store)))
    assert found[True] == found[False] and len(found[True]) >= 5
    assert {c for _, c, *_ in found[True]} >= {"bola", "model_extraction"}
    assert _frames(one) == _frames(two)
    assert one.state_stats()["evicted"] == two.state_stats()["evicted"] and two.state_stats()["evicted"]["actor:ttl"] > 0
    assert 0 < max(held[len(held) // 2 :]) < 0.1  # only actors with a live rare value have side rows (after the first few batches)


def test_the_split_keeps_cohort_features_and_baselines_of_common_features() -> None:
    actor = features_for("actor")
    assert RARE <= {f.name for f in actor}
    kept, rare = split(actor, cohort=["novel_edges"])
    assert "novel_edges" in {f.name for f in kept} and "llm_calls" in {f.name for f in rare}
    assert {f.name for f in rare} | {f.name for f in kept} == {f.name for f in actor}
    _, without_calls = split(actor, cohort=["llm_calls"])  # the baseline of a feature kept in the actor table stays with it
    assert "baseline_llm_calls" not in {f.name for f in without_calls}


def test_state_written_with_one_table_is_read_into_the_side_table(monkeypatch: pytest.MonkeyPatch) -> None:
    one, two = _processor(True, monkeypatch), _processor(False, monkeypatch)
    for rows in _traffic(5, 240.0, 40.0):
        one.process(decode_message(encode_rows(rows), 1 << 30))
    restored = _processor(False, monkeypatch)
    restored.restore(one.checkpoint(everything=True))
    assert restored.store.skipped_blobs == 0 and len(restored.store) == len(one.store)
    assert _frames(restored, one.eviction.clock) == _frames(one)
    assert len(restored.side.store) > 0
    rewritten = {suffix for suffix, _ in restored.checkpoint()}
    assert any(s.startswith("rare:") for s in rewritten) and any(s.isdigit() for s in rewritten)  # written again in the new layout
    assert len(two.store) == 0


def test_an_empty_side_row_is_released_and_made_again_when_needed(summary_factory: Any, table_of: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import T0

    proc = _processor(False, monkeypatch, idle_ttl_s=0)
    proc.process(table_of([summary_factory(time=T0 + 1, inline_findings=["sqli"])]))
    assert len(proc.side.store) == 1
    proc.process(table_of([summary_factory(time=T0 + 61)]))  # the window with the hit closed: the side row holds zeros
    assert proc.frame(np.array([0]))["inline_hits"][0] == 0
    proc.side.store.remove(proc.side.empty(proc.eviction.clock))
    assert len(proc.side.store) == 0
    proc.process(table_of([summary_factory(time=T0 + 62, inline_findings=["sqli"])]))
    assert proc.frame(np.array([0]))["inline_hits"][0] == 1 and len(proc.side.store) == 1
