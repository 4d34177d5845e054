"""deploy.lab.footprint: the collector's footprint benchmark measures the collector as the chart runs it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from deploy.lab import footprint as fp
from deploy.lab.footprintload import due
from ingest.collectors.settings import CollectorSettings
from ingest.config import build_settings
from tests.deploy.test_chart_settings import DEFAULTS, containers, render

# (seconds since spawn, RSS bytes, CPU seconds, threads): ready at 3 s, idle to 13 s, load 13-43 s
MIB = 2**20
SAMPLES = [(float(t), (100 + t) * MIB, 0.01 * t if t < 13 else 0.13 + 0.5 * (t - 13), 10) for t in range(0, 50)]


def test_the_steady_window_leaves_out_the_warmup_and_everything_after_the_load() -> None:
    got = fp.phases(SAMPLES, ready_s=3.0, idle_end=13.0, load_start=13.0, load_end=43.0, warmup=15.0, rate=1000.0)
    steady = got["steady"]
    assert steady["window_s"] == [28.0, 43.0] and steady["n"] == 16
    assert steady["rss_min_mb"] == 128.0 and steady["rss_max_mb"] == 143.0 and steady["rss_median_mb"] == 135.5
    assert steady["cores"] == 0.5 and steady["cpu_us_per_entry"] == 500.0
    idle = got["idle"]
    assert idle["n"] == 10 and idle["rss_median_mb"] == 108.5 and idle["cores"] == 0.01  # 4..13 s
    assert got["loaded_whole"]["n"] == 31 and got["loaded_whole"]["rss_max_mb"] == 143.0


def test_statistics_of_empty_and_single_sample_windows_say_so() -> None:
    assert fp.rss_stats([]) == {"n": 0, "rss_median_mb": None, "rss_min_mb": None, "rss_max_mb": None, "cores": None}
    assert fp.cores(SAMPLES[:1]) is None
    assert fp.window(SAMPLES, 100.0, 200.0) == []
    assert fp.phases(SAMPLES, 3.0, 13.0, 13.0, 20.0, warmup=15.0, rate=200.0)["steady"]["window_s"] is None


def test_published_rows_are_read_from_the_metrics_page() -> None:
    page = ('# HELP kubeward_publish_rows_total rows\nkubeward_publish_rows_total{result="sent"} 1234.0\n'
            'kubeward_collector_lag_seconds{source="files"} 0.25\nprocess_resident_memory_bytes 1e8\n')
    assert fp.parse_metrics(page) == {fp.SENT: 1234.0, 'kubeward_collector_lag_seconds{source="files"}': 0.25}


def test_the_load_owes_what_the_rate_says_and_never_less_than_nothing() -> None:
    assert due(1000.0, 1.5, 0) == 1500 and due(1000.0, 1.5, 1400) == 100 and due(200.0, 0.001, 5) == 0


def test_the_environment_is_the_charts_collector_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    collector = [c for component, c in containers(render(DEFAULTS)) if component == "collector"]
    assert len(collector) == 1 and collector[0]["args"] == ["collect"]
    rendered = {v["name"]: v.get("value") for v in collector[0]["env"]}
    env = fp.chart_env(tmp_path, "127.0.0.1:9092", 9466, 9301, tmp_path / "kubeconfig.json")
    ours = {k: v for k, v in env.items() if k.startswith("KUBEWARD_")}
    # the same variables, plus the kubeconfig that stands in for the in-cluster service account
    assert set(ours) == set(rendered) | {fp.PREFIX + "IDENTITY__KUBECONFIG"}
    assert set(rendered) == {fp.PREFIX + k for k in (*fp.CHART_FIXED, *fp.LOCAL)}
    for key, value in fp.CHART_FIXED.items():
        assert ours[fp.PREFIX + key] == rendered[fp.PREFIX + key], key
    with monkeypatch.context() as m:  # and the collector accepts every one of them
        for name in [n for n in os.environ if n.startswith("KUBEWARD_")]:
            m.delenv(name)
        for name, value in ours.items():
            m.setenv(name, value)
        settings = build_settings(CollectorSettings)
    assert settings.identity.pod_watch and settings.als.enabled


def test_without_pods_the_watch_is_off_and_the_command_is_the_charts() -> None:
    env = fp.chart_env(Path("/w"), "b:1", 1, 2, None)
    assert env[fp.PREFIX + "IDENTITY__POD_WATCH"] == "false" and fp.PREFIX + "IDENTITY__KUBECONFIG" not in env
    assert fp.collector_command()[-1] == "collect"


def test_the_report_names_the_command_that_reproduces_it() -> None:
    p = argparse.ArgumentParser()
    fp.arguments(p)
    args = p.parse_args(["--rates", "200,1000", "--seconds", "30", "--mode", "als", "--pods", "0"])
    assert fp.command(args) == ".venv/bin/python -m deploy.lab.footprint --rates 200,1000 --seconds 30 --mode als --pods 0"


@pytest.mark.slow
def test_a_short_real_run_publishes_every_entry_written_and_samples_memory(tmp_path: Path) -> None:
    p = argparse.ArgumentParser()
    fp.arguments(p)
    args = p.parse_args(["--rates", "200", "--seconds", "8", "--mode", "files", "--idle", "3", "--warmup", "2", "--drain", "4",
                         "--pods", "200", "--out", str(tmp_path / "fp.json")])
    report = fp.measure(args)
    assert json.loads((tmp_path / "fp.json").read_text()) == report
    (run,) = report["runs"]
    assert run["written"] >= 1400 and run["published"] == run["written"]
    assert run["steady"]["n"] >= 5 and run["steady"]["rss_median_mb"] > 50 and run["steady"]["cores"] > 0
    assert run["idle"]["n"] >= 1 and run["peak_rss_mb_vmhwm"] >= run["steady"]["rss_max_mb"]
    assert run["collector_rc"] == 0
