"""Offline evaluation per simulator variant: what enforcement with the shipped detectors would stop, call by call.

``evaluate`` runs every named variant (``ingest.simulator.variants``: attack
and hard-negative scenarios) on held-out seeds through the closed loop of
``deploy.lab.enforcer``: each simulated call is decided by the real shim
decision (``enforcement.decision.decide`` with a real verdict cache fed by
every verdict the worker issued, once ``issued_at + latency_s`` has passed,
inline signatures and request-schema validation as the shim ships them), is
answered by the demo API when allowed (``deploy.lab.offline``), and its summary
is fed to the worker's pipeline through the one replay path
(``streams.replay.Replay``) in batches cut by event time like the worker's
batch window, so verdicts are timed to the call. The worker runs with
``WorkerSettings()`` as shipped (windows, learning period, every detector;
``KUBEWARD_WORKER_*`` read as the worker would), except that its policy is in
**enforce** mode: evaluation measures what enforcement would stop, and the
shim obeys the same policy. The shim runs its shipped settings but for the
inline scan's wall-clock budget (``shim_settings``).

``deploy.lab.scorecard`` counts each run against the simulator's labels
(attackers, detected, requests before the verdict, benign actors and requests
refused, collateral); ``build/evaluate.json`` holds per variant the sums over
seeds, per run the details, totals and the settings. Thresholds were tuned on
seeds 7 and 8; the default seeds are others. It is our own simulator: these
figures check the pipeline, not accuracy on real traffic.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deploy.lab.driver import expected_actor
from deploy.lab.enforcer import EnforcedRun, OfflineShim, covers
from deploy.lab.offline import OfflineDataPlane
from deploy.lab.scorecard import Scorecard, merge_runs
from ingest.errors import SettingsError
from enforcement.settings import InspectionSettings, ShimSettings
from ingest import actor_key
from ingest.honeytokens import HoneytokenSettings
from ingest.identity import IdentityConfig
from streams import Outcome, WorkerSettings
from streams.replay import Batch, Replay
from streams.state import actor_hash

__all__ = ["DEFAULT_SEEDS", "enforcing", "evaluate", "evaluate_run", "render", "shim_settings", "variant_registry", "window_frames"]

PRINCIPAL_KEY = IdentityConfig().principal_key
#: the honeytokens planted in the demo API's data, declared as a deployment would (default keys, as the demo uses)
DEMO_HONEYTOKENS = HoneytokenSettings(file=Path(__file__).resolve().parents[1] / "runtime" / "honeytokens.yaml")
DEFAULT_SEEDS = (101, 102, 103)  # the detectors were tuned on seeds 7 and 8
TOTAL_KEYS = ("attackers", "detected", "stopped", "benign_actors", "benign_actors_blocked", "benign_requests", "benign_requests_denied",
              "collateral_requests", "collateral_requests_denied", "malicious_allowed_after_first_refusal",
              "sensitive_records_after_first_refusal")


def variant_registry() -> tuple[dict[str, Any], Callable[..., Any], str]:
    """(variants by name, ``variant_simulator``, module name): the simulator's registry."""
    from ingest.simulator import variants as registry

    return dict(registry.VARIANTS), registry.variant_simulator, registry.__name__


def enforcing(settings: WorkerSettings | None = None) -> WorkerSettings:
    """The worker's settings (shipped, or given) with the policy in enforce mode everywhere."""
    base = settings if settings is not None else WorkerSettings()
    update: dict[str, Any] = {"policy": base.policy.model_copy(update={"default_mode": "enforce", "modes": {}})}
    if base.honeytokens.file is None:  # the demo deployment declares the honeytokens planted in the demo API's data
        update["honeytokens"] = DEMO_HONEYTOKENS
    return base.model_copy(update=update)


def shim_settings() -> ShimSettings:
    """The shim's shipped settings, but for the inline scan's wall-clock budget, lifted.

    ``inspection.budget_ms`` (50 ms) cuts a scan by wall time: on a loaded machine an ordinary request overran it,
    was denied as ``inspection-budget``, and the worker's ``inline_signature`` rule then blocked its benign actor, so
    results depended on the machine's load. The simulator sends no text crafted to slow the scan.
    """
    return ShimSettings(bootstrap=None, inspection=InspectionSettings(budget_ms=60_000.0), honeytokens=DEMO_HONEYTOKENS)


