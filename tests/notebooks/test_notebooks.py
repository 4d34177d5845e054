"""Every notebook under notebooks/ executes top to bottom, and what it draws and writes holds up.

Each notebook writes its figures (``build/notebooks/*.png``) and the numbers it prints (a JSON file there). A test
removes those outputs, executes the notebook (nbclient, in the repository root), and then checks that no cell raised,
that every figure was written by this run and shows content (``_content``: many colours and coloured marks, which a
blank canvas or empty axes do not have; the checker is tested on both), and that the numbers are sane: curves monotone
in their threshold in the expected direction, rates within [0, 1], tuned values that lint clean and that never touched
the shipped rule files, a held-out AUC with its sample counts. The tuning helpers (``deploy.lab.tuning``,
``deploy.lab.tuningcapture``) have a few fast tests of their own at the end (they may move to tests/deploy/).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import nbformat
import numpy as np
import pyarrow as pa
import pytest
from nbclient import NotebookClient
from PIL import Image

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from deploy.lab.tuning import Point, choose, flagged_at, retune_text, tune, write_tuned  # noqa: E402
from deploy.lab.tuningcapture import Label, attack_class_of, capture, flagged_keys, parse_labels, split_truth  # noqa: E402
from ingest.envelope import SUMMARY_SCHEMA, summary_row  # noqa: E402
from models.artifacts import load_model  # noqa: E402
from models.rules import DEFAULT_RULES, lint, load_rules  # noqa: E402
from streams import WorkerSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OUT = ROOT / "build" / "notebooks"

#: notebook -> (figures, the JSON of its numbers, a line it prints at the end)
EXPECTED: dict[str, tuple[tuple[str, ...], str, str]] = {
    "detection_tuning": (("tuning_sweeps_dev.png", "tuning_pr_dev.png", "tuning_heldout.png"), "tuning.json",
                         "tuned overrides lint clean"),
    "model_training": (("model_roc_pr_heldout.png", "model_scores.png"), "model.json", "model: held-out (seed 101) ROC AUC"),
}


@dataclass
class Run:
    """One executed notebook: its text outputs, errors, when it started, the shipped rule files' digest before it ran."""

    text: str
    errors: list[str]
    started: float
    seconds: float
    rules_digest: str


def _rules_digest() -> str:
    return hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sorted(DEFAULT_RULES.glob("*.yaml")))).hexdigest()


def _execute(name: str) -> Run:
    figures, report, _ = EXPECTED[name]
    for stale in (*figures, report):
        (OUT / stale).unlink(missing_ok=True)
    if name == "detection_tuning":
        (ROOT / "build" / "rule-overrides.json").unlink(missing_ok=True)
    digest, started = _rules_digest(), time.time()
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in outputs if o.get("output_type") == "error"]
    return Run(text, errors, started, time.time() - started, digest)


@pytest.fixture(scope="module")
def run() -> Callable[[str], Run]:
    """Executes each notebook once per module, on first use."""
    done: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in done:
            done[name] = _execute(name)
        return done[name]

    return get


def _content(png: Path) -> tuple[int, float]:
    """(distinct colours, share of pixels in a saturated colour): lines, bars and markers, not axes and text."""
    with Image.open(png) as im:
        rgb = im.convert("RGB")
    colours = rgb.getcolors(maxcolors=rgb.width * rgb.height) or []
    saturated = sum(n for n, (r, g, b) in colours if max(r, g, b) - min(r, g, b) >= 80)
    return len(colours), saturated / (rgb.width * rgb.height)


def _drawn(png: Path) -> bool:
    colours, saturated = _content(png)
    return colours >= 64 and saturated >= 0.002


def _report(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OUT / EXPECTED[name][1]).read_text())
    return data


def _non_increasing(values: list[float]) -> bool:
    return all(b <= a + 1e-12 for a, b in zip(values, values[1:]))


def _non_decreasing(values: list[float]) -> bool:
    return all(b >= a - 1e-12 for a, b in zip(values, values[1:]))


def test_every_notebook_is_checked() -> None:
    assert {p.stem for p in NOTEBOOKS} == set(EXPECTED)


