"""``kubeward collect``: the per-node collector, from data-plane telemetry to ``l7.summaries.v1``.

Sources (any combination, at least one):

  --files GLOB           tail Envoy / Istio JSON access logs on the node, CRI lines
                         (/var/log/pods/*/istio-proxy/*.log) or plain JSON lines;
                         rotation-safe, offsets kept in --state-path across restarts.
                         Format: deploy/dataplanes/envoy/access-log-file.yaml
                         (Istio's default JSON access log is read too).
  --otlp [HOST:]PORT     OTLP/HTTP receiver, POST /v1/traces (protobuf or JSON):
                         SERVER spans with HTTP semantic conventions.
  --als [HOST:]PORT      Envoy gRPC Access Log Service (envoy.access_loggers.http_grpc).
  --extproc [HOST:]PORT  Envoy ext_proc tap (request and response bodies).
  --har FILE, --jsonl FILE
                         replay recorded traffic (HAR 1.2, or JSONL of observations)
                         at --speed, then exit once every source has ended.

Observations of one call from several reporters (say the ext_proc tap and the
access log) are joined by x-request-id: --join-expected names the reporters
that make a call complete, --hold-s how long to wait for the others. Each call
is summarised once (identity as keyed hashes, path template, object ids,
sensitive-data counts) and published as Arrow envelopes keyed by actor; inputs
that cannot be used go to l7.summaries.dlq.v1 with the reason. Prometheus
metrics (kubeward_collector_*) on --metrics-port. SIGTERM/SIGINT stop
gracefully: everything read is published and flushed, then offsets are saved.

Every flag has an environment form (KUBEWARD_COLLECTOR_*, nested sections with
__, e.g. KUBEWARD_COLLECTOR_FILES__PATHS='["/var/log/pods/*/istio-proxy/*.log"]',
KUBEWARD_COLLECTOR_IDENTITY__PRINCIPAL_KEY=...); flags win.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from ingest.errors import SettingsError

__all__ = ["DryRunPublisher", "add_cli", "build_sources", "build_summarizer"]


class DryRunPublisher:
    """A publisher that writes each summary row as one JSON line to a stream (``--dry-run``)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self.rows = 0
        self._lock = threading.Lock()

    def publish_rows(self, rows: list[dict[str, Any]]) -> None:
        """Write the rows."""
        with self._lock:
            self.stream.write(b"".join(orjson.dumps(r) + b"\n" for r in rows))
            self.rows += len(rows)

    def flush_due(self) -> None:
        """Nothing lingers."""

    def flush(self, timeout: float = 30) -> None:
        """Flush the stream."""
        with self._lock:
            self.stream.flush()

    def close(self, timeout: float = 30) -> None:
        """Flush."""
        self.flush()

    def stats(self) -> dict[str, int]:
        """Rows written."""
        return {"rows_sent": self.rows, "rows_failed": 0, "rows_buffered": 0}


def build_summarizer(settings: Any) -> Any:
    """The ``Summarizer`` the identity section describes (reads the JWKS file when one is set)."""
    from ingest.identitysettings import build_identity
    from ingest.openapi import load_spec_dir
    from ingest.summarize import Summarizer, SummarizerConfig
    from ingest.templating import PathTemplater

    ident = settings.identity
    identity, pods, _watcher = build_identity(ident)
    templater = PathTemplater(specs=load_spec_dir(settings.specs_dir) if settings.specs_dir else None)
    return Summarizer(SummarizerConfig(identity=identity, object_id_key=ident.object_id_key.get_secret_value().encode(),
                                       keep_raw_path=ident.keep_raw_path, max_body_bytes=settings.max_body_bytes), templater=templater, pods=pods,
                      tool_scanner=tool_scanner(), text_scanner=text_scanner())


def text_scanner() -> Any:
    """The prompt-injection scanner of what MCP tools, resources and prompts return (``enforcement.promptscan``, the
    shipped rules and model, loaded at the first text): ``scan_result`` over the text the MCP parser kept (up to
    ``ingest.mcp.MAX_TEXT``); of a JSON answer the rules read every string and the model its prose."""
    loaded: list[Any] = []

    def scan(text: str) -> tuple[float, tuple[str, ...]]:
        from enforcement.promptscan import scan_result

        if not loaded:
            from enforcement.promptmodel import load_prompt_model

            loaded.append(load_prompt_model())
        found = scan_result(text, model=loaded[0])
        return found.score, tuple(dict.fromkeys(trait for trait, _ in found.findings))

    return scan


