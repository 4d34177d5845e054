"""``kubeward train``: Parquet archives of the summary stream -> closed actor windows -> a fitted model artifact.

Each archive (``RequestSummary`` schema, as ``ingest.simulator.write_parquet``
or a collector's archive writes it) is replayed through the one replay path
(``streams.replay.Replay``) with the worker's window settings and no detectors;
``collect_windows`` keeps, for every actor window that closed, the feature
frame the processor built for it after the last batch that touched it (the
window's final counts; ``BatchProcessor.frame``). Windows still open at the end
are kept only when their end lies before the archive's last event. The model
(``models.ml``, one per cohort) is fitted on those frames, unsupervised: ground
truth, when an archive carries it, is collected beside the frames for
evaluation (``deploy.lab.ml_eval``) and never passed to ``fit``. The artifact
(``models.artifacts``) records features, cohorts, the training window (first
and last event time), rows and versions, plus the window settings it assumes.

Archives are replayed one after another on fresh state unless ``--chain`` says
they are consecutive pieces of one stream.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.artifacts import ArtifactMeta, save_model
from models.ml import MODEL_KINDS, CohortAnomalyDetector
from streams import Outcome, Replay, WorkerSettings
from streams.batch import BatchView, hash64
from streams.replay import Batch

__all__ = ["WindowSet", "add_cli", "collect_windows", "fit_model", "train"]

_F = npt.NDArray[np.float64]
Declared = Mapping[str, Mapping[tuple[str, str], bool]]


@dataclass(frozen=True)
class WindowSet:
    """Closed actor windows: their feature frame, each window's actor key (the store's 64-bit hash) and,
    where the archive had it, ground truth (attack id and scenario, "" = none; never trained on)."""

    frame: dict[str, _F]
    key: npt.NDArray[np.uint64]
    attack_id: npt.NDArray[np.object_]
    scenario: npt.NDArray[np.object_]
    first_time: float | None
    last_time: float | None
    rows: int

    def __len__(self) -> int:
        return len(self.attack_id)


class _Collector:
    """Follows the actors of one replay and emits each window's last frame when the window closes."""

    def __init__(self, run: Replay, window_s: int) -> None:
        self.run, self.window_s = run, window_s
        self.names: list[str] = []
        self.start = np.zeros(0, dtype=np.int64)
        self.values = np.zeros((0, 0))
        self.attack = np.zeros(0, dtype=object)
        self.scenario = np.zeros(0, dtype=object)
        self.out: list[tuple[_F, npt.NDArray[np.uint64], npt.NDArray[np.object_], npt.NDArray[np.object_]]] = []
        self.first: float | None = None
        self.last: float | None = None
        self.rows = 0

    def _grow(self, size: int, width: int) -> None:
        if size <= len(self.start):
            return
        cap = max(size, 2 * len(self.start), 1024)
        self.start = np.concatenate([self.start, np.full(cap - len(self.start), -1, dtype=np.int64)])
        self.values = np.vstack([self.values.reshape(-1, width), np.zeros((cap - len(self.values), width))])
        self.attack = np.concatenate([self.attack, np.full(cap - len(self.attack), "", dtype=object)])
        self.scenario = np.concatenate([self.scenario, np.full(cap - len(self.scenario), "", dtype=object)])

    def _emit(self, rows: npt.NDArray[np.intp]) -> None:
        if len(rows):
            keys = self.run.processor().store.cols["key"][rows].copy()
            self.out.append((self.values[rows].copy(), keys, self.attack[rows].copy(), self.scenario[rows].copy()))

    def __call__(self, batch: Batch, outcome: Outcome) -> None:
        """After each batch: emit windows that closed, keep the touched actors' current frames."""
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else pa.Table.from_pylist(batch)
        view = BatchView.decode(table)
        proc = self.run.processor()
        rows = proc.store.rows_for(hash64(pa.array(view.actors, pa.string())))[0]  # the actor keys, as the processor hashes them
        frame = proc.frame(rows)
        if not self.names:
            self.names = list(frame)
        self._grow(int(rows.max()) + 1, len(self.names))
        now = proc.store.cols["window_start"][rows].astype(np.int64)
        changed = self.start[rows] != now
        self._emit(rows[changed & (self.start[rows] >= 0)])
        self.attack[rows[changed]], self.scenario[rows[changed]] = "", ""
        self.start[rows] = now
        self.values[rows] = np.column_stack([frame[n] for n in self.names])
        self._label(table, view, rows)
        self.rows += view.n
        self.first = float(view.time.min()) if self.first is None else min(self.first, float(view.time.min()))
        self.last = float(view.time.max()) if self.last is None else max(self.last, float(view.time.max()))

    def _label(self, table: pa.Table, view: BatchView, rows: npt.NDArray[np.intp]) -> None:
        if "ground_truth" not in table.column_names:
            return
        for i, truth in enumerate(table.column("ground_truth").to_pylist()):
            if truth and truth.get("malicious"):
                row = rows[view.actor_of_row[i]]
                self.attack[row], self.scenario[row] = truth.get("attack_id") or "?", truth.get("scenario") or "?"

    def finish(self) -> None:
        """Emit the windows still pending whose end lies before the last event (complete by event time)."""
        if self.last is not None and len(self.start):
            self._emit(np.nonzero((self.start >= 0) & (self.start + self.window_s <= self.last))[0])
        self.start[:] = -1


