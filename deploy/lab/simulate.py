"""``kubeward simulate``: the simulated cluster's traffic to Parquet, JSONL or Kafka.

Files hold ``RequestSummary`` rows with ground truth (for notebooks and
training); ``--kafka`` publishes envelopes to ``l7.summaries.v1`` paced in real
time, as collectors would. ``--labels FILE`` also writes the ground truth apart,
one JSON line per call (``{"id", "malicious", "scenario", "attack_id"}``, keyed by
the summary's id), for evaluations that must keep it out of what they replay
(``kubeward whatif --labels``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ingest.simulator import ClusterSimulator, plan_attacks, write_jsonl, write_parquet

__all__ = ["add_cli"]

KEY = b"kubeward-dev-object-key"


def _label(row: dict[str, Any]) -> str:
    """The labels-file line of a row: its id and ground truth."""
    truth = row.get("ground_truth") or {}
    return json.dumps({"id": row["id"], "malicious": bool(truth.get("malicious")), "scenario": truth.get("scenario"),
                       "attack_id": truth.get("attack_id")}) + "\n"


def _labels_of(out: Path, labels: Path) -> None:
    """Write the labels of the rows of a file just written (read back, so ids are the writer's own)."""
    if out.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows: Any = pq.read_table(out, columns=["id", "ground_truth"]).to_pylist()
    else:
        rows = (json.loads(line) for line in out.open(encoding="utf-8"))
    with labels.open("w", encoding="utf-8") as sink:
        sink.writelines(_label(row) for row in rows)


def _to_kafka(sim: ClusterSimulator, seconds: float, bootstrap: str, labels: Path | None = None) -> int:
    from ingest.publish import SummaryPublisher

    sent, next_report = 0, time.time() + 2
    sink = labels.open("w", encoding="utf-8") if labels is not None else None
    with SummaryPublisher(bootstrap) as pub:
        pub.start_background_flush()
        for call in sim.calls(seconds):
            delay = call.time - time.time()
            if delay > 0.002:
                time.sleep(delay)
            row = call.to_row(uuid.uuid4().hex, KEY)
            pub.publish_rows([row])
            if sink is not None:
                sink.write(_label(row))
            sent += 1
            if time.time() >= next_report:
                print(f"  {sent} summaries published, {pub.stats()['rows_failed']} failed", file=sys.stderr, flush=True)
                next_report += 2
        pub.flush()
    if sink is not None:
        sink.close()
    return sent


def _cmd(args: argparse.Namespace) -> int:
    attacks = plan_attacks(args.seed, args.seconds, args.warmup) if args.attacks else []
    start = time.time() if args.kafka else args.start_time
    sim = ClusterSimulator(seed=args.seed, users=args.users, start_time=start, attacks=attacks, benign_rate_eps=args.rate)
    if args.kafka:
        n = _to_kafka(sim, args.seconds, args.kafka, args.labels)
    elif args.out and args.out.endswith(".parquet"):
        n = write_parquet(sim.calls(args.seconds), Path(args.out), KEY)
    elif args.out:
        n = write_jsonl(sim.calls(args.seconds), Path(args.out), KEY)
    else:
        print("kubeward simulate: give --out FILE(.parquet|.jsonl) or --kafka BOOTSTRAP", file=sys.stderr)
        return 2
    if args.labels is not None and not args.kafka:
        _labels_of(Path(args.out), args.labels)
    print(f"{n} summaries written ({len(attacks)} attacks)" + (f", labels in {args.labels}" if args.labels is not None else ""))
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward simulate``."""
    p = sub.add_parser("simulate", help="simulated cluster traffic to Parquet, JSONL or Kafka", description=__doc__)
    p.add_argument("--seconds", type=float, default=60.0, help="simulated seconds (default 60)")
    p.add_argument("--rate", type=float, default=1000.0, help="benign calls per second (default 1000)")
    p.add_argument("--users", type=int, default=3000, help="end users (default 3000)")
    p.add_argument("--seed", type=int, default=7, help="seed (default 7)")
    p.add_argument("--no-attacks", dest="attacks", action="store_false", help="benign traffic only")
    p.add_argument("--warmup", type=float, default=20.0, help="seconds before the first attack (default 20)")
    p.add_argument("--start-time", type=float, default=1.8e9, help="Unix time of the first call in files (default 1.8e9)")
    p.add_argument("--out", help="output file: .parquet or .jsonl")
    p.add_argument("--kafka", metavar="BOOTSTRAP", help="publish to l7.summaries.v1 in real time instead")
    p.add_argument("--labels", type=Path, metavar="FILE", help="also write the ground truth apart: JSON lines {id, malicious, scenario, attack_id}")
    p.set_defaults(func=_cmd)
