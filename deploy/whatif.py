"""``kubeward whatif``: what a candidate rule set, model or policy would have refused in recorded traffic.

Replays recorded summaries (Parquet archives, or ``l7.summaries.v1`` read with a
fresh consumer that joins no group and commits nothing, so the workers are not
disturbed) through two worker pipelines, the deployed settings (baseline) and
the candidate, and applies each one's verdicts to the recorded requests as the
shim would, a detect->enforce latency after their evidence. It reports, for
each, the actors and requests that would have been refused (by namespace,
service, attack class, action), the collateral (refused requests of a flagged
actor that were not the pattern it was flagged for), the top actors, and the
difference candidate - baseline. With ``--labels`` (JSON lines ``{"id": ...,
"malicious": true|false}``, as ``kubeward simulate --labels`` writes) it adds
attackers caught and the benign collateral.

Example: what switching namespace ``shop`` to enforce would have refused in a
simulated archive, with its labels::

    kubeward simulate --seed 101 --seconds 300 --rate 100 --out build/sim.parquet --labels build/sim.labels.jsonl
    kubeward whatif --parquet build/sim.parquet --labels build/sim.labels.jsonl --enforce shop --out build/whatif.json

The baseline is the worker's settings as the environment gives them
(``KUBEWARD_WORKER_*``; ``--baseline-policy FILE`` replaces its policy); the
candidate is the baseline changed by ``--rules-dir``, ``--rule-override``,
``--model``, ``--policy`` and ``--enforce``.

``--allowlist FILE``: a learned allow-list (``policy suggest --format shim``)
for the candidate's shim, enforced where its policy enforces the destination;
``--baseline-allowlist``: the deployed one (default none; kept by the
candidate unless --allowlist names another). Its refusals count as action
``allowlist``, class and rule ``allowlist:<reason>``; ``allowlist`` in each run
says what it refuses on its own, whatever answered first::

    kubeward policy suggest --parquet build/learn.parquet --format shim --out build/allow
    kubeward whatif --parquet build/sim.parquet --labels build/sim.labels.jsonl --allowlist build/allow/allowlist.yaml --enforce shop

The core and its definitions are in ``deploy.counterfactual``. Recorded
traffic is replayed open loop (refused requests are still fed to the worker as
answered): ``kubeward evaluate`` closes the loop on simulated traffic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from deploy.whatiftable import render
from ingest.errors import SettingsError

__all__ = ["add_cli", "kafka_table", "parquet_tables", "read_labels"]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CANDIDATE_OPTIONS = "--enforce, --policy, --rules-dir, --rule-override, --model or --allowlist"


# --- reading the inputs -------------------------------------------------------------------------------------------


def _since(args: argparse.Namespace, now: float) -> float | None:
    """The event time to start from: ``--since`` (ISO 8601, UTC unless it says otherwise) or ``--last`` (back from now)."""
    if args.since:
        try:
            parsed = datetime.fromisoformat(args.since)
        except ValueError:
            raise SettingsError(f"--since={args.since!r}: not an ISO 8601 time (e.g. 2026-05-01T12:00:00Z)") from None
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
    if args.last:
        m = _DURATION.fullmatch(args.last.strip())
        if m is None or float(m.group(1)) <= 0:
            raise SettingsError(f"--last={args.last!r}: not a duration such as 90s, 30m, 1h or 2d")
        return now - float(m.group(1)) * _UNIT_S[m.group(2)]
    return None


def _after(table: pa.Table, since: float | None) -> pa.Table:
    return table if since is None else table.filter(pc.greater_equal(table["time"], since))


def parquet_tables(paths: Sequence[Path], since: float | None = None, max_rows: int | None = None, rows_per_read: int = 50_000) -> Iterator[pa.Table]:
    """The rows of Parquet archives with the ``RequestSummary`` schema, file after file, from ``since`` on, ``max_rows`` at most."""
    import pyarrow.parquet as pq

    left = max_rows
    for path in paths:
        try:
            reader = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as exc:
            raise SettingsError(f"--parquet={str(path)!r}: cannot read it as Parquet: {exc}") from None
        missing = [c for c in ("id", "time", "source", "destination", "method", "path_template") if c not in reader.schema_arrow.names]
        if missing:
            raise SettingsError(f"--parquet={str(path)!r}: not a summaries archive (no columns {missing})")
        for batch in reader.iter_batches(batch_size=rows_per_read):
            table = _after(pa.Table.from_batches([batch]), since)
            if left is not None:
                table = table.slice(0, left)
                left -= table.num_rows
            if table.num_rows:
                yield table
            if left is not None and left <= 0:
                return


def kafka_table(bootstrap: str, security: Any, since: float | None = None, max_rows: int | None = None, max_message_bytes: int = 16 << 20,
                timeout_s: float = 30.0, topic: str | None = None) -> tuple[pa.Table, int]:
    """(the summaries on the topic up to its end when reading started, from ``since`` on, in time order; undecodable messages).

    A fresh consumer with no group: it is assigned every partition, seeks by timestamp (or to the beginning),
    commits nothing and leaves no trace the workers could see. ``max_rows`` stops early (the first rows read).
    """
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from deploy.topicreader import records_to_end
    from ingest import SUMMARIES, EnvelopeError, decode_message

    topic = topic or SUMMARIES.name
    try:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="kubeward-whatif",
                                 max_partition_fetch_bytes=max_message_bytes, request_timeout_ms=int(timeout_s * 1000) + 5000,
                                 **security.kafka_python())
    except KafkaError as exc:
        raise SettingsError(f"--bootstrap={bootstrap!r}: cannot connect: {exc!r}") from None
    tables, bad, rows = [], 0, 0
    try:
        for rec in records_to_end(consumer, topic, since, timeout_s):
            if max_rows is not None and rows >= max_rows:
                break
            try:
                table = _after(decode_message(rec.value, max_message_bytes), since)
            except EnvelopeError:
                bad += 1
                continue
            tables.append(table)
            rows += table.num_rows
    except SettingsError as exc:
        raise SettingsError(f"--bootstrap={bootstrap!r}: {exc}") from None
    finally:
        consumer.close(autocommit=False)
    from ingest.envelope import SUMMARY_SCHEMA

    table = pa.concat_tables(tables) if tables else SUMMARY_SCHEMA.empty_table()
    table = table.sort_by([("time", "ascending"), ("id", "ascending")])
    return (table if max_rows is None else table.slice(0, max_rows)), bad


def read_labels(path: Path) -> dict[str, bool]:
    """Request id -> malicious, from JSON lines ``{"id": ..., "malicious": true|false, ...}``; errors name file:line."""
    labels: dict[str, bool] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"--labels={str(path)!r}: cannot read it: {exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise SettingsError(f"--labels={str(path)!r}: {path}:{n}: not JSON: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not isinstance(doc.get("malicious"), bool):
            raise SettingsError(f"--labels={str(path)!r}: {path}:{n}: expected {{\"id\": \"...\", \"malicious\": true|false}}, got {line[:80]!r}")
        labels[doc["id"]] = doc["malicious"]
    return labels


# --- the two settings ---------------------------------------------------------------------------------------------


def _rule_overrides(values: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--rule-override`` values (JSON objects ``{"rule-id": {"key": value}}``) merged, later keys winning."""
    merged: dict[str, dict[str, Any]] = {}
    for value in values:
        try:
            doc = json.loads(value)
        except ValueError as exc:
            raise SettingsError(f"--rule-override={value!r}: not JSON ({exc}); e.g. '{{\"scraping-rate\": {{\"floor\": 300}}}}'") from None
        if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
            raise SettingsError(f"--rule-override={value!r}: must be a JSON object of rule id -> object of settings")
        for rule, fields in doc.items():
            merged[rule] = {**merged.get(rule, {}), **fields}
    return merged


