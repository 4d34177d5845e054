"""``kubeward findings tail``: the OCSF findings on ``security.findings.v1``, filtered, as JSON lines or a table.

The Kafka edge of ``deploy.findingview`` (filters and formats, tested without a
broker): a kafka-python consumer without a consumer group (it commits nothing
and disturbs no SIEM consumer), assigned every partition of the topic. By
default it starts at the end and follows new findings until Ctrl-C or
``--max``; ``--from-beginning`` reads the topic from its start and stops at the
end it had when the command started, unless ``--follow``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from deploy.findingview import TABLE_HEADER, FindingFilter, decode, json_line, parse_severity, table_row
from deploy.policy import DEFAULT_BOOTSTRAP, read_kafka_credentials
from ingest import FINDINGS
from ingest.errors import SettingsError

__all__ = ["add_cli", "tail"]

_CLIENT_ID = "kubeward-findings-cli"

_DESCRIPTION = f"""\
Show the OCSF 1.5 Detection Findings the workers publish on {FINDINGS.name}.

Each finding is one actor's attack: its first detection is published as
activity Create (count 1); repeats are folded into the same finding uid and
published as an Update with count, start_time and end_time (at most every
findings_update_s, 300 s by default). Findings carry the attack class
(finding_info.types), OWASP API 2023 / LLM 2025 ids (finding_info.tags) and
MITRE ATT&CK / ATLAS techniques (finding_info.attacks).

Filters combine (all must hold):
  --severity NAME|ID   at least this severity: informational 1, low 2, medium 3, high 4, critical 5
  --class C            attack class (bola), OWASP id (API1:2023, API1, LLM01) or ATT&CK/ATLAS id (T1110.004); repeatable
  --namespace NS       the destination service's namespace or the calling workload's
  --actor TEXT         a substring of the actor: "workload|principal" (shop/web|alice), a client address, an MCP tool

examples:
  kubeward findings tail                                   follow new findings as a table
  kubeward findings tail --from-beginning --output json    every finding so far, one OCSF JSON per line
  kubeward findings tail --severity high --class API1 --namespace shop --follow
  kubeward findings tail --actor 10.0.0.9 --max 5
"""


def _consumer(bootstrap: str, timeout_s: float, credentials: Path | None) -> KafkaConsumer:
    return KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id=_CLIENT_ID,
                         bootstrap_timeout_ms=int(timeout_s * 1000), **read_kafka_credentials(credentials).kafka_python())


def _assign(consumer: KafkaConsumer, bootstrap: str, from_beginning: bool) -> dict[TopicPartition, int]:
    """Assign every partition of the topic at its start or end; the end offsets now."""
    partitions = consumer.partitions_for_topic(FINDINGS.name)
    if not partitions:
        raise SettingsError(f"topic {FINDINGS.name!r} does not exist on {bootstrap}; create the topics first (kubeward kafka topics)")
    parts = [TopicPartition(FINDINGS.name, p) for p in sorted(partitions)]
    consumer.assign(parts)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*parts)
    return dict(consumer.end_offsets(parts))


def tail(bootstrap: str, keep: FindingFilter, output: str = "table", from_beginning: bool = False, follow: bool = True,
         limit: int | None = None, timeout_s: float = 10.0, credentials: Path | None = None, out: TextIO | None = None) -> int:
    """Print the findings that pass ``keep`` until ``limit`` are printed, or the end (without ``follow``); the count printed."""
    out = out or sys.stdout
    consumer = _consumer(bootstrap, timeout_s, credentials)
    printed = 0
    try:
        end = _assign(consumer, bootstrap, from_beginning)
        if output == "table":
            print(TABLE_HEADER, file=out, flush=True)
        while limit is None or printed < limit:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    finding = decode(rec.value)
                    if finding is None or not keep.matches(finding) or (limit is not None and printed >= limit):
                        continue
                    print(json_line(finding) if output == "json" else table_row(finding), file=out, flush=True)
                    printed += 1
            if not follow and all(consumer.position(tp) >= off for tp, off in end.items()):
                break
    finally:
        consumer.close()
    return printed


def _cmd_tail(args: argparse.Namespace) -> int:
    try:
        keep = FindingFilter(parse_severity(args.severity) if args.severity else 0, tuple(args.classes or ()), args.namespace, args.actor)
    except ValueError as exc:
        raise SettingsError(f"--severity: {exc}") from None
    follow = args.follow or not args.from_beginning
    started = time.monotonic()
    try:
        shown = tail(args.bootstrap, keep, args.output, args.from_beginning, follow, args.max, args.timeout, args.kafka_credentials)
    except KafkaError as exc:
        print(f"kubeward findings: Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(f"{shown} finding(s) shown in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``findings tail`` on an ``ArgumentParser.add_subparsers()`` object."""
    findings: argparse.ArgumentParser = subparsers.add_parser(
        "findings", help="the OCSF findings for the SOC: tail with filters (severity, class/OWASP, namespace, actor)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = findings.add_subparsers(dest="findings_command", metavar="{tail}", required=True)
    p = sub.add_parser("tail", help="print findings as they arrive (or from the beginning), filtered",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", default=DEFAULT_BOOTSTRAP, help="Kafka bootstrap servers (default: %(default)s)")
    p.add_argument("--kafka-credentials", type=Path, metavar="FILE",
                   help="JSON with protocol, username, password (and ca_file...) for a secured broker, as 'kubeward kafka credentials NAME' prints")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for Kafka (default: %(default)s)")
    p.add_argument("--from-beginning", action="store_true", help="start at the topic's first finding and stop at its end (unless --follow); default: new findings only")
    p.add_argument("--follow", action="store_true", help="keep waiting for new findings (the default without --from-beginning)")
    p.add_argument("--max", type=int, metavar="N", help="stop after N findings shown")
    p.add_argument("--severity", metavar="NAME|ID", help="minimum severity: informational, low, medium, high, critical (or 1-5)")
    p.add_argument("--class", dest="classes", action="append", metavar="C", help="attack class, OWASP id or ATT&CK/ATLAS id (repeatable: any of them)")
    p.add_argument("--namespace", metavar="NS", help="only findings about this namespace (destination service or calling workload)")
    p.add_argument("--actor", metavar="TEXT", help="only findings whose actor contains TEXT (workload|principal, address, MCP tool)")
    p.add_argument("--output", choices=["table", "json"], default="table", help="table (default) or one OCSF JSON per line")
    p.set_defaults(func=_cmd_tail)
    return findings
