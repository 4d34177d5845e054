"""``kubeward blueprint``: the live API and agent inventory as an HTML page, a PNG and OpenAPI 3.1 documents.

The edge of the blueprint: it reads the compacted inventory topic (``api.inventory.v1``, from its beginning
to the offsets it had when the command started) and, optionally, the findings topic (not compacted: only
what was published in the last ``--findings-since``, 24 hours by default, found with the broker's
time index), or the same records from JSON-lines files (``--inventory``, ``--findings``, read whole);
builds the graph (``deploy.blueprintmodel``), writes the page (``deploy.blueprinthtml``), takes its
screenshot with headless Chromium (``--png``: Debian's ``chromium``, started with no network, no profile and
no sandbox-breaking flags beyond ``--no-sandbox`` as root), and writes one OpenAPI 3.1 document per
(namespace, service) (``--openapi-dir``, ``ingest.openapiexport``): ``<namespace>_<service>.openapi.json``,
or ``<host>.openapi.json`` for an external host.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from pydantic import TypeAdapter, ValidationError

from deploy.blueprinthtml import render_page
from deploy.blueprintmodel import Blueprint, build_blueprint
from deploy.policy import read_kafka_credentials
from deploy.topicreader import records_to_end
from ingest import FINDINGS, INVENTORY, Finding
from ingest.errors import SettingsError
from ingest.openapiexport import openapi_documents
from ingest.schema import AgentRecord, EndpointRecord, McpToolRecord

__all__ = ["BlueprintError", "add_cli", "chromium", "duration_s", "openapi_file_name", "read_jsonl", "read_topic", "screenshot",
           "write_blueprint"]

InventoryRecord = EndpointRecord | AgentRecord | McpToolRecord
_RECORD: TypeAdapter[InventoryRecord] = TypeAdapter(InventoryRecord)
CHROMIUM_FLAGS = ("--headless", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--mute-audio")


class BlueprintError(RuntimeError):
    """The blueprint cannot be read or drawn (names what and why)."""


def _parse(line: bytes | str, what: str) -> Any:
    try:
        data = json.loads(line)
        return Finding.model_validate(data) if what == "finding" else _RECORD.validate_python(data)
    except (ValueError, ValidationError):
        return None


def read_jsonl(path: Path, what: str) -> tuple[list[Any], int]:
    """(records, unreadable lines) of a JSON-lines file of inventory records or findings."""
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except OSError as exc:
        raise BlueprintError(f"cannot read {what}s from {str(path)!r}: {exc}") from None
    parsed = [_parse(line, what) for line in lines]
    return [p for p in parsed if p is not None], sum(1 for p in parsed if p is None)


def read_topic(bootstrap: str, topic: str, what: str, credentials: Path | None = None, timeout_s: float = 30.0,
               since: float | None = None) -> tuple[list[Any], int]:
    """(records, unreadable messages) of a topic from its beginning (or the first record at or after ``since``, epoch
    seconds) to its end offsets at the start."""
    security = read_kafka_credentials(credentials)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, client_id="kubeward-blueprint",
                             bootstrap_timeout_ms=int(timeout_s * 1000), **security.kafka_python())
    records, bad = [], 0
    try:
        for message in records_to_end(consumer, topic, since=since, timeout_s=timeout_s):
            if message.value is None:
                continue  # a compacted key's tombstone
            parsed = _parse(message.value, what)
            if parsed is None:
                bad += 1
            else:
                records.append(parsed)
        return records, bad
    finally:
        consumer.close()


def chromium() -> str:
    """The path of Debian's Chromium, or a BlueprintError saying how to install it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if not found:
        raise BlueprintError("no Chromium on PATH: `apt-get install chromium` (make setup installs it)")
    return found


