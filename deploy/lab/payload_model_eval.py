"""Held-out experiment: does a character n-gram model add recall to the inline rule engine at equal false positives?

``evaluate(datasets_dir, limit=None)`` compares, for each model configuration
in ``MODELS`` (a ``HashingVectorizer`` of character n-grams, no fitted
vocabulary, then ``LogisticRegression``; input decoded with
``unquote_plus`` twice):

- ``rules``: the shipped engine, ``WafInspector`` over the default rule pack at
  each level of ``PARANOIA``; a value is flagged when ``GET /search?q=<value>``
  (percent-encoded as a client sends it) gets an ``Inspection``.
- ``model``: the model alone, its threshold set on benign validation rows for
  a target false-positive rate (``TARGET_FPR``).
- ``combined``: ``rules OR score > t`` with ``t`` set on benign validation rows
  so that the model adds at most ``EQUAL_FP_SLACK`` (0.1 point) of false
  positives to the rules' own; this is the "equal false positives" comparison.

Protocols (no row is both trained on and tested on; thresholds come only from
validation rows):

- ``morzeux_cv``: ``http-params-morzeux``, 5 folds grouped by decoded value
  (identical values never straddle a split) and stratified by attack type;
  inside each training part 20% is held out as validation for the thresholds,
  the model is fitted on the other 80%; every row is tested exactly once.
- ``cross``: fitted on all of morzeux; tested on ``crs-regression`` request rows
  of ``APPLICATION-ATTACK-*`` (the values of the query arguments and of
  url-encoded form bodies; a row's score is the maximum over its values, rows
  with no value are counted and left out; label ``expected_match``) and on
  natural text (``pii-presidio-synth`` sentences, ``prompt-injection`` benign
  emails) as benign. The benign rows are split 50/50 (seeded, per source):
  one half sets the thresholds, the other half measures false positives; no
  CRS positive is used for any choice.

Every figure has its row counts. ``inference_us_median`` is the model's cost
per value (decode + hash + dot product through scikit-learn, one value at a
time, median of 1,000 values, ``time.perf_counter``). ``verdict`` applies the
rule fixed before the run: ship only if the combination gains at least
``MIN_GAIN`` recall at ``VERDICT_PARANOIA`` on one of the two protocols while
its measured test false-positive rate stays within ``MAX_FP_INCREASE`` of the
rules' on both. These are DEV data; nothing here is pickled or written to disk.
"""

from __future__ import annotations

import io
import json
import math
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote_plus, urlsplit

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from enforcement.decision import RequestView
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, load_signatures

__all__ = ["MODELS", "Sample", "evaluate", "main"]

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
# name -> (HashingVectorizer analyzer, ngram_range)
MODELS: dict[str, tuple[str, tuple[int, int]]] = {"char_wb_1_3": ("char_wb", (1, 3)), "char_2_5": ("char", (2, 5))}
N_FEATURES = 2**18
PARANOIA = (1, 3)
TARGET_FPR = (0.001, 0.01)
EQUAL_FP_SLACK = 0.001
VERDICT_PARANOIA = 3
MIN_GAIN = 0.02
MAX_FP_INCREASE = 0.002  # twice the validation allowance: room for sampling noise on the test half, no more
SEED = 0
FOLDS = 5
Bools = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Sample:
    """One labeled row: its parameter values (a CRS request may carry several), label, kind and source dataset.

    ``kind`` is the attack type (morzeux) or CRS category; benign natural text has ``kind="natural"``.
    """

    values: tuple[str, ...]
    attack: bool
    kind: str
    source: str


def _jsonl(path: Path, limit: int | None) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if limit is not None and limit < len(rows):  # a seeded subsample: the files are sorted by label
        rows = random.Random(SEED).sample(rows, limit)
    return rows


