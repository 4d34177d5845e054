"""What ``kubeward findings tail`` shows: filters and formats for OCSF findings, without Kafka.

``FindingFilter`` keeps a finding when its severity is at least ``min_severity``
and, for each filter given, when one of ``classes`` names its attack class
(``finding_info.types``), one of its OWASP ids (``API1:2023``, or just ``API1``;
``LLM01:2025``, ``LLM01``) or ATT&CK/ATLAS ids (``T1110.004``, ``AML.T0051``);
when ``namespace`` is the namespace of a resource it names (the destination
service) or of the calling workload; when ``actor`` is a substring of its actor
(``workload|principal``, a client address or an MCP tool; for an endpoint
finding, the endpoint). ``decode`` reads one topic value (``None`` for one that
is no finding); ``json_line`` and ``table_row`` format one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from ingest import Finding
from models.taxonomy import OWASP_TAGS

__all__ = ["SEVERITIES", "TABLE_HEADER", "FindingFilter", "actor_of", "decode", "json_line", "parse_severity", "row", "table", "table_row"]

#: OCSF severity_id by name (``--severity high`` or ``--severity 4``)
SEVERITIES = {"unknown": 0, "informational": 1, "info": 1, "low": 2, "medium": 3, "high": 4, "critical": 5, "fatal": 6}
_COLUMNS = (("TIME", 20), ("SEVERITY", 17), ("CLASS", 22), ("OWASP", 21), ("ACTOR", 34), ("NAMESPACE/SERVICE", 24), ("COUNT", 6), ("TITLE", 0))
TABLE_HEADER = "  ".join(name.ljust(width) for name, width in _COLUMNS).rstrip()


def parse_severity(text: str) -> int:
    """An OCSF severity_id from a name (``high``) or a number (``4``); ``ValueError`` lists the names."""
    value = SEVERITIES.get(text.strip().lower())
    if value is None and text.strip().isdigit() and 0 <= int(text) <= 6:
        value = int(text)
    if value is None:
        raise ValueError(f"severity={text!r} is not one of {', '.join(SEVERITIES)} or 0-6")
    return value


def _owasp_ids(finding: Finding) -> list[str]:
    return [t.value.split(" ", 1)[0] for t in finding.finding_info.tags if t.name in OWASP_TAGS]


def _technique_ids(finding: Finding) -> list[str]:
    return [e.uid for a in finding.finding_info.attacks for e in (a.technique, a.sub_technique) if e is not None]


def actor_of(finding: Finding) -> str:
    """The actor a finding names (``unmapped.actor``), or the endpoint of an endpoint finding, else ``-``."""
    if "actor" in finding.unmapped:
        return finding.unmapped["actor"]
    endpoints = [r.name for r in finding.resources if r.type == "api.endpoint"]
    return endpoints[0] if endpoints else "-"


def _namespaces(finding: Finding) -> set[str]:
    names = {r.namespace for r in finding.resources if r.namespace}
    apps = [e.actor.app_name for e in finding.evidences if e.actor is not None and e.actor.app_name]
    return names | {app.split("/", 1)[0] for app in apps if "/" in app}


def _service_of(finding: Finding) -> str:
    for r in finding.resources:
        if r.type == "kubernetes.service":
            return f"{r.namespace}/{r.name}" if r.namespace else r.name
    return "-"


@dataclass(frozen=True)
class FindingFilter:
    """Which findings to show (see the module docstring); the defaults keep every finding."""

    min_severity: int = 0
    classes: tuple[str, ...] = ()
    namespace: str | None = None
    actor: str | None = None

    def matches(self, finding: Finding) -> bool:
        """Whether the finding passes every filter given."""
        if finding.severity_id < self.min_severity:
            return False
        if self.classes and not self._class_matches(finding):
            return False
        if self.namespace is not None and self.namespace not in _namespaces(finding):
            return False
        return self.actor is None or self.actor in actor_of(finding)

    def _class_matches(self, finding: Finding) -> bool:
        wanted = {c.lower() for c in self.classes}
        owasp = _owasp_ids(finding)
        names = {t.lower() for t in finding.finding_info.types} | {i.lower() for i in owasp}
        names |= {i.split(":", 1)[0].lower() for i in owasp} | {t.lower() for t in _technique_ids(finding)}
        return bool(wanted & names)


def decode(value: bytes | None) -> Finding | None:
    """One value of ``security.findings.v1`` as a ``Finding``; ``None`` when it is not one."""
    if not value:
        return None
    try:
        return Finding.model_validate_json(value)
    except ValidationError:
        return None


def json_line(finding: Finding) -> str:
    """The finding as one line of OCSF JSON (as published)."""
    return finding.to_wire().decode()


def row(finding: Finding) -> tuple[str, ...]:
    """The table cells of a finding: time (UTC), severity, class, OWASP ids, actor, namespace/service, count, title."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(finding.time / 1000))
    severity = f"{finding.severity}" + (" (update)" if finding.activity_id == 2 else "")
    klass = finding.finding_info.types[0] if finding.finding_info.types else "-"
    return (stamp, severity, klass, ",".join(_owasp_ids(finding)) or "-", actor_of(finding), _service_of(finding),
            str(finding.count), finding.finding_info.title)


def table_row(finding: Finding) -> str:
    """One table line (columns cut to their width, the title last and whole)."""
    cells = row(finding)
    out = [_fit(cell, width) if width else cell for cell, (_, width) in zip(cells, _COLUMNS)]
    return "  ".join(out).rstrip()


def _fit(text: str, width: int) -> str:
    return (text if len(text) <= width else text[: width - 1] + "…").ljust(width)


def table(findings: Iterable[Finding]) -> Sequence[str]:
    """The header and one line per finding."""
    return [TABLE_HEADER, *(table_row(f) for f in findings)]
