"""Scale-out on one machine: worker throughput against the number of workers sharing one partitioned topic.

A fresh broker; ``l7.summaries.v1`` with ``partitions`` partitions (4) and the
worker's changelog made ahead with as many; the topic pre-filled with fresh
simulated summaries (``deploy.lab.bench_worker.fresh_rows``: event time moving
forward, new actors appearing) as envelopes keyed by actor. Then, for 1, 2 and
4 workers in one consumer group (shipped defaults otherwise), started one after
the other; once all are ready, the summaries processed per wall second until the
topic is drained, summed over the workers' metrics: ``records_per_second`` per
worker count (what the first workers drained while the others started is not
counted: ``rows`` says how many were). Each count drains the same rows in a
consumer group of its own.

On this 2-core machine the broker, the pre-filled topic's reads and every worker
share two cores: more workers than cores cannot add throughput here, and the
curve shows what the partitioned topic and the group's rebalance cost. On a
cluster each worker has its own cores (README: "Scaling out").

Note what partitions mean for detection: state that is not per actor (object
owners, per-address credential tables, cohorts) lives per partition, so with
several partitions each worker sees only its share of the other actors (README:
Known limits). These figures are throughput only.

Run: ``python -m deploy.lab.bench_scale [--rows 400000] [--workers 1 2 4]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

from deploy.lab.bench_real import say
from deploy.lab.bench_worker import FreshRows, _metric, fresh_rows, load_average

__all__ = ["bench_scale"]


def _prefill(bootstrap: str, rows: FreshRows, total: int, partitions: int) -> int:
    from kafka import KafkaProducer

    from ingest import SUMMARIES
    from ingest.envelope import encode_rows
    from ingest.envelopebuffer import EnvelopeBuffer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=8 << 20)
    buffer, sent = EnvelopeBuffer(range(partitions), envelope_rows=1000, linger_ms=1e9), 0
    try:
        for chunk in fresh_rows(total, rows):
            for env in [*buffer.add(chunk, now=0.0)]:
                producer.send(SUMMARIES.name, key=env.key.encode(), value=encode_rows(list(env.rows)), partition=env.partition)
                sent += len(env.rows)
        for env in buffer.drain():
            producer.send(SUMMARIES.name, key=env.key.encode(), value=encode_rows(list(env.rows)), partition=env.partition)
            sent += len(env.rows)
        producer.flush()
    finally:
        producer.close()
    return sent


def _drain(ports: list[int], target: float, timeout: float = 900) -> dict[str, float]:
    """Wall time from the first summary any worker processed until the workers' summed count reaches ``target``."""
    urls = [f"http://127.0.0.1:{p}/metrics" for p in ports]

    def done() -> float:
        total = 0.0
        for url in urls:
            try:
                total += _metric(url, "kubeward_worker_summaries_total")
            except OSError:
                pass
        return total

    deadline = time.time() + timeout
    while done() == 0:
        if time.time() > deadline:
            raise TimeoutError("no worker processed anything")
        time.sleep(0.02)
    start, t0 = done(), time.time()
    while time.time() < deadline:
        now = done()
        if now >= target:
            return {"rows": now - start, "wall_s": round(time.time() - t0, 2), "records_per_second": round((now - start) / (time.time() - t0))}
        time.sleep(0.05)
    raise TimeoutError(f"the workers processed {done()} of {target} in {timeout} s")


def bench_scale(workdir: Path, rows_total: int = 400_000, workers: tuple[int, ...] = (1, 2, 4), partitions: int = 4) -> dict[str, Any]:
    """``records_per_second_by_workers``: summaries per wall second draining a pre-filled topic with N workers."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from deploy.runtime import broker
    from deploy.runtime.process import free_port, spawn_worker, stop_process, wait_worker
    from ingest import SUMMARIES

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    broker.fetch_jars()
    handle = broker.start(workdir / "kafka", port=free_port(), controller_port=free_port())
    out: dict[str, Any] = {"partitions": partitions, "rows": rows_total, "runs": {}}
    try:
        broker.ensure_topics(handle.bootstrap, partitions_override={SUMMARIES.name: partitions})
        sent = _prefill(handle.bootstrap, FreshRows.simulate(start_time=time.time() - rows_total / 2500.0), rows_total, partitions)
        say(f"scale: {sent} summaries in {partitions} partitions")
        for count in workers:
            app_id = f"kubeward-scale-{count}"
            with KafkaAdminClient(bootstrap_servers=handle.bootstrap, client_id="bench-scale") as admin:
                admin.create_topics([NewTopic(f"{app_id}-actor-state-changelog", partitions, 1, topic_configs={"cleanup.policy": "compact"})])
            ports = [free_port() for _ in range(count)]
            procs = [spawn_worker(workdir / f"worker-{count}-{i}.log", {"bootstrap": handle.bootstrap, "app_id": app_id, "web_port": port})
                     for i, port in enumerate(ports)]
            try:
                for i, proc in enumerate(procs):
                    wait_worker(proc, workdir / f"worker-{count}-{i}.log")
                run = _drain(ports, sent)
            finally:
                for proc in procs:
                    stop_process(proc)
            run["load_average_end"] = load_average()
            out["runs"][str(count)] = run
            say(f"scale: {count} worker(s): {run['records_per_second']:,} summaries/s (wall), load average {run['load_average_end']}")
    finally:
        broker.stop(workdir / "kafka")
    out["records_per_second_by_workers"] = {k: v["records_per_second"] for k, v in out["runs"].items()}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.lab.bench_scale", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=400_000, help="summaries pre-filled (default: %(default)s)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker counts (default: 1 2 4)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the summaries topic (default: %(default)s)")
    args = parser.parse_args(argv)
    print(json.dumps(bench_scale(Path("build/bench/scale"), args.rows, tuple(args.workers), args.partitions), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