def load_morzeux(root: Path, limit: int | None = None) -> list[Sample]:
    """The morzeux parameter values (``limit``: a seeded subsample of that many rows)."""
    rows = _jsonl(root / "http-params-morzeux" / "httpparams_train.jsonl", limit)
    return [Sample((str(r["payload"]),), bool(r["is_attack"]), str(r["attack_type"]), "morzeux") for r in rows]


def _crs_values(row: dict[str, Any]) -> tuple[str, ...]:
    values = [v for _, v in parse_qsl(urlsplit(row.get("uri") or "/").query, keep_blank_values=True)]
    ctype = {str(k).lower(): str(v) for k, v in (row.get("headers") or {}).items()}.get("content-type")
    body = row.get("body")
    if isinstance(body, str) and body and (ctype is None or "x-www-form-urlencoded" in ctype.lower()):
        values += [v for _, v in parse_qsl(body, keep_blank_values=True)]  # go-ftw sends a form when no type is given
    return tuple(v for v in values if v)


def load_crs(root: Path, limit: int | None = None) -> tuple[list[Sample], int]:
    """CRS ``APPLICATION-ATTACK-*`` request rows with at least one query/form value, and how many rows had none."""
    samples, empty = [], 0
    for row in _jsonl(root / "crs-regression" / "crs_regression.jsonl", limit):
        category = str(row.get("category") or "")
        if not category.startswith("APPLICATION-ATTACK-") or row.get("direction") != "request":
            continue
        if row.get("expected_match") is None or row.get("raw_request"):
            continue
        values = _crs_values(row)
        if values:
            samples.append(Sample(values, bool(row["expected_match"]), category, "crs"))
        else:
            empty += 1
    return samples, empty


def load_natural(root: Path, limit: int | None = None) -> list[Sample]:
    """Benign natural text: presidio sentences and LLMail benign emails."""
    rows = _jsonl(root / "pii-presidio-synth" / "presidio_synth_v2.jsonl", limit)
    rows += _jsonl(root / "prompt-injection" / "llmail_benign_emails.jsonl", limit)
    return [Sample((str(r["text"]),), False, "natural", "natural") for r in rows]


def decode(value: str) -> str:
    """What the model reads: the value percent/plus-decoded twice."""
    return unquote_plus(unquote_plus(value))


class RuleFlags:
    """The shipped engine's verdict on single values, memoised per (paranoia, value)."""

    def __init__(self, rules: Path = DEFAULT_RULES) -> None:
        pack = load_signatures(rules)
        self._inspectors = {p: WafInspector(pack, InspectionSettings(paranoia=p)) for p in PARANOIA}
        self._memo: dict[tuple[int, str], bool] = {}

    def value(self, paranoia: int, value: str) -> bool:
        """Whether ``GET /search?q=<value>`` is flagged at ``paranoia``."""
        key = (paranoia, value)
        if key not in self._memo:
            view = RequestView("GET", "/search?q=" + quote(value, safe=""))
            self._memo[key] = self._inspectors[paranoia].inspect(view) is not None
        return self._memo[key]

    def flags(self, paranoia: int, samples: Sequence[Sample]) -> Bools:
        """One flag per sample: any of its values flagged."""
        return np.array([any(self.value(paranoia, v) for v in s.values) for s in samples], dtype=bool)


@dataclass(frozen=True, slots=True)
class Model:
    """A fitted vectorizer + classifier; ``score`` is the classifier margin, higher = more attack-like."""

    vectorizer: Any
    classifier: Any

    def score(self, samples: Sequence[Sample]) -> Floats:
        """The maximum margin over each sample's values."""
        texts = [decode(v) for s in samples for v in s.values]
        if not texts:
            return np.zeros(0)
        margins = np.asarray(self.classifier.decision_function(self.vectorizer.transform(texts)), dtype=np.float64)
        starts = np.cumsum([0] + [len(s.values) for s in samples[:-1]])
        return np.asarray(np.maximum.reduceat(margins, starts), dtype=np.float64)