#: WorkerSettings field -> the option that sets it, to name it in an error
_OPTION_OF = {"rules_dir": "--rules-dir", "rule_overrides": "--rule-override", "detectors": "--rules-dir", "model_path": "--model",
              "model_mode": "--model-mode", "policy": "--policy/--enforce"}


def _built(given: dict[str, Any], **overrides: Any) -> Any:
    """``WorkerSettings`` from the environment and ``overrides``; an error names the option (``given``: option -> value) at fault."""
    from ingest.config import build_settings
    from streams.settings import WorkerSettings

    try:
        return build_settings(WorkerSettings, **overrides)
    except SettingsError as exc:
        text = str(exc)
        blamed = [o for f, o in _OPTION_OF.items() if f"KUBEWARD_WORKER_{f.upper()}" in text]
        where = "; ".join(f"{o}={given[o]!r}" for o in given if any(o in b for b in blamed)) or "the worker's settings (KUBEWARD_WORKER_*)"
        raise SettingsError(f"{where}: {text}") from None


def _policy_file(option: str, path: Path) -> Any:
    from ingest.policyfile import load_policy_file

    try:
        return load_policy_file(path).policy
    except SettingsError as exc:
        raise SettingsError(f"{option}={str(path)!r}: {exc}") from None


def build_candidate(args: argparse.Namespace) -> tuple[Any, Any]:
    """(baseline, candidate) ``WorkerSettings`` from the environment and the options; ``SettingsError`` names a bad one."""
    from ingest.policyfile import with_mode

    base_over = {"policy": _policy_file("--baseline-policy", args.baseline_policy)} if args.baseline_policy else {}
    baseline = _built({}, **base_over)
    given = {o: v for o, v in (("--rules-dir", args.rules_dir), ("--rule-override", args.rule_override), ("--model", args.model),
                               ("--model-mode", args.model_mode), ("--policy", args.policy), ("--enforce", args.enforce)) if v}
    if args.allowlist is not None:
        given["--allowlist"] = args.allowlist
    if not set(given) - {"--model-mode"}:
        raise SettingsError(f"nothing to compare: give what the candidate changes ({_CANDIDATE_OPTIONS})")
    over: dict[str, Any] = {**base_over}
    if args.rules_dir is not None:
        if not args.rules_dir.is_dir():
            raise SettingsError(f"--rules-dir={str(args.rules_dir)!r}: not a directory")
        over["rules_dir"] = args.rules_dir
    if args.rule_override:
        over["rule_overrides"] = {**baseline.rule_overrides, **_rule_overrides(args.rule_override)}
    if args.model is not None:
        _check_model(args.model)
        over["model_path"] = args.model
    if args.model_mode is not None:
        over["model_mode"] = args.model_mode
    policy = _policy_file("--policy", args.policy) if args.policy else baseline.policy
    for target in args.enforce or ():
        try:
            policy = with_mode(policy, "enforce", target)
        except SettingsError as exc:
            raise SettingsError(f"--enforce={target!r}: {exc}") from None
    over["policy"] = policy
    return baseline, _built(given, **over)


