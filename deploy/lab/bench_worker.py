"""The worker benchmark: fresh simulated summaries through the real worker (Kafka) and in process.

Issue 7 asks for the worker's rate "with every detector and model, on
envelopes, with a growing population of actors and event time moving
forward (not a replayed loop)". ``fresh_rows`` gives such a stream: one
simulated base block (``ingest.simulator.ClusterSimulator``) is replayed in
cycles, and in cycle ``k``

* every event time is shifted by ``k`` times the block's span, so event time
  only moves forward over the whole run and windows keep closing;
* every request id is new (a repeated id is a second report of a call already
  counted, and re-sending one block also stopped the request-id memory from
  growing: that path is cheaper than fresh traffic);
* a share of the users (``renamed_share``, a different share each cycle) are
  renamed ``<principal>~c<k>``, with their object ids, id blocks and login
  subjects renamed alike: new actors with objects of their own, so the actor
  population grows by about that share of the users per cycle without making
  the newcomers look like intruders on the old users' objects.

``bench_worker`` drains a topic pre-filled with those rows, first with a
worker that runs no detector and no enricher (the same-run baseline), then
with the shipped defaults (every rule of ``models/rules`` and every enricher),
then one JSON summary per message. ``bench_worker_inprocess`` feeds the same
rows to ``streams.pipeline.Pipeline.handle_many`` in 20k-row envelopes and
counts only its CPU time (no Kafka, no encoding).
"""

from __future__ import annotations

import os
import re
import time
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.lab.bench_real import say

