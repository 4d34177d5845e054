"""Soak: the whole loop at a steady rate for a long time, the worker's memory sampled as it goes.

``python -m deploy.lab.soak`` starts one local stack (a fresh Kafka broker,
a worker and a shim: ``deploy.runtime.stack.LocalStack``) and, as
``kubeward bench``'s latency figure does (``deploy.lab.bench.bench_latency``),
drives simulated cluster traffic (``ClusterSimulator``: about 0.5 calls/s per
end user, so ``users = min(90000, 2 x rate)``, event time following the wall
clock, objects created as users work, the simulator's +-20% sine over the run)
through ``SummaryPublisher`` at ``--rate-eps`` (default 10,000) for
``--minutes`` (default 30). Every ``--probe-interval-s`` a fresh probe actor
reads 30 objects that are not its own (stamped with the simulator's clock),
so the worker issues one verdict now and then and the shim applies it: the
detect-to-enforce path is exercised the whole time. At the end the verdict
topic is read back and tallied: verdicts on probes and any others, by
detector.

Worker settings: the shipped defaults, plus what ``bench_latency`` passes
(``window_s=60``, ``batch_within_s=0.005``: both equal the shipped defaults)
and what ``LocalStack`` always passes (bootstrap, web port, the development
verdict key); ``--worker-setting KEY=VALUE`` overrides one (recorded in the
JSON). The shim runs with ``report=none`` as in ``bench_latency``; the
publisher sends 1,000-row envelopes with a 2 ms linger (``kubeward bench``'s
values).

Every ``--sample-s`` (default 30) one sample and one progress line: resident
memory of the worker, shim and broker (each with its children) and of this
driver alone (psutil when installed, else ``/proc/<pid>/status`` VmRSS of
the process itself), the worker's CPU, summaries handed to the publisher and acknowledged, the worker's
counters and gauges from its ``/metrics`` (summaries processed, event lag
histogram, actors, state bytes, evictions, verdicts), verdicts the shim
applied (``/stats``), the consumer group's lag in messages (end offsets minus
committed offsets of ``l7.summaries.v1``; Faust commits every few seconds),
how far the driver is behind its own schedule, and the load average.

The JSON (``--out``, default ``build/soak.json``) holds the samples and a
summary; a PNG of RSS and lag goes next to it (``soak.png``) when matplotlib
is installed. Lag quantiles are estimated from the worker's histogram
buckets (linear within a bucket, as Prometheus' ``histogram_quantile``), per
message: from the newest summary time in a message to its processing.

Flat, the criterion: after a warm-up (``--warmup-s``, default the first 5
minutes or the first sixth of the run, whichever is shorter), the
least-squares slope of the worker's RSS against time, over the steady
samples, is at most ``--flat-pct`` (default 1) percent of the mean steady RSS
per 10 minutes; it needs at least 5 steady samples (else ``flat`` is null)
and a worker that stayed alive. Shrinking memory is flat. 1% per 10 minutes
(6% an hour) is what 51 samples over 25 minutes can resolve: the worker's RSS
scattered by about 7 MB around its trend on a 3-minute run (standard
deviation), which puts the slope's standard error near 1.2 MB per 10 minutes,
a third of the bound at ~370 MB. The standard error is reported beside the
slope (``slope_stderr_mb_per_10min``); a slower leak needs a longer run.
The run's figures (and the load average beside each sample) say how busy the
machine was: the driver shares it with the stack, and when it falls behind its
schedule (``driver_behind_s``) the lag figures include that delay.

Nothing here asserts a target; the figures are printed and written.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from deploy.lab.soaksampler import ConsumerLag, Progress, Sampler, fetch
from deploy.lab.soakstats import (bucket_delta, default_warmup, histogram_quantile, lag_buckets, least_squares_slope,
                                  metric_total, parse_prometheus, series, shim_summary, slope_stderr, summarize)

__all__ = ["add_cli", "bucket_delta", "histogram_quantile", "lag_buckets", "least_squares_slope", "main", "metric_total",
           "parse_prometheus", "run_soak", "shim_summary", "slope_stderr", "summarize", "tally_verdicts"]

REPO = Path(__file__).resolve().parents[2]
PROBE_PREFIX = "soak-probe-"


# --- the run ----------------------------------------------------------------------------------------------------

def probe_rows(n: int, now: float) -> list[dict[str, Any]]:
    """30 reads of distinct objects by a fresh end user at event time ``now``: one enumeration verdict."""
    from ingest import summary_row

    return [summary_row(id=uuid.uuid4().hex, time=now, reporter="soak", principal=f"{PROBE_PREFIX}{n}", auth_type="jwt",
                        source={"workload": "shop/frontend", "namespace": "shop", "ip": "10.9.9.9"},
                        destination={"service": "orders", "namespace": "shop"}, method="GET", path_template="/orders/{id}",
                        status=404, object_ids=[uuid.uuid4().hex[:16]]) for _ in range(30)]


def simulated_calls(rate_eps: float, seconds: float, users: int, seed: int, lead_s: float = 2.0) -> tuple[float, Iterator[Any]]:
    """The simulator's calls from ``lead_s`` from now, its world already built (the first call pulled): (start, calls)."""
    from ingest.simulator import ClusterSimulator

    start = time.time() + lead_s
    calls = ClusterSimulator(seed=seed, users=users, start_time=start, benign_rate_eps=rate_eps).calls(seconds)
    first = next(calls, None)
    return start, iter(()) if first is None else itertools.chain([first], calls)


