"""Excessive data exposure: an endpoint whose responses start carrying properties it never returned.

Contract: ``ExposureTracker.update(table)`` folds a batch of summaries (their
``response_properties``: property paths of the response body, names never
values, from ``ingest.summarize``) into one property set per (namespace,
service, method, template): ``api`` in ``shop`` and ``api`` in ``billing`` are
two endpoints, as in the inventory (``EndpointRecord.key``). An endpoint learns from its first ``learn_responses``
successful responses (2xx, or no status) or for ``learn_seconds`` of summary
time after its first one. After that, a property it never returned yields one
OCSF Detection Finding ``excessive-data-exposure``, once per (endpoint,
property): severity High when the name is sensitive (password, hash, salt,
token, secret, api key, SSN, card number...), Medium otherwise. Error
responses neither teach nor trigger (their bodies have their own shape).

Bounded: ``max_endpoints`` endpoints, ``max_properties`` per endpoint and
``max_findings`` findings per endpoint (an endpoint whose keys are data, not
names, would otherwise report forever); what did not fit is counted in
``counts``. The finding uid is derived from endpoint and property, so workers
that each see part of the traffic (summaries are keyed by actor) report the
same finding under the same uid (without a namespace, the uid is the one it
always was). No verdict is issued: the endpoint, not an actor, is at fault. The
finding names the service and endpoint as OCSF ``resources``, each with the
destination's ``namespace`` when the summary has one (``uid`` of the service
``namespace/service``, as ``streams.policy`` does), and is mapped like every
other (``models.taxonomy``: API3:2023). Pure.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ingest import EndpointRecord, Finding, FindingInfo
from ingest.schema import FindingApi, FindingEntity, FindingEvidence, FindingResource
from models.taxonomy import finding_attacks, finding_tags, mapping_for

__all__ = ["CATEGORY", "ExposureTracker", "exposure_finding", "is_sensitive_name"]

CATEGORY = "excessive-data-exposure"
_SENSITIVE = re.compile(
    r"pass(?:word|wd|phrase)|pwd|hash|salt|token|secret|apikey|privatekey|accesskey|signingkey|ssn|socialsecurity"
    r"|creditcard|cardnumber|ccnumber|cvv|cvc|iban|otp|totp|mfa|recoverycode|sessionid|cookie|dateofbirth|dob$|pin$"
)
_HIGH, _MEDIUM = 4, 3


def is_sensitive_name(path: str) -> bool:
    """Whether the last name of a property path names a secret or sensitive personal data.

    >>> is_sensitive_name("user.password_hash"), is_sensitive_name("items[].apiKey"), is_sensitive_name("user.email")
    (True, True, False)
    """
    name = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return bool(_SENSITIVE.search(re.sub(r"[^a-z0-9]", "", name.lower())))


@dataclass
class _Endpoint:
    first_seen: float
    responses: int = 0
    done: bool = False
    properties: set[str] = field(default_factory=set)
    findings: int = 0


class ExposureTracker:
    """Learned response property sets per endpoint and the findings for new ones (see the module docstring)."""

    def __init__(self, learn_responses: int = 200, learn_seconds: float = 3600.0, max_endpoints: int = 5000,
                 max_properties: int = 512, max_findings: int = 16):
        self.learn_responses, self.learn_seconds = learn_responses, learn_seconds
        self.max_endpoints, self.max_properties, self.max_findings = max_endpoints, max_properties, max_findings
        self.endpoints: dict[tuple[str | None, str, str, str], _Endpoint] = {}  # (namespace, service, method, template)
        self.counts = {"endpoints_dropped": 0, "properties_dropped": 0, "findings_dropped": 0}

    def update(self, table: pa.Table) -> list[Finding]:
        """Fold one batch (Arrow table with the ``RequestSummary`` schema) in; the findings it raised."""
        if "response_properties" not in table.column_names:
            return []
        has = pc.greater(pc.fill_null(pc.list_value_length(table["response_properties"]), 0), 0)
        if not pc.any(has).as_py():
            return []
        rows = table.filter(has).select(["time", "destination", "method", "path_template", "status", "response_properties"]).to_pylist()
        out: list[Finding] = []
        for row in rows:
            if row["response_properties"]:
                dest = row["destination"] or {}
                out += self.observe(dest.get("service") or "-", row["method"], row["path_template"], float(row["time"]), row["status"],
                                    row["response_properties"], namespace=dest.get("namespace") or None)
        return out

    def observe(self, service: str, method: str, template: str, time: float, status: int | None, properties: list[str],
                namespace: str | None = None) -> list[Finding]:
        """One response's property paths: learned while the endpoint learns, else new ones become findings."""
        if status is not None and not 200 <= status < 300:
            return []
        namespace = namespace or None
        ep = self._endpoint((namespace, service, method, template), time)
        if ep is None:
            return []
        if not ep.done and (ep.responses >= self.learn_responses or time - ep.first_seen >= self.learn_seconds):
            ep.done = True
        ep.responses += 1
        new = [p for p in properties if p not in ep.properties]
        if not new:
            return []
        room = self.max_properties - len(ep.properties)
        self.counts["properties_dropped"] += max(0, len(new) - room)
        new = new[: max(0, room)]
        ep.properties.update(new)
        if not ep.done:
            return []
        return [f for f in (self._finding(namespace, service, method, template, time, ep, p) for p in new) if f is not None]

    def _endpoint(self, key: tuple[str | None, str, str, str], time: float) -> _Endpoint | None:
        ep = self.endpoints.get(key)
        if ep is None:
            if len(self.endpoints) >= self.max_endpoints:
                self.counts["endpoints_dropped"] += 1
                return None
            ep = self.endpoints[key] = _Endpoint(time)
        return ep

    def _finding(self, namespace: str | None, service: str, method: str, template: str, time: float, ep: _Endpoint,
                 prop: str) -> Finding | None:
        if ep.findings >= self.max_findings:
            self.counts["findings_dropped"] += 1
            return None
        ep.findings += 1
        return exposure_finding(service, method, template, prop, time, namespace=namespace)


