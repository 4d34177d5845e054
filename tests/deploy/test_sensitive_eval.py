"""The DEV evaluation of sensitive-data detection: matching rule, scope, splits and the CLI, on tiny fixture datasets."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from deploy.lab.sensitive_eval import GOLD_TO_TYPE, PATTERN_TYPES, add_cli, evaluate_sensitive, format_table


def span(text: str, value: str, kind: str) -> dict[str, object]:
    start = text.index(value)
    return {"type": kind, "start": start, "end": start + len(value), "value": value}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    t0 = "Mail jane@example.org or call +44 20 7946 0958."
    t1 = "Card 4111111111111111 belongs to Ann Lee."
    t2 = "Try 0490 75 40 81 today"  # a local number with no phone word nearby: a miss
    t3 = "Server at 10.0.0.7 answers"  # an IP with no gold span: a false positive
    pii: list[dict[str, object]] = [
        {"id": "p0", "text": t0, "spans": [span(t0, "jane@example.org", "EMAIL_ADDRESS"), span(t0, "+44 20 7946 0958", "PHONE_NUMBER")]},
        {"id": "p1", "text": t1, "spans": [span(t1, "4111111111111111", "CREDIT_CARD"), span(t1, "Ann Lee", "PERSON")]},
        {"id": "p2", "text": t2, "spans": [span(t2, "0490 75 40 81", "PHONE_NUMBER")]},
        {"id": "p3", "text": t3, "spans": []},
    ]
    write_jsonl(tmp_path / "pii-presidio-synth/presidio_synth_v2.jsonl", pii)
    stripe = "sk_" + "live_" + "Ab3dEf6hIj9kLm2nOp5qRs8t"
    secrets: list[dict[str, object]] = [
        {"id": "a-pos-0", "text": f'stripe.api_key = "{stripe}"', "label": 1, "rule_id": "np.stripe.1", "categories": ["api", "secret"]},
        {"id": "a-neg-0", "text": "password = $DB_PASSWORD", "label": 0, "rule_id": "np.generic.5", "categories": ["secret"]},
        {"id": "b-neg-0", "text": "export TOKEN=Zx9Yw8Vu7Ts6Rq5P", "label": 0, "rule_id": "np.x.1", "categories": ["secret"]},
        {"id": "b-pos-0", "text": "export TOKEN=Zx9Yw8Vu7Ts6Rq5P", "label": 1, "rule_id": "np.y.1", "categories": ["secret"]},
        {"id": "c-pos-0", "text": "my-bucket.s3.amazonaws.com", "label": 1, "rule_id": "np.s3.1", "categories": ["api", "identifier"]},
        {"id": "d-pos-0", "text": "nothing to see here", "label": 1, "rule_id": "np.z.1", "categories": ["secret"]},
    ]
    write_jsonl(tmp_path / "secrets-noseyparker/noseyparker_rule_examples.jsonl", secrets)
    return tmp_path


def test_overlap_matching_on_spans(datasets: Path) -> None:
    types = evaluate_sensitive(datasets)["types"]
    assert types["email"]["precision"] == 1.0 and types["email"]["recall"] == 1.0
    assert types["card"]["recall"] == 1.0 and types["card"]["support"] == 1
    assert types["phone"]["recall"] == 0.5 and types["phone"]["support"] == 2
    assert types["ip"]["precision"] == 0.0 and types["ip"]["false_positives"] == 1
    assert types["PERSON"]["recall"] == 0.0 and types["PERSON"]["pattern_shaped"] is False


def test_secret_scope_and_conflicting_labels(datasets: Path) -> None:
    secret = evaluate_sensitive(datasets)["types"]["secret"]
    # in scope: the stripe key, the placeholder, the TOKEN text (labelled 1 by another rule), the undetectable one;
    # the identifier rule is out of scope
    assert secret["support"] == 3
    assert secret["recall"] == pytest.approx(2 / 3, abs=1e-3)
    assert secret["precision"] == 1.0


def test_min_over_pattern_types_and_splits(datasets: Path) -> None:
    report = evaluate_sensitive(datasets)
    assert report["dev"] is True
    assert set(report["splits"]) == {"all", "even", "odd"}
    shaped = [report["types"][t] for t in PATTERN_TYPES if report["types"][t]["recall"] is not None]
    assert report["min_recall"] == min(m["recall"] for m in shaped)
    assert report["splits"]["even"]["types"]["phone"]["support"] == 2  # rows 0 and 2
    assert report["splits"]["odd"]["types"]["phone"]["support"] == 0


def test_every_gold_type_is_mapped_or_reported() -> None:
    assert len(GOLD_TO_TYPE) == 17
    assert {v for v in GOLD_TO_TYPE.values() if v} <= set(PATTERN_TYPES) | {"national_id"}


def test_cli_prints_a_dev_table(datasets: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    out = tmp_path / "report.json"
    args = parser.parse_args(["eval-sensitive", "--datasets", str(datasets), "--out", str(out), "--bench"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("DEV set figures") and "secret" in printed and "body_features_us" in printed
    assert json.loads(out.read_text())["types"]["email"]["support"] == 1
    assert format_table(evaluate_sensitive(datasets)).splitlines()[0] == printed.splitlines()[0]
