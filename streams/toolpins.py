"""MCP tool pinning in the stream: each server's tool definitions pinned, rug-pulls and new tools detected at once.

``ToolPins.update(table)`` reads the summaries of ``tools/list`` answers (the
``mcp.tools`` extras ``ingest.mcp`` derives: each tool's name and definition
hash) and keeps, per MCP server (the destination service) and tool name, the
*pinned* definition hash:

* a server's tools are pinned as first seen during its first ``learn_s``
  seconds (trust on first use), or from a declared allow-list
  (``ToolPinConfig.allowed``: service -> tool -> hash), which is never learned
  over: with one, every undeclared tool is new;
* a pinned tool listed with another hash is a **rug-pull** (``tool_rug_pull``),
  a tool not pinned after the learning is a **new tool** (``tool_new``), and a
  definition the collector's scanner found poisoned (``McpTool.poisoned``,
  ``enforcement.toolscan``) is **tool poisoning** (``tool_poisoning``) at once,
  learning or not, unless that very definition was approved: each a
  ``Detection`` whose subject is the tool itself (kind ``tool``, value
  ``<server>/<tool>``, the server being ``<namespace>/<service>`` when the
  namespace is known: two namespaces' ``mcp`` services are two servers), so the
  verdict denies every agent's ``tools/call`` of
  it (``enforcement.decision``) until someone approves the definition
  (``approve``: it becomes the pin); the verdict lasts ``verdict_ttl_s`` and
  is issued again when the unapproved definition is listed again after half
  of that.

State: pins, first-seen times and the detections already issued, bounded by
``max_tools`` (oldest server dropped first, counted in ``evicted``);
``export``/``restore`` carry it as JSON. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest import Reason
from streams.processor import Detection

__all__ = ["ToolPinConfig", "ToolPins", "server_of"]


@dataclass(frozen=True)
class ToolPinConfig:
    """Learning period per server, allow-list, verdict lifetime and memory budget of ``ToolPins``."""

    learn_s: float = 300.0
    allowed: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    verdict_ttl_s: float = 30 * 86_400.0
    #: pins (and flagged definitions) kept; the checkpoint is one changelog record of ~100 B per pin, under Kafka's
    #: 1 MiB default message size at this budget
    max_tools: int = 5_000

    def __post_init__(self) -> None:
        for name in ("learn_s", "verdict_ttl_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"ToolPinConfig.{name}={getattr(self, name)} must be >= 0")
        if self.max_tools < 1:
            raise ValueError(f"ToolPinConfig.max_tools={self.max_tools} must be >= 1")


@dataclass(frozen=True)
class _Listed:  # ``service``: the server, ``server_of(namespace, service)``
    t: float
    service: str
    namespace: str | None
    tool: str
    digest: str
    poisoned: bool = False
    score: float = 0.0
    traits: tuple[str, ...] = ()


def server_of(namespace: str | None, service: str | None) -> str:
    """An MCP server's name in tool subjects, pins and approvals: ``<namespace>/<service>``, or the service alone when
    no namespace is known (the shim builds the same from its request view).

    >>> server_of("shop", "orders"), server_of(None, "mcp-orders"), server_of(None, None)
    ('shop/orders', 'mcp-orders', '-')
    """
    return f"{namespace}/{service or '-'}" if namespace else (service or "-")


def _listed(table: pa.Table) -> list[_Listed]:
    """Every tool a successful tools/list answer in the table defined, with the collector's scan of it."""
    if "mcp" not in table.column_names or table.column("mcp").null_count == table.num_rows:
        return []
    listing = pc.equal(pc.struct_field(table.column("mcp"), "jsonrpc_method"), "tools/list")
    if not pc.any(listing).as_py():
        return []
    table = table.filter(pc.fill_null(listing, False))
    out = []
    mcp, status = table.column("mcp").to_pylist(), table.column("status").to_pylist()
    times, dest = table.column("time").to_pylist(), table.column("destination").to_pylist()
    for extras, code, t, where in zip(mcp, status, times, dest):
        if not extras or extras.get("jsonrpc_method") != "tools/list" or not extras.get("tools"):
            continue
        if code is not None and not 200 <= code < 300:
            continue
        service = server_of((where or {}).get("namespace"), (where or {}).get("service"))
        for tool in extras["tools"]:
            if tool and tool.get("name") and tool.get("hash"):
                out.append(_Listed(float(t), service, (where or {}).get("namespace"), str(tool["name"]), str(tool["hash"]),
                                   bool(tool.get("poisoned")), float(tool.get("score") or 0.0), tuple(tool.get("traits") or ())))
    return out


