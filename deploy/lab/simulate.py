"""``kubeward simulate``: the simulated cluster's traffic to Parquet, JSONL or Kafka.

Files hold ``RequestSummary`` rows with ground truth (for notebooks and
training); ``--kafka`` publishes envelopes to ``l7.summaries.v1`` paced in real
time, as collectors would.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ingest.simulator import ClusterSimulator, plan_attacks, write_jsonl, write_parquet

__all__ = ["add_cli"]

KEY = b"kubeward-dev-object-key"


def _to_kafka(sim: ClusterSimulator, seconds: float, bootstrap: str) -> int:
    from ingest.publish import SummaryPublisher

    sent, next_report = 0, time.time() + 2
    with SummaryPublisher(bootstrap) as pub:
        pub.start_background_flush()
        for call in sim.calls(seconds):
            delay = call.time - time.time()
            if delay > 0.002:
                time.sleep(delay)
            pub.publish_rows([call.to_row(uuid.uuid4().hex, KEY)])
            sent += 1
            if time.time() >= next_report:
                print(f"  {sent} summaries published, {pub.stats()['rows_failed']} failed", file=sys.stderr, flush=True)
                next_report += 2
        pub.flush()
    return sent


def _cmd(args: argparse.Namespace) -> int:
    attacks = plan_attacks(args.seed, args.seconds, args.warmup) if args.attacks else []
    start = time.time() if args.kafka else args.start_time
    sim = ClusterSimulator(seed=args.seed, users=args.users, start_time=start, attacks=attacks, benign_rate_eps=args.rate)
    if args.kafka:
        n = _to_kafka(sim, args.seconds, args.kafka)
    elif args.out and args.out.endswith(".parquet"):
        n = write_parquet(sim.calls(args.seconds), Path(args.out), KEY)
    elif args.out:
        n = write_jsonl(sim.calls(args.seconds), Path(args.out), KEY)
    else:
        print("kubeward simulate: give --out FILE(.parquet|.jsonl) or --kafka BOOTSTRAP", file=sys.stderr)
        return 2
    print(f"{n} summaries written ({len(attacks)} attacks)")
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
    p.set_defaults(func=_cmd)
