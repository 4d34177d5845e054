"""The WAF comparison's pure parts: rows from the datasets, the bytes sent, sampling, figures, table, rendered configs."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import yaml

from deploy.lab import waf_bench
from deploy.lab.waf_bench import add_cli, load_blocks, render_envoy_body, render_modsecurity
from deploy.lab.waf_rows import (
    BenchRow,
    Outcome,
    completed,
    crs_row,
    load_crs,
    load_morzeux,
    morzeux_row,
    percentile,
    render_table,
    request_bytes,
    sample_rows,
    summarize,
)


def _morzeux(payload: str, kind: str, n: int = 0) -> dict[str, Any]:
    return {"id": f"train-{n}", "payload": payload, "label": "norm" if kind == "norm" else "anom", "is_attack": kind != "norm", "attack_type": kind, "length": len(payload)}


def _crs(rid: str, category: str = "APPLICATION-ATTACK-SQLI", expected: bool | None = True, **over: Any) -> dict[str, Any]:
    row = {"id": rid, "direction": "request", "category": category, "paranoia_level": 1, "method": "POST", "uri": "/post", "version": "HTTP/1.1",
           "headers": {"Host": "localhost", "User-Agent": "OWASP CRS test agent"}, "body": "var=1 OR 1=1", "autocomplete_headers": True,
           "expected_match": expected, "raw_request": None}
    return row | over


def _write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _row(rid: str, category: str, attack: bool, paranoia: int | None = None) -> BenchRow:
    return BenchRow(rid, "d", "request", category, attack, "GET", "/", paranoia=paranoia)


# ------------------------------------------------------------------ rows


def test_morzeux_query_row_percent_encodes_the_value_and_maps_the_category() -> None:
    row = morzeux_row(_morzeux("../../etc/passwd & x=1", "path-traversal"), "query")
    assert (row.method, row.category, row.is_attack) == ("GET", "traversal", True)
    assert row.target.startswith("/anything?q=") and unquote(row.target.split("=", 1)[1]) == "../../etc/passwd & x=1"
    assert "&" not in row.target.split("?", 1)[1]


def test_morzeux_json_row_carries_the_value_as_a_json_leaf() -> None:
    row = morzeux_row(_morzeux("c/ caridad s/n", "norm"), "json")
    assert (row.method, row.target, row.category, row.is_attack) == ("POST", "/anything", "benign", False)
    assert json.loads(row.body or b"") == {"q": "c/ caridad s/n"}
    assert ("Content-Type", "application/json") in row.headers


@pytest.mark.parametrize(("kind", "category"), [("sqli", "sqli"), ("xss", "xss"), ("cmdi", "cmdi"), ("path-traversal", "traversal"), ("norm", "benign")])
def test_morzeux_categories_map_to_the_canonical_names(kind: str, category: str) -> None:
    assert morzeux_row(_morzeux("x", kind), "query").category == category


def test_morzeux_rejects_an_unknown_attack_type_and_position() -> None:
    with pytest.raises(ValueError, match="'ldap'"):
        morzeux_row(_morzeux("x", "ldap"), "query")
    with pytest.raises(ValueError, match="'request'"):
        morzeux_row(_morzeux("x", "sqli"), "request")


def test_load_morzeux_gives_one_list_per_position(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.jsonl", [_morzeux("a", "norm", 0), _morzeux("' OR 1=1--", "sqli", 1)])
    blocks = load_morzeux(path, ("query", "json"))
    assert [r.id for r in blocks["query"]] == ["train-0:query", "train-1:query"]
    assert [r.is_attack for r in blocks["json"]] == [False, True]


def test_load_crs_keeps_request_attack_categories_with_a_label_and_counts_skips(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.jsonl", [
        _crs("942100-1"),
        _crs("942100-2", expected=False),
        _crs("920100-1", category="PROTOCOL-ENFORCEMENT"),
        _crs("951100-1", category="DATA-LEAKAGES-SQL", direction="response"),
        _crs("933100-1", category="APPLICATION-ATTACK-PHP", expected=None),
        _crs("921110-1", category="PROTOCOL-ATTACK", headers={"X-Bad": "a\r\nInjected: 1"}),
    ])  # fmt: skip
    rows, skipped = load_crs(path)
    assert [(r.id, r.is_attack, r.category, r.paranoia) for r in rows] == [
        ("942100-1", True, "APPLICATION-ATTACK-SQLI", 1), ("942100-2", False, "APPLICATION-ATTACK-SQLI", 1)]
    assert sum(skipped.values()) == 2 and any("framing" in reason for reason in skipped)


def test_load_rejects_a_broken_line_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_crs("1")) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"c\.jsonl:2"):
        load_crs(path)


def test_load_blocks_cuts_to_limit_and_rejects_unknown_datasets(tmp_path: Path) -> None:
    _write(tmp_path / "http-params-morzeux" / "httpparams_train.jsonl", [_morzeux(str(i), "norm", i) for i in range(5)])
    blocks, _ = load_blocks(tmp_path, ["http-params-morzeux"], ["query"], limit=2, sample=None)
    assert list(blocks) == ["http-params-morzeux/query"] and len(blocks["http-params-morzeux/query"]) == 2
    with pytest.raises(ValueError, match="'nope'"):
        load_blocks(tmp_path, ["nope"], ["query"], None, None)


# ------------------------------------------------------------------ what goes on the wire


def test_form_body_without_content_type_is_declared_and_encoded_like_go_ftw() -> None:
    row = crs_row(_crs("1", body="var=1 OR 1=1&b=x'y"))
    assert isinstance(row, BenchRow)
    headers, body = completed(row)
    assert ("Content-Type", "application/x-www-form-urlencoded") in headers
    assert body == b"var=1+OR+1%3D1&b=x%27y"
    assert ("Content-Length", str(len(body))) in headers


def test_an_already_escaped_form_body_is_sent_unchanged() -> None:
    row = crs_row(_crs("1", body="var=foo%27+or+1"))
    assert isinstance(row, BenchRow) and completed(row)[1] == b"var=foo%27+or+1"


def test_multipart_bodies_get_crlf_and_as_given_rows_get_nothing_added() -> None:
    multipart = crs_row(_crs("1", headers={"Host": "h", "Content-Type": "multipart/form-data; boundary=X"}, body="--X\nA\n--X--\n"))
    assert isinstance(multipart, BenchRow) and completed(multipart)[1] == b"--X\r\nA\r\n--X--\r\n"
    given = crs_row(_crs("2", headers={"Host": "h"}, body="a=b", autocomplete_headers=False))
    assert isinstance(given, BenchRow) and given.one_shot
    assert completed(given) == ([("Host", "h")], b"a=b")


def test_request_bytes_keep_the_target_as_is_and_keep_connections_alive() -> None:
    row = crs_row(_crs("1", method="GET", uri="/get?a=%27%20OR%201=1--&b=<script>", body=None))
    assert isinstance(row, BenchRow)
    wire = request_bytes(row)
    assert wire.startswith(b"GET /get?a=%27%20OR%201=1--&b=<script> HTTP/1.1\r\n")
    assert b"Connection: keep-alive\r\n" in wire and wire.endswith(b"\r\n\r\n") and b"Content-Length" not in wire


def test_raw_requests_and_http10_go_on_their_own_connection() -> None:
    raw = crs_row(_crs("1", raw_request="GET / HTTP/1.0\r\n\r\n"))
    old = crs_row(_crs("2", version="HTTP/1.0", body=None, method="GET"))
    assert isinstance(raw, BenchRow) and isinstance(old, BenchRow)
    assert request_bytes(raw) == b"GET / HTTP/1.0\r\n\r\n" and raw.one_shot
    assert old.one_shot and b"Connection: close" in request_bytes(old) and b"Host:" in request_bytes(old)


# ------------------------------------------------------------------ sampling and figures


def test_stratified_sample_keeps_every_category_and_label() -> None:
    rows = [_row(f"s{i}", "sqli", True) for i in range(900)] + [_row(f"n{i}", "benign", False) for i in range(95)]
    rows += [_row(f"c{i}", "cmdi", True) for i in range(3)] + [_row("x0", "xss", True), _row("t0", "sqli", False)]
    picked = sample_rows(rows, 50, seed=1, floor=1)
    assert {(r.category, r.is_attack) for r in picked} == {(r.category, r.is_attack) for r in rows}
    assert 45 <= len(picked) <= 56 and len({r.id for r in picked}) == len(picked)
    assert sample_rows(rows, 50, seed=1, floor=1) == picked and sample_rows(rows, 5000) == rows
    floored = sample_rows(rows, 50, seed=1, floor=10)
    counts = {key: sum(1 for r in floored if (r.category, r.is_attack) == key) for key in {(r.category, r.is_attack) for r in rows}}
    assert counts == {("sqli", True): 45, ("benign", False): 10, ("cmdi", True): 3, ("xss", True): 1, ("sqli", False): 1}


@pytest.mark.parametrize(("values", "q", "expected"), [([3.0, 1.0, 2.0], 50, 2.0), (list(map(float, range(1, 101))), 99, 99.0), ([5.0], 99, 5.0), ([], 50, None)])
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_summarize_counts_403_as_blocked_and_other_statuses_apart() -> None:
    rows = [_row("a1", "sqli", True, 1), _row("a2", "sqli", True, 2), _row("a3", "xss", True, 1), _row("b1", "benign", False, 1),
            _row("b2", "benign", False, 1), _row("a4", "xss", True, 1), _row("b3", "benign", False)]
    outcomes = [Outcome("a1", 403, 1.0), Outcome("a2", 200, 2.0), Outcome("a3", 403, 3.0), Outcome("b1", 200, 4.0), Outcome("b2", 403, 5.0),
                Outcome("a4", 400, 6.0), Outcome("b3", 0, 9.0, "TimeoutError")]
    got = summarize(rows, outcomes)
    assert (got["tpr"], got["fpr"], got["n"], got["n_attack"], got["n_benign"]) == (round(2 / 3, 4), 0.5, 5, 3, 2)
    assert (got["p50_ms"], got["p99_ms"], got["n_latency"]) == (3.0, 6.0, 6)
    assert got["per_category"] == {"sqli": {"tpr": 0.5, "n": 2}, "xss": {"tpr": 1.0, "n": 1}}
    assert got["per_paranoia"]["pl1"] == {"tpr": 1.0, "n": 2, "fpr": 0.5, "n_benign": 2}
    assert got["other_status"] == {"400": 1, "no answer: TimeoutError": 1}


def test_summarize_counts_rows_never_sent() -> None:
    got = summarize([_row("a", "sqli", True)], [])
    assert got["other_status"] == {"not sent": 1} and got["tpr"] is None and got["p50_ms"] is None


def test_table_puts_systems_side_by_side_with_counts() -> None:
    rows = [_row("a", "sqli", True, 1), _row("b", "benign", False, 1)]
    results = {"crs-regression/request": {"kubeward": summarize(rows, [Outcome("a", 403, 1.5), Outcome("b", 200, 1.0)]),
                                          "crs_pl1": summarize(rows, [Outcome("a", 200, 2.0), Outcome("b", 403, 3.0)])}}
    text = render_table(results, "WAF comparison on DEV data")
    lines = text.splitlines()
    assert lines[0] == "WAF comparison on DEV data" and "crs-regression/request" in lines
    header = next(line for line in lines if "kubeward" in line)
    assert header.index("kubeward") < header.index("crs_pl1")
    recall = next(line for line in lines if line.startswith("recall"))
    assert "100.0% (1)" in recall and "0.0% (1)" in recall
    assert any(line.startswith("false positives") and "100.0% (1)" in line for line in lines)
    assert any(line.startswith("latency p50 / p99 ms") and "(2)" in line for line in lines)


# ------------------------------------------------------------------ configurations and the command line


@pytest.mark.parametrize("level", [1, 2])
def test_modsecurity_config_renders_the_paranoia_level(tmp_path: Path, level: int) -> None:
    conf = render_modsecurity(tmp_path, level, 18080, 18081).read_text()
    setup = (tmp_path / "crs-setup.conf").read_text()
    assert f"tx.paranoia_level={level}" in setup and f"tx.executing_paranoia_level={level}" in setup
    assert "inbound_anomaly_score_threshold=5" in setup
    for name in ("nginx.conf", "rules.conf", "modsecurity.conf", "crs-setup.conf"):
        assert not re.search(r"@[A-Z_]+@", (tmp_path / name).read_text()), name
    engine = (tmp_path / "modsecurity.conf").read_text()
    assert "SecRuleEngine On" in engine and "SecRequestBodyAccess On" in engine and "requestBodyProcessor=JSON" in engine and "SecAuditEngine Off" in engine
    assert "load_module /usr/lib/nginx/modules/ngx_http_modsecurity_module.so;" in conf and "127.0.0.1:18080" in conf and "127.0.0.1:18081" in conf
    directives = [line for line in conf.splitlines() if not line.lstrip().startswith("#")]
    assert not any("/etc/nginx" in line for line in directives) and f"{tmp_path}/rules.conf" in conf
    assert "Include /usr/share/modsecurity-crs/rules/*.conf" in (tmp_path / "rules.conf").read_text()


def test_modsecurity_rejects_a_paranoia_level_out_of_range(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="5"):
        render_modsecurity(tmp_path, 5, 1, 2)


def test_envoy_body_config_sends_the_body_and_inspected_headers_and_fails_closed() -> None:
    config = render_envoy_body(19191, 18080, 10000, 9901)
    text = yaml.safe_dump(config)
    assert "19191" in text and "18080" in text
    http_filters = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    authz = next(f["typed_config"] for f in http_filters if f["name"] == "envoy.filters.http.ext_authz")
    assert authz["with_request_body"] == {"max_request_bytes": 65536, "allow_partial_message": True, "pack_as_bytes": True}
    patterns = authz["allowed_headers"]["patterns"]
    assert {"prefix": "x-"} in patterns and all({"exact": h} in patterns for h in ("user-agent", "referer", "cookie", "content-type"))
    assert authz["failure_mode_allow"] is False and authz["http_service"]["server_uri"]["uri"] == "http://127.0.0.1:19191"


def test_add_cli_registers_waf_under_a_bench_parser() -> None:
    parser = argparse.ArgumentParser(prog="kubeward")
    bench = parser.add_subparsers(dest="command").add_parser("bench")
    bench.add_argument("--quick", action="store_true")
    bench.set_defaults(func=print)  # what ``kubeward bench`` runs without a suite
    add_cli(bench.add_subparsers(dest="suite"))
    args = parser.parse_args(["bench", "waf", "--sample", "30", "--systems", "crs_pl1"])
    assert (args.suite, args.sample, args.systems) == ("waf", 30, "crs_pl1") and args.func is waf_bench._run
    plain = parser.parse_args(["bench", "--quick"])
    assert plain.suite is None and plain.func is print and plain.quick