def _declared(specs_dir: str | None) -> dict[str, dict[tuple[str, str], bool]] | None:
    if specs_dir is None:
        return None
    from ingest.openapi import declared_endpoints, load_spec_dir

    return declared_endpoints(load_spec_dir(specs_dir))


def collect_windows(sources: Sequence[str | Path], settings: WorkerSettings, declared: Declared | None = None,
                    batch_rows: int = 500, chain: bool = False) -> WindowSet:
    """Closed windows of every actor in the archives (see the module docstring); ``settings.detectors`` is ignored."""
    quiet = settings.model_copy(update={"detectors": []})
    parts: list[_Collector] = []
    run: Replay | None = None
    for source in sources:
        if run is None or not chain:
            run = Replay(quiet, declared=declared)
            parts.append(_Collector(run, settings.window_s))
        run.run(str(source), batch_rows=batch_rows, on_batch=parts[-1])
    for part in parts:
        part.finish()
    names = next((p.names for p in parts if p.names), [])
    chunks = [c for p in parts for c in p.out]
    values = np.vstack([c[0] for c in chunks]) if chunks else np.zeros((0, len(names)))
    firsts, lasts = [p.first for p in parts if p.first is not None], [p.last for p in parts if p.last is not None]
    return WindowSet(
        frame={n: np.ascontiguousarray(values[:, i]) for i, n in enumerate(names)},
        key=np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, dtype=np.uint64),
        attack_id=np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, dtype=object),
        scenario=np.concatenate([c[3] for c in chunks]) if chunks else np.zeros(0, dtype=object),
        first_time=min(firsts) if firsts else None,
        last_time=max(lasts) if lasts else None,
        rows=sum(p.rows for p in parts),
    )


def fit_model(windows: WindowSet, kind: str, **params: Any) -> CohortAnomalyDetector:
    """A ``models.ml`` model of ``kind`` fitted on the windows' frame (labels are not passed)."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; valid kinds: {', '.join(sorted(MODEL_KINDS))}")
    if not len(windows):
        raise ValueError("no closed windows to train on (archives empty, or shorter than one window)")
    return MODEL_KINDS[kind](**params).fit(windows.frame)


def train(sources: Sequence[str | Path], out: str | Path, kind: str, settings: WorkerSettings, declared: Declared | None = None,
          batch_rows: int = 500, chain: bool = False, **params: Any) -> ArtifactMeta:
    """Archives -> windows -> model -> artifact at ``out``; returns the artifact's metadata."""
    windows = collect_windows(sources, settings, declared, batch_rows, chain)
    model = fit_model(windows, kind, **params)
    extra = {"sources": [Path(s).name for s in sources], "windows": len(windows), "summaries": windows.rows,
             "window_s": settings.window_s, "learn_windows": settings.learn_windows, "chain": chain}
    return save_model(model, out, windows.first_time, windows.last_time, extra)


def _cmd(args: Any) -> int:
    settings = WorkerSettings(window_s=args.window_s, learn_windows=args.learn_windows, detectors=[])
    params: dict[str, Any] = {"quantile": args.quantile, "margin": args.margin, "random_state": args.random_state}
    if args.features:
        params["features"] = [f.strip() for f in args.features.split(",") if f.strip()]
    missing = [s for s in args.archives if not Path(s).is_file()]
    if missing:
        print(f"kubeward train: archive(s) not found: {missing}", file=sys.stderr)
        return 2
    meta = train(args.archives, args.out, args.model, settings, _declared(args.specs_dir), args.batch_rows, args.chain, **params)
    print(json.dumps({"artifact": str(args.out), **meta.to_dict()}, indent=2, default=str))
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward train``."""
    p = sub.add_parser("train", help="fit an anomaly model per cohort from Parquet archives of summaries", description=__doc__)
    p.add_argument("archives", nargs="+", help="Parquet files with the RequestSummary schema")
    p.add_argument("--out", required=True, help="where to write the model artifact (skops)")
    p.add_argument("--model", choices=sorted(MODEL_KINDS), default="iforest", help="model kind (default iforest)")
    p.add_argument("--window-s", type=int, default=60, help="actor window in seconds; must match the worker's (default 60)")
    p.add_argument("--learn-windows", type=int, default=3, help="the worker's learning windows (default 3)")
    p.add_argument("--features", help="comma-separated feature names (default: every frame column but is_service and age_windows)")
    p.add_argument("--quantile", type=float, default=0.999, help="benign quantile of training scores mapped to 0.5 (default 0.999)")
    p.add_argument("--margin", type=float, default=1.0, help="0.5 point past the quantile, in units of its distance from the median (default 1)")
    p.add_argument("--random-state", type=int, default=0, help="estimator seed (default 0)")
    p.add_argument("--specs-dir", help="declared OpenAPI specs, as the worker's specs_dir (deprecated endpoints count as retired)")
    p.add_argument("--batch-rows", type=int, default=500, help="rows per replayed batch (default 500)")
    p.add_argument("--chain", action="store_true", help="the archives are consecutive pieces of one stream: keep state across them")
    p.set_defaults(func=_cmd)
