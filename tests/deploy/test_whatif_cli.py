"""``kubeward whatif`` on a Parquet archive written by ``kubeward simulate --labels``; bad input named; --help with an example."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from deploy.cli import main
from deploy.counterfactual import whatif
from deploy.whatif import read_labels
from enforcement.allowlist import REASONS
from ingest import Policy
from streams.settings import WorkerSettings


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """40 simulated seconds (seed 3, every attack kind after 10 s) as Parquet, its labels apart."""
    where = tmp_path_factory.mktemp("whatif")
    out, labels = where / "sim.parquet", where / "sim.labels.jsonl"
    assert main(["simulate", "--seconds", "40", "--rate", "50", "--users", "300", "--warmup", "10", "--seed", "3",
                 "--out", str(out), "--labels", str(labels)]) == 0
    return out, labels


@pytest.fixture(scope="module")
def report(archive: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("report") / "whatif.json"
    parquet, labels = archive
    import contextlib
    import io

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.MonkeyPatch.context() as env:
        for name in [n for n in os.environ if n.upper().startswith("KUBEWARD_")]:
            env.delenv(name)  # the baseline is the worker's settings from the environment: as shipped here
        assert main(["whatif", "--parquet", str(parquet), "--labels", str(labels), "--enforce", "shop", "--enforce", "identity",
                     "--quiet", "--out", str(out)]) == 0
    return json.loads(out.read_text()), stdout.getvalue()


def test_simulate_writes_the_ground_truth_apart_keyed_by_the_archives_ids(archive: tuple[Path, Path]) -> None:
    parquet, labels = archive
    table = pq.read_table(parquet, columns=["id", "ground_truth"]).to_pylist()
    read = read_labels(labels)
    assert list(read) == [r["id"] for r in table]
    assert read == {r["id"]: r["ground_truth"]["malicious"] for r in table}
    assert 0 < sum(read.values()) < len(read)
    first = json.loads(labels.read_text().splitlines()[0])
    assert set(first) == {"id", "malicious", "scenario", "attack_id"}


def test_the_report_has_both_runs_the_difference_and_the_labelled_figures(report: tuple[dict[str, Any], str], archive: tuple[Path, Path]) -> None:
    doc, _ = report
    assert doc["rows"] == pq.ParquetFile(archive[0]).metadata.num_rows and doc["rows_per_s"] > 0
    cand, base = doc["candidate"], doc["baseline"]
    assert base["refused"]["requests"] == 0 < cand["refused"]["requests"]
    assert cand["labels"]["attackers_caught"] >= 1 and doc["labels"]["attackers"] >= cand["labels"]["attackers_caught"]
    assert doc["difference"]["requests_newly_refused"] == cand["refused"]["requests"]
    assert doc["settings"]["candidate"]["policy"]["modes"] == {"shop": "enforce", "identity": "enforce"}
    assert doc["settings"]["baseline"]["policy"]["modes"] == {}


def test_the_command_reports_what_the_core_computes_on_the_same_archive(report: tuple[dict[str, Any], str], archive: tuple[Path, Path]) -> None:
    doc, _ = report
    parquet, labels = archive
    core = whatif(pq.read_table(parquet), WorkerSettings(), WorkerSettings(policy=Policy(modes={"shop": "enforce", "identity": "enforce"})),
                  read_labels(labels))
    for key in ("rows", "actors", "already_refused", "labels", "difference"):
        assert doc[key] == core[key], key
    for run in ("baseline", "candidate"):
        assert doc[run] == core[run], run


def test_the_table_shows_both_runs_and_the_benign_collateral(report: tuple[dict[str, Any], str]) -> None:
    doc, text = report
    assert "candidate: modes identity=enforce, shop=enforce" in text
    (line,) = [line for line in text.splitlines() if line.strip().startswith("requests refused")]
    assert line.split()[2:4] == ["0", str(doc["candidate"]["refused"]["requests"])]
    assert "benign requests refused (benign collateral)" in text and "top actors refused by the candidate" in text


def test_help_explains_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["whatif", "--help"])
    text = capsys.readouterr().out
    assert "kubeward whatif --parquet build/sim.parquet --labels build/sim.labels.jsonl --enforce shop" in text
    assert "--rule-override" in text and "--kafka" in text


def test_since_after_the_archive_replays_nothing(archive: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "--parquet", str(archive[0]), "--enforce", "shop", "--since", "2030-01-01T00:00:00Z", "--quiet"]) == 0
    assert "what-if on 0 recorded requests" in capsys.readouterr().out


def test_max_rows_stops_early(archive: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["whatif", "--parquet", str(archive[0]), "--enforce", "shop", "--max-rows", "300", "--quiet", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["rows"] == 300


@pytest.mark.parametrize(("extra", "named"), [
    (["--enforce", "Shop Floor"], "--enforce='Shop Floor'"),
    (["--rule-override", "{not json"], "--rule-override='{not json'"),
    (["--rule-override", '{"no-such-rule": {"floor": 1}}'], "--rule-override="),
    (["--rules-dir", "/nonexistent/rules"], "--rules-dir='/nonexistent/rules'"),
    (["--model", "/nonexistent/model.skops"], "--model='/nonexistent/model.skops'"),
    (["--enforce", "shop", "--since", "yesterday"], "--since='yesterday'"),
    (["--enforce", "shop", "--last", "an hour"], "--last='an hour'"),
    (["--enforce", "shop", "--latency-s", "-1"], "--latency-s=-1"),
    (["--enforce", "shop", "--max-rows", "0"], "--max-rows=0"),
    ([], "nothing to compare"),
])
def test_bad_input_is_refused_naming_the_option_and_value(archive: tuple[Path, Path], extra: list[str], named: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "--parquet", str(archive[0]), "--quiet", *extra]) == 2
    assert named in capsys.readouterr().err


def test_bad_sources_and_labels_are_named(archive: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "--parquet", str(tmp_path / "missing.parquet"), "--enforce", "shop", "--quiet"]) == 2
    assert "--parquet=" in capsys.readouterr().err
    assert main(["whatif", "--enforce", "shop", "--quiet"]) == 2
    assert "--parquet FILE... or --kafka" in capsys.readouterr().err
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"id": "sim-0000000000", "malicious": false}\n{"id": 7}\n')
    assert main(["whatif", "--parquet", str(archive[0]), "--enforce", "shop", "--labels", str(bad), "--quiet"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err


# --- --allowlist / --baseline-allowlist ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def allowlist(archive: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shim allow-list ``kubeward policy suggest --format shim`` learns from the archive."""
    out = tmp_path_factory.mktemp("allow")
    assert main(["policy", "suggest", "--parquet", str(archive[0]), "--format", "shim", "--out", str(out)]) == 0
    return out / "allowlist.yaml"