def fit(config: str, samples: Sequence[Sample]) -> Model:
    """Fit configuration ``config`` of ``MODELS`` on ``samples`` (first value of each)."""
    analyzer, ngrams = MODELS[config]
    vectorizer = HashingVectorizer(analyzer=analyzer, ngram_range=ngrams, n_features=N_FEATURES, alternate_sign=False)
    classifier = LogisticRegression(C=1.0, max_iter=2000, solver="liblinear", random_state=SEED)
    classifier.fit(vectorizer.transform([decode(s.values[0]) for s in samples]), [s.attack for s in samples])
    return Model(vectorizer, classifier)


def threshold(benign_scores: Floats, max_flagged: int) -> float:
    """The smallest cut ``t`` (flag ``score > t``) that flags at most ``max_flagged`` of ``benign_scores``."""
    if max_flagged >= len(benign_scores):
        return -math.inf
    return float(np.sort(benign_scores)[::-1][max_flagged])


def thresholds(scores: Floats, rules: dict[int, Bools]) -> dict[str, float]:
    """Cuts from benign validation rows: model-alone per target FP rate, combined per paranoia level."""
    n = len(scores)
    out = {f"model@{f}": threshold(scores, math.floor(f * n + 1e-9)) for f in TARGET_FPR}
    for p, flagged in rules.items():  # the model may add at most EQUAL_FP_SLACK * n false positives to the rules'
        out[f"combined@pl{p}"] = threshold(scores[~flagged], math.floor(EQUAL_FP_SLACK * n + 1e-9))
    return out


def decisions(scores: Floats, rules: dict[int, Bools], cuts: dict[str, float]) -> dict[str, Bools]:
    """Flags of every system: ``rules@plN``, ``model@F``, ``combined@plN``."""
    out = {f"rules@pl{p}": flagged for p, flagged in rules.items()}
    out |= {name: scores > cut for name, cut in cuts.items() if name.startswith("model@")}
    out |= {f"combined@pl{p}": rules[p] | (scores > cuts[f"combined@pl{p}"]) for p in rules}
    return out


def tally(samples: Sequence[Sample], flags: Bools) -> dict[str, Any]:
    """Recall overall and per kind, false-positive rate overall and per source, with counts."""
    attack = np.array([s.attack for s in samples], dtype=bool)

    def rate(mask: Bools) -> dict[str, Any]:
        n, hit = int(mask.sum()), int((flags & mask).sum())
        return {"rate": round(hit / n, 5) if n else None, "flagged": hit, "rows": n}

    kinds = sorted({s.kind for s in samples if s.attack})
    sources = sorted({s.source for s in samples if not s.attack})
    return {"recall": rate(attack), "fpr": rate(~attack),
            "recall_per_kind": {k: rate(attack & np.array([s.kind == k for s in samples])) for k in kinds},
            "fpr_per_source": {k: rate(~attack & np.array([s.source == k for s in samples])) for k in sources}}  # fmt: skip


def _rules_at(flags: RuleFlags, samples: Sequence[Sample]) -> dict[int, Bools]:
    return {p: flags.flags(p, samples) for p in PARANOIA}


def _folds(samples: Sequence[Sample], n_splits: int) -> Iterator[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    kinds = [s.kind for s in samples]
    strata = kinds if min(Counter(kinds).values()) >= n_splits else [str(s.attack) for s in samples]
    groups = [decode(s.values[0]) for s in samples]
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=SEED)
    yield from splitter.split(np.zeros(len(samples)), strata, groups)