def exposure_finding(service: str, method: str, template: str, prop: str, time: float, *, namespace: str | None = None) -> Finding:
    """The OCSF Detection Finding for an endpoint (of ``service`` in ``namespace``) that started returning ``prop``."""
    sensitive = is_sensitive_name(prop)
    namespace = namespace or None
    endpoint = f"{service} {method} {template}"
    qualified = EndpointRecord.key_of(namespace, service, method, template)  # the inventory's key: endpoint alone without a namespace
    service_uid = f"{namespace}/{service}" if namespace else service
    desc = f"{qualified} returned the property {prop!r}, never seen in its responses before" + (" (a sensitive name)" if sensitive else "")
    unmapped: dict[str, Any] = {"service": service, "method": method, "path_template": template, "property": prop, "sensitive": str(sensitive).lower()}
    mapping, seen = mapping_for(CATEGORY), int(time * 1000)
    return Finding(
        time=seen,
        start_time=seen,
        end_time=seen,
        severity_id=_HIGH if sensitive else _MEDIUM,
        confidence_score=80 if sensitive else 50,
        message=f"{CATEGORY}: {desc}",
        finding_info=FindingInfo(
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeward:exposure:{qualified}:{prop}")),
            title="excessive data exposure detected",
            desc=desc,
            types=[CATEGORY],
            analytic={"name": "exposure", "type_id": 1, "type": "Rule"},
            attacks=finding_attacks(mapping),
            tags=finding_tags(mapping),
            first_seen_time=seen,
            last_seen_time=seen,
        ),
        resources=[FindingResource(type="kubernetes.service", name=service, namespace=namespace, uid=service_uid),
                   FindingResource(type="api.endpoint", name=endpoint, namespace=namespace)],
        evidences=[FindingEvidence(api=FindingApi(operation=f"{method} {template}", service=FindingEntity(uid=service_uid, name=service)))],
        unmapped=unmapped,
    )
