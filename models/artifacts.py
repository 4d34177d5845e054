"""Model artifacts: a fitted ``models.ml`` detector and its metadata in one skops file, never pickle.

``save_model`` writes ``{"meta": ..., "state": detector.get_state()}`` with
``skops.io`` (a zip of JSON plus numpy arrays; loading never runs code the file
names unless its type is trusted). ``load_model`` refuses, with an
``ArtifactError`` naming the path:

* anything that is not a skops zip (a pickle file above all: its bytes are never handed to a loader);
* any type outside skops' defaults and ``TRUSTED_TYPES`` (a tampered or foreign artifact);
* an artifact format it does not know (``FORMAT_VERSIONS``), a model kind it does not know
  (``models.ml.MODEL_KINDS``), or one written by another scikit-learn minor version (retrain it);
* a state that does not rebuild into the detector its metadata describes.

The metadata (``ArtifactMeta``) records the features, cohorts, training window
(first and last event time), rows, library versions, the artifact format and
the time it was written. Writes go to a temporary file then ``os.replace``, so
a reader (``models.reload``) never sees half a file.

    ModelError (models.errors)
     └── ArtifactError   an artifact that cannot be written, or must not be loaded
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops.io as sio

from models.errors import ModelError
from models.ml import MODEL_KINDS, CohortAnomalyDetector

__all__ = ["FORMAT_VERSION", "FORMAT_VERSIONS", "TRUSTED_TYPES", "ArtifactError", "ArtifactMeta", "LoadedModel", "load_model",
           "save_model"]

#: the artifact layout written now; bump on any incompatible change of ``meta`` or ``state``
FORMAT_VERSION = 1
#: layouts this code can read
FORMAT_VERSIONS = frozenset({1})
#: types trusted beyond skops' defaults (which cover scikit-learn estimators, numpy and builtins)
TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})
_ESTIMATORS = {"iforest": "IsolationForest", "gmm": "GaussianMixture"}


class ArtifactError(ModelError):
    """An artifact that cannot be written or must not be loaded; the message names the path."""


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class ArtifactMeta:
    """What an artifact says about its model (all plain values)."""

    kind: str
    features: tuple[str, ...]
    cohorts: tuple[str, ...]
    rows: int
    training_first_time: float | None
    training_last_time: float | None
    sklearn_version: str
    kubeward_version: str
    format_version: int
    created_at: float
    params: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The metadata as stored (lists instead of tuples)."""
        out = asdict(self)
        out["features"], out["cohorts"] = list(self.features), list(self.cohorts)
        out["params"], out["extra"] = dict(self.params), dict(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str) -> ArtifactMeta:
        """Parse stored metadata; raises ``ArtifactError`` naming the path and the missing or bad key."""
        try:
            return cls(kind=str(data["kind"]), features=tuple(str(f) for f in data["features"]),
                       cohorts=tuple(str(c) for c in data["cohorts"]), rows=int(data["rows"]),
                       training_first_time=_opt_float(data["training_first_time"]),
                       training_last_time=_opt_float(data["training_last_time"]),
                       sklearn_version=str(data["sklearn_version"]), kubeward_version=str(data["kubeward_version"]),
                       format_version=int(data["format_version"]), created_at=float(data["created_at"]),
                       params=dict(data.get("params") or {}), extra=dict(data.get("extra") or {}))
        except KeyError as exc:
            raise ArtifactError(f"{path}: metadata lacks key {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: bad metadata ({exc})") from exc


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class LoadedModel:
    """A detector loaded from an artifact, with its metadata, path and the SHA-256 of the bytes read."""

    detector: CohortAnomalyDetector
    meta: ArtifactMeta
    path: str
    sha256: str


