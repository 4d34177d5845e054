"""streams.replay: rows, records, Arrow tables and Parquet through the worker's Pipeline on the replayed clock."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from ingest import Policy, RequestSummary, actor_key, encode_envelope, row_to_summary, verify_verdict
from ingest.envelope import SUMMARY_SCHEMA
from ingest.simulator import ClusterSimulator, plan_attacks, write_parquet
from ingest.templating import hash_object_id
from streams.pipeline import Outcome
from streams.replay import Batch, Replay, ReplayResult, replay
from streams.settings import WorkerSettings
from tests.conftest import T0, stolen_objects

KEY = "replay-test-key"
OBJECT_KEY = b"replay-object-key"
SEED = 5


def _settings(**overrides: Any) -> WorkerSettings:
    return WorkerSettings(verdict_key=KEY, **overrides)


def _traffic(summary_factory: Any, users: int = 40, attack: int = 60) -> list[RequestSummary]:
    """Benign users reading one object each, ``attack`` owners creating one order each, then one user reading all of those."""
    benign = [summary_factory(principal=f"user-{u}", time=T0 + 1, object_ids=[hash_object_id(str(u), b"k")]) for u in range(users)]
    made, read = stolen_objects(summary_factory, owners=attack, t=T0 + 2)
    return benign + made + read


@cache
def _sim_rows() -> tuple[list[dict[str, Any]], WorkerSettings]:
    """A short simulated run with an attacker of every kind, as rows, and settings like the evaluation's."""
    sim = ClusterSimulator(seed=SEED, users=300, benign_rate_eps=250.0, attacks=plan_attacks(SEED, 60.0, 20.0))
    rows = [c.to_row(f"sim-{i:010d}", OBJECT_KEY) for i, c in enumerate(sim.calls(60.0))]
    return rows, _settings(window_s=10, learn_windows=2, policy=Policy(retired_endpoints=sim.retired_endpoints))


def _found(result: ReplayResult) -> list[tuple[str, str, float, float]]:
    return [(d.actor, d.attack_class, d.evidence_time, round(d.score, 9)) for d in result.detections]


def test_an_enumerator_gives_one_signed_verdict_stamped_on_the_replayed_clock(summary_factory: Any) -> None:
    seen: list[tuple[float, Outcome]] = []
    rows = _traffic(summary_factory)
    result = replay(rows, _settings(), batch_rows=25, on_batch=lambda batch, out: seen.append((max(r["time"] for r in batch), out)))
    assert (result.rows, result.batches) == (160, 7)  # 40 users, 60 owners, 60 thefts in batches of 25
    (det,), (verdict,), (finding,) = result.detections, result.verdicts, result.findings
    assert (det.actor, det.attack_class) == (actor_key("shop/web", "mallory"), "bola")
    assert verify_verdict(verdict, KEY.encode()) and verdict.subject.value == det.actor
    assert finding.finding_info.uid == verdict.finding_ids[0]
    (newest,) = [t for t, out in seen if out.verdicts]
    assert verdict.issued_at == newest and verdict.expires_at == newest + Policy().verdict_ttl_s
    assert result.dead_letters == ()


def test_settings_choose_the_detectors_and_the_policy(summary_factory: Any) -> None:
    rows = _traffic(summary_factory)
    assert replay(rows, _settings(detectors=[])).detections == ()
    (verdict,) = replay(rows, _settings(policy=Policy(modes={"shop": "enforce"}, version="9"))).verdicts
    assert (verdict.mode, verdict.policy_version) == ("enforce", "9")


def test_on_batch_sees_every_batch_in_order(summary_factory: Any) -> None:
    rows = [summary_factory(principal=f"user-{i % 50}", time=T0 + i * 0.01) for i in range(1001)]
    batches: list[Batch] = []
    result = replay(rows, _settings(), batch_rows=500, on_batch=lambda batch, out: batches.append(batch))
    assert [len(b) for b in batches] == [500, 500, 1] and result.batches == 3
    assert [r["id"] for b in batches for r in b] == [s.id for s in rows]  # type: ignore[index]


def test_rows_records_tables_and_parquet_replay_alike(tmp_path: Path) -> None:
    """The simulator's Parquet file (``write_parquet``) replays exactly like the rows it was written from."""
    rows, settings = _sim_rows()
    sim = ClusterSimulator(seed=SEED, users=300, benign_rate_eps=250.0, attacks=plan_attacks(SEED, 60.0, 20.0))
    path = tmp_path / "run.parquet"
    assert write_parquet(sim.calls(60.0), path, OBJECT_KEY, batch_rows=7000) == len(rows)
    by_rows = replay(rows, settings)
    assert {d.attack_class for d in by_rows.detections} >= {"bola", "credential_abuse"}
    assert _found(replay([row_to_summary(r) for r in rows], settings)) == _found(by_rows)
    assert _found(replay(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA), settings)) == _found(by_rows)
    assert _found(replay(path, settings)) == _found(by_rows)
    assert _found(replay(str(path), settings)) == _found(by_rows)


def test_a_replay_restored_from_its_changelog_goes_on_as_one_replay() -> None:
    rows, settings = _sim_rows()
    settings = settings.model_copy(update={"state_flush_s": 1e-6})
    half = len(rows) // 1000 * 500
    changelog: dict[bytes, bytes] = {}
    first = Replay(settings, changelog).run(rows[:half])
    assert changelog and all(k.startswith(b"0:") for k in changelog)
    second = Replay(settings, changelog).run(rows[half:])
    whole = replay(rows, settings)
    assert _found(first) + _found(second) == _found(whole) and whole.detections


def test_without_a_changelog_nothing_is_restored(summary_factory: Any) -> None:
    run = Replay(_settings(state_flush_s=1e-6))
    run.run(_traffic(summary_factory))
    assert run.changelog is None and len(run.processor().store) == 101  # 40 users, 60 owners, the thief
    assert len(Replay(_settings()).processor().store) == 0


def test_a_batch_the_worker_would_refuse_is_a_dead_letter(summary_factory: Any) -> None:
    result = replay(_traffic(summary_factory), _settings(max_message_bytes=1024), batch_rows=50)
    assert len(result.dead_letters) == 4 and result.detections == ()  # 160 rows in batches of 50
    assert all("exceeds max_message_bytes=1024" in d.error for d in result.dead_letters)


def test_feed_takes_an_encoded_message_with_its_clock(summary_factory: Any) -> None:
    run = Replay(_settings())
    value = encode_envelope(_traffic(summary_factory))
    with pytest.raises(ValueError, match="now="):
        run.feed(value)
    out = run.feed(value, partition=3, now=T0 + 5)
    assert [v.issued_at for v in out.verdicts] == [T0 + 5] and run.clock == T0 + 5
    assert set(run.pipeline.processors) == {3}


def test_batch_rows_must_be_positive() -> None:
    with pytest.raises(ValueError, match="batch_rows=0"):
        replay([], _settings(), batch_rows=0)


def test_an_empty_source_replays_nothing() -> None:
    assert replay([], _settings()) == ReplayResult(0, 0, (), (), (), ())
