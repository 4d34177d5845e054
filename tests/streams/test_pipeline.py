"""streams.pipeline.Pipeline: one summaries-topic message in, verdicts, findings, dead letters and changelog writes out."""

from __future__ import annotations

import base64
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from ingest import Policy, RequestSummary, actor_key, encode_envelope, verify_verdict
from ingest.templating import hash_object_id
from ingest import summary_to_row
from streams.pipeline import Outcome, Pipeline, processor_config, state_key
from streams.policy import severity_for
from streams.processor import ProcessorConfig
from streams.replay import Replay
from streams.settings import WorkerSettings
from tests.conftest import T0, stolen_objects

TOPIC = "l7.summaries.v1"
KEY = "pipeline-test-key"
W_1 = 61.0  # seconds after T0: inside the second 60 s window
MALLORY, ALICE = actor_key("shop/web", "mallory"), actor_key("shop/web", "alice")


def _settings(**overrides: Any) -> WorkerSettings:
    return WorkerSettings(verdict_key=KEY, **overrides)


def _attack(summary_factory: Any, t: float = T0 + 1, principal: str = "mallory", n: int = 100) -> list[RequestSummary]:
    """``n`` owners create an order each (at ``t - 1``), then ``principal`` reads them all: BOLA by ownership."""
    made, read = stolen_objects(summary_factory, principal, owners=n, t=t)
    return made + read


def _benign(summary_factory: Any, t: float, users: int = 20) -> list[RequestSummary]:
    return [summary_factory(principal=f"user-{u}", time=t, object_ids=[hash_object_id(f"{u}", b"k")]) for u in range(users)]


# ------------------------------------------------------------------ dead letters


@pytest.mark.parametrize(("value", "reason"), [(b"garbage" * 10, "neither an Arrow IPC envelope nor a JSON object"),
                                                (b'{"id": 1}', "invalid summary JSON"),
                                                (b"\xff\xff\xff\xffbroken", "unreadable Arrow IPC envelope")])
def test_undecodable_message_becomes_a_dead_letter(value: bytes, reason: str) -> None:
    pipeline = Pipeline(_settings(dlq_raw_cap=16), TOPIC)
    out = pipeline.handle(3, value, offset=41, now=T0)
    dead = out.dead_letter
    assert dead is not None and reason in dead.error
    assert (dead.topic, dead.partition, dead.offset, dead.time, dead.source) == (TOPIC, 3, 41, T0, "worker")
    assert dead.raw_bytes == len(value)
    assert base64.b64decode(dead.raw_b64) == value[:16]
    assert (out.rows, out.verdicts, out.findings, out.state_writes) == (0, [], [], [])
    assert pipeline.processors == {}


def test_dead_letter_keeps_the_whole_value_under_the_cap() -> None:
    out = Pipeline(_settings(dlq_raw_cap=1000), TOPIC).handle(0, b"not json", None, T0)
    assert out.dead_letter is not None and base64.b64decode(out.dead_letter.raw_b64) == b"not json"
    assert out.dead_letter.partition == 0 and out.dead_letter.offset is None


def test_dead_letter_with_zero_cap_keeps_only_the_length() -> None:
    out = Pipeline(_settings(dlq_raw_cap=0), TOPIC).handle(0, b"xyz", 1, T0)
    assert out.dead_letter is not None and (out.dead_letter.raw_b64, out.dead_letter.raw_bytes) == ("", 3)


def test_an_oversized_message_is_a_dead_letter(summary_factory: Any) -> None:
    value = encode_envelope(_attack(summary_factory))
    out = Pipeline(_settings(max_message_bytes=1024, dlq_raw_cap=8), TOPIC).handle(0, value, 7, T0)
    assert out.dead_letter is not None
    assert f"message of {len(value)} bytes exceeds max_message_bytes=1024" in out.dead_letter.error
    assert base64.b64decode(out.dead_letter.raw_b64) == value[:8]


