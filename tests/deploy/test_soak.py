"""The soak's pure parts: metrics parsing, histogram quantiles, the RSS slope, the flat verdict and the summary."""

from __future__ import annotations

import argparse
import math

import pytest

from deploy.lab import soak, soaksampler, soakstats

METRICS = """\
# HELP kubeward_worker_summaries_total Request summaries processed
# TYPE kubeward_worker_summaries_total counter
kubeward_worker_summaries_total 12345.0
kubeward_worker_summaries_created 1.7e9
kubeward_worker_actors{partition="0"} 700.0
kubeward_worker_actors{partition="1"} 300.0
kubeward_worker_verdicts_total{action="block",mode="monitor"} 3.0
kubeward_worker_verdicts_total{action="throttle",mode="enforce"} 2.0
kubeward_worker_event_lag_seconds_bucket{le="0.01"} 50.0
kubeward_worker_event_lag_seconds_bucket{le="0.1"} 90.0
kubeward_worker_event_lag_seconds_bucket{le="1.0"} 100.0
kubeward_worker_event_lag_seconds_bucket{le="+Inf"} 100.0
kubeward_worker_event_lag_seconds_count 100.0
garbage line without a number x
"""


def test_parse_and_totals() -> None:
    m = soakstats.parse_prometheus(METRICS)
    assert soakstats.metric_total(m, "kubeward_worker_summaries_total") == 12345
    assert soakstats.metric_total(m, "kubeward_worker_actors") == 1000
    assert soakstats.metric_total(m, "kubeward_worker_verdicts_total") == 5
    assert soakstats.metric_total(m, "kubeward_worker_missing") == 0
    assert soakstats.lag_buckets(m) == [(0.01, 50), (0.1, 90), (1.0, 100), (math.inf, 100)]


def test_histogram_quantile_interpolates_within_a_bucket() -> None:
    buckets = [(0.01, 50.0), (0.1, 90.0), (1.0, 100.0), (math.inf, 100.0)]
    assert soakstats.histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert soakstats.histogram_quantile(0.25, buckets) == pytest.approx(0.005)
    assert soakstats.histogram_quantile(0.99, buckets) == pytest.approx(0.1 + 0.9 * 0.9)
    assert soakstats.histogram_quantile(0.99, [(0.01, 0.0), (math.inf, 0.0)]) is None
    assert soakstats.histogram_quantile(0.99, [(0.01, 1.0), (math.inf, 10.0)]) == 0.01  # in +Inf: the largest finite bound


def test_bucket_delta_is_the_interval() -> None:
    before = [(0.01, 50.0), (math.inf, 60.0)]
    after = [(0.01, 80.0), (math.inf, 100.0)]
    assert soakstats.bucket_delta(before, after) == [(0.01, 30.0), (math.inf, 40.0)]