def morzeux_cv(config: str, samples: Sequence[Sample], rules: dict[int, Bools]) -> dict[str, Any]:
    """5-fold grouped CV; thresholds on a 20% validation part of each training part."""
    merged: dict[str, Bools] = {}
    for train, test in _folds(samples, FOLDS):
        inner_train, val = next(_folds([samples[i] for i in train], FOLDS))
        fit_rows, val_rows = train[inner_train], train[val]
        model = fit(config, [samples[i] for i in fit_rows])
        benign_val = np.array([i for i in val_rows if not samples[i].attack], dtype=np.intp)
        cuts = thresholds(model.score([samples[i] for i in benign_val]), {p: r[benign_val] for p, r in rules.items()})
        got = decisions(model.score([samples[i] for i in test]), {p: r[test] for p, r in rules.items()}, cuts)
        for name, flags in got.items():
            merged.setdefault(name, np.zeros(len(samples), dtype=bool))[test] = flags
    return {name: tally(samples, flags) for name, flags in merged.items()}


def _benign_halves(samples: Sequence[Sample]) -> tuple[Bools, Bools]:
    rng = np.random.default_rng(SEED)
    val = np.zeros(len(samples), dtype=bool)
    for source in sorted({s.source for s in samples}):
        idx = np.array([i for i, s in enumerate(samples) if not s.attack and s.source == source], dtype=np.intp)
        val[rng.permutation(idx)[: len(idx) // 2]] = True
    return val, ~val


def cross(model: Model, samples: Sequence[Sample], rules: dict[int, Bools]) -> dict[str, Any]:
    """A model fitted on all morzeux, cut on half of the benign cross-dataset rows, tested on the rest + all positives."""
    scores = model.score(samples)
    val, test = _benign_halves(samples)
    cuts = thresholds(scores[val], {p: r[val] for p, r in rules.items()})
    got = decisions(scores[test], {p: r[test] for p, r in rules.items()}, cuts)
    kept = [s for s, t in zip(samples, test, strict=True) if t]
    return {name: tally(kept, flags) for name, flags in got.items()}


def inference_cost(model: Model, values: Sequence[str]) -> float:
    """Median µs to decode, hash and score one value, over ``values`` one at a time."""
    times = []
    for value in values:
        start = time.perf_counter()
        model.classifier.decision_function(model.vectorizer.transform([decode(value)]))
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1) if times else 0.0


def rules_cost(engine: RuleFlags, values: Sequence[str]) -> float:
    """Median µs of the engine on one value at ``VERDICT_PARANOIA`` (a fresh, unmemoised ``engine``), for context only."""
    times = []
    for value in values:
        start = time.perf_counter()
        engine.value(VERDICT_PARANOIA, value)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1) if times else 0.0


def artifact_bytes(model: Model) -> dict[str, int]:
    """Size of the weights as a plain ``.npz`` (nonzero indices + float32 values + intercept), written to memory only."""
    coef = np.asarray(model.classifier.coef_, dtype=np.float64).ravel()
    nonzero = np.flatnonzero(coef)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, index=nonzero.astype(np.int32), weight=coef[nonzero].astype(np.float32),
                        intercept=np.asarray(model.classifier.intercept_, dtype=np.float32))  # fmt: skip
    return {"nonzero_weights": int(nonzero.size), "npz_bytes": buffer.getbuffer().nbytes}


def _gain(result: dict[str, Any]) -> dict[str, float]:
    rules, combined = result[f"rules@pl{VERDICT_PARANOIA}"], result[f"combined@pl{VERDICT_PARANOIA}"]
    return {"recall_gain": round(combined["recall"]["rate"] - rules["recall"]["rate"], 5),
            "fp_increase": round(combined["fpr"]["rate"] - rules["fpr"]["rate"], 5)}  # fmt: skip


def verdict(models: dict[str, Any]) -> dict[str, Any]:
    """Ship iff one configuration gains ``MIN_GAIN`` recall on a protocol and stays within ``MAX_FP_INCREASE`` on both."""
    per = {name: {proto: _gain(got[proto]) for proto in ("morzeux_cv", "cross")} for name, got in models.items()}
    passing = [name for name, g in per.items()
               if max(x["recall_gain"] for x in g.values()) >= MIN_GAIN and all(x["fp_increase"] <= MAX_FP_INCREASE for x in g.values())]  # fmt: skip
    return {"ship": bool(passing), "passing": passing, "paranoia": VERDICT_PARANOIA, "min_gain": MIN_GAIN,
            "max_fp_increase": MAX_FP_INCREASE, "per_model": per}  # fmt: skip