def test_rows_with_unusable_times_become_dead_letters_and_the_rest_is_kept(summary_factory: Any) -> None:
    good = summary_factory(id="ok-1", principal="alice", time=T0)
    rows = [summary_to_row(good), dict(summary_to_row(good), id="nan-1", time=float("nan")),
            dict(summary_to_row(good), id="ms-1", time=T0 * 1000), dict(summary_to_row(good), id="ok-2", time=T0 + 1)]
    from ingest.envelope import encode_rows

    out = Pipeline(_settings(), TOPIC).handle(0, encode_rows(rows), 3, T0 + 2, key=b"k")
    assert out.rows == 2 and len(out.dead_letters) == 1  # one dead letter for the batch, not one per row
    key, letter = out.dead_letters[0]
    assert (key, letter.offset) == (b"k", 3)
    assert letter.error.startswith("2 summaries with a time that is not a Unix time in seconds") and "['nan-1', 'ms-1']" in letter.error
    from ingest.envelope import decode_messages

    refused, errors = decode_messages([base64.b64decode(letter.raw_b64)], 1 << 20)  # the refused rows, replayable once fixed
    assert not errors and refused is not None and refused["id"].to_pylist() == ["nan-1", "ms-1"]


# ------------------------------------------------------------------ verdicts and findings


def test_an_attack_envelope_gives_a_signed_verdict_and_an_ocsf_finding(summary_factory: Any) -> None:
    pipeline = Pipeline(_settings(), TOPIC)
    out = pipeline.handle(0, encode_envelope(_benign(summary_factory, T0 + 1) + _attack(summary_factory)), 5, now=T0 + 3)
    assert out.dead_letter is None and out.rows == 220  # 20 users, 100 owners, 100 thefts
    assert [d.attack_class for d in out.detections] == ["bola"]
    (verdict,), (finding,) = out.verdicts, out.findings
    assert verify_verdict(verdict, KEY.encode())
    assert not verify_verdict(verdict, b"kubeward-dev-verdict-key")
    assert (verdict.subject.kind, verdict.subject.value, verdict.action) == ("actor", MALLORY, "block")
    assert verdict.mode == "observe" and verdict.policy_version == Policy().version
    assert (verdict.issued_at, verdict.expires_at) == (T0 + 3, T0 + 3 + Policy().verdict_ttl_s)
    assert verdict.evidence_time == out.detections[0].evidence_time == pytest.approx(T0 + 1.99)
    assert verdict.reasons and verdict.reasons[0].detector == "bola-foreign-owners-burst"  # the strongest reason first
    assert (finding.class_uid, finding.type_uid, finding.category_uid, finding.activity_id) == (2004, 200401, 2, 1)
    assert finding.finding_info.uid == verdict.finding_ids[0]
    assert finding.time == int((T0 + 3) * 1000)
    assert finding.unmapped == {"actor": MALLORY, "verdict_id": verdict.id, "mode": "observe"}
    assert (finding.action_id, finding.disposition_id) == (0, 15)
    assert finding.severity_id == severity_for(out.detections[0].score) >= 2
    assert finding.finding_info.types == ["bola"] and finding.finding_info.analytic["name"] == "bola-foreign-owners-burst"
    assert f"bola by {MALLORY}" in finding.message


def test_enforce_mode_comes_from_the_policy(summary_factory: Any) -> None:
    policy = Policy(modes={"shop": "enforce"}, verdict_ttl_s=60, version="7")
    out = Pipeline(_settings(policy=policy), TOPIC).handle(0, encode_envelope(_attack(summary_factory)), 0, T0 + 3)
    (verdict,), (finding,) = out.verdicts, out.findings
    assert (verdict.mode, verdict.expires_at, verdict.policy_version) == ("enforce", T0 + 63, "7")
    assert (finding.action_id, finding.disposition_id) == (2, 2)


