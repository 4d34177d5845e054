"""Tests of ``models.artifacts``: skops artifacts with metadata, and every refusal on load."""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
import sklearn

from models.artifacts import FORMAT_VERSION, ArtifactError, load_model, save_model
from models.ml import GaussianMixtureDetector, IsolationForestDetector


class Gadget:
    """A type no artifact may carry."""


def _frame(n: int = 400) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {"requests": rng.poisson(6, n).astype(float), "pii": rng.poisson(2, n).astype(float),
            "is_service": (np.arange(n) % 4 == 0).astype(float)}


@pytest.fixture(scope="module")
def gmm() -> GaussianMixtureDetector:
    return GaussianMixtureDetector(n_components=2).fit(_frame())


def _rewrite(path: Path, change: Callable[[Any], None]) -> None:
    """Edit the artifact's schema.json in place (what an attacker with write access could do)."""
    with zipfile.ZipFile(path) as z:
        members = {name: z.read(name) for name in z.namelist()}
    schema = json.loads(members["schema.json"])
    change(schema)
    members["schema.json"] = json.dumps(schema).encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("cls", [IsolationForestDetector, GaussianMixtureDetector], ids=["iforest", "gmm"])
def test_round_trip_keeps_model_and_metadata(tmp_path: Path, cls: type) -> None:
    model = cls(random_state=3).fit(_frame())
    path = tmp_path / "model.skops"
    written = save_model(model, path, 1.8e9, 1.8e9 + 600, extra={"window_s": 60})
    loaded = load_model(path)
    meta = loaded.meta
    assert meta == written
    assert meta.kind == model.kind and meta.features == ("pii", "requests") and meta.cohorts == ("services", "users")
    assert (meta.training_first_time, meta.training_last_time, meta.rows) == (1.8e9, 1.8e9 + 600, 400)
    assert meta.sklearn_version == sklearn.__version__ and meta.format_version == FORMAT_VERSION and meta.created_at > 0
    assert meta.extra == {"window_s": 60} and meta.params == model.params()
    frame = _frame(50)
    assert np.array_equal(loaded.detector.score_many(frame), model.score_many(frame))
    assert len(loaded.sha256) == 64 and loaded.path == str(path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.skops"]  # no temporary file left behind


def test_pickle_file_is_refused_without_unpickling(tmp_path: Path, gmm: GaussianMixtureDetector, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"meta": {}, "state": gmm.get_state()}))

    def never(*_: Any, **__: Any) -> Any:
        raise AssertionError("a pickle was unpickled")

    monkeypatch.setattr(pickle, "loads", never)
    monkeypatch.setattr(pickle, "load", never)
    with pytest.raises(ArtifactError, match="pickle") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_untrusted_type_is_refused(tmp_path: Path, gmm: GaussianMixtureDetector) -> None:
    path = tmp_path / "model.skops"
    save_model(gmm, path, None, None)
    good = sio.loads(path.read_bytes(), trusted=sio.get_untrusted_types(data=path.read_bytes()))
    good["state"]["gadget"] = Gadget()
    sio.dump(good, path)
    with pytest.raises(ArtifactError, match="untrusted.*Gadget") as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_tampered_class_is_refused(tmp_path: Path, gmm: GaussianMixtureDetector) -> None:
    path = tmp_path / "model.skops"
    save_model(gmm, path, None, None)

    def swap(schema: Any) -> None:
        for node in _walk(schema):
            if node.get("__class__") == "GaussianMixture":
                node["__class__"], node["__module__"] = "Popen", "subprocess"

    _rewrite(path, swap)
    with pytest.raises(ArtifactError, match="subprocess.Popen"):
        load_model(path)


def test_unknown_format_version_is_refused(tmp_path: Path, gmm: GaussianMixtureDetector) -> None:
    path = tmp_path / "model.skops"
    save_model(gmm, path, None, None)

    def bump(schema: Any) -> None:
        schema["content"]["meta"]["content"]["format_version"]["content"] = "99"

    _rewrite(path, bump)
    with pytest.raises(ArtifactError, match="format_version=99") as err:
        load_model(path)
    assert str(path) in str(err.value)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.InconsistentVersionWarning")
def test_other_sklearn_minor_is_refused_unless_allowed(tmp_path: Path, gmm: GaussianMixtureDetector) -> None:
    path = tmp_path / "model.skops"
    save_model(gmm, path, None, None)

    def old(schema: Any) -> None:
        schema["content"]["meta"]["content"]["sklearn_version"]["content"] = '"0.24.2"'

    _rewrite(path, old)
    with pytest.raises(ArtifactError, match="scikit-learn 0.24.2"):
        load_model(path)
    assert load_model(path, allow_sklearn_mismatch=True).meta.sklearn_version == "0.24.2"


def test_unknown_kind_is_refused(tmp_path: Path, gmm: GaussianMixtureDetector) -> None:
    path = tmp_path / "model.skops"
    save_model(gmm, path, None, None)

    def rename(schema: Any) -> None:
        schema["content"]["meta"]["content"]["kind"]["content"] = '"autoencoder"'

    _rewrite(path, rename)
    with pytest.raises(ArtifactError, match="kind='autoencoder'"):
        load_model(path)


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04 truncated"], ids=["empty", "text", "broken-zip"])
def test_garbage_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.skops"
    path.write_bytes(content)
    with pytest.raises(ArtifactError) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="nowhere.skops"):
        load_model(tmp_path / "nowhere.skops")


def test_foreign_skops_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    sio.dump({"weights": np.zeros(3)}, path)
    with pytest.raises(ArtifactError, match="not a Kubeward model artifact"):
        load_model(path)
