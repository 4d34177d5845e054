"""CPU cost of the worker's ``Pipeline`` in the tree of the current directory, for same-run A/B comparisons.

Usage (from a checkout, e.g. one made with ``git archive <commit> | tar -x -C /tmp/old``)::

    cd /tmp/old && python /path/to/deploy/lab/worker_cost.py 1     # ms of CPU per batch of 1 row
    cd /tmp/old && python /path/to/deploy/lab/worker_cost.py 30    # ... of 30 rows
    cd /tmp/old && python /path/to/deploy/lab/worker_cost.py big   # summaries per CPU-second, 20k-row envelopes

Run each tree alternately in one session: on a shared machine only the ratio of
two trees measured side by side means something. Rows are simulated benign
traffic (``deploy.lab.bench_worker.FreshRows``, seed 11: 6,000 users, services
and jobs); shipped worker settings; the worker's start-up (imports, rule packs)
is excluded; ``time.process_time`` of ``Pipeline.handle_many`` only. Prints one
JSON line.
"""

from __future__ import annotations

import json
import sys
import time

sys.path.insert(0, ".")  # the tree being measured, not this file's


def batch_cost(rows_per_batch: int, total: int = 12_000) -> dict[str, float]:
    """CPU milliseconds per batch of ``rows_per_batch`` rows (one envelope each), after a warm-up."""
    from deploy.lab.bench_worker import FreshRows
    from ingest.envelope import encode_rows
    from streams import WorkerSettings
    from streams.pipeline import Pipeline

    chunk = FreshRows.simulate(base_rows=total, start_time=time.time() - total / 2500.0, seed=11).cycle(0)
    messages = [encode_rows(chunk[i:i + rows_per_batch]) for i in range(0, total - rows_per_batch + 1, rows_per_batch)]
    pipeline = Pipeline(WorkerSettings(), "l7.summaries.v1")
    pipeline.processor(0, ())
    warm = min(100, len(messages) // 4)

    def feed(offsets: range) -> None:
        for off in offsets:
            pipeline.handle_many(0, [(None, messages[off], off)], now=chunk[(off + 1) * rows_per_batch - 1]["time"])

    feed(range(warm))
    started = time.process_time()
    feed(range(warm, len(messages)))
    return {"rows_per_batch": rows_per_batch, "batches": len(messages) - warm,
            "cpu_ms_per_batch": round((time.process_time() - started) / (len(messages) - warm) * 1000, 3)}


def throughput(total: int = 300_000) -> dict[str, float]:
    """Summaries per CPU-second over ``total`` fresh rows in 20k-row envelopes (``bench_worker_inprocess``)."""
    from deploy.lab.bench_worker import FreshRows, bench_worker_inprocess
    from streams import WorkerSettings
    from streams.pipeline import Pipeline

    rows = FreshRows.simulate(start_time=time.time() - total / 2500.0, seed=11)
    Pipeline(WorkerSettings(), "l7.summaries.v1").processor(0, ())  # imports and rule packs warm, in every tree
    result = bench_worker_inprocess(total, rows)
    return {"rows": result["rows"], "cpu_s": result["cpu_s"], "rows_per_cpu_second": result["records_per_cpu_second"]}


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "big"
    print(json.dumps(throughput() if what == "big" else batch_cost(int(what))))