class ToolPins:
    """Pinned tool definitions per MCP server (see the module docstring)."""

    def __init__(self, config: ToolPinConfig | None = None) -> None:
        self.config = config or ToolPinConfig()
        self.pins: dict[tuple[str, str], str] = {}
        self.servers: dict[str, float] = {}  # service -> first tools/list seen
        self.issued: dict[tuple[str, str], tuple[str, float]] = {}  # (service, tool) -> (hash flagged, when)
        self.approved: set[tuple[str, str, str]] = set()  # (service, tool, hash) accepted as they are, poisoned or not
        self._approvals_applied: Mapping[str, str] | None = None
        self.evicted = 0
        for service, tools in self.config.allowed.items():
            for tool, digest in tools.items():
                self.pins[(service, tool)] = digest

    def approve(self, service: str, tool: str, digest: str) -> None:
        """Accept a definition: it becomes the tool's pin and its detection is forgotten."""
        self.pins[(service, tool)] = digest
        self.issued.pop((service, tool), None)
        self.approved.add((service, tool, digest))

    def apply_approvals(self, approved: Mapping[str, str]) -> None:
        """Approve the policy's ``approved_tools`` (``<server>/<tool>`` -> definition hash) not approved yet; called per
        batch, it returns at once while the policy's mapping is the one last applied."""
        if approved is self._approvals_applied:
            return
        self._approvals_applied = approved
        for tool, digest in approved.items():
            service, _, name = tool.rpartition("/")
            if service and name and (service, name, digest) not in self.approved:
                self.approve(service, name, digest)

    def update(self, table: pa.Table) -> list[Detection]:
        """Fold a batch of summaries; the detections of tools listed with a definition that is not their pin."""
        out: list[Detection] = []
        for listed in _listed(table):
            detection = self._check(listed)
            if detection is not None:
                out.append(detection)
        self._evict()
        return out

    def _check(self, x: _Listed) -> Detection | None:
        key, digest = (x.service, x.tool), x.digest
        first = self.servers.setdefault(x.service, x.t)
        pinned = self.pins.get(key)
        poisoned = x.poisoned and (x.service, x.tool, digest) not in self.approved
        if pinned == digest and not poisoned:
            return None
        declared = x.service in self.config.allowed
        if pinned is None and not declared and x.t - first <= self.config.learn_s:
            self.pins[key] = digest  # trust on first use, within the server's learning period (poisoned: pinned, flagged)
            if not poisoned:
                return None
            pinned = digest
        flagged = self.issued.get(key)
        if flagged is not None and flagged[0] == digest and x.t - flagged[1] < self.config.verdict_ttl_s / 2:
            return None
        self.issued[key] = (digest, x.t)
        scanned = f"; reads as poisoned (score {x.score:.2f}: {', '.join(x.traits) or 'model'})" if poisoned else ""
        if pinned == digest:
            kind, score = "tool_poisoning", max(0.9, x.score)
            evidence = f"definition of tool {x.tool!r} of MCP server {x.service!r} ({digest[:12]}){scanned}"
        elif pinned is None:
            kind, score = "tool_new", 0.9 if poisoned else 0.8
            evidence = (f"tool {x.tool!r} of MCP server {x.service!r} first listed {x.t - first:.0f} s after the server's first "
                        f"tools/list{' and not in its allow-list' if declared else ''} (definition {digest[:12]}){scanned}")
        else:
            kind, score = "tool_rug_pull", 1.0
            evidence = f"definition of tool {x.tool!r} of MCP server {x.service!r} changed: pinned {pinned[:12]}, listed {digest[:12]}{scanned}"
        return Detection(actor=f"{x.service}/{x.tool}", attack_class=kind, score=score,
                         reasons=(Reason(detector=f"mcp-{kind.replace('_', '-')}", score=score, evidence=evidence),),
                         evidence_time=x.t, destination_namespace=x.namespace, destination_service=x.service, features={},
                         subject_kind="tool", action="block", ttl_s=self.config.verdict_ttl_s)

    def _evict(self) -> None:
        """Drop the oldest flagged definitions past ``max_tools``, and the oldest servers' pins past it (allow-listed
        servers are kept)."""
        if len(self.issued) > self.config.max_tools:
            oldest = sorted(self.issued, key=lambda k: self.issued[k][1])[: len(self.issued) - self.config.max_tools]
            for key in oldest:
                del self.issued[key]
            self.evicted += len(oldest)
        if len(self.pins) <= self.config.max_tools:
            return
        for service in sorted(self.servers, key=self.servers.__getitem__):
            if len(self.pins) <= self.config.max_tools:
                break
            if service in self.config.allowed:
                continue
            gone = [k for k in self.pins if k[0] == service]
            for k in gone:
                del self.pins[k]
                self.issued.pop(k, None)
            self.approved = {a for a in self.approved if a[0] != service}
            del self.servers[service]
            self.evicted += len(gone)

    def export(self) -> bytes:
        """Pins, servers and issued detections as JSON."""
        doc: dict[str, Any] = {"pins": [[s, t, h] for (s, t), h in self.pins.items()], "servers": self.servers,
                               "issued": [[s, t, h, w] for (s, t), (h, w) in self.issued.items()], "evicted": self.evicted,
                               "approved": sorted(self.approved)}
        return json.dumps(doc, sort_keys=True).encode()

    def restore(self, blob: bytes) -> None:
        """Load what ``export`` wrote (declared pins stay as configured)."""
        doc = json.loads(blob)
        self.pins.update({(s, t): h for s, t, h in doc.get("pins", [])})
        for service, tools in self.config.allowed.items():
            self.pins.update({(service, tool): digest for tool, digest in tools.items()})
        self.servers = {str(k): float(v) for k, v in doc.get("servers", {}).items()}
        self.issued = {(s, t): (h, float(w)) for s, t, h, w in doc.get("issued", [])}
        self.evicted = int(doc.get("evicted", 0))
        self.approved = {(s, t, h) for s, t, h in doc.get("approved", [])}
        self._approvals_applied = None  # the policy's approvals are applied again on the next batch