__all__ = ["FreshRows", "bench_worker", "bench_worker_inprocess", "cpu_seconds", "fresh_rows"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
#: settings of the same-run baseline worker: no detector, no enricher
NO_DETECTION: dict[str, Any] = {"detectors": [], "enrichers": []}
_RENAMED_FIELDS = ("object_ids", "object_ids_created", "object_blocks")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process and its threads (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def load_average() -> float:
    """The machine's one-minute load average (the figures share 2 cores with other work)."""
    return round(os.getloadavg()[0], 2)


@dataclass(frozen=True)
class FreshRows:
    """A simulated base block and how it is renewed per cycle; ``cycle(k)`` gives cycle ``k``'s rows.

    Parameters: ``base_rows`` (rows simulated once), ``users`` and ``rate_eps``
    (the simulator's end users and benign calls/s), ``renamed_share`` (share
    of the users renamed in each cycle after the first), ``seed``,
    ``end_time`` (the run's events end about here, Unix s; default now).
    """

    base: tuple[dict[str, Any], ...]
    span_s: float
    renamed_share: float

    @classmethod
    def simulate(cls, base_rows: int = 100_000, users: int = 6000, rate_eps: float = 2500.0, renamed_share: float = 0.25,
                 seed: int = 11, start_time: float | None = None) -> FreshRows:
        """Simulate the base block (benign traffic of ``users`` end users plus services and jobs)."""
        from ingest.simulator import ClusterSimulator

        sim = ClusterSimulator(seed=seed, users=users, start_time=time.time() if start_time is None else start_time, benign_rate_eps=rate_eps)
        rows: list[dict[str, Any]] = []
        for i, call in enumerate(sim.calls(base_rows / rate_eps * 1.3)):
            rows.append(call.to_row(f"b{i}", b"bench-key"))
            if len(rows) >= base_rows:
                break
        span = rows[-1]["time"] - rows[0]["time"] + 1.0 / rate_eps
        return cls(tuple(rows), span, renamed_share)

    def cycle(self, k: int) -> list[dict[str, Any]]:
        """Cycle ``k``: times shifted by ``k`` spans, new ids, a fresh share of the users renamed (none in cycle 0)."""
        shift, cut = k * self.span_s, int(self.renamed_share * 1000)
        renamed: dict[str, bool] = {}
        out = []
        for i, row in enumerate(self.base):
            new = dict(row, id=f"c{k}-{i}", time=row["time"] + shift)
            principal = row["principal"]
            if k and principal:
                hit = renamed.get(principal)
                if hit is None:
                    hit = renamed[principal] = zlib.crc32(f"{principal}/{k}".encode()) % 1000 < cut
                if hit:
                    _rename(new, f"~c{k}")
            out.append(new)
        return out


def _rename(row: dict[str, Any], suffix: str) -> None:
    """Make the row's user a new one: principal, the objects it touches and the account it logs in as."""
    row["principal"] = row["principal"] + suffix
    for name in _RENAMED_FIELDS:
        if row.get(name):
            row[name] = [v + suffix for v in row[name]]
    if row.get("credential_subject"):
        row["credential_subject"] = row["credential_subject"] + suffix


def fresh_rows(total: int, rows: FreshRows) -> Iterator[list[dict[str, Any]]]:
    """``total`` rows as successive cycles of ``rows`` (the last one cut short)."""
    k, left = 0, total
    while left > 0:
        chunk = rows.cycle(k)[:left]
        left -= len(chunk)
        k += 1
        yield chunk


def _metric(url: str, name: str) -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _drain_cpu(worker_pid: int, broker_pid: int, metrics_url: str, target: float, timeout: float = 600) -> dict[str, float]:
    """CPU of worker and broker from the first processed summary until ``target`` summaries."""
    deadline = time.time() + timeout
    while _metric(metrics_url, "kubeward_worker_summaries_total") == 0:
        if time.time() > deadline:
            raise TimeoutError(f"the worker processed nothing in {timeout} s")
        time.sleep(0.02)
    start_count = _metric(metrics_url, "kubeward_worker_summaries_total")
    w0, b0, t0, load0 = cpu_seconds(worker_pid), cpu_seconds(broker_pid), time.time(), load_average()
    done = start_count
    while time.time() < deadline:
        done = _metric(metrics_url, "kubeward_worker_summaries_total")
        if done >= target:
            return {"rows": done - start_count, "worker_cpu_s": cpu_seconds(worker_pid) - w0, "broker_cpu_s": cpu_seconds(broker_pid) - b0,
                    "wall_s": time.time() - t0, "load_average_start": load0, "load_average_end": load_average()}
        time.sleep(0.05)
    raise TimeoutError(f"worker processed {done} of {target} summaries in {timeout} s")


def _prefill(producer: Any, rows: FreshRows, total: int) -> int:
    """Send ``total`` fresh rows as envelopes of up to 1,000 rows keyed by actor; return how many were sent."""
    from ingest import SUMMARIES
    from ingest.envelope import encode_rows
    from ingest.envelopebuffer import EnvelopeBuffer

    buffer = EnvelopeBuffer(range(SUMMARIES.partitions), envelope_rows=1000, linger_ms=1e9)
    sent = 0
    for chunk in fresh_rows(total, rows):
        for env in buffer.add(chunk, now=0.0):
            producer.send(SUMMARIES.name, key=env.key.encode() if isinstance(env.key, str) else env.key, value=encode_rows(list(env.rows)), partition=env.partition)
            sent += len(env.rows)
    for env in buffer.drain():
        producer.send(SUMMARIES.name, key=env.key.encode() if isinstance(env.key, str) else env.key, value=encode_rows(list(env.rows)), partition=env.partition)
        sent += len(env.rows)
    producer.flush()
    return sent


def _run_worker(stack: Any, sent: int, label: str, **overrides: Any) -> dict[str, float]:
    """Start a worker (its own consumer group) on the pre-filled topic and measure its CPU until it has drained it."""
    from deploy.runtime.process import stop_process

    stop_process(stack.worker)
    stack.start_worker(**overrides)
    metrics_url = f"http://127.0.0.1:{stack.ports['worker_web']}/metrics"
    run = _drain_cpu(stack.worker.pid, stack.broker_handle.pid if stack.broker_handle else 0, metrics_url, sent)
    say(f"worker ({label}): {run['rows'] / run['worker_cpu_s']:,.0f} summaries/CPU-s (load average {run['load_average_end']})")
    return run


def bench_worker(workdir: Path, envelope_rows_total: int, single_total: int, worker_settings: dict[str, Any] | None = None,
                 rows: FreshRows | None = None) -> dict[str, Any]:
    """Worker summaries per CPU-second on fresh envelopes: shipped defaults vs no detection, then one summary per message."""
    from kafka import KafkaProducer

    from deploy.runtime.stack import LocalStack
    from ingest import SUMMARIES, row_to_summary

    rows = rows or FreshRows.simulate(start_time=time.time() - envelope_rows_total / 2500.0)
    say(f"worker: {envelope_rows_total} fresh summaries ({len(rows.base)}-row cycles of {rows.span_s:.0f} s, {rows.renamed_share:.0%} of users renamed per cycle)")
    with LocalStack(workdir / "worker", worker_settings=dict(worker_settings or {}), with_worker=False, with_shim=False) as stack:
        producer = KafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=5, max_request_size=8 << 20)
        sent = _prefill(producer, rows, envelope_rows_total)
        say(f"worker: topic pre-filled with {sent} summaries; baseline worker (no detector, no enricher) first")
        base_run = _run_worker(stack, sent, "no detection", app_id="kubeward-bench-baseline", **NO_DETECTION)
        env_run = _run_worker(stack, sent, "every detector and enricher")
        done = _metric(f"http://127.0.0.1:{stack.ports['worker_web']}/metrics", "kubeward_worker_summaries_total")
        singles = [row_to_summary(r).model_dump_json().encode() for r in rows.cycle(envelope_rows_total // len(rows.base) + 1)[:single_total]]
        for i, value in enumerate(singles):
            producer.send(SUMMARIES.name, key=f"s{i % 997}".encode(), value=value)
        producer.flush()
        assert stack.worker is not None
        single_run = _drain_cpu(stack.worker.pid, stack.broker_handle.pid if stack.broker_handle else 0, f"http://127.0.0.1:{stack.ports['worker_web']}/metrics", done + len(singles))
        say(f"worker: single {single_run['rows'] / single_run['worker_cpu_s']:,.0f} summaries/CPU-s")
        producer.close()
    env_rate = env_run["rows"] / env_run["worker_cpu_s"]
    base_rate = base_run["rows"] / base_run["worker_cpu_s"]
    single_rate = single_run["rows"] / single_run["worker_cpu_s"]
    return {
        "records_per_cpu_second": round(env_rate),
        "records_per_cpu_second_no_detection": round(base_rate),
        "vs_no_detection_ratio": round(env_rate / base_rate, 2),
        "records_per_cpu_second_single": round(single_rate),
        "envelope_vs_single_ratio": round(env_rate / single_rate, 2),
        "envelope_run": env_run,
        "no_detection_run": base_run,
        "single_run": single_run,
        "broker_cpu_per_million_records_envelope_s": round(env_run["broker_cpu_s"] / env_run["rows"] * 1e6, 2),
    }


def bench_worker_inprocess(total: int, rows: FreshRows | None = None, envelope_rows: int = 20_000, **settings: Any) -> dict[str, Any]:
    """Rows per CPU-second of ``Pipeline.handle_many`` (shipped settings plus ``settings``) over fresh rows in envelopes.

    Only ``handle_many`` is timed (``time.process_time``): row generation and
    Arrow encoding are not the worker's work.
    """
    from ingest.envelope import encode_rows
    from streams import WorkerSettings
    from streams.pipeline import Pipeline

    rows = rows or FreshRows.simulate(start_time=time.time() - total / 2500.0)
    pipeline = Pipeline(WorkerSettings(**settings), "l7.summaries.v1")
    pipeline.processor(0, ())  # start-up (rule packs, enrichers, imports) is paid once per worker, not per row
    cpu, done, offset, load0 = 0.0, 0, 0, load_average()
    for chunk in fresh_rows(total, rows):
        batches = [(encode_rows(chunk[i:i + envelope_rows]), chunk[min(len(chunk), i + envelope_rows) - 1]["time"]) for i in range(0, len(chunk), envelope_rows)]
        started = time.process_time()
        for value, now in batches:
            done += pipeline.handle_many(0, [(None, value, offset)], now=now).rows
            offset += 1
        cpu += time.process_time() - started
    return {"rows": done, "cpu_s": round(cpu, 2), "records_per_cpu_second": round(done / cpu), "load_average_start": load0, "load_average_end": load_average()}
