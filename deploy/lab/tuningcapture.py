"""Labelled key frames from one replay of an archive: what detection tuning sweeps (``deploy.lab.tuning``).

``capture(source, labels, settings, rules)`` replays an archive once through the
worker's ``Pipeline`` (``streams.replay.Replay``) and keeps, after every batch,
the feature frame of every key the batch touched, read from the processor's own
state (``BatchProcessor.frame``: after the batch, the frame its flagger scored
in that batch): actors, and client addresses for the per-source rules
(credential stuffing). Only the columns the given rules read are kept. The
pipeline's output (detections, with reasons naming detector ids and evidence)
is kept too; ``flagged_keys`` reads it per key space.

Keys are labelled from request labels: a key is an *attacker* when one of its
requests is labelled malicious (its attack classes: ``attack_class_of`` its
scenarios), *benign* when its labelled requests all are benign. Ground truth
never reaches the pipeline: ``split_truth`` takes it out of an archive (request
id -> ``Label``) and nulls the column, and ``capture`` nulls it again before
replaying. ``parse_labels`` reads the JSON lines ``kubeward simulate --labels``
writes.

``simulated_archive`` writes the simulated cluster through the offline data
plane (``deploy.lab.ml_eval.archive``), ``declared_endpoints`` gives the specs
its replay needs. Apart from those two and reading the Parquet file given,
nothing here does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.rules import Rule
from streams import Outcome, Replay, ReplayResult, WorkerSettings
from streams.batch import BatchView, hash64
from streams.replay import Batch

__all__ = [
    "Capture", "KeyFrames", "Label", "attack_class_of", "capture", "declared_endpoints", "flagged_keys", "parse_labels",
    "rule_columns", "simulated_archive", "split_truth",
]

_F = npt.NDArray[np.float64]
_I = npt.NDArray[np.intp]
Archive = Union[str, Path, pa.Table]
#: the age column each key's ``learn_windows`` reads (as ``models.detectors``)
_AGE = {"actor": "age_windows", "source": "source_age_windows"}


# --- ground truth ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """Ground truth of one request: malicious or not, and the scenario and attack id when malicious."""

    malicious: bool
    scenario: str | None = None
    attack_id: str | None = None


def split_truth(table: pa.Table) -> tuple[pa.Table, dict[str, Label]]:
    """(the table with ``ground_truth`` nulled, request id -> ``Label``); a table without the column has no labels."""
    if "ground_truth" not in table.column_names:
        return table, {}
    truth = table.column("ground_truth").to_pylist()
    labels = {str(rid): Label(bool(t and t.get("malicious")), (t or {}).get("scenario"), (t or {}).get("attack_id"))
              for rid, t in zip(table.column("id").to_pylist(), truth)}
    return _nulled(table), labels


def _nulled(table: pa.Table) -> pa.Table:
    if "ground_truth" not in table.column_names:
        return table
    i = table.schema.get_field_index("ground_truth")
    f = table.schema.field(i)
    return table.set_column(i, f, pa.nulls(table.num_rows, f.type))


def parse_labels(lines: Iterable[str]) -> dict[str, Label]:
    """Labels from JSON lines ``{"id", "malicious", "scenario", "attack_id"}`` (``kubeward simulate --labels``)."""
    out: dict[str, Label] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        doc = json.loads(line)
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("malicious"), bool):
            raise ValueError(f"labels line {n}: expected {{\"id\": str, \"malicious\": bool, ...}}, got {line[:80]!r}")
        out[doc["id"]] = Label(doc["malicious"], doc.get("scenario"), doc.get("attack_id"))
    return out


def attack_class_of(scenario: str | None) -> str | None:
    """The attack class of a simulator scenario: a named variant's, or the class of one of ``plan_attacks``' kinds."""
    from ingest.simulator import VARIANTS
    from ingest.simulator.easy import EASY

    if scenario is None or scenario == "benign":
        return None
    if scenario in VARIANTS:
        return VARIANTS[scenario].attack_class
    by_kind = {kind: cls for kind, cls, _, _ in EASY.values()}
    return by_kind.get(scenario, scenario)


def simulated_archive(seed: int, path: str | Path, seconds: float, rate: float, users: int = 3000, attacks: bool = True,
                      per_kind: int = 2) -> int:
    """Write the simulated cluster as a Parquet archive of the summary stream; returns the rows written.

    ``deploy.lab.ml_eval.archive``: the simulator's calls through the offline data plane (the demo API's answers,
    Kubeward's own derivation of identities, logins, objects and sensitive data), as a collector would have archived
    them, with ``per_kind`` attackers of every kind of ``plan_attacks`` and as many slow ones (the same generators at a
    fraction of the rate: the ones a floor decides); none without ``attacks``. Ground truth rides in the
    ``ground_truth`` column (``split_truth`` takes it out). Replay it with ``declared_endpoints(seed, users)``.
    """
    from deploy.lab.ml_eval import archive

    return archive(seed, Path(path), seconds, rate, users, slow=attacks, per_kind=per_kind if attacks else 0)


def declared_endpoints(seed: int, users: int = 3000) -> dict[str, dict[tuple[str, str], bool]]:
    """The endpoints the simulated cluster's specs declare (service -> {(method, template): deprecated}), as the worker
    reads them from its ``specs_dir``: what ``Replay(declared=...)`` takes for a ``simulated_archive``."""
    from deploy.lab.offline import OfflineDataPlane

    return {svc: dict(spec) for svc, spec in OfflineDataPlane(seed, users).declared.items()}


# --- capture --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyFrames:
    """Frames of one key space (``actor`` or ``source``) captured after every batch.

    ``frame`` holds the kept columns, one entry per (batch, key touched); ``key_index[i]`` is the key of entry ``i``
    in ``keys`` (the pipeline's labels: actor keys, client addresses); ``time`` the batch's newest event time.
    """

    key: str
    keys: tuple[str, ...]
    key_index: _I
    frame: dict[str, _F]
    time: _F

    def __len__(self) -> int:
        return len(self.key_index)


@dataclass(frozen=True)
class Capture:
    """One replay: the key frames, the truth of every key, and what the pipeline produced.

    ``attackers[space][key]`` is the attack classes of the key's malicious requests; ``benign[space]`` the keys whose
    labelled requests are all benign.
    """

    frames: Mapping[str, KeyFrames]
    attackers: Mapping[str, Mapping[str, frozenset[str]]]
    benign: Mapping[str, frozenset[str]]
    result: ReplayResult
    score_threshold: float


class _Space:
    """What is gathered for one key space during a replay."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self.index: dict[str, int] = {}
        self.chunks: list[tuple[_I, dict[str, _F], float]] = []
        self.malicious: dict[str, set[str]] = {}
        self.labelled: set[str] = set()

    def ids(self, names: Sequence[str]) -> _I:
        return np.array([self.index.setdefault(n, len(self.index)) for n in names], dtype=np.intp)

    def keep(self, names: Sequence[str], frame: Mapping[str, _F], time: float) -> None:
        if self.columns and len(names):
            self.chunks.append((self.ids(names), {c: np.asarray(frame[c], dtype=np.float64) for c in self.columns if c in frame}, time))

    def see(self, name: str | None, label: Label | None) -> None:
        if name is None or label is None:
            return
        self.labelled.add(name)
        if label.malicious:
            self.malicious.setdefault(name, set()).add(attack_class_of(label.scenario) or "unknown")

    def frames(self, key: str) -> KeyFrames:
        names = sorted({c for _, f, _ in self.chunks for c in f})
        n = sum(len(i) for i, _, _ in self.chunks)
        cols = {c: np.concatenate([f.get(c, np.zeros(len(i))) for i, f, _ in self.chunks]) if n else np.zeros(0) for c in names}
        index = np.concatenate([i for i, _, _ in self.chunks]) if n else np.zeros(0, dtype=np.intp)
        time = np.concatenate([np.full(len(i), t) for i, _, t in self.chunks]) if n else np.zeros(0)
        return KeyFrames(key, tuple(self.index), index, cols, time)


class _Recorder:
    """``on_batch`` of the replay: the frames of the keys the batch touched, right after the pipeline folded it."""

    def __init__(self, run: Replay, labels: Mapping[str, Label], columns: Mapping[str, Sequence[str]]) -> None:
        self.run, self.labels = run, labels
        self.spaces = {key: _Space(columns.get(key, ())) for key in ("actor", "source")}

    def __call__(self, batch: Batch, outcome: Outcome) -> None:
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else pa.Table.from_pylist(batch)
        view = BatchView.decode(table)
        proc, t = self.run.processor(), float(view.time.max())
        rows = proc.store.find(hash64(view.actor_keys))  # the actor keys, hashed as the processor hashes them
        found = rows >= 0
        if found.any() and self.spaces["actor"].columns:
            self.spaces["actor"].keep([view.actors[i] for i in np.flatnonzero(found)], proc.frame(rows[found]), t)
        ips = view.source_ip.to_pylist()
        self._sources(proc, view, ips, t)
        ids = table.column("id").to_pylist()
        for i, rid in enumerate(ids):
            label = self.labels.get(str(rid))
            self.spaces["actor"].see(view.actors[int(view.actor_of_row[i])], label)
            self.spaces["source"].see(str(ips[i]) if view.source_ip_hash[i] else None, label)

    def _sources(self, proc: Any, view: BatchView, ips: list[Any], t: float) -> None:
        space = proc.spaces.get("source")
        if space is None or not self.spaces["source"].columns:
            return
        present = np.flatnonzero(view.source_ip_hash != 0)
        uniq, first = np.unique(view.source_ip_hash[present], return_index=True)
        rows = space.store.find(uniq)
        found = rows >= 0
        if found.any():
            names = [str(ips[present[j]]) for j in first[found]]
            self.spaces["source"].keep(names, proc.frame(rows[found], "source"), t)


def rule_columns(rule: Rule) -> list[str]:
    """The frame columns a rule's score reads."""
    cols = [rule.feature, "is_service", _AGE[rule.key], f"cohort:{rule.feature}"]
    cols += [rule.baseline] if rule.baseline else []
    return cols + [c.feature for c in rule.when]


def capture(source: Archive, labels: Mapping[str, Label], settings: WorkerSettings, rules: Sequence[Rule] = (),
            batch_rows: int = 500, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None) -> Capture:
    """Replay ``source`` once with ``settings`` and keep the frames ``rules`` read (see the module docstring).

    ``labels`` (request id -> ``Label``) are used to label keys only; the replayed rows carry no ground truth.
    With no ``rules`` only the keys' truth and the pipeline's output are kept.
    """
    if not isinstance(source, pa.Table):
        import pyarrow.parquet as pq

        source = pq.read_table(str(source))
    columns: dict[str, list[str]] = {}
    for rule in rules:
        cols = columns.setdefault(rule.key, [])
        cols += [c for c in dict.fromkeys(rule_columns(rule)) if c not in cols]
    run = Replay(settings, declared=declared)
    recorder = _Recorder(run, labels, columns)
    result = run.run(_nulled(source), batch_rows=batch_rows, on_batch=recorder)
    spaces = recorder.spaces
    return Capture(
        frames={key: s.frames(key) for key, s in spaces.items() if s.columns},
        attackers={key: {k: frozenset(v) for k, v in s.malicious.items()} for key, s in spaces.items()},
        benign={key: frozenset(s.labelled - set(s.malicious)) for key, s in spaces.items()},
        result=result, score_threshold=settings.score_threshold,
    )


def flagged_keys(result: ReplayResult, rule_id: str | None = None) -> dict[str, set[str]]:
    """Keys the pipeline raised a detection for (by key space: ``actor``, ``source``), optionally only with ``rule_id`` among its reasons."""
    out: dict[str, set[str]] = {"actor": set(), "source": set()}
    for det in result.detections:
        if rule_id is None or any(r.detector == rule_id for r in det.reasons):
            out["source" if det.subject_kind == "ip" else "actor"].add(det.actor)
    return out
