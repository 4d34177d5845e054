"""A SIEM-side consumer of Kubeward findings: one OCSF 1.5 Detection Finding JSON per line on stdout.

Plain kafka-python and the standard library, nothing of Kubeward's: copy it next to a log shipper
(Splunk, Elastic, Sentinel, Chronicle) that reads stdout or a file. It joins a consumer group
(offsets committed, so a restart goes on where it stopped) and prints each record's value as one
compact JSON line, the Kafka key (the finding uid) being inside it as finding_info.uid.

    python consume_findings.py --bootstrap 127.0.0.1:9092 --group siem-splunk >> findings.ndjson

Same lines with kcat: kcat -b 127.0.0.1:9092 -G siem-splunk security.findings.v1 (see README.md beside it)
"""

from __future__ import annotations

import argparse
import json
import sys

from kafka import KafkaConsumer

TOPIC = "security.findings.v1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print Kubeward's OCSF findings, one JSON per line.")
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (default: %(default)s)")
    parser.add_argument("--topic", default=TOPIC, help="findings topic (default: %(default)s)")
    parser.add_argument("--group", default="kubeward-siem", help="consumer group; offsets are committed (default: %(default)s)")
    parser.add_argument("--from-beginning", action="store_true", help="a new group starts at the topic's first finding (default: its end)")
    parser.add_argument("--idle-exit-s", type=float, default=0, help="exit after this many seconds without a record (default: run forever)")
    parser.add_argument("--max", type=int, default=0, help="exit after this many findings (default: no limit)")
    args = parser.parse_args(argv)
    consumer = KafkaConsumer(
        args.topic, bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=True,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        consumer_timeout_ms=int(args.idle_exit_s * 1000) if args.idle_exit_s else float("inf"),
    )
    printed = 0
    try:
        for record in consumer:  # ends after --idle-exit-s without records
            try:
                finding = json.loads(record.value)
            except (TypeError, ValueError):
                print(f"skipped a value that is not JSON at offset {record.offset}", file=sys.stderr)
                continue
            print(json.dumps(finding, separators=(",", ":")), flush=True)
            printed += 1
            if args.max and printed >= args.max:
                break
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
