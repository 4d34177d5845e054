"""The README's promises: its two commands exist, every command it lists answers --help, CI runs the test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
COMMANDS = ["kafka", "worker", "shim", "simulate", "demo", "bench", "evaluate"]


def test_the_two_commands_are_make_targets_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    targets = set(re.findall(r"^([a-z]+):", (ROOT / "Makefile").read_text(), re.M))
    assert {"demo", "test", "bench", "setup"} <= targets
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_listed_command_has_help(command: str) -> None:
    assert f"kubeward {command}" in README
    out = subprocess.run([sys.executable, "-m", "deploy.cli", command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "usage: kubeward" in out.stdout and len(out.stdout) > 200


def test_reading_order_files_exist() -> None:
    order = README.split("## Reading order", 1)[1]
    paths = re.findall(r"`([a-z_/]+\.py)`", order)
    assert len(paths) >= 5
    assert all((ROOT / p).exists() for p in paths), paths
