"""What the soak (``deploy.lab.soak``) samples while it drives: process memory, the worker's metrics, consumer lag.

``Sampler`` takes one sample every ``every_s`` in a thread and prints a progress
line for each (``progress_line``): resident memory of the worker, shim and
broker (each with its children, ``rss_mb``) and of the driver alone, the
worker's CPU, summaries handed to the publisher and acknowledged, the worker's
counters and gauges from its ``/metrics`` (summaries processed, the event lag
histogram and its quantiles over the interval, actors, state bytes, evictions,
verdicts), verdicts the shim applied (``/stats``), the consumer group's lag in
messages (``ConsumerLag``), how far the driver is behind its schedule
(``Progress``, written by the drive loop) and the load average. The arithmetic
on these figures is ``deploy.lab.soakstats``.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.lab.soakstats import bucket_delta, histogram_quantile, lag_buckets, metric_total, parse_prometheus, rounded

__all__ = ["ConsumerLag", "Progress", "Sampler", "fetch", "progress_line", "rss_mb"]

MB = 1 << 20


def rss_mb(pid: int | None, children: bool = True) -> float | None:
    """Resident MB of a process and (``children``) its descendants: psutil if installed, else ``/proc/<pid>/status``
    of the process alone; None if it is gone."""
    if pid is None:
        return None
    try:
        import psutil
    except ImportError:
        return _proc_rss_mb(pid)
    try:
        proc = psutil.Process(pid)
        family = (proc, *proc.children(recursive=True)) if children else (proc,)
        return float(sum(p.memory_info().rss for p in family)) / MB
    except psutil.Error:
        return None


def _proc_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return None


def fetch(url: str, timeout: float = 5) -> bytes | None:
    """The body of a GET on one of the stack's HTTP ports, or None when it does not answer."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bytes(resp.read())
    except OSError:
        return None


class ConsumerLag:
    """End offsets minus committed offsets of the worker's group on ``l7.summaries.v1`` (messages); None when unknown."""

    def __init__(self, bootstrap: str, group: str) -> None:
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

        from ingest import SUMMARIES

        self.group = group
        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="soak-lag")
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="soak-lag")
        self.parts = [TopicPartition(SUMMARIES.name, p) for p in sorted(self.consumer.partitions_for_topic(SUMMARIES.name) or [])]

    def read(self) -> int | None:
        try:
            committed = self.admin.list_group_offsets({self.group: self.parts})[self.group]
            ends = self.consumer.end_offsets(self.parts)
        except Exception:  # noqa: BLE001 - optional figure: a broker hiccup must not end the soak
            return None
        have = [(ends[tp], committed[tp].offset) for tp in self.parts if tp in committed and committed[tp].offset >= 0]
        return sum(end - done for end, done in have) if len(have) == len(self.parts) else None

    def close(self) -> None:
        for client in (self.consumer, self.admin):
            try:
                client.close()
            except Exception:  # noqa: BLE001
                pass


@dataclass
class Progress:
    """What the drive loop has done so far (written by it, read by the sampler thread)."""

    start: float = 0.0
    sent: int = 0
    probes: int = 0
    behind_s: float = 0.0
    cut_short: bool = False