def tool_scanner() -> Any:
    """The scanner of MCP tool definitions the collector runs on every tools/list answer it sees (``enforcement.toolscan``:
    the shipped rule pack and text model, loaded at the first definition: a collector that sees no MCP traffic never
    pays the ~2 s of loading scikit-learn and the model)."""
    loaded: list[Any] = []

    def scan(tool: Any) -> tuple[bool, float, tuple[str, ...]]:
        from enforcement.toolscan import scan_tool

        if not loaded:
            from enforcement.toolmodel import load_tool_model

            loaded.append(load_tool_model())
        found = scan_tool(tool.name, tool.description, tool.input_schema, model=loaded[0])
        return found.poisoned, found.score, tuple(dict.fromkeys(trait for trait, _ in found.findings))

    return scan


def build_sources(settings: Any) -> list[Any]:
    """Every source the settings enable (files, OTLP, ALS, ext_proc, HAR, JSONL)."""
    sources: list[Any] = []
    files = settings.files
    if files.paths:
        from ingest.collectors.files import AccessLogFileSource

        sources.append(AccessLogFileSource(files.paths, state_path=files.state_path, initial_position=files.initial_position,
                                           poll_s=files.poll_s, rotate_wait_s=files.rotate_wait_s,
                                           max_line_bytes=files.max_line_bytes, text_lines=files.text_lines))
    if settings.otlp.enabled:
        from ingest.collectors.otlp import OtlpHttpSource

        sources.append(OtlpHttpSource(settings.otlp.host, settings.otlp.port))
    if settings.als.enabled:
        from ingest.collectors.als import AccessLogServiceSource

        sources.append(AccessLogServiceSource(settings.als.host, settings.als.port))
    if settings.extproc.enabled:
        from ingest.collectors.extproc import ExtProcTapSource

        sources.append(ExtProcTapSource(settings.extproc.host, settings.extproc.port, max_body_bytes=settings.max_body_bytes))
    replay = settings.replay
    if replay.har or replay.jsonl:
        from ingest.collectors.replay import HarSource, JsonlSource

        if replay.har:
            sources.append(HarSource(replay.har, speed=replay.speed, rebase_time=replay.rebase_time))
        if replay.jsonl:
            sources.append(JsonlSource(replay.jsonl, speed=replay.speed, rebase_time=replay.rebase_time))
    return sources


def _server(text: str, default_port: int) -> dict[str, Any]:
    host, _, port = text.rpartition(":")
    try:
        return {"enabled": True, "host": host.strip("[]") or "127.0.0.1", "port": int(port) if port else default_port}
    except ValueError:
        raise SettingsError(f"expected [HOST:]PORT, got {text!r}") from None


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    over: dict[str, Any] = {k: v for k, v in (("bootstrap", args.bootstrap), ("metrics_port", args.metrics_port),
                                               ("node_name", args.node_name)) if v is not None}
    files = {k: v for k, v in (("paths", args.files), ("state_path", args.state_path),
                               ("initial_position", args.initial_position), ("text_lines", args.text_lines)) if v}
    replay = {k: v for k, v in (("har", args.har), ("jsonl", args.jsonl), ("speed", args.speed),
                                ("rebase_time", args.rebase_time or None)) if v is not None and v != []}
    join = {k: v for k, v in (("expected", args.join_expected), ("hold_s", args.hold_s)) if v is not None}
    for name, section in (("files", files), ("replay", replay), ("join", join)):
        if section:
            over[name] = section
    for name, port in (("otlp", 4318), ("als", 9301), ("extproc", 9302)):
        if getattr(args, name):
            over[name] = _server(getattr(args, name), port)
    return over