def _records(row: dict[str, Any]) -> int:
    """Records with sensitive data in an answer: the largest count of one sensitive type."""
    sensitive = row.get("sensitive") or ()
    return max((int(n) for _, n in (sensitive.items() if isinstance(sensitive, dict) else sensitive)), default=0)


def _actor(row: dict[str, Any]) -> str:
    return actor_key(row["source"]["workload"] or row["source"]["ip"], row["principal"])


def evaluate_run(variant: str, seed: int, seconds: float, rate: float = 100.0, users: int = 2000, warmup_s: float = 300.0,
                 latency_s: float = 0.05, settings: WorkerSettings | None = None, simulator: Callable[..., Any] | None = None) -> dict[str, Any]:
    """One variant on one seed through the enforced loop; the scorecard's counts plus events, batches, verdicts and CPU seconds."""
    started, cpu = time.perf_counter(), time.process_time()
    settings = enforcing(settings)
    sim = (simulator or variant_registry()[1])(variant, seed, seconds, rate=rate, users=users, warmup_s=warmup_s)
    plane = OfflineDataPlane(seed, users)
    card = Scorecard(variant)

    def on_call(call: Any, view: Any, decision: Any, row: dict[str, Any]) -> None:
        card.see(call.scenario, call.attack_id, call.malicious, _actor(row), decision.status in (403, 429),
                 _records(row) if decision.status == 200 else 0, view, (view.subject_keys(), view.service, view.method, view.path), decision.reason)

    run = EnforcedRun(plane, OfflineShim(settings.policy, latency_s, shim_settings()), Replay(settings, declared=plane.declared), settings.batch_within_s, on_call)
    stats = run.run(sim.calls(seconds))
    result = card.result(stats.verdicts, covers)
    return {"variant": variant, "seed": seed, "events": stats.calls, "batches": stats.batches, "verdicts": len(stats.verdicts),
            "wall_seconds": round(time.perf_counter() - started, 1), "cpu_seconds": round(time.process_time() - cpu, 1), **result}


