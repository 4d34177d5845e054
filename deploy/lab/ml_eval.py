"""Do the scikit-learn models earn their place? Models against the threshold rules at equal false positives.

``archive(seed, path, ...)`` writes a simulated run as a Parquet archive of the
summary stream, the way a collector would have produced it (the offline data
plane: the driver's requests, the demo API's answers, Kubeward's derivation),
with ground truth riding along for scoring only. Besides the simulator's own
attackers (``plan_attacks``) a test run adds *slow* variants of every kind:
the same generators at a fraction of the rate over most of the run, which is
how an attacker stays under a per-window threshold.

``compare`` trains each model (``deploy.train``: Parquet -> closed window
frames through the replay path -> fit, labels never read) on the tuning seeds'
archives, then scores the closed windows of held-out seeds with the rules (the
shipped ``models.detectors``, unfitted, as the worker runs them) and with each
model. The model's threshold is chosen so its false-positive rate on benign
windows equals the rules' (and, separately, the model is also reported at its
own calibrated 0.5). Recall is per attacker (any window of its attack flagged)
and per malicious window, by attack kind and variant.

It is our own simulator: these figures compare detectors on the same traffic,
they are not accuracy on real traffic. Run it with
``python -m deploy.lab.ml_eval --out build/ml-eval.json`` (archives are made in
``--workdir`` when missing: 180 s at 500 benign calls/s per seed by default).
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from deploy.train import WindowSet, collect_windows, fit_model
from ingest.simulator import ATTACK_KINDS, AttackPlan, ClusterSimulator, plan_attacks
from models import build_detectors
from models.ml import MODEL_KINDS
from streams import WorkerSettings

__all__ = ["archive", "compare", "main", "score_speed", "slow_plans"]

#: calls/s of the slow variants, drawn per attacker (the simulator's own rates are 10-40x higher)
SLOW_RATES: dict[str, tuple[float, float]] = {
    "bola": (0.5, 1.5),
    "exfiltration": (0.5, 1.5),
    "credential_stuffing": (0.2, 0.6),
    "injection": (0.1, 0.3),
    "retired_api": (0.1, 0.3),
    "lateral_movement": (0.05, 0.2),
}


def slow_plans(seed: int, seconds: float, warmup: float, per_kind: int = 2) -> list[AttackPlan]:
    """Slow attackers of every kind, running from a random start after ``warmup`` to near the end."""
    rng = random.Random(f"{seed}:slow")
    plans = []
    for kind in ATTACK_KINDS:
        low, high = SLOW_RATES.get(kind, (0.2, 0.5))
        for k in range(per_kind):
            start = rng.uniform(warmup, warmup + 0.25 * (seconds - warmup))
            plans.append(AttackPlan(kind, f"{kind}-slow-{k + 1}", start, seconds - start - 1.0, round(rng.uniform(low, high), 3)))
    return plans


def archive(seed: int, path: Path, seconds: float, rate: float, users: int, slow: bool, per_kind: int = 2) -> int:
    """Write one simulated run as a Parquet archive through the offline data plane; returns rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deploy.lab.offline import OfflineDataPlane
    from ingest.envelope import SUMMARY_SCHEMA

    warmup = min(60.0, seconds / 3)
    plans = plan_attacks(seed, seconds, warmup, per_kind) + (slow_plans(seed, seconds, warmup, per_kind) if slow else [])
    sim = ClusterSimulator(seed=seed, users=users, start_time=1.8e9, attacks=plans, benign_rate_eps=rate)
    plane = OfflineDataPlane(seed, users)
    n, chunk = 0, []
    with pq.ParquetWriter(str(path), SUMMARY_SCHEMA) as writer:
        for row in plane.rows(sim.calls(seconds), f"s{seed}-"):
            chunk.append(row)
            if len(chunk) >= 20_000:
                writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=SUMMARY_SCHEMA))
                n, chunk = n + len(chunk), []
        if chunk:
            writer.write_batch(pa.RecordBatch.from_pylist(chunk, schema=SUMMARY_SCHEMA))
    return n + len(chunk)


def _rule_scores(frame: dict[str, npt.NDArray[np.float64]], settings: WorkerSettings) -> npt.NDArray[np.float64]:
    """The best score of the shipped actor-keyed rules (unfitted, as the worker builds them) per window."""
    rules = [r for r in build_detectors(settings.detector_names()) if getattr(r, "key", "actor") == "actor"]
    return np.asarray(np.max(np.vstack([r.score_many(frame) for r in rules]), axis=0), dtype=np.float64)


def _equal_fp_threshold(benign: npt.NDArray[np.float64], fp_rate: float) -> float:
    """The lowest threshold t with (benign > t) no more frequent than ``fp_rate``."""
    if not len(benign):
        return 0.5
    allowed = int(np.floor(fp_rate * len(benign) + 1e-9))
    ordered = np.sort(benign)[::-1]
    return float(ordered[allowed]) if allowed < len(ordered) else -np.inf


def _recall(fire: npt.NDArray[np.bool_], windows: WindowSet, benign: npt.NDArray[np.bool_]) -> dict[str, Any]:
    """False-positive rate on benign windows; recall per attack kind and variant (per attacker and per window)."""
    out: dict[str, Any] = {"benign_windows": int(benign.sum()), "benign_windows_flagged": int(fire[benign].sum()),
                           "fp_rate": float(fire[benign].mean()) if benign.any() else 0.0, "by_kind": {}}
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for i in np.nonzero(windows.attack_id != "")[0]:
        variant = "slow" if "-slow-" in str(windows.attack_id[i]).split("/")[-1] else "easy"
        groups[f"{windows.scenario[i]}:{variant}"][str(windows.attack_id[i])].append(bool(fire[i]))
    for name, attackers in sorted(groups.items()):
        out["by_kind"][name] = {"attackers": len(attackers), "detected": sum(any(v) for v in attackers.values()),
                                "windows": sum(len(v) for v in attackers.values()),
                                "windows_flagged": sum(sum(v) for v in attackers.values())}
    return out