def test_least_squares_slope() -> None:
    assert soakstats.least_squares_slope([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(2.0)
    assert soakstats.least_squares_slope([0, 1, 2], [5, 5, 5]) == 0
    assert soakstats.least_squares_slope([1], [1]) is None
    assert soakstats.least_squares_slope([2, 2], [1, 3]) is None


def _samples(rss: list[float], every_s: float = 30.0, **extra: object) -> list[dict[str, object]]:
    return [{"t_s": (i + 1) * every_s, "worker_rss_mb": v, "worker_alive": True, "sent": (i + 1) * 300_000, **extra}
            for i, v in enumerate(rss)]


def test_warmup_growth_is_ignored_and_flat_is_true() -> None:
    rss = [200, 300, 400, 450, 500] + [500.0 + (i % 2) for i in range(20)]  # grows in the warm-up, then flat with noise
    s = soakstats.summarize(_samples(rss), warmup_s=150, flat_pct=1.0, sent=7_500_000, drive_s=750, rate_eps=10_000)
    w = s["worker_rss"]
    assert w["steady_samples"] == 21 and w["steady_start_mb"] == 500 and w["end_mb"] == 501 and w["max_mb"] == 501
    assert abs(w["slope_mb_per_10min"]) < 1
    assert s["flat"] is True and "1% of its mean steady RSS per 10 minutes" in s["flat_criterion"]
    assert s["rate_eps_achieved"] == 10_000


def test_a_steady_leak_is_not_flat() -> None:
    rss = [500.0 + 0.5 * i for i in range(30)]  # 0.5 MB per 30 s = 10 MB per 10 minutes, ~2% of ~510 MB
    s = soakstats.summarize(_samples(rss), warmup_s=0, flat_pct=1.0, sent=1, drive_s=900, rate_eps=10_000)
    assert s["worker_rss"]["slope_mb_per_10min"] == pytest.approx(10.0)
    assert s["worker_rss"]["slope_pct_of_mean_per_10min"] == pytest.approx(10.0 / 507.25 * 100, rel=1e-3)
    assert s["flat"] is False
    assert soakstats.summarize(_samples(rss), warmup_s=0, flat_pct=2.5, sent=1, drive_s=900, rate_eps=10_000)["flat"] is True


def test_shrinking_memory_is_flat_and_too_few_samples_is_undetermined() -> None:
    assert soakstats.summarize(_samples([600, 550, 520, 510, 505, 500]), warmup_s=0, flat_pct=1.0, sent=1, drive_s=1, rate_eps=1)["flat"] is True
    few = soakstats.summarize(_samples([500, 501, 502, 503, 504, 505]), warmup_s=100, flat_pct=1.0, sent=1, drive_s=1, rate_eps=1)
    assert few["flat"] is None and "fewer than 5" in few["flat_reason"]


def test_a_dead_worker_is_not_flat() -> None:
    samples = _samples([500.0] * 10)
    samples[-1].update(worker_alive=False, worker_rss_mb=None)
    s = soakstats.summarize(samples, warmup_s=0, flat_pct=1.0, sent=1, drive_s=1, rate_eps=1)
    assert s["flat"] is False and s["worker_alive"] is False


def test_lag_over_the_run_and_the_steady_part() -> None:
    early = [(0.01, 0.0), (1.0, 100.0), (math.inf, 100.0)]  # warm-up: everything slow
    late = [(0.01, 1000.0), (1.0, 1100.0), (math.inf, 1100.0)]  # then 1,000 fast messages
    samples = _samples([500.0, 500.0], lag_buckets=None)
    samples[0]["lag_buckets"], samples[1]["lag_buckets"] = early, late
    samples[1]["lag_p99_s"] = 0.01
    lag = soakstats.summarize(samples, warmup_s=45, flat_pct=1.0, sent=1, drive_s=1, rate_eps=1)["worker_lag"]
    assert lag["steady_p99_s"] == pytest.approx(0.0099)
    assert lag["run_p99_s"] > 0.5 and lag["messages"] == 1100 and lag["max_interval_p99_s"] == 0.01


def test_summary_carries_the_last_counters() -> None:
    samples = _samples([500.0] * 6, processed=99, acked=100, actors=20_000, consumer_lag_messages=3, driver_behind_s=0.2)
    s = soakstats.summarize(samples, warmup_s=0, flat_pct=1.0, sent=100, drive_s=10, rate_eps=10)
    assert (s["processed"], s["acked"], s["actors_end"], s["consumer_lag_messages_max"], s["driver_behind_s_max"]) == (99, 100, 20_000, 3, 0.2)
    assert s["shim_rss"]["steady_samples"] == 0 and s["shim_rss"]["slope_mb_per_10min"] is None


def test_shim_summary_and_defaults() -> None:
    shim = soakstats.shim_summary({"latency_ms": [30.0, 10.0, 20.0], "cache_entries": 3})
    assert shim == {"verdicts_applied": 3, "cache_entries": 3, "detect_to_enforce_ms_p50": 20.0, "detect_to_enforce_ms_p99": 20.0, "detect_to_enforce_ms_max": 30.0}
    assert soakstats.shim_summary({})["verdicts_applied"] == 0
    assert soakstats.default_warmup(1800) == 300 and soakstats.default_warmup(180) == 30


def test_progress_line_and_cli_parse() -> None:
    line = soaksampler.progress_line({"t_s": 30.0, "sent": 300_000, "send_eps": 10_000, "worker_rss_mb": 512.3, "load1": 1.5, "driver_behind_s": 0.0})
    assert "t=    30s" in line and "worker 512.3" in line and "shim -" in line
    p = argparse.ArgumentParser()
    soak.arguments(p)
    args = p.parse_args(["--minutes", "3", "--worker-setting", "state_budget_bytes=0", "--worker-setting", "app_id=x"])
    assert args.minutes == 3 and args.rate_eps == 10_000 and args.sample_s == 30 and dict(args.worker_setting) == {"state_budget_bytes": 0, "app_id": "x"}


def test_tally_verdicts_separates_probes() -> None:
    verdicts = [
        {"subject": {"kind": "actor", "value": "shop/frontend|soak-probe-1"}, "action": "block", "mode": "observe", "reasons": [{"detector": "bola"}]},
        {"subject": {"kind": "actor", "value": "shop/frontend|user-00042"}, "action": "throttle", "mode": "observe", "reasons": [{"detector": "scraping-rate"}]},
        {"subject": {"kind": "ip", "value": "198.51.100.10"}, "action": "block", "mode": "observe", "reasons": []},
    ]
    t = soak.tally_verdicts(verdicts)
    assert (t["total"], t["on_probes"], t["others"]) == (3, 1, 2)
    assert t["others_by_detector"] == {"scraping-rate": 1, "?": 1}
    assert t["by_action_mode"] == {"block/observe": 2, "throttle/observe": 1}
    assert t["other_examples"] == ["actor:shop/frontend|user-00042", "ip:198.51.100.10"]


def test_slope_stderr() -> None:
    assert soakstats.slope_stderr([0, 1, 2, 3], [1, 3, 5, 7]) == pytest.approx(0.0)
    assert soakstats.slope_stderr([0, 1], [0, 1]) is None
    # residuals +-1 around a flat line at x = 0..3: sqrt((4 / 2) / 5)
    assert soakstats.slope_stderr([0, 1, 2, 3], [1, -1, -1, 1]) == pytest.approx(math.sqrt(0.4))
    s = soakstats.summarize(_samples([500.0, 502.0] * 10), warmup_s=0, flat_pct=1.0, sent=1, drive_s=1, rate_eps=1)
    assert s["worker_rss"]["slope_stderr_mb_per_10min"] > 0
