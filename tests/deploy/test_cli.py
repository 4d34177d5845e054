"""The command line: every make target's command exists; rules lint reports every problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_rules_lint_passes_the_shipped_pack_and_names_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "lint"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n")
    assert main(["rules", "lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: rule x: missing key 'pattern'" in out


def test_every_kubeward_command_in_the_makefile_exists() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    used = set(re.findall(r"\$\(BIN\)/kubeward (\S+)", (ROOT / "Makefile").read_text()))
    assert used and used <= commands, used - commands