@dataclass
class Sampler:
    """Takes a sample every ``every_s`` in a thread, prints a progress line for each."""

    stack: Any
    publisher: Any
    progress: Progress
    every_s: float
    lag: ConsumerLag | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _cpu: tuple[float, float] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def _loop(self) -> None:
        due = self.progress.start + self.every_s
        while not self._stop.wait(max(0.0, due - time.time())):
            self.take()
            due += self.every_s

    def take(self) -> dict[str, Any]:
        """One sample (appended and printed)."""
        now, prev = time.time(), self.samples[-1] if self.samples else None
        metrics = parse_prometheus((fetch(f"http://127.0.0.1:{self.stack.ports['worker_web']}/metrics") or b"").decode())
        stats = json.loads(fetch(f"http://127.0.0.1:{self.stack.ports['shim_admin']}/stats") or b"{}")
        sample = {"t_s": round(now - self.progress.start, 1), "time": round(now, 1), **self._processes(now),
                  **self._worker(metrics, prev), "sent": self.progress.sent, "acked": self.publisher.stats()["rows_sent"],
                  "probes": self.progress.probes, "shim_verdicts": len(stats.get("latency_ms") or []),
                  "consumer_lag_messages": self.lag.read() if self.lag is not None else None,
                  "driver_behind_s": round(self.progress.behind_s, 2), "load1": round(os.getloadavg()[0], 2)}
        span = sample["t_s"] - (prev["t_s"] if prev else 0.0)
        sample["send_eps"] = round((sample["sent"] - (prev["sent"] if prev else 0)) / span) if span > 0 else None
        done = sample["processed"]
        sample["processed_eps"] = round((done - ((prev or {}).get("processed") or 0)) / span) if span > 0 and done is not None else None
        self.samples.append(sample)
        print(progress_line(sample), flush=True)
        return sample

    def _processes(self, now: float) -> dict[str, Any]:
        from deploy.lab.bench_worker import cpu_seconds

        worker = self.stack.worker
        broker = self.stack.broker_handle
        alive = worker is not None and worker.poll() is None
        cores = None
        if alive:
            cpu = cpu_seconds(worker.pid)
            if self._cpu is not None and now > self._cpu[0]:
                cores = round((cpu - self._cpu[1]) / (now - self._cpu[0]), 2)
            self._cpu = (now, cpu)
        return {"worker_alive": alive, "worker_rss_mb": rounded(rss_mb(worker.pid) if alive else None),
                "shim_rss_mb": rounded(rss_mb(self.stack.shim.pid if self.stack.shim is not None else None)),
                "broker_rss_mb": rounded(rss_mb(broker.pid if broker is not None else None)),
                "driver_rss_mb": rounded(rss_mb(os.getpid(), children=False)), "worker_cpu_cores": cores}

    @staticmethod
    def _worker(metrics: dict[str, float], prev: dict[str, Any] | None) -> dict[str, Any]:
        if not metrics:
            return {"processed": None, "lag_buckets": None, "lag_p50_s": None, "lag_p99_s": None}
        buckets = lag_buckets(metrics)
        interval = bucket_delta(prev["lag_buckets"], buckets) if prev and prev.get("lag_buckets") else buckets
        return {"processed": int(metric_total(metrics, "kubeward_worker_summaries_total")),
                "messages": int(metric_total(metrics, "kubeward_worker_messages_total")),
                "lag_buckets": buckets, "lag_p50_s": rounded(histogram_quantile(0.5, interval), 4), "lag_p99_s": rounded(histogram_quantile(0.99, interval), 4),
                "actors": int(metric_total(metrics, "kubeward_worker_actors")), "state_bytes": int(metric_total(metrics, "kubeward_worker_state_bytes")),
                "evictions": int(metric_total(metrics, "kubeward_worker_state_evictions_total")),
                "worker_verdicts": int(metric_total(metrics, "kubeward_worker_verdicts_total")),
                "dead_letters": int(metric_total(metrics, "kubeward_worker_dead_letters_total"))}


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def progress_line(s: dict[str, Any]) -> str:
    """One line per sample."""
    return (f"[soak] t={s['t_s']:>6.0f}s sent {s['sent']:>10,} ({_fmt(s.get('send_eps'), ',')}/s) processed {_fmt(s.get('processed_eps'), ',')}/s"
            f" | RSS MB worker {_fmt(s.get('worker_rss_mb'), '.1f')} shim {_fmt(s.get('shim_rss_mb'), '.1f')} broker {_fmt(s.get('broker_rss_mb'), '.1f')}"
            f" driver {_fmt(s.get('driver_rss_mb'), '.1f')} | worker cpu {_fmt(s.get('worker_cpu_cores'), '.2f')}"
            f" lag p50/p99 {_fmt(s.get('lag_p50_s'), '.3f')}/{_fmt(s.get('lag_p99_s'), '.3f')} s | actors {_fmt(s.get('actors'), ',')}"
            f" verdicts {_fmt(s.get('shim_verdicts'), ',')} | consumer lag {_fmt(s.get('consumer_lag_messages'), ',')} msgs"
            f" behind {s.get('driver_behind_s', 0):.1f}s load {s.get('load1')}")

