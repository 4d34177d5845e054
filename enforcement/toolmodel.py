"""Second signal for tool poisoning: word n-grams and logistic regression, for covert behaviour told in product language.

Rules (``enforcement.toolrules``) catch orders, markup, secrets and addresses;
descriptions that state a hidden behaviour in ordinary words ("Also reads the
terminal profile ... for context") need wording statistics. ``ToolTextModel``
is a ``TextScorer`` for ``enforcement.toolscan.scan_tool(model=...)``:

- ``features(text)``: the text, plus each word after the first sentence again
  with a ``tail_`` prefix: a definition's first sentence says what the tool
  is, the later ones what else it does, and add-on behaviour lives there;
- a TF-IDF of word 1-2-grams (min_df 2, sublinear) and a class-balanced
  ``LogisticRegression`` (C=``C``);
- the fused score ``p + beta * min(points, THRESHOLD)`` (``points``: the rule
  points of the same definition, so weak rule evidence and wording add up),
  compared with ``threshold``. ``score`` maps it to [0, 1] with the threshold
  at 0.5, as ``ToolScan.score`` expects.

``fit_tool_model`` picks ``threshold`` from 5-fold out-of-fold predictions on
the rows it is given (the lowest fused threshold whose false-positive rate,
rules included, is at most ``max_fpr``), then fits on all of them. It is pure;
``save_tool_model`` and ``load_tool_model`` are the only I/O: a skops file
(never pickle) holding ``{"meta": ..., "pipeline": ...}``, loaded only when
every type in it is one skops trusts by default or in ``TRUSTED_TYPES``, its
format is known and its scikit-learn minor version is the running one.
``kubeward eval-agents --fit-model`` rebuilds the shipped artifact.

    EnforcementError (enforcement.errors)
     └── ToolModelError   an artifact that cannot be written or must not be loaded
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enforcement.errors import EnforcementError
from enforcement.toolscan import THRESHOLD

__all__ = ["DEFAULT_TOOL_MODEL", "FORMAT_VERSION", "TRUSTED_TYPES", "ToolModelError", "ToolTextModel", "features",
           "fit_tool_model", "load_tool_model", "save_tool_model"]

DEFAULT_TOOL_MODEL = Path(__file__).with_name("artifacts") / "tool-poisoning.skops"
FORMAT_VERSION = 1
#: types trusted beyond skops' defaults
TRUSTED_TYPES = frozenset({"numpy.float64", "numpy.dtype"})
_SENTENCE_END = re.compile(r"[.!?](?:\s+|$)|\n")
_WORD = re.compile(r"[a-z]+")


class ToolModelError(EnforcementError):
    """A tool model artifact that cannot be written or must not be loaded; the message names the path."""


def features(text: str) -> str:
    """``text`` plus its words after the first sentence, prefixed ``tail_`` (see the module docstring)."""
    m = _SENTENCE_END.search(text.strip())
    tail = text.strip()[m.end() :] if m else ""
    return text + "\n" + " ".join("tail_" + w for w in _WORD.findall(tail.lower()))


def _pipeline(c: float, random_state: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    vectorizer = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=20_000)
    classifier = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=random_state)
    return Pipeline([("tfidf", vectorizer), ("lr", classifier)])


@dataclass(frozen=True)
class ToolTextModel:
    """A fitted pipeline and its fusion parameters; ``score(text, points)`` in [0, 1], 0.5 at ``threshold``."""

    pipeline: Any
    threshold: float
    beta: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def probability(self, text: str) -> float:
        """The classifier's probability that ``text`` is poisoned (no rule points)."""
        return float(self.pipeline.predict_proba([features(text)])[0, 1])

    def score(self, text: str, points: int = 0) -> float:
        """Fused score of ``text`` with ``points`` rule points, mapped so that ``threshold`` is 0.5."""
        fused = self.probability(text) + self.beta * min(points, THRESHOLD)
        top = 1.0 + self.beta * THRESHOLD
        if fused < self.threshold:
            return round(0.5 * fused / self.threshold, 4)
        return round(min(1.0, 0.5 + 0.5 * (fused - self.threshold) / max(top - self.threshold, 1e-9)), 4)


