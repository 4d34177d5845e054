"""deploy.lab.waf_eval on a small sample of each dev dataset (skipped when the datasets are absent)."""

from __future__ import annotations

import pytest

from deploy.lab.waf_eval import DATASETS, evaluate

pytestmark = pytest.mark.skipif(not (DATASETS / "http-params-morzeux").exists(), reason="dev datasets not present")


def test_evaluate_reports_rates_per_position_category_and_level() -> None:
    got = evaluate(DATASETS, paranoia=1, limit=300)
    assert got["paranoia"] == 1
    for position in ("query", "json"):
        morzeux = got["morzeux"][position]
        assert morzeux["positives"] + morzeux["negatives"] == 300
        assert 0.0 <= morzeux["fpr"] <= 1.0 and 0.0 <= morzeux["tpr"] <= 1.0
        assert 0.0 <= got["natural"][position]["fpr"] <= 1.0
    crs = got["crs"]
    assert isinstance(crs["per_category"], dict) and all(k.startswith(("APPLICATION-ATTACK-", "PROTOCOL-ATTACK")) for k in crs["per_category"])
    assert all(k.startswith("pl") for k in crs["per_crs_paranoia"])


def test_sqli_payloads_are_caught_and_plain_values_are_not() -> None:
    got = evaluate(DATASETS, paranoia=1, limit=2000)["morzeux"]["query"]["per_category"]
    assert got["sqli"]["tpr"] >= 0.9
    assert got["norm"]["fpr"] <= 0.01