def drive(pub: Any, progress: Progress, calls: Iterator[Any], seconds: float, probe_interval_s: float) -> None:
    """Send the calls paced to the wall clock (as ``bench_latency``), a probe every ``probe_interval_s`` stamped with the
    simulator's time, so the probes share the event clock of the rest.

    Stops at the end of the calls, or 10% + 30 s past the planned end if the driver falls behind (``cut_short``).
    """
    hard_stop, next_probe, batch = progress.start + seconds * 1.1 + 30, progress.start + 2.0, []
    for call in calls:
        batch.append(call.to_row(uuid.uuid4().hex, b"soak-key"))
        if len(batch) >= 50 or call.time - time.time() > 0.003:
            now = time.time()
            if call.time > now:
                time.sleep(call.time - now)
            progress.behind_s = max(0.0, now - call.time)
            pub.publish_rows(batch)
            progress.sent, batch = progress.sent + len(batch), []
            if now > hard_stop:
                progress.cut_short = True
                break
        if probe_interval_s > 0 and call.time >= next_probe:
            pub.publish_rows(probe_rows(progress.probes, call.time))
            progress.probes, progress.sent, next_probe = progress.probes + 1, progress.sent + 30, next_probe + probe_interval_s
    if batch:
        pub.publish_rows(batch)
        progress.sent += len(batch)


def _drain(sampler: Sampler, acked: int, timeout: float = 60) -> None:
    """Wait until the worker has processed every acknowledged summary (or ``timeout``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = (fetch(f"http://127.0.0.1:{sampler.stack.ports['worker_web']}/metrics") or b"").decode()
        if metric_total(parse_prometheus(text), "kubeward_worker_summaries_total") >= acked:
            return
        time.sleep(1.0)


def tally_verdicts(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """Verdicts on the topic: how many, how many on probe actors, and the others by detector and action (a few examples)."""
    others = [v for v in verdicts if PROBE_PREFIX not in v.get("subject", {}).get("value", "")]
    by_detector: Counter[str] = Counter(r.get("detector", "?") for v in others for r in v.get("reasons") or [{}])
    by_action: Counter[str] = Counter(f"{v.get('action')}/{v.get('mode')}" for v in verdicts)
    return {"total": len(verdicts), "on_probes": len(verdicts) - len(others), "others": len(others),
            "others_by_detector": dict(by_detector.most_common()), "by_action_mode": dict(by_action.most_common()),
            "other_examples": sorted({f"{v['subject'].get('kind')}:{v['subject'].get('value')}" for v in others if v.get("subject")})[:5]}


def read_verdicts(bootstrap: str, timeout_s: float = 20) -> list[dict[str, Any]] | None:
    """Every record of the verdict topic (JSON), read to its end; None if it cannot be read."""
    from kafka import KafkaConsumer

    from ingest import VERDICTS

    try:
        consumer = KafkaConsumer(VERDICTS.name, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=3000, client_id="soak-verdicts")
    except Exception as exc:  # noqa: BLE001 - optional figure
        say(f"verdicts unreadable: {exc!r}")
        return None
    out, deadline = [], time.time() + timeout_s
    try:
        for record in consumer:
            if record.value:
                out.append(json.loads(record.value))
            if time.time() > deadline:
                break
    finally:
        consumer.close()
    return out


def run_soak(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack, drive, sample, summarize; write the JSON (and PNG)."""
    from deploy.runtime.stack import LocalStack

    seconds, users = args.minutes * 60, args.users or min(90_000, max(10, int(args.rate_eps * 2)))
    warmup = default_warmup(seconds) if args.warmup_s is None else args.warmup_s
    worker_settings = {"window_s": 60, "batch_within_s": 0.005, **dict(args.worker_setting or [])}
    say(f"starting the stack in {args.workdir} (worker settings beyond the shipped defaults: {worker_settings})")
    with LocalStack(Path(args.workdir), worker_settings=worker_settings, shim_settings={"report": "none"}) as stack:
        say(f"driving {args.rate_eps:,.0f} events/s for {seconds:,.0f} s ({users:,} users, a probe every {args.probe_interval_s:g} s), "
            f"a sample every {args.sample_s:g} s, warm-up {warmup:g} s")
        sampler, drive_s, end = _soak_on(stack, args, seconds, users, worker_settings.get("app_id", "kubeward-worker"))
    if not args.keep_data:
        shutil.rmtree(Path(args.workdir) / "kafka", ignore_errors=True)
    progress = sampler.progress
    summary = summarize(sampler.samples, warmup_s=warmup, flat_pct=args.flat_pct, sent=progress.sent, drive_s=drive_s, rate_eps=args.rate_eps)
    summary.update(probes=progress.probes, cut_short=progress.cut_short, users=users, shim=shim_summary(end["shim"]),
                   verdicts=tally_verdicts(end["verdicts"]) if end["verdicts"] is not None else None)
    return _write(args, summary, sampler.samples, worker_settings)