def _test_windows(archives: Sequence[Path], settings: WorkerSettings, declared: Any) -> WindowSet:
    """Closed windows of every test archive (each replayed on its own), attacker ids made unique per archive."""
    sets = [collect_windows([a], settings, declared) for a in archives]
    ids = [np.array([f"{a.stem}/{x}" if x else "" for x in s.attack_id], dtype=object) for a, s in zip(archives, sets)]
    names = list(sets[0].frame)
    return WindowSet({n: np.concatenate([s.frame[n] for s in sets]) for n in names}, np.concatenate([s.key for s in sets]),
                     np.concatenate(ids), np.concatenate([s.scenario for s in sets]), None, None, sum(s.rows for s in sets))


def score_speed(model: Any, frame: dict[str, npt.NDArray[np.float64]], rows: int = 1000, repeat: int = 20) -> dict[str, float]:
    """Microseconds per row of one ``score_many`` call on ``rows`` windows: CPU and wall, best of ``repeat``."""
    import time

    sample = {k: np.resize(v, rows) for k, v in frame.items()}
    cpu = wall = float("inf")
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        model.score_many(sample)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return {"cpu_us_per_row": round(1e6 * cpu / rows, 2), "wall_us_per_row": round(1e6 * wall / rows, 2)}


def compare(tune: Sequence[Path], test: Sequence[Path], settings: WorkerSettings, declared: Any = None,
            kinds: Sequence[str] = tuple(sorted(MODEL_KINDS)), **params: Any) -> dict[str, Any]:
    """Rules against each model on held-out archives at equal benign-window false-positive rate."""
    train_windows = collect_windows(tune, settings, declared)
    windows = _test_windows(test, settings, declared)
    attackers = set(windows.key[windows.attack_id != ""].tolist())
    benign = np.array([k not in attackers for k in windows.key.tolist()], dtype=bool)
    rules = _rule_scores(windows.frame, settings) >= settings.score_threshold
    report: dict[str, Any] = {"train_windows": len(train_windows), "test_windows": len(windows), "rules": _recall(rules, windows, benign)}
    for kind in kinds:
        model = fit_model(train_windows, kind, **params)
        scores = model.score_many(windows.frame)
        t = _equal_fp_threshold(scores[benign], report["rules"]["fp_rate"])
        fire_eq = scores > t
        report[kind] = {"threshold_at_equal_fp": t, "at_equal_fp": _recall(fire_eq, windows, benign),
                        "at_0.5": _recall(scores >= 0.5, windows, benign),
                        "rules_or_model_at_equal_fp": _recall(rules | fire_eq, windows, benign),
                        "score_many_1000_rows": score_speed(model, windows.frame), "features": list(model.features_)}
    return report


def _print(report: dict[str, Any]) -> None:
    cols = [("rules", report["rules"])]
    for kind in sorted(MODEL_KINDS):
        if kind in report:
            cols += [(f"{kind}@eqFP", report[kind]["at_equal_fp"]), (f"{kind}@0.5", report[kind]["at_0.5"]),
                     (f"rules|{kind}", report[kind]["rules_or_model_at_equal_fp"])]
    print(f"{'':<36}" + "".join(f"{name:>16}" for name, _ in cols))
    print(f"{'benign windows flagged':<36}" + "".join(f"{c['benign_windows_flagged']:>9}/{c['benign_windows']:<6}" for _, c in cols))
    for group in sorted(report["rules"]["by_kind"]):
        cells = [c["by_kind"].get(group, {"detected": 0, "attackers": 0, "windows_flagged": 0, "windows": 0}) for _, c in cols]
        print(f"{group + ' attackers':<36}" + "".join(f"{x['detected']:>9}/{x['attackers']:<6}" for x in cells))
        print(f"{group + ' windows':<36}" + "".join(f"{x['windows_flagged']:>9}/{x['windows']:<6}" for x in cells))
    for kind in sorted(MODEL_KINDS):
        if kind in report:
            speed = report[kind]["score_many_1000_rows"]
            print(f"{kind}: score_many on 1,000 windows {speed['cpu_us_per_row']} us CPU/row ({speed['wall_us_per_row']} us wall); "
                  f"threshold at equal FP {report[kind]['threshold_at_equal_fp']:.4f}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m deploy.lab.ml_eval``: archives (made with --make-archives if missing), then the comparison."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m deploy.lab.ml_eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="build/ml-eval", help="where the archives are (default build/ml-eval)")
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[7, 8])
    p.add_argument("--test-seeds", type=int, nargs="+", default=[101, 102, 103])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--rate", type=float, default=500.0)
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--window-s", type=int, default=10)
    p.add_argument("--learn-windows", type=int, default=2)
    p.add_argument("--out", help="also write the report as JSON here")
    args = p.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seed in args.tune_seeds + args.test_seeds:
        paths[seed] = work / f"seed{seed}.parquet"
        if not paths[seed].exists():
            archive(seed, paths[seed], args.seconds, args.rate, args.users, slow=seed in args.test_seeds)
    from deploy.lab.offline import OfflineDataPlane

    settings = WorkerSettings(window_s=args.window_s, learn_windows=args.learn_windows)
    declared = OfflineDataPlane(args.test_seeds[0], args.users).declared
    report = compare([paths[s] for s in args.tune_seeds], [paths[s] for s in args.test_seeds], settings, declared)
    _print(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