def save_model(detector: CohortAnomalyDetector, path: str | os.PathLike[str], training_first_time: float | None,
               training_last_time: float | None, extra: Mapping[str, Any] | None = None) -> ArtifactMeta:
    """Write a fitted detector and its metadata to ``path`` atomically; returns the metadata written."""
    state = detector.get_state()
    meta = ArtifactMeta(kind=detector.kind, features=tuple(state["features"]), cohorts=tuple(sorted(state["cohorts"])),
                        rows=int(state["rows"]), training_first_time=training_first_time, training_last_time=training_last_time,
                        sklearn_version=sklearn.__version__, kubeward_version=_version("kubeward"), format_version=FORMAT_VERSION,
                        created_at=time.time(), params=detector.params(), extra=dict(extra or {}))
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent if str(target.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            sio.dump({"meta": meta.to_dict(), "state": state}, fh, compression=zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the worker may run as another user
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return meta


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot read model artifact ({exc.strerror or exc})") from exc


def _check_container(data: bytes, path: str) -> None:
    if data[:1] == b"\x80" or data[:2] in (b"(d", b"(l", b"}q", b"]q"):
        raise ArtifactError(f"{path}: looks like a pickle file; pickles are never loaded (write a skops artifact with `kubeward train`)")
    if not data.startswith(b"PK\x03\x04"):
        raise ArtifactError(f"{path}: not a skops model artifact (no zip header); refusing to load it")


def _untrusted(data: bytes, path: str) -> list[str]:
    try:
        found = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops raises assorted errors (zip, json, key) on a damaged file
        raise ArtifactError(f"{path}: damaged model artifact ({type(exc).__name__}: {exc})") from exc
    refused = sorted(set(found) - TRUSTED_TYPES)
    if refused:
        raise ArtifactError(f"{path}: refusing to load untrusted type(s) {refused}; trusted beyond skops defaults: {sorted(TRUSTED_TYPES)}")
    return list(found)


def _check_versions(meta: ArtifactMeta, path: str, allow_sklearn_mismatch: bool) -> None:
    if meta.format_version not in FORMAT_VERSIONS:
        raise ArtifactError(f"{path}: unknown artifact format_version={meta.format_version}; this Kubeward reads {sorted(FORMAT_VERSIONS)}")
    if meta.kind not in MODEL_KINDS:
        raise ArtifactError(f"{path}: unknown model kind={meta.kind!r}; known kinds: {sorted(MODEL_KINDS)}")
    ours, theirs = sklearn.__version__.split(".")[:2], meta.sklearn_version.split(".")[:2]
    if ours != theirs and not allow_sklearn_mismatch:
        raise ArtifactError(f"{path}: written with scikit-learn {meta.sklearn_version}, running {sklearn.__version__}; retrain the model")


def _check_state(state: Any, meta: ArtifactMeta, path: str) -> CohortAnomalyDetector:
    if not isinstance(state, Mapping) or state.get("kind") != meta.kind:
        raise ArtifactError(f"{path}: model state does not match metadata kind={meta.kind!r}")
    try:
        detector = MODEL_KINDS[meta.kind].from_state(state)
    except ModelError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc
    if detector.features_ != meta.features:
        raise ArtifactError(f"{path}: state features {list(detector.features_)} differ from metadata features {list(meta.features)}")
    for name, cohort in detector.cohorts_.items():
        if type(cohort.estimator).__name__ != _ESTIMATORS[meta.kind]:
            raise ArtifactError(f"{path}: cohort {name!r} holds a {type(cohort.estimator).__name__}, expected {_ESTIMATORS[meta.kind]}")
        if not (np.all(np.isfinite(cohort.mean)) and np.all(cohort.std > 0)):
            raise ArtifactError(f"{path}: cohort {name!r} has non-finite means or non-positive deviations")
    return detector


def load_model(path: str | os.PathLike[str], allow_sklearn_mismatch: bool = False) -> LoadedModel:
    """Load an artifact written by ``save_model``, refusing anything else (see the module docstring)."""
    where = str(path)
    data = _read(where)
    _check_container(data, where)
    trusted = _untrusted(data, where)
    try:
        obj = sio.loads(data, trusted=trusted)
    except Exception as exc:  # a file that passed the type check but does not rebuild is damaged
        raise ArtifactError(f"{where}: damaged model artifact ({type(exc).__name__}: {exc})") from exc
    if not isinstance(obj, Mapping) or set(obj) != {"meta", "state"}:
        raise ArtifactError(f"{where}: not a Kubeward model artifact (expected keys meta and state)")
    meta = ArtifactMeta.from_dict(obj["meta"], where)
    _check_versions(meta, where, allow_sklearn_mismatch)
    detector = _check_state(obj["state"], meta, where)
    return LoadedModel(detector, meta, where, hashlib.sha256(data).hexdigest())