def test_a_json_summary_message_is_handled(summary_factory: Any) -> None:
    value = summary_factory(inline_findings=["injection"]).model_dump_json().encode()
    out = Pipeline(_settings(), TOPIC).handle(0, value, 0, T0 + 2)
    assert out.rows == 1 and [v.subject.value for v in out.verdicts] == [ALICE]


def test_benign_traffic_gives_nothing(summary_factory: Any) -> None:
    out = Pipeline(_settings(), TOPIC).handle(0, encode_envelope(_benign(summary_factory, T0 + 1, users=50)), 0, T0 + 2)
    assert (out.rows, out.verdicts, out.findings, out.dead_letter) == (50, [], [], None)


def test_finding_ids_are_stable_for_the_same_evidence(summary_factory: Any) -> None:
    value = encode_envelope(_attack(summary_factory))
    first = Pipeline(_settings(), TOPIC).handle(0, value, 0, T0 + 3).verdicts[0]
    second = Pipeline(_settings(), TOPIC).handle(0, value, 0, T0 + 9).verdicts[0]
    assert first.finding_ids == second.finding_ids and first.id != second.id


@pytest.mark.parametrize(("score", "severity"), [(0.2, 1), (0.5, 2), (0.59, 2), (0.6, 3), (0.75, 4), (0.9, 5), (1.0, 5)])
def test_severity_steps(score: float, severity: int) -> None:
    assert severity_for(score) == severity


# ------------------------------------------------------------------ changelog


def _feed(run: Replay, messages: list[tuple[int, bytes, float]]) -> list[Outcome]:
    """Each (partition, envelope, clock) through the replay; its changelog keeps what the pipeline checkpoints."""
    return [run.feed(value, partition, now) for partition, value, now in messages]


def _counters(pipeline: Pipeline, partition: int) -> dict[int, tuple[Any, ...]]:
    store = pipeline.processors[partition].store
    names = list(store.cols)
    return {int(store.cols["key"][i]): tuple(store.cols[n][i].item() for n in names) + (store.objects[i].tobytes(),)
            for i in range(len(store))}


def test_state_writes_appear_when_the_flush_interval_elapsed(summary_factory: Any) -> None:
    pipeline = Pipeline(_settings(state_flush_s=1.0, state_buckets=16), TOPIC)
    first = pipeline.handle(0, encode_envelope(_benign(summary_factory, T0 + 1)), 0, now=T0 + 1)
    assert first.state_writes and all(k.startswith(b"0:") for k, _ in first.state_writes)
    soon = pipeline.handle(0, encode_envelope(_benign(summary_factory, T0 + 1.5)), 1, now=T0 + 1.5)
    assert soon.state_writes == []
    later = pipeline.handle(0, encode_envelope([summary_factory(principal="user-3", time=T0 + 2.1)]), 2, now=T0 + 2.1)
    assert len(later.state_writes) >= 1
    suffixes = [k.split(b":", 1)[1].decode() for k, _ in first.state_writes]
    buckets = {int(s.rsplit(":", 1)[-1]) for s in suffixes if s.rsplit(":", 1)[-1].isdigit()}
    assert buckets and buckets <= set(range(16))
    assert {s.split(":")[0] for s in suffixes if not s.isdigit()} <= {"source", "destinations", "enricher", "cohorts", "toolpins"}
    assert any(s.startswith("enricher:") for s in suffixes), "the first flush writes the enrichers' state too"
    assert pipeline.handle(0, b"junk", 3, now=T0 + 9).state_writes == []


def test_processors_prepared_on_assignment_serve_the_first_message_and_still_restore_state(summary_factory: Any) -> None:
    settings = _settings(state_flush_s=0.001)
    stored: dict[bytes, bytes] = {}
    _feed(Replay(settings, stored, TOPIC), [(0, encode_envelope(_attack(summary_factory)), T0 + 2)])
    pipeline = Pipeline(settings, TOPIC)
    pipeline.prepare([0, 1])
    blank = pipeline._blanks[0]
    assert pipeline.processors == {} and set(pipeline._blanks) == {0, 1}
    assert pipeline.processor(0, stored.items()) is blank and len(blank.store) == 101  # the thief and the 100 owners
    pipeline.forget(1)
    assert pipeline._blanks == {}