def build_allowlists(args: argparse.Namespace) -> tuple[Any, Any]:
    """(baseline, candidate) allow-lists (``enforcement.allowlist.AllowList`` or None): the candidate keeps the baseline's
    unless ``--allowlist`` names one; ``SettingsError`` names the option, the file and every problem."""
    baseline = _allowlist_file("--baseline-allowlist", args.baseline_allowlist) if args.baseline_allowlist else None
    return baseline, _allowlist_file("--allowlist", args.allowlist) if args.allowlist else baseline


def _allowlist_file(option: str, path: Path) -> Any:
    from enforcement.allowlist import AllowListError
    from enforcement.allowlistfile import load_allowlist

    if path.is_dir():
        raise SettingsError(f"{option}={str(path)!r}: a directory; give the file in it ({str(path / 'allowlist.yaml')!r} as policy suggest writes it)")
    if not path.is_file():
        raise SettingsError(f"{option}={str(path)!r}: no such file (kubeward policy suggest --format shim --out DIR writes DIR/allowlist.yaml)")
    try:
        return load_allowlist(path)
    except AllowListError as exc:
        raise SettingsError(f"{option}={str(path)!r}: {exc}") from None


def _unenforced(allowlist: Any, policy: Any) -> list[str]:
    """The destinations an allow-list governs whose mode in ``policy`` is not enforce (its refusals there only observed)."""
    def mode(destination: str) -> str:
        namespace, _, service = destination.rpartition("/")
        return str(policy.mode_for(namespace or None, service))

    return [d for d in allowlist.destinations if mode(d) != "enforce"]


