"""The pure half of the soak (``deploy.lab.soak``): Prometheus text, histogram quantiles, slopes, the flat rule, the summary.

No I/O here; ``tests/deploy/test_soak.py`` tests it without a broker.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["LAG_METRIC", "LAG_NOTE", "MIN_STEADY_SAMPLES", "bucket_delta", "default_warmup", "flat_verdict", "histogram_quantile",
           "lag_buckets", "lag_summary", "least_squares_slope", "memory_summary", "metric_total", "parse_prometheus", "rounded", "series", "shim_summary",
           "slope_stderr", "summarize"]

MIN_STEADY_SAMPLES = 5
LAG_METRIC = "kubeward_worker_event_lag_seconds_bucket"
LAG_NOTE = ("per message, from the newest summary time in it to its processing, estimated from the histogram's buckets; "
            "it includes how far the driver was behind its own schedule (driver_behind_s); a quantile equal to top_bucket_s means at least that")


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text exposition -> ``{'name{labels}': value}``; comments and unparsable lines skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def metric_total(metrics: dict[str, float], name: str) -> float:
    """The sum of a metric over all its label sets (0 when absent)."""
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


def lag_buckets(metrics: dict[str, float], name: str = LAG_METRIC) -> list[tuple[float, float]]:
    """A histogram's cumulative buckets as ``(upper bound, count)``, by bound (``+Inf`` last)."""
    found = []
    for key, value in metrics.items():
        m = re.fullmatch(re.escape(name) + r'\{(?:.*,)?le="([^"]+)"(?:,.*)?\}', key)
        if m:
            found.append((math.inf if m.group(1) == "+Inf" else float(m.group(1)), value))
    return sorted(found)


def bucket_delta(before: list[tuple[float, float]], after: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The observations between two readings of the same cumulative histogram."""
    old = dict(before)
    return [(le, count - old.get(le, 0.0)) for le, count in after]


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """The ``q`` quantile (0..1) of cumulative buckets, linear within a bucket; None without observations.

    In the ``+Inf`` bucket the largest finite bound is returned (a lower bound of the truth), as Prometheus does.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank, prev_le, prev_count = q * buckets[-1][1], 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            inside = count - prev_count
            return le if inside <= 0 else prev_le + (le - prev_le) * (rank - prev_count) / inside
        prev_le, prev_count = le, count
    return prev_le


def least_squares_slope(xs: list[float], ys: list[float]) -> float | None:
    """The slope of the least-squares line through the points; None for fewer than two distinct xs."""
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def slope_stderr(xs: list[float], ys: list[float]) -> float | None:
    """The standard error of the least-squares slope (residual spread over the xs' spread); None for fewer than 3 points."""
    slope, n = least_squares_slope(xs, ys), len(xs)
    if slope is None or n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    residuals = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys))
    return math.sqrt(residuals / (n - 2) / sum((x - mx) ** 2 for x in xs))


