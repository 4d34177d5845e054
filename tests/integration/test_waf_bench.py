"""``kubeward bench waf`` on a handful of rows through real nginx + ModSecurity + CRS and real Envoy + shim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.waf_bench import SYSTEMS, main, run_rows, start_crs_nginx
from deploy.lab.waf_rows import morzeux_row
from deploy.runtime.echo import EchoUpstream

pytestmark = pytest.mark.integration

# make setup installs nginx, the ModSecurity module and the CRS from Debian: a missing piece fails, never skips.

ATTACK = "' OR 1=1--"
BENIGN = ("madrid", "c/ caridad s/n", "juan perez garcia")


def _datasets(root: Path) -> Path:
    morzeux = [{"id": "train-0", "payload": ATTACK, "is_attack": True, "attack_type": "sqli"}]
    morzeux += [{"id": f"train-{i}", "payload": value, "is_attack": False, "attack_type": "norm"} for i, value in enumerate(BENIGN, 1)]
    crs = [{"id": "942100-1", "direction": "request", "category": "APPLICATION-ATTACK-SQLI", "paranoia_level": 1, "method": "POST", "uri": "/post",
            "version": "HTTP/1.1", "headers": {"Host": "localhost", "User-Agent": "OWASP CRS test agent"}, "body": "var=1234 OR 1=1",
            "autocomplete_headers": True, "expected_match": True},
           {"id": "942100-x", "direction": "request", "category": "APPLICATION-ATTACK-SQLI", "paranoia_level": 1, "method": "GET",
            "uri": "/get?city=madrid&page=2", "version": "HTTP/1.1", "headers": {"Host": "localhost", "User-Agent": "OWASP CRS test agent"},
            "body": None, "autocomplete_headers": True, "expected_match": False}]  # fmt: skip
    for name, file, records in (("http-params-morzeux", "httpparams_train.jsonl", morzeux), ("crs-regression", "crs_regression.jsonl", crs)):
        (root / name).mkdir(parents=True)
        (root / name / file).write_text("".join(json.dumps(r) + "\n" for r in records))
    return root


def test_crs_pl1_blocks_a_classic_sqli_in_query_and_json_and_passes_benign_values(tmp_path: Path) -> None:
    rows = [morzeux_row({"id": f"r{i}", "payload": value, "is_attack": i == 0, "attack_type": "sqli" if i == 0 else "norm"}, position)
            for i, value in enumerate((ATTACK, *BENIGN)) for position in ("query", "json")]  # fmt: skip
    with EchoUpstream() as echo, start_crs_nginx(tmp_path / "crs", echo.port, paranoia=1) as nginx:
        outcomes = {o.row_id: o.status for o in run_rows(nginx.port, rows, concurrency=2)}
        passed_bodies = [seen["body_bytes"] for seen in echo.seen if seen["method"] == "POST"]
    assert outcomes == {row.id: 403 if row.is_attack else 200 for row in rows}
    assert len(passed_bodies) == len(BENIGN) and all(size > 0 for size in passed_bodies)


def test_bench_writes_the_comparison_for_every_system_and_block(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "waf-compare.json"
    code = main(["--datasets", str(_datasets(tmp_path / "data")), "--out", str(out), "--workdir", str(tmp_path / "work"), "--concurrency", "1"])
    assert code == 0
    result: dict[str, Any] = json.loads(out.read_text())
    blocks = ("http-params-morzeux/query", "http-params-morzeux/json", "crs-regression/request")
    assert set(result) == {*blocks, "meta"} and result["meta"]["dev_data"] is True
    for block in blocks:
        assert set(result[block]) == set(SYSTEMS)
        for figures in result[block].values():
            assert {"tpr", "fpr", "p50_ms", "p99_ms", "n", "per_category", "other_status"} <= set(figures)
            assert figures["other_status"] == {} and figures["n"] == (4 if block.startswith("http") else 2)
            assert 0 < figures["p50_ms"] <= figures["p99_ms"]
            assert all({"tpr", "n"} <= set(cat) for cat in figures["per_category"].values())
    for block in blocks:
        assert result[block]["crs_pl1"]["tpr"] == 1.0 and result[block]["crs_pl1"]["fpr"] == 0.0
        assert result[block]["kubeward"]["fpr"] == 0.0  # benign values pass Kubeward too, whatever its engines
    assert result["http-params-morzeux/query"]["crs_pl1"]["per_category"] == {"sqli": {"tpr": 1.0, "n": 1}}
    assert "per_paranoia" in result["crs-regression/request"]["crs_pl2"]
    table = capsys.readouterr().out
    assert "DEV data" in table and all(name in table for name in SYSTEMS)