def _check_model(path: Path) -> None:
    from models.artifacts import load_model
    from models.errors import ModelError

    try:
        load_model(path)
    except (ModelError, OSError) as exc:
        raise SettingsError(f"--model={str(path)!r}: {exc}") from None


# --- the command --------------------------------------------------------------------------------------------------


class _Progress:
    """Rows replayed and rate on stderr, every few seconds."""

    def __init__(self, every_s: float = 5.0, quiet: bool = False) -> None:
        self.started = self.last = time.monotonic()
        self.cpu = time.process_time()
        self.every_s, self.quiet, self.rows = every_s, quiet, 0

    def __call__(self, rows: int) -> None:
        self.rows = rows
        now = time.monotonic()
        if not self.quiet and now - self.last >= self.every_s:
            self.last = now
            print(f"  {rows} rows replayed, {rows / (now - self.started):.0f} rows/s", file=sys.stderr, flush=True)

    def rate(self) -> float:
        return self.rows / max(time.monotonic() - self.started, 1e-9)


def _source(args: argparse.Namespace, baseline: Any) -> Any:
    since = _since(args, time.time())
    if args.parquet:
        return parquet_tables([Path(p) for p in args.parquet], since, args.max_rows)
    from deploy.policy import read_kafka_credentials

    security = read_kafka_credentials(args.kafka_credentials)
    table, bad = kafka_table(args.bootstrap, security, since, args.max_rows, baseline.max_message_bytes)
    if not args.quiet:
        print(f"read {table.num_rows} rows from {args.bootstrap} ({bad} undecodable messages skipped)", file=sys.stderr, flush=True)
    return table


def _check_numbers(args: argparse.Namespace) -> Any:
    from deploy.counterfactual import WhatIfOptions

    if args.max_rows is not None and args.max_rows < 1:
        raise SettingsError(f"--max-rows={args.max_rows}: must be >= 1")
    if args.top < 0:
        raise SettingsError(f"--top={args.top}: must be >= 0")
    for option, value, ok in (("--latency-s", args.latency_s, args.latency_s >= 0), ("--batch-s", args.batch_s, args.batch_s > 0)):
        if not ok:
            raise SettingsError(f"{option}={value}: must be {'>= 0' if option == '--latency-s' else '> 0'}")
    return WhatIfOptions(latency_s=args.latency_s, batch_s=args.batch_s, top=args.top)