def test_a_restored_pipeline_has_the_same_actors_and_counters(summary_factory: Any) -> None:
    settings = _settings(state_flush_s=0.001, enricher_flush_s=0.001, state_buckets=8)  # every batch checkpointed
    messages = [
        (0, encode_envelope(_benign(summary_factory, T0 + 1, users=30)), T0 + 1),
        (0, encode_envelope(_attack(summary_factory, T0 + 2)), T0 + 2.5),
        (1, encode_envelope(_benign(summary_factory, T0 + 3, users=5)), T0 + 3),
        (0, encode_envelope(_benign(summary_factory, T0 + W_1, users=10)), T0 + W_1),
        (0, encode_envelope([summary_factory(principal="late", time=T0 + W_1 + 2)]), T0 + W_1 + 2),
    ]
    stored: dict[bytes, bytes] = {}
    original = Replay(settings, stored, TOPIC)
    _feed(original, messages)
    restored = Replay(settings, stored, TOPIC)
    for partition in (0, 1):
        assert len(restored.processor(partition).store) == len(original.processor(partition).store)
        assert _counters(restored.pipeline, partition) == _counters(original.pipeline, partition)
        for key in ("source",):
            assert len(restored.processor(partition).spaces[key].store) == len(original.processor(partition).spaces[key].store)
        for mine, theirs in zip(restored.processor(partition).enrichers, original.processor(partition).enrichers):
            assert mine.export() == theirs.export(), mine.name
    assert len(original.processor(0).store) == 132 and len(original.processor(1).store) == 5  # 30 users, 100 owners, thief, late


def test_restored_state_keeps_a_flagged_actor_flagged(summary_factory: Any) -> None:
    settings = _settings(state_flush_s=0.001)
    stored: dict[bytes, bytes] = {}
    (out,) = _feed(Replay(settings, stored, TOPIC), [(0, encode_envelope(_attack(summary_factory)), T0 + 2)])
    assert len(out.verdicts) == 1
    (again,) = _feed(Replay(settings, stored, TOPIC), [(0, encode_envelope(_attack(summary_factory, T0 + 3, n=10)), T0 + 3)])
    assert again.verdicts == []


def test_forget_drops_a_partition() -> None:
    pipeline = Pipeline(_settings(), TOPIC)
    pipeline.processor(2, ())
    pipeline.forget(2)
    pipeline.forget(5)
    assert pipeline.processors == {}


def test_state_key_names_partition_and_bucket() -> None:
    assert state_key(3, 17) == b"3:17"


def test_processor_config_comes_from_the_settings() -> None:
    policy = Policy(verdict_ttl_s=120.5, retired_endpoints=["orders GET /v1/orders/{id}"])
    settings = _settings(window_s=15, score_threshold=0.7, state_buckets=8, learn_windows=4, policy=policy)
    expected = ProcessorConfig(window_s=15, baseline_alpha=ProcessorConfig().baseline_alpha, score_threshold=0.7,
                               flag_ttl_s=120, learn_windows=4, buckets=8,
                               retired_endpoints=frozenset({"orders GET /v1/orders/{id}"}))
    assert processor_config(settings) == expected
    assert Pipeline(settings, TOPIC).config == expected


def test_restore_reads_only_its_own_partition(summary_factory: Any) -> None:
    settings = _settings(state_flush_s=0.001)
    stored: dict[bytes, bytes] = {}
    _feed(Replay(settings, stored, TOPIC), [(1, encode_envelope(_benign(summary_factory, T0 + 1, users=4)), T0 + 1),
                                            (11, encode_envelope(_benign(summary_factory, T0 + 1, users=9)), T0 + 1)])
    restored = Replay(settings, stored, TOPIC)
    assert len(restored.processor(1).store) == 4
    assert len(restored.processor(11).store) == 9
    assert len(restored.processor(0).store) == 0