def test_an_allowlist_alone_is_a_candidate_and_the_command_reports_what_the_core_computes(
        archive: tuple[Path, Path], allowlist: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from enforcement.allowlistfile import load_allowlist

    parquet, labels = archive
    out = tmp_path / "r.json"
    assert main(["whatif", "--parquet", str(parquet), "--labels", str(labels), "--allowlist", str(allowlist), "--out", str(out)]) == 0
    text, err = capsys.readouterr()
    doc = json.loads(out.read_text())
    listed = load_allowlist(allowlist)
    assert doc["settings"]["candidate"]["allowlist"] == {"source": str(allowlist), "endpoints": len(listed), "destinations": len(listed.destinations)}
    assert doc["settings"]["baseline"]["allowlist"] is None and doc["baseline"]["allowlist"] is None
    # nothing enforces: the list's refusals are only what it would refuse, and the command says so
    assert doc["candidate"]["refused"]["requests"] == 0 and doc["candidate"]["allowlist"]["observed_requests"] > 0
    assert "does not enforce" in err and "--enforce NS" in err
    assert f"candidate: allow-list {allowlist}" in text and "allow-list alone refuses" in text
    core = whatif(pq.read_table(parquet), WorkerSettings(), WorkerSettings(), read_labels(labels), allowlist=listed)
    assert doc["candidate"] == core["candidate"] and doc["baseline"] == core["baseline"]


def test_an_enforced_allowlist_refusal_is_counted_with_its_reason(archive: tuple[Path, Path], allowlist: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    assert main(["whatif", "--parquet", str(archive[0]), "--labels", str(archive[1]), "--allowlist", str(allowlist), "--enforce", "shop",
                 "--enforce", "identity", "--enforce", "payments", "--enforce", "data", "--quiet", "--out", str(out)]) == 0
    cand = json.loads(out.read_text())["candidate"]
    alone = cand["allowlist"]
    assert alone["requests"] > 0 and set(alone["by_reason"]) <= {f"allowlist:{r}" for r in REASONS}
    assert cand["refused"]["by_action"].get("allowlist", 0) == alone["answered_first"] == sum(
        n for rule, n in cand["refused"]["by_rule"].items() if rule.startswith("allowlist:"))
    assert alone["malicious_requests"] + alone["benign_requests"] == alone["requests"]


def test_a_deployed_allowlist_is_kept_by_the_candidate(archive: tuple[Path, Path], allowlist: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["whatif", "--parquet", str(archive[0]), "--baseline-allowlist", str(allowlist), "--quiet"]) == 2
    assert "nothing to compare" in capsys.readouterr().err
    out = tmp_path / "r.json"
    assert main(["whatif", "--parquet", str(archive[0]), "--baseline-allowlist", str(allowlist), "--enforce", "shop", "--quiet", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["baseline"]["allowlist"] == doc["settings"]["candidate"]["allowlist"] is not None
    assert doc["baseline"]["allowlist"]["requests"] == 0 < doc["baseline"]["allowlist"]["observed_requests"]
    assert "baseline: allow-list" in capsys.readouterr().out


@pytest.mark.parametrize("option", ["--allowlist", "--baseline-allowlist"])
@pytest.mark.parametrize(("content", "problem"), [
    (None, "no such file"),
    ("<a directory>", "a directory"),
    ("kind: KubewardAllowList\nversion: 2\nendpoints: []\n", "version=2"),
    ("kind: NetworkPolicy\nversion: 1\nendpoints: []\n", "kind='NetworkPolicy'"),
    ("kind: KubewardAllowList\nversion: 1\nendpoints:\n- {destination: shop/orders, method: GET, path_template: orders, callers: [shop/web]}\n",
     "path_template"),
    ("kind: KubewardAllowList\nversion: 1\nendpoints: [\n", "allowlist.yaml:"),
])
def test_a_bad_allowlist_file_is_refused_naming_the_option_and_the_problem(archive: tuple[Path, Path], tmp_path: Path, option: str,
                                                                           content: str | None, problem: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "allowlist.yaml"
    if content == "<a directory>":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    assert main(["whatif", "--parquet", str(archive[0]), "--enforce", "shop", option, str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{option}={str(path)!r}" in err and problem in err
