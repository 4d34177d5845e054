"""Tests of ``models.reload.ModelReloader``: swap on change, keep the old model on a bad file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.artifacts import save_model
from models.ml import GaussianMixtureDetector
from models.reload import ModelReloader


def _model(seed: int) -> GaussianMixtureDetector:
    rng = np.random.default_rng(seed)
    return GaussianMixtureDetector(n_components=1).fit({"requests": rng.poisson(6, 200).astype(float), "is_service": np.zeros(200)})


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_reloads_on_change_and_keeps_the_old_model_on_a_bad_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "m.skops", Clock()
    reloader = ModelReloader(path, check_every_s=5.0, clock=clock)
    assert reloader.current() is None and reloader.last_error is not None  # no file yet
    save_model(_model(1), path, None, None)
    assert reloader.current() is None  # not looked at again before check_every_s
    clock.t = 5.0
    first = reloader.current()
    assert first is not None and reloader.reloads == 1
    save_model(_model(2), path, None, None)
    clock.t = 10.0
    second = reloader.current()
    assert second is not None and second.sha256 != first.sha256 and reloader.reloads == 2
    path.write_bytes(b"\x80\x04 a pickle")
    clock.t = 15.0
    assert reloader.current() is second and reloader.failures == 1 and "pickle" in str(reloader.last_error)
    clock.t = 20.0
    assert reloader.current() is second and reloader.failures == 1  # unchanged bad file is not re-read
    assert reloader.status()["kind"] == "gmm"