# ------------------------------------------------------------------ bugs


def test_learned_destinations_survive_a_restore(summary_factory: Any) -> None:
    settings = _settings(state_flush_s=0.001, learn_windows=3)

    def call(service: str, t: float, workload: str = "shop/worker", principal: str | None = None) -> tuple[int, bytes, float]:
        return 0, encode_envelope([summary_factory(workload=workload, principal=principal, service=service, time=t)]), t

    stored: dict[bytes, bytes] = {}
    learning = [call("catalog", T0 + 1, workload="shop/web", principal="bob")] + [call("orders", T0 + w * 60 + 5) for w in range(3)]
    _feed(Replay(settings, stored, TOPIC), learning)
    (out,) = _feed(Replay(settings, stored, TOPIC), [call("orders", T0 + 3 * 60 + 5)])
    assert out.detections == []


def test_an_envelope_with_only_required_columns_does_not_crash_the_worker(summary_factory: Any) -> None:
    full = Pipeline(_settings(), TOPIC)
    table = pa.ipc.open_stream(encode_envelope([summary_factory()])).read_all()
    minimal = table.select(["id", "time", "source", "destination", "method", "path_template"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, minimal.schema) as writer:
        writer.write_table(minimal)
    out = full.handle(0, sink.getvalue().to_pybytes(), 0, T0 + 2)
    assert out.rows == 1 or out.dead_letter is not None


def test_a_model_file_is_scored_beside_the_rules_and_its_findings_only_observe(summary_factory: Any, tmp_path: Any) -> None:
    import numpy as np

    from models.artifacts import save_model
    from models.ml import GaussianMixtureDetector

    rng = np.random.default_rng(0)
    n = 600
    frame = {"requests": rng.poisson(5, n).astype(float), "denied": rng.poisson(0.2, n).astype(float),
             "is_service": np.zeros(n), "age_windows": np.full(n, 5.0)}
    model = GaussianMixtureDetector(features=["requests", "denied"]).fit(frame)
    path = tmp_path / "model.skops"
    save_model(model, path, T0 - 3600, T0)
    replay = Replay(_settings(model_path=path, detectors=[]), None, TOPIC)
    odd = [summary_factory(principal="odd", time=T0 + i * 0.01, status=404) for i in range(300)]
    out = replay.feed([summary_to_row(s) for s in odd])
    proc = replay.processor()
    assert proc.model is not None and proc.model.name == "gmm" and proc.detectors == [proc.model]
    assert [d.attack_class for d in out.detections] == ["anomaly"]
    assert [v.mode for v in out.verdicts] == ["observe"] and out.detections[0].reasons[0].detector == "gmm"


def test_rules_are_tuned_per_deployment_and_bad_tuning_names_the_rule_and_value() -> None:
    tuned = Pipeline(_settings(rule_overrides={"auth_failures": {"floor": 50}}), TOPIC).processor(0, ())
    (rule,) = [d for d in tuned.detectors if d.name == "auth_failures"]
    assert rule.score({"auth_failures": 50.0}) == 0.5  # type: ignore[attr-defined]
    off = Pipeline(_settings(rule_overrides={"shadow-endpoint": {"status": "disabled"}}), TOPIC).processor(0, ())
    assert "shadow-endpoint" not in {d.name for d in off.detectors}
    with pytest.raises(ValidationError, match=r"rule auth_failures \(overridden\): floor='x' must be a number"):
        _settings(rule_overrides={"auth_failures": {"floor": "x"}})
    with pytest.raises(ValidationError, match="no rule 'ghost' to override"):
        _settings(rule_overrides={"ghost": {"floor": 1}})
