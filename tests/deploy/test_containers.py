"""The container build files agree with the chart and with what the package ships.

No container runtime runs here, so the images are not built; what an image build depends on is checked
instead: every COPY source exists, each image starts the command the chart's container names, as the user
the chart's securityContext expects, exposing the chart's default ports; and the wheel the images install
carries every data file the components load (rules, models, artifacts).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "deploy" / "containers"
CHART_VALUES = yaml.safe_load((ROOT / "deploy" / "helm" / "kubeward" / "values.yaml").read_text())
#: component -> (command, user, ports from the chart's defaults)
EXPECTED = {
    "collector": ("collect", "0", {CHART_VALUES["collector"]["metricsPort"], CHART_VALUES["collector"]["accessLogService"]["port"],
                                   CHART_VALUES["collector"]["extProc"]["port"], CHART_VALUES["collector"]["otlp"]["port"]}),
    "worker": ("worker", "10001", {CHART_VALUES["worker"]["webPort"]}),
    "shim": ("shim", "10001", {CHART_VALUES["shim"]["port"], CHART_VALUES["shim"]["grpcPort"], CHART_VALUES["shim"]["adminPort"]}),
}


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("component", sorted(EXPECTED))
def test_the_image_runs_what_the_chart_asks_as_the_user_it_expects(component: str) -> None:
    steps = instructions(CONTAINERS / f"{component}.Containerfile")
    command, user, ports = EXPECTED[component]
    last = {op: arg for op, arg in steps}
    assert yaml.safe_load(last["ENTRYPOINT"]) == ["kubeward"] and yaml.safe_load(last["CMD"]) == [command]
    assert last["USER"] == user
    assert {int(p) for p in last["EXPOSE"].split()} == ports
    for op, arg in steps:
        if op == "COPY" and not arg.startswith("--from"):
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"{component}: COPY {source} does not exist"
    assert all(arg.split()[0].startswith("docker.io/library/python:3.11") for op, arg in steps if op == "FROM")


@pytest.mark.slow
def test_the_wheel_the_images_install_carries_every_data_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)], check=True,
                   capture_output=True)
    wheel = next(tmp_path.glob("kubeward-*.whl"))
    shipped = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "ingest", "streams", "models", "enforcement", "deploy/runtime", "deploy/lab"],
                             cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    data = [f for f in tracked if not f.endswith(".py")]
    assert data, "no data files found: the check would pass vacuously"
    assert [f for f in data if f not in shipped] == []