def evaluate(datasets_dir: Path = DATASETS, limit: int | None = None, rules_path: Path = DEFAULT_RULES) -> dict[str, Any]:
    """Run both protocols for every ``MODELS`` configuration (``limit``: rows per dataset file, for tests).

    Keys: ``data`` (row counts), ``models`` (per configuration: ``morzeux_cv``
    and ``cross``, each ``{system: tally}``; ``inference_us_median``;
    ``artifact``), ``rules_us_median`` (context only) and ``verdict``.
    """
    morzeux = load_morzeux(datasets_dir, limit)
    crs, crs_empty = load_crs(datasets_dir, limit)
    other = crs + load_natural(datasets_dir, limit)
    engine = RuleFlags(rules_path)
    rules_m, rules_x = _rules_at(engine, morzeux), _rules_at(engine, other)
    timing = [s.values[0] for s in random.Random(SEED).sample(morzeux, min(1000, len(morzeux)))]
    models: dict[str, Any] = {}
    for config in MODELS:
        full = fit(config, morzeux)
        models[config] = {"morzeux_cv": morzeux_cv(config, morzeux, rules_m), "cross": cross(full, other, rules_x),
                          "inference_us_median": inference_cost(full, timing), "artifact": artifact_bytes(full)}  # fmt: skip
    rules_us = rules_cost(RuleFlags(rules_path), timing)
    data = {"morzeux_rows": len(morzeux), "morzeux_unique_decoded": len({decode(s.values[0]) for s in morzeux}),
            "crs_rows_with_values": len(crs), "crs_rows_without_values": crs_empty,
            "crs_values": sum(len(s.values) for s in crs), "natural_texts": len(other) - len(crs)}  # fmt: skip
    return {"data": data, "models": models, "rules_us_median": rules_us, "verdict": verdict(models)}


def _pct(cell: dict[str, Any]) -> str:
    return "     -" if cell["rate"] is None else f"{100 * cell['rate']:6.2f}"


def _print(result: dict[str, Any]) -> None:
    print("data:", json.dumps(result["data"]))
    for config, got in result["models"].items():
        print(f"\n== {config}  inference {got['inference_us_median']} µs/value (median)  artifact {got['artifact']}")
        for proto in ("morzeux_cv", "cross"):
            systems = got[proto]
            kinds = list(next(iter(systems.values()))["recall_per_kind"])
            print(f"-- {proto}: recall % per kind (positives)")
            print(f"{'system':16} {'recall':>7} {'fpr':>7} " + " ".join(f"{k.replace('APPLICATION-ATTACK-', ''):>9}" for k in kinds))
            print(f"{'rows':16} {next(iter(systems.values()))['recall']['rows']:7} {next(iter(systems.values()))['fpr']['rows']:7} "
                  + " ".join(f"{next(iter(systems.values()))['recall_per_kind'][k]['rows']:9}" for k in kinds))  # fmt: skip
            for name, t in systems.items():
                per = " ".join(f"{_pct(t['recall_per_kind'][k]):>9}" for k in kinds)
                src = " ".join(f"{s}:{_pct(c)}" for s, c in t["fpr_per_source"].items())
                print(f"{name:16} {_pct(t['recall']):>7} {_pct(t['fpr']):>7} {per}   fp by source {src}")
    print(f"\nrules engine: {result['rules_us_median']} µs/value (median, informational; the engine is being optimised)")
    print("verdict:", json.dumps(result["verdict"]))


def main(argv: list[str] | None = None) -> int:
    """Print both protocols for every configuration and the verdict (argument: the datasets directory)."""
    args = sys.argv[1:] if argv is None else argv
    _print(evaluate(Path(args[0]) if args else DATASETS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