def test_the_figure_check_rejects_blank_and_empty_figures(tmp_path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3))
    fig.savefig(tmp_path / "blank.png", dpi=90)
    ax.set_title("empty axes, dev (seed 7)")
    ax.set_xlabel("floor")
    fig.savefig(tmp_path / "empty.png", dpi=90)
    ax.plot([1, 2, 3], [0.2, 0.8, 0.5], marker="o", label="recall")
    ax.bar([1, 2, 3], [0.3, 0.1, 0.6], alpha=0.6, color="tab:red")
    fig.savefig(tmp_path / "drawn.png", dpi=90)
    plt.close(fig)
    assert not _drawn(tmp_path / "blank.png")
    assert not _drawn(tmp_path / "empty.png")
    assert _drawn(tmp_path / "drawn.png")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_draws(name: str, run: Callable[[str], Run]) -> None:
    result = run(name)
    assert not result.errors, result.errors
    assert EXPECTED[name][2] in result.text
    for figure in EXPECTED[name][0]:
        png = OUT / figure
        assert png.is_file(), f"{name} did not write {png}"
        assert png.stat().st_mtime >= result.started - 1, f"{png} is older than this run"
        assert _drawn(png), f"{png} shows no content: {_content(png)}"
    assert (OUT / EXPECTED[name][1]).stat().st_mtime >= result.started - 1
    assert _rules_digest() == result.rules_digest, f"{name} changed the shipped rule files"


def _check_point(p: dict[str, Any]) -> None:
    for k in ("precision", "recall", "f1"):
        assert 0.0 <= p[k] <= 1.0, p
    assert 0 <= p["tp"] + p["fp"] + p["other"] <= p["flagged"]
    if p["tp"]:
        assert math.isclose(p["f1"], 2 * p["precision"] * p["recall"] / (p["precision"] + p["recall"]), abs_tol=1e-5)


def test_tuning_numbers(run: Callable[[str], Run]) -> None:
    assert not run("detection_tuning").errors
    report = _report("detection_tuning")
    shipped = {r.id: r for r in load_rules()}
    assert (report["dev"]["seed"], report["heldout"]["seed"]) == (7, 101)
    assert report["dev"]["rows"] > 1000 and report["heldout"]["rows"] > 1000
    assert any(r["targets"] > 0 for r in report["rules"].values()), "no rule had an attacker of its class to tune against"
    for rid, r in report["rules"].items():
        assert r["shipped_floor"] == shipped[rid].floor
        floors = [p["floor"] for p in r["sweep"]]
        assert floors == sorted(set(floors)) and r["shipped_floor"] in floors and r["tuned_floor"] in floors
        for p in r["sweep"]:
            _check_point(p)
        # a higher floor never flags more: recall, hits and false positives fall (or stay) as the floor rises
        for k in ("flagged", "tp", "fp", "other", "recall"):
            assert _non_increasing([p[k] for p in r["sweep"]]), (rid, k)
        assert r["allowed_fp"] == math.floor(report["fp_cap"] * r["benign"] + 1e-9)
        assert r["reason"].strip() and r["changed"] == (r["tuned_floor"] != r["shipped_floor"])
        assert r["tuned"]["fp"] <= r["allowed_fp"] or "no floor" in r["reason"]
        for a in r["alerts"]:
            assert a["score"] >= 0.5 and a["value"] >= a["threshold"] - 1e-9 and r["feature"] in a["evidence"]
        for which in ("shipped", "tuned"):
            _check_point(report["heldout"]["rules"][rid]["rule_alone"][which])
        # the sweep is the pipeline's own scoring: every key the dev replay raised with this rule, the sweep flags
        assert report["shipped_consistency_dev"][rid]["pipeline_not_predicted"] == 0, report["shipped_consistency_dev"][rid]
    assert all(label in ("dev (seed 7)", "held-out (seed 101)") for label in report["figures"].values())
    for rid, a in report["replay_agreement_dev"].items():  # measured, not bounded: see deploy.lab.tuning's docstring
        assert rid in report["rules"] and 0 <= a["replayed_not_predicted"] <= a["replayed"]