def _threshold(fused: Any, labels: Any, ruled: Any, max_fpr: float) -> float:
    """Lowest fused threshold (steps of 0.005) whose false-positive rate, rule verdicts included, is <= ``max_fpr``."""
    negatives = labels == 0
    for t in np.arange(0.2, 1.0 + THRESHOLD, 0.005):
        if (ruled | (fused >= t))[negatives].mean() <= max_fpr:
            return round(float(t), 3)
    return round(1.0 + THRESHOLD, 3)


def fit_tool_model(texts: Sequence[str], labels: Sequence[int], points: Sequence[int], *, c: float = 4.0, beta: float = 0.05,
                   max_fpr: float = 0.015, random_state: int = 0) -> tuple[ToolTextModel, dict[str, Any]]:  # fmt: skip
    """Fit on ``texts`` (``toolscan.model_text`` of each definition); returns the model and its out-of-fold report."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y, pts = [features(t) for t in texts], np.asarray(labels), np.asarray(points)
    folds = StratifiedKFold(5, shuffle=True, random_state=random_state)
    oof = cross_val_predict(_pipeline(c, random_state), x, y, cv=folds, method="predict_proba")[:, 1]
    fused, ruled = oof + beta * np.minimum(pts, THRESHOLD), pts >= THRESHOLD
    threshold = _threshold(fused, y, ruled, max_fpr)
    flagged = ruled | (fused >= threshold)
    report = {"rows": len(y), "positives": int(y.sum()), "threshold": threshold, "beta": beta, "C": c, "max_fpr": max_fpr,
              "oof_recall": round(float(flagged[y == 1].mean()), 4), "oof_fpr": round(float(flagged[y == 0].mean()), 4)}  # fmt: skip
    pipeline = _pipeline(c, random_state).fit(x, y)
    vectorizer = pipeline.named_steps["tfidf"]
    # numpy integers would each become a file of their own in the skops zip (8000 of them: 1.6 MB); ints are JSON
    vectorizer.vocabulary_ = {term: int(index) for term, index in vectorizer.vocabulary_.items()}
    return ToolTextModel(pipeline, threshold, beta, report), report


def save_tool_model(model: ToolTextModel, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``model`` with its metadata to ``path`` atomically; returns the metadata written."""
    import sklearn
    import skops.io as sio

    meta = {**model.meta, **(extra or {}), "format_version": FORMAT_VERSION, "threshold": model.threshold, "beta": model.beta,
            "sklearn_version": sklearn.__version__}  # fmt: skip
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            sio.dump({"meta": meta, "pipeline": model.pipeline}, fh, compression=zipfile.ZIP_DEFLATED)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return meta


def _checked_load(data: bytes, where: str) -> Any:
    import skops.io as sio

    if not data.startswith(b"PK\x03\x04"):
        raise ToolModelError(f"{where}: not a skops artifact (no zip header); refusing to load it")
    try:
        found = sio.get_untrusted_types(data=data)
        refused = sorted(set(found) - TRUSTED_TYPES)
        if refused:
            raise ToolModelError(f"{where}: refusing to load untrusted type(s) {refused}")
        return sio.loads(data, trusted=list(found))
    except ToolModelError:
        raise
    except Exception as exc:  # skops raises assorted errors (zip, json, key) on a damaged file
        raise ToolModelError(f"{where}: damaged tool model artifact ({type(exc).__name__}: {exc})") from exc


def load_tool_model(path: str | os.PathLike[str] = DEFAULT_TOOL_MODEL) -> ToolTextModel:
    """Load an artifact written by ``save_tool_model``, refusing anything else (see the module docstring)."""
    import sklearn

    where = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ToolModelError(f"{where}: cannot read tool model ({exc.strerror or exc})") from exc
    obj = _checked_load(data, where)
    if not isinstance(obj, dict) or set(obj) != {"meta", "pipeline"} or not isinstance(obj["meta"], dict):
        raise ToolModelError(f"{where}: not a Kubeward tool model (expected keys meta and pipeline)")
    meta = obj["meta"]
    if meta.get("format_version") != FORMAT_VERSION:
        raise ToolModelError(f"{where}: format_version={meta.get('format_version')!r}, this Kubeward reads {FORMAT_VERSION}")
    if str(meta.get("sklearn_version", "")).split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise ToolModelError(f"{where}: written with scikit-learn {meta.get('sklearn_version')}, running {sklearn.__version__}; refit it")
    return ToolTextModel(obj["pipeline"], float(meta["threshold"]), float(meta["beta"]), meta)
