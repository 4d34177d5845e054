"""The Grafana dashboard names only metrics the running components serve.

A worker, a shim (redaction on, so its ext_proc collector is registered) and a collector run against the
session's real broker; a few checks go through the shim; each /metrics is scraped and every metric a panel's
PromQL names must be a family one of them exposes (``_bucket``, ``_sum``, ``_count``, ``_total`` allowed).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.runtime.process import free_port, start_shim, start_worker, stop_process, wait_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "kubeward-dashboard.json"
_SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard_metrics(dashboard: dict) -> set[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return {m for e in exprs for m in re.findall(r"\bkubeward_[a-z0-9_]+", e)}


def exposed(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def family_of(name: str, families: set[str]) -> bool:
    return name in families or any(name.endswith(s) and name[: -len(s)] in families for s in _SUFFIXES)


def scrape(url: str, token: str | None = None) -> str:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(answer.read().decode())


@pytest.fixture(scope="module")
def components(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    work = tmp_path_factory.mktemp("dashboard")
    ports = {name: free_port() for name in ("web", "shim", "admin", "extproc", "otlp", "collector")}
    worker = start_worker(work / "worker.log", {"bootstrap": kafka_bootstrap, "web_port": ports["web"], "app_id": "dashboard-worker"})
    shim = start_shim(work / "shim.log", {"bootstrap": kafka_bootstrap, "port": ports["shim"], "admin_port": ports["admin"],
                                          "admin_token": "t0ken", "redaction": {"extproc_port": ports["extproc"]}})
    collector = subprocess.Popen([sys.executable, "-m", "deploy.cli", "collect", "--bootstrap", kafka_bootstrap,
                                  "--otlp", f"127.0.0.1:{ports['otlp']}", "--metrics-port", str(ports["collector"])],
                                 stdout=(work / "collector.log").open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{ports['collector']}/metrics", 60, collector, work / "collector.log")
        for i in range(20):
            request = urllib.request.Request(f"http://127.0.0.1:{ports['shim']}/orders/{i}", headers={"x-forwarded-for": "10.0.0.9"})
            try:
                urllib.request.urlopen(request, timeout=5).read()
            except urllib.error.HTTPError:
                pass
        yield {"worker": scrape(f"http://127.0.0.1:{ports['web']}/metrics"),
               "shim": scrape(f"http://127.0.0.1:{ports['admin']}/metrics", "t0ken"),
               "collector": scrape(f"http://127.0.0.1:{ports['collector']}/metrics")}
    finally:
        collector.terminate()
        collector.wait(timeout=30)
        stop_process(shim)
        stop_process(worker)


def test_every_metric_the_dashboard_names_is_served(components: dict[str, str]) -> None:
    families = set().union(*(exposed(text) for text in components.values()))
    wanted = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    assert len(wanted) >= 30, sorted(wanted)
    assert sorted(m for m in wanted if not family_of(m, families)) == []
    assert not family_of("kubeward_shim_decisions_made_up_total", families)  # the check can fail


def test_the_dashboard_covers_each_component(components: dict[str, str]) -> None:
    wanted = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    for component, text in components.items():
        assert any(family_of(m, exposed(text)) for m in wanted), f"no panel for the {component}"