def test_tuned_values_land_in_linted_files(run: Callable[[str], Run]) -> None:
    assert not run("detection_tuning").errors
    report = _report("detection_tuning")
    overrides = {rid: {"floor": r["tuned_floor"]} for rid, r in report["rules"].items() if r["changed"]}
    assert report["overrides"] == overrides
    assert json.loads((ROOT / "build" / "rule-overrides.json").read_text()) == overrides
    assert report["lint"] == {"overrides": [], "tuned_rules_dir": []}
    assert lint(DEFAULT_RULES, overrides) == []
    tuned_dir = ROOT / "build" / "tuned-rules"
    started = run("detection_tuning").started
    assert all(p.stat().st_mtime >= started - 1 for p in tuned_dir.glob("*.yaml")), "stale tuned-rules copy"
    assert lint(tuned_dir) == []
    copy, shipped = {r.id: r for r in load_rules(tuned_dir)}, {r.id: r for r in load_rules()}
    assert set(copy) == set(shipped)
    for rid, rule in shipped.items():
        assert copy[rid].floor == overrides.get(rid, {"floor": rule.floor})["floor"], rid
    assert WorkerSettings(rule_overrides=overrides).rule_overrides == overrides
    assert WorkerSettings(rules_dir=tuned_dir).detector_names() == WorkerSettings().detector_names()


def test_model_numbers(run: Callable[[str], Run]) -> None:
    assert not run("model_training").errors
    report = _report("model_training")
    train, held = report["train"], report["heldout"]
    assert (train["seed"], held["seed"]) == (7, 101)
    assert held["windows"] == held["attack_windows"] + held["benign_windows"]
    assert 0 < held["attack_windows"] < held["benign_windows"]
    for name in ("model", "rules"):
        c = held[name]
        assert (c["positives"], c["negatives"]) == (held["attack_windows"], held["benign_windows"])
        assert 0.0 <= c["auc"] <= 1.0 and 0.0 <= c["average_precision"] <= 1.0
        roc, pr = c["roc"], c["pr"]
        assert _non_decreasing(roc["fpr"]) and _non_decreasing(roc["tpr"]) and _non_increasing(roc["thresholds"])
        assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
        assert _non_increasing(pr["recall"]) and all(0.0 <= v <= 1.0 for v in pr["precision"] + pr["recall"])
    # a model no better than chance on attacks this loud would mean the windows or the labels went wrong
    assert held["model"]["auc"] > 0.6, held["model"]["auc"]
    assert 0.0 <= held["at_0.5"]["tpr"] <= 1.0 and 0.0 <= held["at_0.5"]["fpr"] <= 1.0
    loaded = load_model(ROOT / report["artifact"])
    assert loaded.sha256 == report["sha256"] and loaded.meta.rows == train["windows"] > 100
    assert loaded.meta.extra["window_s"] == WorkerSettings().window_s


# --- the tuning helper ------------------------------------------------------------------------------------------------


def _p(floor: float, tp: int, fp: int, targets: int = 4) -> Point:
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / targets
    return Point(floor, tp + fp, tp, fp, 0, precision, recall, 2 * precision * recall / (precision + recall) if tp else 0.0)


def test_choose_keeps_the_shipped_floor_when_it_is_among_the_best() -> None:
    points = [_p(2, 4, 9), _p(4, 4, 0), _p(6, 4, 0), _p(8, 3, 0)]
    assert choose(points, 6, 4, 0)[0] == 6
    floor, reason = choose(points, 8, 4, 0)
    assert floor in (4, 6) and "F1" in reason
    assert choose(points, 2, 0, 0)[0] == 4  # no target: the lowest floor within the cap
    floor, reason = choose([_p(2, 4, 9)], 2, 4, 0)
    assert floor == 2 and "no floor" in reason


