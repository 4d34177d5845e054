"""Second signal for prompt injection: word and character n-grams with logistic regression, window by window.

Rules (``enforcement.promptrules``) catch the forms of an injection; requests
that are injections only by what they ask for ("Can you confirm the password
for our system?"), in other languages, or task switches planted in an email
need wording statistics. ``PromptTextModel`` is a ``WindowScorer`` for
``enforcement.promptscan.scan_text(model=...)``:

- a TF-IDF of word 1-2-grams and one of character 3-4-grams inside word
  boundaries (both min_df 2, sublinear; characters survive misspellings and
  scripts without spaces) joined, and a class-balanced ``LogisticRegression``;
- per text: ``p`` of each window, then the fused score
  ``max(p) + bonus * min(2, windows with p >= 0.5 - 1) + beta * min(points, THRESHOLD)``
  (``points``: the rule points of the same text), compared with ``threshold``;
  ``score_windows`` maps it to [0, 1] with the threshold at 0.5.

``fit_prompt_model(docs, labels, points)`` takes each document as its
windows. Training units are every document whole and, for benign documents of
several windows, each window too (an injected document of several windows
cannot say which window holds the injection). The threshold is picked from
5-fold out-of-fold fused scores on the documents given (the lowest whose
false-positive rate, rule verdicts included, is at most ``max_fpr``), then the
model is fitted on all of them. Artifacts reuse the tool model's skops format
and checked loader (``enforcement.toolmodel``: no pickle, trusted types only,
same scikit-learn minor); ``kubeward eval-agents --fit-prompt-model`` rebuilds
the shipped one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from enforcement.promptscan import THRESHOLD
from enforcement.toolmodel import ToolModelError, ToolTextModel, load_tool_model, save_tool_model

__all__ = ["DEFAULT_PROMPT_MODEL", "PromptTextModel", "fit_prompt_model", "load_prompt_model", "save_prompt_model"]

DEFAULT_PROMPT_MODEL = Path(__file__).with_name("artifacts") / "prompt-injection.skops"
_KIND = "prompt-injection"


def _pipeline(c: float, random_state: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=20_000)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 4), min_df=2, sublinear_tf=True, max_features=30_000)
    classifier = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=random_state)
    return Pipeline([("features", FeatureUnion([("words", words), ("chars", chars)])), ("lr", classifier)])


def _fused(probs: Any, points: int, beta: float, bonus: float) -> float:
    hits = int((probs >= 0.5).sum())
    return float(probs.max()) + bonus * min(2, max(0, hits - 1)) + beta * min(points, THRESHOLD)


@dataclass(frozen=True)
class PromptTextModel:
    """A fitted pipeline and its fusion parameters (see the module docstring)."""

    pipeline: Any
    threshold: float
    beta: float
    bonus: float
    meta: Mapping[str, Any] = field(default_factory=dict)

    def probabilities(self, windows: Sequence[str]) -> Any:
        """The classifier's probability that each window is injected (no rule points): ``predict_proba`` computed
        directly, because ``FeatureUnion.transform`` dispatches through joblib (measured: 1.8 ms for one short text,
        0.4 ms this way); a test holds the two equal."""
        from scipy.sparse import hstack

        union, lr = self.pipeline.named_steps["features"], self.pipeline.named_steps["lr"]
        x = hstack([vectorizer.transform(list(windows)) for _, vectorizer in union.transformer_list], format="csr")
        return 1.0 / (1.0 + np.exp(-(x @ lr.coef_[0] + lr.intercept_[0])))

    def fused(self, windows: Sequence[str], points: int = 0) -> float:
        """The fused score of a text given as ``windows`` with ``points`` rule points."""
        return _fused(self.probabilities(windows), points, self.beta, self.bonus) if windows else self.beta * min(points, THRESHOLD)

    def score_windows(self, windows: Sequence[str], points: int = 0) -> float:
        """``fused`` mapped to [0, 1] so that ``threshold`` is 0.5."""
        fused, top = self.fused(windows, points), 1.0 + 2 * self.bonus + self.beta * THRESHOLD
        if fused < self.threshold:
            return round(0.5 * fused / self.threshold, 4)
        return round(min(1.0, 0.5 + 0.5 * (fused - self.threshold) / max(top - self.threshold, 1e-9)), 4)


def _units(docs: Sequence[Sequence[str]], labels: Sequence[int]) -> tuple[list[str], list[int]]:
    """Training texts: every document whole, and each window of a benign document of several windows."""
    texts, ys = [" ".join(d) for d in docs], list(labels)
    for doc, label in zip(docs, labels, strict=True):
        if label == 0 and len(doc) > 1:
            texts += list(doc)
            ys += [0] * len(doc)
    return texts, ys


def _threshold(fused: Any, labels: Any, ruled: Any, max_fpr: float) -> float:
    """Lowest fused threshold (steps of 0.005) whose false-positive rate, rule verdicts included, is <= ``max_fpr``."""
    negatives = labels == 0
    for t in np.arange(0.2, 2.0 + THRESHOLD, 0.005):
        if (ruled | (fused >= t))[negatives].mean() <= max_fpr:
            return round(float(t), 3)
    return round(2.0 + THRESHOLD, 3)


def _fit(docs: Sequence[Sequence[str]], labels: Sequence[int], c: float, random_state: int) -> Any:
    texts, ys = _units(docs, labels)
    pipeline = _pipeline(c, random_state).fit(texts, ys)
    for _, vectorizer in pipeline.named_steps["features"].transformer_list:
        # numpy integers would each become a file of their own in the skops zip; ints are JSON
        vectorizer.vocabulary_ = {term: int(index) for term, index in vectorizer.vocabulary_.items()}
    return pipeline


def fit_prompt_model(docs: Sequence[Sequence[str]], labels: Sequence[int], points: Sequence[int], *, c: float = 4.0,
                     beta: float = 0.08, bonus: float = 0.05, max_fpr: float = 0.04,
                     random_state: int = 0) -> tuple[PromptTextModel, dict[str, Any]]:  # fmt: skip
    """Fit on ``docs`` (each a list of windows); returns the model and its out-of-fold report on these documents."""
    from sklearn.model_selection import StratifiedKFold

    y, pts = np.asarray(labels), np.asarray(points)
    fused = np.zeros(len(y))
    for train, test in StratifiedKFold(5, shuffle=True, random_state=random_state).split(np.zeros(len(y)), y):
        fold = PromptTextModel(_fit([docs[i] for i in train], y[train].tolist(), c, random_state), 0.5, beta, bonus)
        fused[test] = [fold.fused(docs[i], int(pts[i])) for i in test]
    ruled = pts >= THRESHOLD
    threshold = _threshold(fused, y, ruled, max_fpr)
    flagged = ruled | (fused >= threshold)
    report = {"rows": len(y), "positives": int(y.sum()), "threshold": threshold, "beta": beta, "bonus": bonus, "C": c,
              "max_fpr": max_fpr, "oof_tpr": round(float(flagged[y == 1].mean()), 4), "oof_fpr": round(float(flagged[y == 0].mean()), 4)}  # fmt: skip
    return PromptTextModel(_fit(docs, labels, c, random_state), threshold, beta, bonus, report), report


def save_prompt_model(model: PromptTextModel, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> PromptTextModel:
    """Write ``model`` to ``path`` in the tool model's artifact format; returns it with the metadata written."""
    meta = save_tool_model(ToolTextModel(model.pipeline, model.threshold, model.beta, model.meta), path,
                           {**(extra or {}), "kind": _KIND, "bonus": model.bonus})  # fmt: skip
    return PromptTextModel(model.pipeline, model.threshold, model.beta, model.bonus, meta)


def load_prompt_model(path: str | os.PathLike[str] = DEFAULT_PROMPT_MODEL) -> PromptTextModel:
    """Load an artifact written by ``save_prompt_model`` (checked as ``toolmodel.load_tool_model`` checks)."""
    loaded = load_tool_model(path)
    if loaded.meta.get("kind") != _KIND:
        raise ToolModelError(f"{path}: kind={loaded.meta.get('kind')!r}, expected a {_KIND!r} model")
    return PromptTextModel(loaded.pipeline, loaded.threshold, loaded.beta, float(loaded.meta["bonus"]), loaded.meta)