def screenshot(page: Path, png: Path, width: int = 1400, height: int = 1800, timeout_s: float = 60.0) -> Path:
    """A PNG of ``page`` as headless Chromium draws it (scripts run; no network; a throwaway profile)."""
    flags = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with tempfile.TemporaryDirectory(prefix="kubeward-chromium-") as profile:
        cmd = [chromium(), *flags, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               "--virtual-time-budget=3000", f"--screenshot={png.resolve()}", page.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 or not png.is_file():
        raise BlueprintError(f"chromium could not screenshot {page} (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return png


def rendered_dom(page: Path, timeout_s: float = 60.0) -> str:
    """The page's DOM after its scripts ran in headless Chromium (``--dump-dom``)."""
    flags = list(CHROMIUM_FLAGS) + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with tempfile.TemporaryDirectory(prefix="kubeward-chromium-") as profile:
        done = subprocess.run([chromium(), *flags, f"--user-data-dir={profile}", "--virtual-time-budget=3000", "--dump-dom",
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise BlueprintError(f"chromium could not load {page} (exit {done.returncode}): {done.stderr.strip()[-600:]}")
    return done.stdout


def openapi_file_name(service: str, namespace: str | None = None) -> str:
    """``<namespace>_<service>.openapi.json`` (``<service>.openapi.json`` with no namespace) with the names from traffic
    made safe: no separators, no leading dot, bounded. Kubernetes names hold no ``_``, so the first one splits them.

    >>> openapi_file_name("orders", "shop"), openapi_file_name("api.psp.example.com")
    ('shop_orders.openapi.json', 'api.psp.example.com.openapi.json')
    >>> openapi_file_name("../../etc/x"), openapi_file_name(".hidden")
    ('_._.._etc_x.openapi.json', '_hidden.openapi.json')
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{namespace}/{service}" if namespace else service)[:200]
    return ("_" + safe[1:] if safe.startswith(".") else safe) + ".openapi.json"


def _unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``<stem>-2.openapi.json``, ``-3``, ... when two services' safe names meet (``a/b`` and ``a_b``)."""
    stem, n, out = name.removesuffix(".openapi.json"), 1, name
    while out in taken:
        n += 1
        out = f"{stem}-{n}.openapi.json"
    taken.add(out)
    return out


def duration_s(text: str) -> float | None:
    """Seconds of a duration such as ``24h``, ``90m``, ``7d``, ``1h30m``, ``45s`` or plain seconds; ``all``: no bound (None).

    >>> duration_s("24h"), duration_s("1h30m"), duration_s("90"), duration_s("all")
    (86400.0, 5400.0, 90.0, None)
    """
    text = text.strip().lower()
    if text == "all":
        return None
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if not parts or "".join(n + u for n, u in parts) != text or (len(parts) > 1 and not all(u for _, u in parts)):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 24h, 90m, 7d, 1h30m, or all)")
    return sum(float(n) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


def write_blueprint(records: Iterable[InventoryRecord], findings: Iterable[Finding], out: Path, png: Path | None = None,
                    openapi_dir: Path | None = None, subtitle: str = "") -> Blueprint:
    """Build, write the page (and the PNG, and the OpenAPI documents); return the blueprint."""
    records = list(records)
    bp = build_blueprint(records, findings)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_page(bp, subtitle=subtitle))
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        screenshot(out, png)
    if openapi_dir is not None:
        openapi_dir.mkdir(parents=True, exist_ok=True)
        taken: set[str] = set()
        for (namespace, service), doc in openapi_documents(r for r in records if isinstance(r, EndpointRecord)).items():
            (openapi_dir / _unique_name(openapi_file_name(service, namespace), taken)).write_text(json.dumps(doc, indent=1) + "\n")
    return bp


def _sources(args: argparse.Namespace) -> Iterator[tuple[list[Any], int, str]]:
    if args.inventory:
        yield (*read_jsonl(args.inventory, "record"), "inventory")
    else:
        yield (*read_topic(args.bootstrap, INVENTORY.name, "record", args.kafka_credentials), "inventory")
    if args.findings:
        yield (*read_jsonl(args.findings, "finding"), "findings")
    elif not args.inventory and not args.no_findings:
        since = None if args.findings_since is None else time.time() - args.findings_since
        yield (*read_topic(args.bootstrap, FINDINGS.name, "finding", args.kafka_credentials, since=since), "findings")


def _window(args: argparse.Namespace) -> str:
    """`` of the last 24 h`` when the findings came from the topic with a bound, else nothing."""
    from_topic = not args.findings and not args.inventory and not args.no_findings
    return f" of the last {args.findings_since / 3600:g} h" if from_topic and args.findings_since is not None else ""


def _cmd(args: argparse.Namespace) -> int:
    try:
        got = {name: (records, bad) for records, bad, name in _sources(args)}
        records, bad = got["inventory"]
        findings, bad_findings = got.get("findings", ([], 0))
        where = f"file {args.inventory}" if args.inventory else f"{INVENTORY.name} on {args.bootstrap}"
        bp = write_blueprint(records, findings, args.out, args.png, args.openapi_dir,
                             subtitle=f"{len(records)} inventory records from {where}, {len(findings)} findings{_window(args)}")
    except (BlueprintError, SettingsError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"kubeward blueprint: {exc}", file=sys.stderr)
        return 2
    summary = bp.summary()
    print(json.dumps({"page": str(args.out), "png": str(args.png) if args.png else None,
                      "openapi_dir": str(args.openapi_dir) if args.openapi_dir else None,
                      "unreadable": {"inventory": bad, "findings": bad_findings}, **summary}, indent=1))
    return 0


def add_cli(sub: Any) -> None:
    """Register ``kubeward blueprint``."""
    p = sub.add_parser(
        "blueprint", help="the API and agent inventory as an HTML page, a PNG and OpenAPI 3.1 documents",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Draw what the workers learned: callers -> services -> endpoints with their marks (shadow, zombie,\n"
                    "sensitive data, unauthenticated, external) and risk, agents -> MCP tools and models.\n\n"
                    "  kubeward blueprint --bootstrap kafka:9092 --out build/blueprint.html --png build/blueprint.png \\\n"
                    "                     --openapi-dir build/openapi\n"
                    "  kubeward blueprint --inventory inventory.jsonl --findings findings.jsonl --out blueprint.html\n\n"
                    "Reads api.inventory.v1 (compacted: the newest record per endpoint, agent and tool) from its\n"
                    "beginning and security.findings.v1 from --findings-since ago (default 24h), each to its end at\n"
                    "the start, or JSON-lines dumps of them (read whole). One OpenAPI document per namespace and\n"
                    "service: <namespace>_<service>.openapi.json, <host>.openapi.json for an external host.\n"
                    "The PNG is headless Chromium's screenshot of the page (apt-get install chromium).")
    p.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka bootstrap servers (default 127.0.0.1:9092)")
    p.add_argument("--kafka-credentials", type=Path, default=None, help="JSON client settings (kubeward kafka credentials NAME)")
    p.add_argument("--inventory", type=Path, default=None, help="read inventory records from this JSON-lines file instead of Kafka")
    p.add_argument("--findings", type=Path, default=None, help="read findings from this JSON-lines file")
    p.add_argument("--no-findings", action="store_true", help="do not read the findings topic")
    p.add_argument("--findings-since", type=duration_s, default=duration_s("24h"), metavar="DURATION",
                   help="read the findings topic from this long ago (the broker's time index), e.g. 24h, 90m, 7d, 1h30m; "
                        "'all' reads it from its beginning (default 24h; --findings files are read whole)")
    p.add_argument("--out", type=Path, default=Path("build/blueprint.html"), help="the page (default build/blueprint.html)")
    p.add_argument("--png", type=Path, default=None, help="also write a screenshot of the page (headless Chromium)")
    p.add_argument("--openapi-dir", type=Path, default=None,
                   help="also write one OpenAPI 3.1 document per namespace and service here (<namespace>_<service>.openapi.json)")
    p.set_defaults(func=_cmd)