def rounded(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def series(samples: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(s["t_s"], s[key]) for s in samples if s.get(key) is not None]
    return [t for t, _ in pts], [v for _, v in pts]


def memory_summary(samples: list[dict[str, Any]], key: str, warmup_s: float) -> dict[str, Any]:
    """RSS (MB) of one process: at the start of the steady part, at the end, max, steady mean, slope per 10 minutes."""
    ts, vs = series(samples, key)
    steady_t, steady_v = series([s for s in samples if s["t_s"] >= warmup_s], key)
    slope, stderr = least_squares_slope(steady_t, steady_v), slope_stderr(steady_t, steady_v)
    mean = sum(steady_v) / len(steady_v) if steady_v else None
    per10 = None if slope is None else slope * 600
    return {"first_mb": rounded(vs[0] if vs else None), "steady_start_mb": rounded(steady_v[0] if steady_v else None),
            "end_mb": rounded(vs[-1] if vs else None), "max_mb": rounded(max(vs) if vs else None), "steady_mean_mb": rounded(mean),
            "steady_samples": len(steady_v), "slope_mb_per_10min": rounded(per10, 3),
            "slope_stderr_mb_per_10min": rounded(None if stderr is None else stderr * 600, 3),
            "slope_pct_of_mean_per_10min": rounded(per10 / mean * 100 if per10 is not None and mean else None, 3)}


def flat_verdict(memory: dict[str, Any], flat_pct: float, worker_died: bool) -> tuple[bool | None, str]:
    """Whether the worker's memory is flat by the module's criterion, and why."""
    if worker_died:
        return False, "the worker exited during the run"
    if memory["steady_samples"] < MIN_STEADY_SAMPLES or memory["slope_mb_per_10min"] is None:
        return None, f"fewer than {MIN_STEADY_SAMPLES} samples after the warm-up"
    limit = flat_pct / 100 * memory["steady_mean_mb"]
    ok = memory["slope_mb_per_10min"] <= limit
    return ok, f"slope {memory['slope_mb_per_10min']:.3f} MB/10 min {'<=' if ok else '>'} {limit:.3f} ({flat_pct:g}% of the steady mean)"


def lag_summary(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Worker event lag quantiles (s) over the whole run and over the steady part, from the histogram."""
    with_lag = [s for s in samples if s.get("lag_buckets")]
    if not with_lag:
        return {"run_p50_s": None, "run_p99_s": None, "steady_p50_s": None, "steady_p99_s": None, "max_interval_p99_s": None, "messages": 0}
    run = with_lag[-1]["lag_buckets"]
    before = [s for s in with_lag if s["t_s"] < warmup_s]
    steady = bucket_delta(before[-1]["lag_buckets"], run) if before else run
    interval = [s["lag_p99_s"] for s in with_lag if s.get("lag_p99_s") is not None]
    return {"run_p50_s": rounded(histogram_quantile(0.5, run), 4), "run_p99_s": rounded(histogram_quantile(0.99, run), 4),
            "steady_p50_s": rounded(histogram_quantile(0.5, steady), 4), "steady_p99_s": rounded(histogram_quantile(0.99, steady), 4),
            "max_interval_p99_s": rounded(max(interval) if interval else None, 4), "messages": int(run[-1][1]),
            "top_bucket_s": max((le for le, _ in run if not math.isinf(le)), default=None)}


def summarize(samples: list[dict[str, Any]], *, warmup_s: float, flat_pct: float, sent: int, drive_s: float,
              rate_eps: float) -> dict[str, Any]:
    """The soak's summary from its samples: rates, memory of each process, lag, and whether the worker's RSS is flat."""
    worker = memory_summary(samples, "worker_rss_mb", warmup_s)
    died = any(s.get("worker_alive") is False for s in samples)
    flat, why = flat_verdict(worker, flat_pct, died)
    last = samples[-1] if samples else {}
    lags = [s["consumer_lag_messages"] for s in samples if s.get("consumer_lag_messages") is not None]
    behind = [s["driver_behind_s"] for s in samples if s.get("driver_behind_s") is not None]
    return {
        "rate_eps_target": rate_eps, "rate_eps_achieved": round(sent / drive_s) if drive_s > 0 else None,
        "sent": sent, "acked": last.get("acked"), "processed": last.get("processed"), "drive_s": round(drive_s, 1),
        "warmup_s": warmup_s, "worker_rss": worker, "shim_rss": memory_summary(samples, "shim_rss_mb", warmup_s),
        "broker_rss": memory_summary(samples, "broker_rss_mb", warmup_s), "driver_rss": memory_summary(samples, "driver_rss_mb", warmup_s),
        "worker_lag": lag_summary(samples, warmup_s), "worker_lag_note": LAG_NOTE, "worker_alive": not died,
        "actors_end": last.get("actors"), "state_bytes_end": last.get("state_bytes"), "evictions_end": last.get("evictions"),
        "worker_verdicts": last.get("worker_verdicts"), "consumer_lag_messages_max": max(lags) if lags else None,
        "driver_behind_s_max": rounded(max(behind) if behind else None),
        "flat": flat, "flat_reason": why,
        "flat_criterion": (f"after the warm-up ({warmup_s:g} s), the least-squares slope of the worker's RSS over time is at most "
                           f"{flat_pct:g}% of its mean steady RSS per 10 minutes, with >= {MIN_STEADY_SAMPLES} steady samples and the worker alive"),
    }


def shim_summary(stats: dict[str, Any]) -> dict[str, Any]:
    """What the shim saw: verdicts applied since it started (with detect-to-enforce latency), cache entries."""
    lat = sorted(stats.get("latency_ms") or [])

    def pick(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * (len(lat) - 1)))], 1) if lat else None

    return {"verdicts_applied": len(lat), "cache_entries": stats.get("cache_entries"),
            "detect_to_enforce_ms_p50": pick(0.5), "detect_to_enforce_ms_p99": pick(0.99), "detect_to_enforce_ms_max": pick(1.0)}


def default_warmup(duration_s: float) -> float:
    """The first 5 minutes or the first sixth of the run, whichever is shorter."""
    return min(300.0, duration_s / 6)
