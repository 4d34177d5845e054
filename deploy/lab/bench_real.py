"""The real-traffic part of ``kubeward bench`` (``--real-traffic-only``): proxies with the shim vs plain, the collector,
inline inspection and redaction, templating and sensitive data (DEV).

``bench_real_traffic(work, quick)`` runs them and returns the raw figures;
``real_traffic_summary`` flattens them into the keys of ``build/bench.json``'s
``summary``. The datasets folder is ``KUBEWARD_DATASETS`` (default
``../shared/datasets``); figures that need it are skipped, and say so, without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["DATASETS", "bench_real_traffic", "real_traffic_summary", "say"]

REPO = Path(__file__).resolve().parents[2]
DATASETS = Path(os.environ.get("KUBEWARD_DATASETS", str(REPO.parent / "shared" / "datasets")))


def say(msg: str) -> None:
    """One progress line of the benchmarks."""
    print(f"[bench] {msg}", flush=True)


def bench_real_traffic(work: Path, quick: bool) -> dict[str, Any]:
    """The real-traffic figures: proxies with the shim vs plain, the collector, templating and sensitive data (dev)."""
    from deploy.lab.bench_collectors import bench_collectors
    from deploy.lab.bench_dataplanes import bench_dataplanes
    from deploy.runtime.stack import LocalStack

    say("data planes: Envoy and nginx with the shim vs plain, realistic identities and paths")
    out: dict[str, Any] = {"dataplanes": bench_dataplanes(work / "dataplanes", seconds=4 if quick else 8)}
    say("collector: access-log files parsed, summarised and published to a real broker")
    (work / "collector-files").mkdir(parents=True, exist_ok=True)
    with LocalStack(work / "collector", with_worker=False, with_shim=False) as stack:
        out["collectors"] = bench_collectors(5.0 if quick else 10.0, stack.bootstrap, workdir=work / "collector-files")
    from deploy.lab.bench_inspection import inspection_figures

    say("inline inspection: us per clean request and per KB of JSON body, in-process, shipped rules and settings")
    out["inspection"] = inspection_figures()
    if DATASETS.is_dir():
        from deploy.lab.redaction_eval import redaction_figures

        say("inline redaction: us per KB and DEV precision/recall per type")
        out["redaction"] = redaction_figures(DATASETS)
    if DATASETS.is_dir():
        from deploy.lab.sensitive_eval import evaluate_sensitive
        from deploy.lab.templating_eval import evaluate_templating

        say(f"templating on the public specs in {DATASETS / 'openapi-specs'} (seed 2, not used for tuning)")
        out["templating"] = evaluate_templating(DATASETS / "openapi-specs", seed=2, values_per_param=5)
        say("sensitive data on the dev datasets (DEV figures)")
        out["sensitive"] = evaluate_sensitive(DATASETS)
    else:
        say(f"{DATASETS} not found (set KUBEWARD_DATASETS): templating and sensitive-data figures skipped")
    return out


def real_traffic_summary(real: dict[str, Any]) -> dict[str, Any]:
    planes = real["dataplanes"]
    flat = {
        "envoy.ratio_vs_plain": planes["envoy"]["ratio_vs_plain"],
        "envoy.added_p99_ms": planes["envoy"]["added_p99_ms"],
        "envoy.requests_measured": planes["envoy"]["with_shim"]["requests"],
        "nginx.ratio_vs_plain": planes["nginx"]["ratio_vs_plain"],
        "nginx.added_p99_ms": planes["nginx"]["added_p99_ms"],
        "envoy.constant_check_ratio_vs_plain": planes["envoy"]["constant_check_ratio_vs_plain"],
        "nginx.constant_check_ratio_vs_plain": planes["nginx"]["constant_check_ratio_vs_plain"],
        "collectors.entries_per_cpu_second": round(real["collectors"]["entries_per_cpu_second"]),
    }
    flat["inspection.us_per_request_p50"] = real["inspection"]["us_per_request_p50"]
    flat["inspection.us_per_kb"] = real["inspection"]["us_per_kb"]
    flat["inspection.crafted_60kb_ms_p50"] = real["inspection"]["crafted_60kb_ms_p50"]
    if "redaction" in real:
        for key in ("us_per_kb", "min_precision", "min_recall"):
            flat[f"redaction.{key}"] = real["redaction"][key]
    if "templating" in real:
        flat["templating.exact"] = real["templating"]["exact"]
        flat["sensitive.min_precision"] = real["sensitive"]["min_precision"]
        flat["sensitive.min_recall"] = real["sensitive"]["min_recall"]
    return flat