def _soak_on(stack: Any, args: argparse.Namespace, seconds: float, users: int, group: str) -> tuple[Sampler, float, dict[str, Any]]:
    """Drive and sample on a started stack; then drain, take the last sample and read what the shim and the verdict topic hold."""
    from ingest.publish import SummaryPublisher

    pub = SummaryPublisher(stack.bootstrap, envelope_rows=1000, linger_ms=2.0, client_id="soak")
    pub.start_background_flush(0.001)
    lag = _consumer_lag(stack.bootstrap, group)
    start, calls = simulated_calls(args.rate_eps, seconds, users, args.seed)
    sampler = Sampler(stack, pub, Progress(start=start), args.sample_s, lag=lag)
    sampler.start()
    try:
        drive(pub, sampler.progress, calls, seconds, args.probe_interval_s)
    finally:
        drive_s = time.time() - start
        sampler.stop()
    pub.flush()
    _drain(sampler, pub.stats()["rows_sent"])
    time.sleep(2.0)  # the last verdicts reach the shim
    sampler.take()
    end = {"shim": json.loads(fetch(f"http://127.0.0.1:{stack.ports['shim_admin']}/stats") or b"{}"), "verdicts": read_verdicts(stack.bootstrap)}
    pub.close()
    if lag is not None:
        lag.close()
    return sampler, drive_s, end


def _consumer_lag(bootstrap: str, group: str) -> ConsumerLag | None:
    try:
        return ConsumerLag(bootstrap, group)
    except Exception as exc:  # noqa: BLE001 - optional figure
        say(f"consumer lag unavailable: {exc!r}")
        return None


def _write(args: argparse.Namespace, summary: dict[str, Any], samples: list[dict[str, Any]], worker_settings: dict[str, Any]) -> dict[str, Any]:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "func"}
    result: dict[str, Any] = {"config": {**config, "worker_settings": worker_settings, "machine_cpus": os.cpu_count()}, "summary": summary, "samples": samples}
    plot = plot_samples(samples, out.with_suffix(".png"), summary["warmup_s"]) if args.plot else None
    result["plot"] = plot
    out.write_text(json.dumps(result, indent=1, default=str))
    _print_summary(summary)
    say(f"written to {out}" + (f" and {plot}" if plot else " (no plot: " + ("--no-plot)" if not args.plot else "matplotlib is not installed)")))
    return result


