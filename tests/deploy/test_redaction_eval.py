"""deploy.lab.redaction_eval: marker recovery, span scoring and the figures on a tiny made-up dataset."""

from __future__ import annotations

import json
from pathlib import Path

from deploy.lab.redaction_eval import _masked_spans, bench_redaction, evaluate_redaction, redaction_figures, users_body


def _write(root: Path) -> Path:
    pii = root / "pii-presidio-synth"
    pii.mkdir(parents=True)
    text = "Mail ann@example.org or call +1 415 555 2671; Bob lives here."
    rows = [{"text": text, "spans": [{"start": 5, "end": 20, "type": "EMAIL_ADDRESS"}, {"start": 29, "end": 44, "type": "PHONE_NUMBER"},
                                     {"start": 46, "end": 49, "type": "PERSON"}]},
            {"text": "SSN 123-45-6789 and card 4111 1111 1111 1112", "spans": [{"start": 4, "end": 15, "type": "US_SSN"}, {"start": 25, "end": 44, "type": "CREDIT_CARD"}]}]
    (pii / "presidio_synth_v2.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    sec = root / "secrets-noseyparker"
    sec.mkdir()
    secrets = [{"text": "token ghp_4f9Kx2LmQ8rT6vW1yZ3bN5cD7eF0gH2jK4lM", "label": 1, "rule_id": "np.github.1", "categories": ["secret"]},
               {"text": "token ghp_EXAMPLE", "label": 0, "rule_id": "np.github.1", "categories": ["secret"]},
               {"text": "bucket my-bucket-name", "label": 1, "rule_id": "np.s3.1", "categories": ["identifier"]}]
    (sec / "noseyparker_rule_examples.jsonl").write_text("\n".join(json.dumps(r) for r in secrets) + "\n")
    return root


def test_marker_spans_map_back_to_original_offsets() -> None:
    assert _masked_spans("a \x00email:11\x00 b \x00ssn:11\x00") == [(2, 13, "email"), (16, 27, "ssn")]


def test_report_on_a_tiny_dataset(tmp_path: Path) -> None:
    report = evaluate_redaction(_write(tmp_path))
    for body in ("text", "json"):
        assert report[body]["email"] == {"precision": 1.0, "recall": 1.0, "leaked": 0, "support": 1, "masked": 1}
        assert report[body]["phone"]["recall"] == 1.0 and report[body]["ssn"]["recall"] == 1.0
        assert report[body]["card"]["recall"] == 0.0 and report[body]["card"]["leaked"] == 1  # Luhn-invalid: not a card
    assert report["min_recall"] == 0.0 and "PERSON" in report["out_of_scope"]
    assert report["secrets"] == {"recall": 1.0, "fp_rate_near_miss": 0.0, "precision": 1.0, "positives": 1, "near_misses": 1}


def test_speed_and_figures(tmp_path: Path) -> None:
    assert 4000 < len(users_body()) < 9000
    speed = bench_redaction(repeat=3)
    assert speed["users_us_per_kb"] > 0 and speed["typical_us_per_kb"] > 0
    figures = redaction_figures(_write(tmp_path))
    assert set(figures) >= {"us_per_kb", "min_precision", "min_recall", "secrets_recall", "secrets_fp_rate"} and figures["dev"] is True