def _publisher(settings: Any, dry_run: bool) -> tuple[Any, Any]:
    if dry_run:
        return DryRunPublisher(), None
    from kafka import KafkaProducer

    from ingest.publish import SummaryPublisher
    from ingest.topics import DLQ

    pub = settings.publish
    publisher = SummaryPublisher(settings.bootstrap, envelope_rows=pub.envelope_rows, linger_ms=pub.linger_ms,
                                 max_buffered_rows=pub.max_buffered_rows, compression=pub.compression, client_id=pub.client_id,
                                 spool_dir=pub.spool_dir, spool_max_bytes=pub.spool_max_bytes, delivery_timeout_ms=pub.delivery_timeout_ms,
                                 security=settings.kafka)
    # not idempotent: kafka-python's idempotent producer stops sending for good after one delivery timeout (a paused broker)
    dlq = KafkaProducer(bootstrap_servers=settings.bootstrap, client_id=f"{pub.client_id}-dlq", acks="all", linger_ms=50,
                        enable_idempotence=False, **settings.kafka.kafka_python())
    return publisher, (dlq, lambda key, value: dlq.send(DLQ.name, key=key, value=value))


def _cmd(args: argparse.Namespace) -> int:
    from deploy.logs import setup_logging
    from ingest.collectors.runner import Collector, tune_gc
    from ingest.collectors.settings import CollectorSettings
    from ingest.config import build_settings

    setup_logging(args.loglevel)
    settings = build_settings(CollectorSettings, **_overrides(args))
    sources = build_sources(settings)
    if not sources:
        print("kubeward collect: no source enabled; give --files, --otlp, --als, --extproc, --har or --jsonl", file=sys.stderr)
        return 2
    publisher, dlq = _publisher(settings, args.dry_run)
    collector = Collector(settings, sources, build_summarizer(settings), publisher, dlq[1] if dlq else None)
    tune_gc()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        collector.run(stop)
    finally:
        publisher.close(settings.stop_timeout_s)
        if dlq:
            dlq[0].flush(settings.stop_timeout_s)
            dlq[0].close(settings.stop_timeout_s)
    return 1 if collector.failed else 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward collect``."""
    p = sub.add_parser("collect", help="the per-node collector: access logs, OTLP, ALS, ext_proc, HAR/JSONL to l7.summaries.v1",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("sources")
    src.add_argument("--files", action="append", metavar="GLOB", help="access-log files to tail (repeatable)")
    src.add_argument("--state-path", type=Path, help="offsets file (default /var/lib/kubeward/collector/offsets.json)")
    src.add_argument("--initial-position", choices=["beginning", "end"], help="where files begin on the very first start (default end)")
    src.add_argument("--text-lines", choices=["dead_letter", "skip"], help="lines that are not JSON: dead-letter them or skip and count (default dead_letter)")
    src.add_argument("--otlp", metavar="[HOST:]PORT", help="serve OTLP/HTTP traces (port 4318 if only a host: is given)")
    src.add_argument("--als", metavar="[HOST:]PORT", help="serve the Envoy gRPC access-log service")
    src.add_argument("--extproc", metavar="[HOST:]PORT", help="serve the Envoy ext_proc tap")
    src.add_argument("--har", action="append", type=Path, metavar="FILE", help="replay a HAR 1.2 file (repeatable)")
    src.add_argument("--jsonl", action="append", type=Path, metavar="FILE", help="replay a JSONL file of observations (repeatable)")
    src.add_argument("--speed", type=float, help="replay pace: 0 as fast as possible (default), 1 real time, 2 twice as fast")
    src.add_argument("--rebase-time", action="store_true", help="replayed calls start now instead of at their recorded times")
    p.add_argument("--join-expected", action="append", metavar="REPORTER",
                   help="reporters that make a call complete (repeatable; default access_log): shim, ext_proc, access_log, otlp")
    p.add_argument("--hold-s", type=float, help="how long an incomplete call waits for the other reporters (default 2)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--dry-run", action="store_true", help="print summary rows as JSON lines instead of publishing")
    p.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default 9466, 0 = any free port)")
    p.add_argument("--node-name", help="this node's name, for logs")
    p.add_argument("--loglevel", default="info", help="log level (default info)")
    p.set_defaults(func=_cmd)
