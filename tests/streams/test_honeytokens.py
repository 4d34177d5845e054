"""streams.honeytokens: the ``honeytoken_hits`` signal, and the rule that turns one hit into a High block."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ingest import HttpObservation, Summarizer, SummarizerConfig, decode_message, encode_rows, hash_object_id
from ingest.honeytokens import HoneytokenKeys, Honeytokens, hash_account, load_honeytokens
from ingest.identity import IdentityConfig
from ingest.principal import hash_principal
from streams.batch import BatchView
from models import RuleDetector, load_rules
from streams.honeytokens import SIGNAL, HoneytokenEnricher
from streams.policy import severity_for

FIXTURE = Path(__file__).resolve().parents[1] / "ingest" / "data" / "honeytokens.yaml"
RULE = Path(__file__).resolve().parents[2] / "models" / "rules" / "honeytoken.yaml"
OBJ, PRINCIPAL_KEY = b"kubeward-dev-object-key", b"kubeward-dev-principal-key"


@pytest.fixture(scope="module")
def enricher() -> HoneytokenEnricher:
    return HoneytokenEnricher(load_honeytokens(FIXTURE))


def _hits(enricher: HoneytokenEnricher, table_of: Any, rows: list[Any]) -> list[float]:
    out = enricher.enrich(BatchView.decode(table_of(rows)))
    assert set(out) == {SIGNAL}
    return [float(v) for v in out[SIGNAL]]


def test_each_kind_of_use_is_one_hit_per_row(enricher: HoneytokenEnricher, summary_factory: Any, table_of: Any) -> None:
    rows = [
        summary_factory(object_ids=[hash_object_id("81231", OBJ), hash_object_id("900017", OBJ)]),
        summary_factory(service="users", object_ids=[hash_object_id("u-7f3c9a21b4", OBJ)]),
        summary_factory(principal=hash_principal("apikey", "kw-honey-3f9c2d1e7a", PRINCIPAL_KEY)),
        summary_factory(principal=hash_principal("basic", "ops.admin@example.com", PRINCIPAL_KEY)),
        summary_factory(principal=None, credential_subject=hash_account("Ops.Admin@example.com", OBJ)),
        summary_factory(inline_findings=["sqli", "honeytoken"]),
        summary_factory(object_ids=[hash_object_id("900017", OBJ)] * 2, inline_findings=["honeytoken"]),
    ]
    assert _hits(enricher, table_of, rows) == [1.0] * len(rows)


def test_benign_rows_are_zero(enricher: HoneytokenEnricher, summary_factory: Any, table_of: Any) -> None:
    rows = [
        summary_factory(),
        summary_factory(object_ids=[hash_object_id("81231", OBJ)]),
        summary_factory(service="payments", object_ids=[hash_object_id("900017", OBJ)]),  # the id, but another service's
        summary_factory(principal=hash_principal("apikey", "kw-honey-3f9c2d1e7b", PRINCIPAL_KEY)),
        summary_factory(credential_subject=hash_account("ops@example.com", OBJ)),
        summary_factory(inline_findings=["sqli"]),
    ]
    assert _hits(enricher, table_of, rows) == [0.0] * len(rows)


def test_hits_land_on_their_own_rows_among_many(enricher: HoneytokenEnricher, summary_factory: Any, table_of: Any) -> None:
    rows = [summary_factory(object_ids=[hash_object_id(str(i), OBJ)]) for i in range(500)]
    rows[137] = summary_factory(object_ids=[hash_object_id("900017", OBJ)])
    rows[401] = summary_factory(inline_findings=["honeytoken"])
    hits = np.asarray(_hits(enricher, table_of, rows))
    assert np.flatnonzero(hits).tolist() == [137, 401]


def test_nothing_declared_still_sees_the_shims_inline_finding(summary_factory: Any, table_of: Any) -> None:
    empty = HoneytokenEnricher(Honeytokens())
    assert _hits(empty, table_of, [summary_factory(object_ids=[hash_object_id("900017", OBJ)]), summary_factory(inline_findings=["honeytoken"])]) == [0.0, 1.0]


def test_a_summarised_call_of_a_planted_object_is_a_hit() -> None:
    """End to end with the real summariser: the object-id hashes of a collector's summary compare equal."""
    keys = HoneytokenKeys(object_id_key=b"deploy-object-key", principal_key=b"deploy-principal-key")
    enricher = HoneytokenEnricher(load_honeytokens(FIXTURE, keys))
    summarizer = Summarizer(SummarizerConfig(identity=IdentityConfig(principal_key=b"deploy-principal-key"), object_id_key=b"deploy-object-key"))

    def call(path: str, **headers: str) -> Any:
        obs = HttpObservation(time=1.0, method="GET", path=path, reporter="access_log", peer_ip="10.0.0.7", status=200,
                              headers={"x-kubeward-destination": "shop/orders", **headers})
        return summarizer.summarize(obs)

    rows = [call("/orders/900017"), call("/orders/81231"), call("/orders/81232", **{"x-api-key": "kw-honey-3f9c2d1e7a"})]
    table = decode_message(encode_rows(rows), max_bytes=1 << 30)  # a collector's envelope, as the worker reads it
    assert enricher.enrich(BatchView.decode(table))[SIGNAL].tolist() == [1.0, 0.0, 1.0]


def test_export_and_restore_carry_no_state(enricher: HoneytokenEnricher) -> None:
    assert enricher.export() == b""
    enricher.restore(enricher.export())
    assert (enricher.name, enricher.signals) == ("honeytokens", (SIGNAL,))


def _rule() -> Any:
    (rule,) = load_rules(RULE)
    return rule


def test_the_rule_blocks_any_actor_on_the_signal_at_once() -> None:
    rule = _rule()
    assert (rule.feature, rule.attack_class, rule.action, rule.applies_to, rule.learn_windows, rule.status) == (
        SIGNAL, "honeytoken", "block", "all", 0, "stable")
    assert rule.baseline is None and rule.cohort_factor == 0 and not rule.when


def test_one_hit_fires_and_is_a_high_finding() -> None:
    det = RuleDetector(_rule())
    assert det.score({SIGNAL: 0.0}) == 0.0
    assert severity_for(det.score({SIGNAL: 1.0})) >= 4  # High (OCSF severity_id 4) from the first call