def _print_summary(s: dict[str, Any]) -> None:
    w, lag, shim = s["worker_rss"], s["worker_lag"], s["shim"]
    say(f"sent {s['sent']:,} in {s['drive_s']:g} s: {s['rate_eps_achieved']:,} events/s (target {s['rate_eps_target']:,.0f}); "
        f"processed {s['processed']}; probes {s['probes']}, verdicts applied in the shim {shim['verdicts_applied']}")
    say(f"worker RSS MB: steady start {w['steady_start_mb']}, end {w['end_mb']}, max {w['max_mb']}, slope {w['slope_mb_per_10min']} MB/10 min "
        f"({w['slope_pct_of_mean_per_10min']}% of the steady mean); lag p99 run {lag['run_p99_s']} s, steady {lag['steady_p99_s']} s")
    say(f"flat: {s['flat']} ({s['flat_reason']})")


def plot_samples(samples: list[dict[str, Any]], path: Path, warmup_s: float) -> str | None:
    """RSS of each process and the worker's per-interval lag p99 against minutes; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for key, label, color in (("worker_rss_mb", "worker", "tab:blue"), ("shim_rss_mb", "shim", "tab:orange"),
                              ("broker_rss_mb", "broker", "tab:green"), ("driver_rss_mb", "driver (this process)", "tab:grey")):
        ts, vs = series(samples, key)
        top.plot([t / 60 for t in ts], vs, label=label, marker=".", color=color)
    top.set_ylabel("RSS (MB)")
    top.legend(loc="upper left")
    ts, vs = series(samples, "lag_p99_s")
    bottom.plot([t / 60 for t in ts], vs, color="tab:red", marker=".", label="worker event lag p99 (per sample interval)")
    bottom.set_ylabel("lag (s)")
    bottom.set_xlabel("minutes")
    bottom.legend(loc="upper left")
    for ax in (top, bottom):
        ax.axvline(warmup_s / 60, color="grey", linestyle="--")
        ax.grid(alpha=0.3)
    fig.suptitle("Kubeward soak: resident memory and worker lag (dashed: end of warm-up)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def say(msg: str) -> None:
    print(f"[soak] {msg}", flush=True)


# --- command line -----------------------------------------------------------------------------------------------

def _setting(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def arguments(p: argparse.ArgumentParser) -> None:
    """The soak's options."""
    p.add_argument("--rate-eps", type=float, default=10_000.0, help="simulated summaries per second (default 10000)")
    p.add_argument("--minutes", type=float, default=30.0, help="how long to drive (default 30)")
    p.add_argument("--sample-s", type=float, default=30.0, help="seconds between samples (default 30)")
    p.add_argument("--warmup-s", type=float, default=None, help="samples before this are not part of the steady state (default: 5 minutes or 1/6 of the run, the shorter)")
    p.add_argument("--flat-pct", type=float, default=1.0, help="flat if the steady RSS slope is at most this %% of the steady mean per 10 minutes (default 1)")
    p.add_argument("--probe-interval-s", type=float, default=2.0, help="a probe actor (one verdict) every this many seconds; 0: none (default 2)")
    p.add_argument("--users", type=int, default=None, help="simulated end users (default min(90000, 2 x rate))")
    p.add_argument("--seed", type=int, default=5, help="simulator seed (default 5, as bench_latency)")
    p.add_argument("--worker-setting", type=_setting, action="append", metavar="KEY=VALUE", help="a worker setting (JSON value or string), repeatable")
    p.add_argument("--workdir", default=str(REPO / "build" / "soak"), help="where the stack keeps its data and logs (default build/soak)")
    p.add_argument("--keep-data", action="store_true", help="keep the broker's data directory afterwards (it is removed by default)")
    p.add_argument("--no-plot", dest="plot", action="store_false", help="do not write the PNG next to the JSON")
    p.add_argument("--out", default=str(REPO / "build" / "soak.json"), help="where to write the JSON (default build/soak.json)")


def add_cli(sub: Any) -> None:
    """Register ``soak`` on ``sub`` (e.g. the suites of ``kubeward bench``)."""
    p = sub.add_parser("soak", help="the whole loop at 10,000 events/s for 30 minutes, memory sampled (build/soak.json)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(p)
    p.set_defaults(func=lambda args: (run_soak(args), 0)[1])


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.lab.soak [--minutes M] [--rate-eps R] ...``."""
    p = argparse.ArgumentParser(prog="python -m deploy.lab.soak", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    arguments(p)
    run_soak(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