def test_retune_text_changes_only_the_named_floors(tmp_path: Path) -> None:
    src = DEFAULT_RULES / "abuse.yaml"
    text = src.read_text()
    tuned = retune_text(text, {"scraping-rate": 175, "scanner-denials": 22.5})
    changed = [(a, b) for a, b in zip(text.splitlines(), tuned.splitlines()) if a != b]
    assert len(tuned.splitlines()) == len(text.splitlines()) and len(changed) == 2
    (tmp_path / "abuse.yaml").write_text(tuned)
    assert lint(tmp_path) == []
    floors = {r.id: r.floor for r in load_rules(tmp_path)}
    assert (floors["scraping-rate"], floors["scanner-denials"], floors["scraping-rate-source"]) == (175.0, 22.5, 300.0)


def test_write_tuned_refuses_the_rule_files_themselves(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "abuse.yaml").write_text((DEFAULT_RULES / "abuse.yaml").read_text())
    with pytest.raises(ValueError, match="refusing"):
        write_tuned([], rules, rules_dir=rules)
    files = write_tuned([], tmp_path / "out", rules_dir=rules)
    assert files.overrides == {} and files.rules_dir_errors == [] and files.overrides_errors == []
    assert (rules / "abuse.yaml").read_text() == (DEFAULT_RULES / "abuse.yaml").read_text()


def test_capture_reproduces_the_pipelines_own_detection() -> None:
    rows = [summary_row(id=f"m{i}", time=1.8e9 + i, source={"workload": "shop/web"}, principal="mallory",
                        destination={"service": "orders"}, method="GET", path_template="/orders/{id}", status=404,
                        object_ids=[f"{i:016x}"]) for i in range(60)]
    rows += [summary_row(id=f"b{i}", time=1.8e9 + i + 0.5, source={"workload": "shop/web"}, principal=f"user-{i % 5}",
                         destination={"service": "orders"}, method="GET", path_template="/orders/{id}", status=200,
                         object_ids=[f"{1000 + i % 5:016x}"]) for i in range(60)]
    rows.sort(key=lambda r: r["time"])
    table = pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
    labels = {r["id"]: Label(r["id"].startswith("m"), "bola" if r["id"].startswith("m") else None) for r in rows}
    actor_rules = [r for r in load_rules() if r.enabled and r.key == "actor"]
    cap = capture(table, labels, WorkerSettings(), actor_rules, batch_rows=20)
    raised = [d for d in cap.result.detections if d.subject_kind == "actor"]
    assert raised, "the example should raise a BOLA detection"
    mallory = raised[0].actor
    assert set(cap.attackers["actor"]) == {mallory} and len(cap.benign["actor"]) == 5
    for reason in raised[0].reasons:
        rule = next(r for r in actor_rules if r.id == reason.detector)
        assert mallory in flagged_at(cap, rule, rule.floor)
        assert mallory in flagged_keys(cap.result, rule.id)["actor"]
        tuning = tune(cap, [rule.id])[0]
        alert = next(a for a in tuning.alerts if a.subject == mallory) if tuning.floor == rule.floor else None
        if alert is not None:
            assert alert.pipeline_evidence == reason.evidence and alert.truth == f"attacker:{rule.attack_class}"
    assert not np.isnan(cap.frames["actor"].time).any()


def test_ground_truth_is_split_off_before_any_replay() -> None:
    rows = [summary_row(id="a", time=1.8e9, principal="p", ground_truth={"scenario": "bola", "attack_id": "bola-1", "malicious": True}),
            summary_row(id="b", time=1.8e9 + 1, principal="q", ground_truth={"scenario": "benign", "malicious": False})]
    table, labels = split_truth(pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA))
    assert labels == {"a": Label(True, "bola", "bola-1"), "b": Label(False, "benign", None)}
    assert table.column("ground_truth").null_count == 2
    lines = ['{"id": "a", "malicious": true, "scenario": "credential_stuffing", "attack_id": "c-1"}', "", '{"id": "b", "malicious": false}']
    assert parse_labels(lines) == {"a": Label(True, "credential_stuffing", "c-1"), "b": Label(False)}
    assert (attack_class_of("credential_stuffing"), attack_class_of("bola"), attack_class_of("benign")) == ("credential_abuse", "bola", None)
    with pytest.raises(ValueError, match="line 1"):
        parse_labels(['{"id": 3}'])
