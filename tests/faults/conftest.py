"""Fault tests: each runs one scenario of ``deploy.lab.faults`` on its own fresh broker, workers and shim."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.faults import record, run_fault


@pytest.fixture
def fault(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """``fault(name)``: run the scenario, merge its counts into build/faults.json, return them."""

    def run(name: str) -> dict[str, Any]:
        counts = run_fault(name, tmp_path / name)
        record(counts, command=f"python -m pytest {request.node.nodeid}")
        return counts

    return run