def _summary(name: str, info: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    merged = merge_runs(runs)
    return {"class": info.attack_class, "kind": info.kind, "owasp": getattr(info, "owasp", ""), "seeds": [r["seed"] for r in runs],
            **merged, "events": sum(r["events"] for r in runs), "seconds": round(sum(r["wall_seconds"] for r in runs), 1),
            "cpu_seconds": round(sum(r["cpu_seconds"] for r in runs), 1),
            "runs": runs}


def _totals(variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {k: sum(v[k] for v in variants.values()) for k in TOTAL_KEYS}
    out["detected_share"] = round(out["detected"] / out["attackers"], 4) if out["attackers"] else None
    out["benign_actors_blocked_share"] = round(out["benign_actors_blocked"] / out["benign_actors"], 6) if out["benign_actors"] else None
    out["benign_requests_denied_share"] = round(out["benign_requests_denied"] / out["benign_requests"], 6) if out["benign_requests"] else None
    out["events"] = sum(v["events"] for v in variants.values())
    out["seconds"] = round(sum(v["seconds"] for v in variants.values()), 1)
    out["cpu_seconds"] = round(sum(v["cpu_seconds"] for v in variants.values()), 1)
    return out


def evaluate(variants: Sequence[str] | None = None, seeds: Sequence[int] = DEFAULT_SEEDS, seconds: float = 540.0, rate: float = 50.0,
             users: int = 2000, warmup_s: float = 300.0, latency_s: float = 0.05, progress: Callable[[str], None] | None = None, jobs: int = 1,
             batch_s: float | None = None) -> dict[str, Any]:
    """Every (or the named) variant on every seed (see the module docstring): the ``build/evaluate.json`` document.

    ``jobs`` > 1 runs that many (variant, seed) runs at once in worker processes (each run is independent).
    ``batch_s`` replaces the worker's batch window (event seconds gathered per batch; shipped 0.005 s): larger batches
    cost less CPU and only delay verdicts (seeds 7, bola and credential-stuffing: 0.25 s costs 4.1x less CPU and
    the median verdict comes 2 requests later), so a figure measured with them is conservative.
    """
    if batch_s is not None and not batch_s > 0:
        raise SettingsError(f"batch_s={batch_s!r}: must be a positive number of seconds")
    registry, simulator, source = variant_registry()
    names = list(variants) if variants else sorted(registry)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ValueError(f"variants {unknown} are unknown; valid: {', '.join(sorted(registry))}")
    settings = enforcing()
    if batch_s is not None:
        settings = settings.model_copy(update={"batch_within_s": batch_s})
    tasks = [(name, seed) for name in names for seed in seeds]
    done: dict[tuple[str, int], dict[str, Any]] = {}

    def note(i: int, task: tuple[str, int], result: dict[str, Any]) -> None:
        done[task] = result
        if progress is not None:
            progress(f"[{i}/{len(tasks)}] {task[0]} seed {task[1]}: {result['events']} events, {result['detected']}/{result['attackers']} detected, "
                     f"{result['cpu_seconds']} CPU s ({seconds:.0f} s at {rate:.0f} benign calls/s)")

    args = (seconds, rate, users, warmup_s, latency_s, settings, simulator)
    if jobs <= 1:
        for i, task in enumerate(tasks, 1):
            note(i, task, evaluate_run(*task, *args))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(jobs) as pool:
            futures = {pool.submit(evaluate_run, *task, *args): task for task in tasks}
            for i, future in enumerate(as_completed(futures), 1):
                note(i, futures[future], future.result())
    out = {name: _summary(name, registry[name], [done[(name, seed)] for seed in seeds]) for name in names}
    worker = {"window_s": settings.window_s, "learn_windows": settings.learn_windows, "detectors": settings.detector_names(),
              "batch_within_s": settings.batch_within_s, "batch_within_s_shipped": WorkerSettings.model_fields["batch_within_s"].default,
              "score_threshold": settings.score_threshold, "policy_mode": "enforce",
              "verdict_ttl_s": settings.policy.verdict_ttl_s}
    return {"variants": out, "totals": _totals(out),
            "settings": {"seeds": list(seeds), "seconds": seconds, "rate": rate, "users": users, "warmup_s": warmup_s, "latency_s": latency_s,
                         "variant_source": source, "worker": worker, "shim": {"inspection_budget_ms": shim_settings().inspection.budget_ms},
                         "note": "policy in enforce mode: the figures are what enforcement would stop, shim and worker in one process"}}


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _settings_line(report: dict[str, Any]) -> str:
    """'worker settings as shipped', or which of them the run changed."""
    worker = report.get("settings", {}).get("worker", {})
    used, shipped = worker.get("batch_within_s"), worker.get("batch_within_s_shipped", worker.get("batch_within_s"))
    if used == shipped:
        return "worker settings as shipped"
    return f"worker settings as shipped but batches of {used:g} s of events (shipped {shipped:g} s: verdicts come sooner)"


def render(report: dict[str, Any]) -> str:
    """The per-variant table of a report."""
    head = (f"{'variant':<28} {'class':<20} {'kind':<8} {'detected':>9} {'stopped':>8} {'req<verdict':>11} {'sens.rec':>8} {'passed after':>12} "
            f"{'benign act. blocked':>20} {'benign req. denied':>22} {'collateral':>12} {'events':>8} {'cpu s':>6}")
    lines = [f"policy in enforce mode: what enforcement would stop ({_settings_line(report)})", head]
    for name, v in report["variants"].items():
        lines.append(f"{name:<28} {v['class']:<20} {v['kind']:<8} {v['detected']:>4}/{v['attackers']:<4} {v['stopped']:>3}/{v['attackers']:<4} "
                     f"{_fmt(v['requests_before_verdict_median']):>11} {_fmt(v['sensitive_records_before_verdict_max']):>8} {v['malicious_allowed_after_first_refusal']:>12} "
                     f"{v['benign_actors_blocked']:>9}/{v['benign_actors']:<10} {v['benign_requests_denied']:>9}/{v['benign_requests']:<12} "
                     f"{v['collateral_requests_denied']:>5}/{v['collateral_requests']:<6} {v['events']:>8} {v['cpu_seconds']:>6}")
    t = report["totals"]
    lines.append(f"{'total':<28} {'':<20} {'':<8} {t['detected']:>4}/{t['attackers']:<4} {t['stopped']:>3}/{t['attackers']:<4} {'':>11} {'':>8} {t['malicious_allowed_after_first_refusal']:>12} "
                 f"{t['benign_actors_blocked']:>9}/{t['benign_actors']:<10} {t['benign_requests_denied']:>9}/{t['benign_requests']:<12} "
                 f"{t['collateral_requests_denied']:>5}/{t['collateral_requests']:<6} {t['events']:>8} {t['cpu_seconds']:>6}")
    return "\n".join(lines)


def _cmd(args: Any) -> int:
    import json
    from pathlib import Path

    report = evaluate(args.variants, args.seeds, args.seconds, args.rate, args.users, args.warmup, args.latency_s,
                      progress=lambda msg: print(msg, file=sys.stderr, flush=True), jobs=args.jobs, batch_s=args.batch_s)
    print(render(report))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward evaluate``."""
    p = sub.add_parser("evaluate", help="per-variant detection and enforcement results on simulated traffic (held-out seeds)", description=__doc__)
    p.add_argument("--variants", nargs="+", help="variant names (default: every registered variant)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS), help="simulation seeds (default 101 102 103; tuning used 7 and 8)")
    p.add_argument("--seconds", type=float, default=540.0, help="simulated seconds per run (default 540: 300 s warmup, >= 240 s of attack)")
    p.add_argument("--rate", type=float, default=50.0, help="benign calls per second (default 50)")
    p.add_argument("--users", type=int, default=2000, help="end users (default 2000)")
    p.add_argument("--warmup", type=float, default=300.0, help="seconds before any attack starts (default 300: the shipped 3 learning windows of 60 s, and more)")
    p.add_argument("--latency-s", type=float, default=0.05, help="verdict delivery latency, worker to shim (default 0.05)")
    p.add_argument("--jobs", type=int, default=1, help="runs in parallel worker processes (default 1)")
    p.add_argument("--batch-s", type=float, help="event seconds per worker batch (default: the worker's, 0.005 s); 0.25 costs ~4x less CPU "
                   "and only delays verdicts (conservative); the report and the table name it")
    p.add_argument("--out", default="build/evaluate.json", help="JSON report (default build/evaluate.json; empty: none)")
    p.set_defaults(func=_cmd)


def window_frames(seed: int, seconds: float = 120.0, rate: float = 1000.0, users: int = 3000, attacks: bool = True) -> tuple[dict[str, Any], Any]:
    """Feature rows of every actor after every batch, with a label (1 = the actor is an attacker).

    The replay path with the worker's shipped settings (no shim deciding: every
    call answered); the rows are what the detectors score live, for notebooks.
    """
    import numpy as np

    from ingest.simulator import ClusterSimulator, plan_attacks

    plans = plan_attacks(seed, seconds, min(60.0, seconds / 3)) if attacks else []
    sim = ClusterSimulator(seed=seed, users=users, start_time=1.8e9, attacks=plans, benign_rate_eps=rate)
    calls = list(sim.calls(seconds))
    actor_of = [expected_actor(c, PRINCIPAL_KEY) for c in calls]
    bad = {a for a, c in zip(actor_of, calls) if c.malicious}
    plane = OfflineDataPlane(seed, users)
    run = Replay(WorkerSettings(), declared=plane.declared)
    frames: list[dict[str, Any]] = []
    labels: list[Any] = []
    done = 0

    def after(batch: Batch, out: Outcome) -> None:
        """The frame of the actors of this batch, right after it was folded in."""
        nonlocal done
        actors = sorted(set(actor_of[done : done + len(batch)]))
        done += len(batch)
        proc = run.processor()
        found, _ = proc.store.rows_for(np.array([actor_hash(a) for a in actors], dtype=np.uint64))
        frames.append(proc.frame(found))
        labels.append(np.array([a in bad for a in actors]))

    run.run(plane.rows(calls, "w"), batch_rows=500, on_batch=after)
    merged = {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}
    return merged, np.concatenate(labels)
