"""deploy.lab.payload_model_eval: the cut, the CRS value extraction, and a run on a small sample of each dev dataset."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deploy.lab.payload_model_eval import DATASETS, MODELS, PARANOIA, TARGET_FPR, _crs_values, decode, evaluate, threshold

needs_data = pytest.mark.skipif(not (DATASETS / "http-params-morzeux").exists(), reason="dev datasets not present")


@pytest.mark.parametrize("allowed", [0, 1, 3, 5, 9])
def test_threshold_flags_at_most_the_allowed_number_of_benign_scores(allowed: int) -> None:
    scores = np.array([0.5, -1.0, 2.0, 2.0, 0.1, 3.0, -0.2, 0.9])
    cut = threshold(scores, allowed)
    assert int((scores > cut).sum()) <= allowed
    assert cut == -math.inf if allowed >= len(scores) else int((scores >= cut).sum()) > allowed


def test_crs_values_come_from_the_query_and_a_form_body_only() -> None:
    row = {"uri": "/get?a=1%27%20or%201=1&b=", "body": "c=%3Cscript%3E&d=x", "headers": {"Host": "h"}}
    assert _crs_values(row) == ("1' or 1=1", "<script>", "x")
    as_json = {**row, "headers": {"Content-Type": "application/json"}, "body": '{"c": "<script>"}'}
    assert _crs_values(as_json) == ("1' or 1=1",)
    assert decode("%253Cscript%253E+x") == "<script> x"


@needs_data
def test_evaluate_on_a_small_sample_reports_every_system_with_counts() -> None:
    got = evaluate(DATASETS, limit=300)
    assert set(got) == {"data", "models", "rules_us_median", "verdict"}
    assert got["data"]["morzeux_rows"] == 300 and set(got["models"]) == set(MODELS)
    systems = {f"rules@pl{p}" for p in PARANOIA} | {f"combined@pl{p}" for p in PARANOIA} | {f"model@{f}" for f in TARGET_FPR}
    for config, result in got["models"].items():
        assert result["inference_us_median"] > 0 and result["artifact"]["npz_bytes"] > 0
        cv, cross = result["morzeux_cv"], result["cross"]
        assert set(cv) == systems == set(cross)
        for name, t in cv.items():  # every morzeux row is tested exactly once
            assert t["recall"]["rows"] + t["fpr"]["rows"] == 300, (config, name)
            assert sum(k["rows"] for k in t["recall_per_kind"].values()) == t["recall"]["rows"]
        for table in (cv, cross):
            for p in PARANOIA:  # OR with the rules can only add detections
                assert table[f"combined@pl{p}"]["recall"]["flagged"] >= table[f"rules@pl{p}"]["recall"]["flagged"]
                assert table[f"combined@pl{p}"]["fpr"]["flagged"] >= table[f"rules@pl{p}"]["fpr"]["flagged"]
        assert cross["rules@pl1"]["fpr"]["rows"] < got["data"]["natural_texts"] + got["data"]["crs_rows_with_values"]
    assert isinstance(got["verdict"]["ship"], bool) and set(got["verdict"]["per_model"]) == set(MODELS)