def _cmd(args: argparse.Namespace) -> int:
    from deploy.counterfactual import whatif

    if bool(args.parquet) == bool(args.kafka):
        raise SettingsError("give the recorded traffic: --parquet FILE... or --kafka (with --bootstrap HOST:PORT)")
    options = _check_numbers(args)
    baseline, candidate = build_candidate(args)
    base_list, cand_list = build_allowlists(args)
    if cand_list is not None and not args.quiet:
        left = _unenforced(cand_list, candidate.policy)
        if left:
            print(f"note: the candidate's policy does not enforce {len(left)} of the {len(cand_list.destinations)} destinations the allow-list "
                  f"governs ({', '.join(left[:5])}{', ...' if len(left) > 5 else ''}): its refusals there count as observed (--enforce NS)",
                  file=sys.stderr)
    labels = read_labels(args.labels) if args.labels else None
    declared = None
    if candidate.specs_dir is not None:
        from ingest.openapi import declared_endpoints, load_spec_dir

        declared = declared_endpoints(load_spec_dir(candidate.specs_dir))
    progress = _Progress(quiet=args.quiet)
    report = whatif(_source(args, baseline), baseline, candidate, labels, options, declared, progress, cand_list, base_list)
    report["seconds"] = round(time.monotonic() - progress.started, 1)
    report["rows_per_s"] = round(progress.rate())
    report["cpu_seconds"] = round(time.process_time() - progress.cpu, 1)
    print(render(report))
    if not args.quiet:
        print(f"{report['rows']} rows in {report['seconds']} s, {report['cpu_seconds']} CPU s ({report['rows_per_s']} rows/s, both runs; "
              "reading included)", file=sys.stderr)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=False))
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward whatif``."""
    p = sub.add_parser("whatif", help="what a candidate rule, model or policy would have refused in recorded traffic",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("recorded traffic (one of)")
    src.add_argument("--parquet", nargs="+", metavar="FILE", help="Parquet archives of summaries (kubeward simulate --out, in time order)")
    src.add_argument("--kafka", action="store_true", help="read l7.summaries.v1 from its beginning (or --since) to its end now; no consumer group")
    src.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers with --kafka (default 127.0.0.1:9092)")
    src.add_argument("--kafka-credentials", type=Path, metavar="FILE", help="JSON client credentials for a secured broker (kubeward kafka credentials NAME)")
    when = src.add_mutually_exclusive_group()
    when.add_argument("--since", metavar="ISO", help="only requests from this time on (ISO 8601, UTC unless it says otherwise)")
    when.add_argument("--last", metavar="DURATION", help="only requests of the last DURATION before now (90s, 30m, 1h, 2d)")
    src.add_argument("--max-rows", type=int, metavar="N", help="stop after N rows")
    cand = p.add_argument_group("the candidate (the baseline changed by these)")
    cand.add_argument("--enforce", action="append", metavar="NS|NS/SVC", help="switch a namespace or namespace/service to enforce (repeatable)")
    cand.add_argument("--policy", type=Path, metavar="FILE", help="the candidate's policy file (YAML or JSON, as kubeward policy apply takes); --enforce applies on top")
    cand.add_argument("--rules-dir", type=Path, metavar="DIR", help="detection rule files instead of the shipped models/rules/")
    cand.add_argument("--rule-override", action="append", metavar="JSON", help="""rule tuning, e.g. '{"scraping-rate": {"floor": 300}}' (repeatable)""")
    cand.add_argument("--model", type=Path, metavar="FILE", help="a per-cohort anomaly model (kubeward train)")
    cand.add_argument("--model-mode", choices=["observe", "inherit"], help="observe: the model never enforces (the worker's default); inherit: the policy's mode")
    cand.add_argument("--allowlist", type=Path, metavar="FILE", help="a learned allow-list for the candidate's shim (kubeward policy suggest --format shim); "
                      "enforced where the policy enforces the destination")
    p.add_argument("--baseline-policy", type=Path, metavar="FILE", help="the deployed policy (default: the worker's settings, KUBEWARD_WORKER_POLICY__*)")
    p.add_argument("--baseline-allowlist", type=Path, metavar="FILE", help="the allow-list the deployed shim enforces (default: none); "
                   "the candidate keeps it unless --allowlist names another")
    p.add_argument("--labels", type=Path, metavar="FILE", help='JSON lines {"id": ..., "malicious": true|false} (kubeward simulate --labels): benign collateral, attackers caught')
    p.add_argument("--latency-s", type=float, default=0.1, help="detect->enforce latency, evidence to shim (default 0.1)")
    p.add_argument("--batch-s", type=float, default=0.25, help="event seconds per replay batch (default 0.25; verdicts are timed from their evidence)")
    p.add_argument("--top", type=int, default=10, help="actors listed (default 10)")
    p.add_argument("--out", type=Path, metavar="FILE", help="write the JSON report here")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=_cmd)
