"""Tests of ``kubeward train``: Parquet archive -> closed windows through the replay path -> artifact."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from deploy.train import WindowSet, add_cli, collect_windows, fit_model
from ingest.simulator import ClusterSimulator, plan_attacks, write_parquet
from models.artifacts import load_model
from streams import WorkerSettings

SETTINGS = WorkerSettings(window_s=10, learn_windows=2, detectors=[])


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train") / "summaries.parquet"
    sim = ClusterSimulator(seed=7, users=200, start_time=1.8e9, attacks=plan_attacks(7, 45.0, 15.0), benign_rate_eps=60.0)
    write_parquet(sim.calls(45.0), path, b"test-object-key")
    return path


@pytest.fixture(scope="module")
def windows(archive: Path) -> WindowSet:
    return collect_windows([archive], SETTINGS)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_windows_are_closed_and_cover_the_archive(archive: Path, windows: WindowSet) -> None:
    times = pq.read_table(archive, columns=["time"]).column("time")
    assert windows.rows == pq.ParquetFile(archive).metadata.num_rows
    assert (windows.first_time, windows.last_time) == (pc.min(times).as_py(), pc.max(times).as_py())
    assert len(windows) > 50 and {"requests", "is_service", "age_windows"} <= set(windows.frame)
    assert np.all(windows.frame["requests"] >= 1)  # a window is emitted only once something happened in it
    # 45 s of 10 s windows: an actor has at most 4 complete windows (the last one is still open at the end)
    assert max(np.unique(windows.key, return_counts=True)[1]) <= 4


def test_ground_truth_is_collected_but_never_trained_on(windows: WindowSet) -> None:
    assert set(windows.scenario[windows.attack_id != ""]) >= {"bola", "credential_stuffing"}
    model = fit_model(windows, "gmm", n_components=1)
    blind = WindowSet(windows.frame, windows.key, np.full(len(windows), "", dtype=object), np.full(len(windows), "", dtype=object),
                      windows.first_time, windows.last_time, windows.rows)
    assert np.array_equal(model.score_many(windows.frame), fit_model(blind, "gmm", n_components=1).score_many(windows.frame))


def test_archives_replay_on_fresh_state_by_default(archive: Path) -> None:
    separate = collect_windows([archive, archive], SETTINGS)
    assert separate.rows == 2 * pq.ParquetFile(archive).metadata.num_rows
    assert len(separate) == 2 * len(collect_windows([archive], SETTINGS))


def test_cli_writes_an_artifact(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.skops"
    assert _run(["train", str(archive), "--out", str(out), "--model", "gmm", "--window-s", "10", "--learn-windows", "2"]) == 0
    loaded = load_model(out)
    assert loaded.meta.kind == "gmm" and "users" in loaded.meta.cohorts
    assert loaded.meta.extra["window_s"] == 10 and loaded.meta.extra["sources"] == [archive.name]
    assert "is_service" not in loaded.meta.features and "requests" in loaded.meta.features
    assert str(out) in capsys.readouterr().out


def test_cli_with_chosen_features_and_a_missing_archive(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.skops"
    assert _run(["train", str(archive), "--out", str(out), "--window-s", "10", "--features", "requests,denied"]) == 0
    assert load_model(out).meta.features == ("requests", "denied")
    assert _run(["train", str(tmp_path / "missing.parquet"), "--out", str(out)]) == 2


def test_unknown_model_kind_lists_the_valid_ones(windows: WindowSet) -> None:
    with pytest.raises(ValueError, match="gmm, iforest"):
        fit_model(windows, "autoencoder")
