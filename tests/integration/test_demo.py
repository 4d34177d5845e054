"""The README's main job, shortened: the demo runs end to end through a real Envoy and meets its detection targets, for
the shop's attackers and for the AI agents' (MCP servers built with the official SDK, the official clients, a model API)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from openapi_spec_validator import validate

from deploy.lab.demo import run_demo, summary_table


def test_short_demo_detects_and_blocks_attackers_without_hurting_benign_users(tmp_path: Path) -> None:
    report_path = tmp_path / "demo-report.json"
    report = run_demo(seconds=60.0, rate=200.0, seed=21, workdir=tmp_path / "demo", report_path=report_path, users=3000)
    assert json.loads(report_path.read_text()) == report
    print(summary_table(report))
    attackers, benign = report["attackers"], report["benign"]
    for key in ("events", "attackers", "benign", "latency_ms"):
        assert key in report
    assert report["data_plane"].startswith("envoy 1.")
    assert benign["collateral_requests"] >= benign["collateral_requests_blocked"] >= 0
    assert report["unparsed"] == 0 and not report["errors"], (report["unparsed"], report["errors"])
    assert attackers["total"] == 6
    assert attackers["detected"] / attackers["total"] >= 0.95, attackers["by_attack"]
    assert attackers["blocked"] / attackers["total"] >= 0.95, attackers["by_attack"]
    assert benign["actors"] > 1000
    assert benign["actors_blocked"] / benign["actors"] <= 0.001, report["denied_by_reason"]
    assert report["latency_ms"]["detect_to_enforce_p50"] is not None
    assert report["events"] > 8_000

    agents = report["agents"]
    by_attack = agents["attackers"]["by_attack"]
    assert sorted(by_attack) == ["injected-document", "model-extraction", "pii-to-external-model", "poisoned-tool", "rug-pull"]
    for attack in ("poisoned-tool", "rug-pull", "injected-document"):  # caught from one listing or one tool result
        assert by_attack[attack]["detected_as"] is not None and by_attack[attack]["denied"] > 0, (attack, by_attack[attack])
    assert by_attack["poisoned-tool"]["detected_as"] == "mcp-tool-poisoning" and by_attack["rug-pull"]["detected_as"] == "mcp-tool-rug-pull"
    assert agents["attackers"]["detected"] >= 4, by_attack  # lineage and extraction need a few windows of a loaded machine
    assert agents["benign"]["actors"] >= 50 and agents["benign"]["actors_blocked"] == 0, agents["denied_by_reason"]

    # the blueprint of what the workers learned from the run's traffic through Envoy (make test keeps its screenshot)
    page = tmp_path / "blueprint.html"
    data = json.loads(page.read_text().split('id="blueprint-data">')[1].split("</script>")[0])
    marks = data["summary"]["marks"]
    assert data["summary"]["endpoints"] >= 10 and data["summary"]["agents"] >= 1, data["summary"]
    # the demo's traffic calls no undocumented route that serves (no shadow API): its traversal and scanner probes are
    # probed, not shadow (tests/integration/test_blueprint_browser.py draws every mark, shadow included)
    assert marks.get("probed", 0) >= 1 and marks.get("zombie", 0) >= 1 and marks.get("sensitive", 0) >= 1, marks
    documents = sorted((tmp_path / "openapi").glob("*.openapi.json"))
    assert len(documents) >= 3
    for document in documents:
        validate(json.loads(document.read_text()))
    build = Path(__file__).resolve().parents[2] / "build"
    build.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "blueprint.png", build / "blueprint.png")
