"""Turning detections into verdicts and OCSF findings: the only place actions are chosen.

``decide`` is pure: a detection, the policy snapshot and the clock give the
verdict (the action the policy names for the attack class, else the rule's,
else ``block``: ``throttle`` comes with the policy's rate and burst, ``redact``
has the shim's ext_proc adapter mask the subject's response bodies; the
subject is the actor or the client address the rule judged, scoped to a
service and path template when the rule asks for it; mode from the
destination's namespace or service, capped at ``observe`` by experimental
rules; expiry from the policy TTL). ``to_finding`` renders the same decision as an
OCSF 1.5 Detection Finding for SOC tools: who (evidences: principal, workload,
address), what (resources: the destination service, the edge, the MCP tool),
how sure (severity and confidence from the score), what was done (the
``security_control`` action and disposition), and where it sits in OWASP API
2023, OWASP LLM 2025 (``finding_info.tags``), ATT&CK and ATLAS
(``finding_info.attacks``).
"""

from __future__ import annotations

import ipaddress
import uuid

from ingest import Finding, FindingInfo, Policy, Scope, Subject, Verdict, sign_verdict
from ingest.schema import FindingActor, FindingApi, FindingEndpoint, FindingEntity, FindingEvidence, FindingObservable, FindingResource
from ingest.signing import VerdictKeys
from models.taxonomy import finding_attacks, finding_tags, mapping_for
from streams.processor import Detection

__all__ = ["decide", "severity_for", "to_finding"]

_SEVERITY_STEPS = ((0.9, 5), (0.75, 4), (0.6, 3), (0.5, 2))


def severity_for(score: float) -> int:
    """OCSF severity_id for a score: 0.5 Low, 0.6 Medium, 0.75 High, 0.9 Critical, else Informational."""
    return next((sev for floor, sev in _SEVERITY_STEPS if score >= floor), 1)


def decide(detection: Detection, policy: Policy, now: float, key: bytes | VerdictKeys, finding_id: str | None = None) -> Verdict:
    """The signed verdict for a detection under a policy (``key``: the keys signed with, or one key of id "").

    ``finding_id`` names the finding the verdict belongs to when one is already open for the detection's actor and
    attack (``streams.findingdedup``); otherwise the verdict gets a new one.
    """
    mode = "observe" if detection.mode == "observe" else policy.mode_for(detection.destination_namespace, detection.destination_service)
    action = policy.actions.get(detection.attack_class) or detection.action or "block"
    throttled = action == "throttle"
    scope = Scope(service=detection.scope[0], path_template=detection.scope[1]) if detection.scope else None
    verdict = Verdict(
        id=str(uuid.uuid4()),
        subject=Subject(kind=detection.subject_kind, value=detection.actor),
        scope=scope,
        action=action,
        rate_per_s=policy.throttle_rate_per_s if throttled else None,
        burst=policy.throttle_burst if throttled else None,
        mode=mode,
        expires_at=now + (detection.ttl_s if detection.ttl_s is not None else policy.verdict_ttl_s),
        reasons=list(detection.reasons),
        finding_ids=[finding_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeward:{detection.actor}:{detection.scope}:{detection.evidence_time}"))],
        policy_version=policy.version,
        issued_at=now,
        evidence_time=detection.evidence_time,
    )
    return key.sign(verdict) if isinstance(key, VerdictKeys) else sign_verdict(verdict, key)


#: security_control profile of an enforced verdict: action -> (action_id, disposition_id); observed: 0 Unknown, 15 Detected
_ENFORCED = {"block": (2, 2), "throttle": (2, 14), "redact": (1, 11), "quarantine": (2, 3)}
_OBSERVED = (0, 15)


def to_finding(detection: Detection, verdict: Verdict) -> Finding:
    """The OCSF Detection Finding (activity 1, Create) for a verdict, mapped to OWASP, ATT&CK and ATLAS (``models.taxonomy``)."""
    evidence = "; ".join(f"{r.detector}: {r.evidence}" for r in detection.reasons)
    rule = detection.reasons[0].detector
    mapping = mapping_for(detection.attack_class, rule)
    action_id, disposition_id = _ENFORCED.get(verdict.action, (2, 2)) if verdict.mode == "enforce" else _OBSERVED
    seen = int(detection.evidence_time * 1000)
    return Finding(
        time=int(verdict.issued_at * 1000),
        severity_id=severity_for(detection.score),
        confidence_score=int(round(detection.score * 100)),
        action_id=action_id,
        disposition_id=disposition_id,
        start_time=seen,
        end_time=seen,
        message=f"{detection.attack_class} by {detection.actor}: {evidence}",
        finding_info=FindingInfo(
            uid=verdict.finding_ids[0],
            title=f"{detection.attack_class.replace('_', ' ')} detected",
            desc=evidence,
            types=[detection.attack_class],
            analytic={"name": rule, "type_id": 1, "type": "Rule"},
            attacks=finding_attacks(mapping),
            tags=finding_tags(mapping),
            first_seen_time=seen,
            last_seen_time=seen,
        ),
        resources=_resources(detection),
        evidences=[_evidence(detection)],
        observables=_observables(detection),
        unmapped={"actor": detection.actor, "verdict_id": verdict.id, "mode": verdict.mode},
    )


def _caller(detection: Detection) -> tuple[str | None, str | None, str | None]:
    """(workload, ip, principal) of the subject: the parts of an actor key, an address, or none (a tool)."""
    if detection.subject_kind == "ip":
        return None, detection.actor, None
    if detection.subject_kind != "actor":
        return None, None, None
    source, _, principal = detection.actor.partition("|")
    source_part = None if source in ("", "-") else source
    ip = source_part if source_part is not None and _is_ip(source_part) else None
    return (None if ip else source_part), ip, (None if principal in ("", "-") else principal)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _evidence(detection: Detection) -> FindingEvidence:
    workload, ip, principal = _caller(detection)
    actor = FindingActor(user=FindingEntity(uid=principal, name=principal) if principal else None, app_name=workload) if workload or principal else None
    endpoint = FindingEndpoint(ip=ip, name=workload) if workload or ip else None
    service = detection.scope[0] if detection.scope else detection.destination_service
    ns = detection.destination_namespace
    named = FindingEntity(uid=f"{ns}/{service}" if ns else service, name=service) if service else None
    api = FindingApi(operation=detection.scope[1], service=named) if detection.scope else None
    return FindingEvidence(actor=actor, src_endpoint=endpoint, api=api)


def _resources(detection: Detection) -> list[FindingResource]:
    """What the finding is about: the destination service, the edge a scoped verdict names, the MCP tool."""
    ns, service = detection.destination_namespace, detection.destination_service
    out = [FindingResource(type="kubernetes.service", name=service, namespace=ns, uid=f"{ns}/{service}" if ns else service)] if service else []
    if detection.scope:
        out.append(FindingResource(type="api.endpoint", name=f"{detection.scope[0]} {detection.scope[1]}", namespace=ns))
    if detection.subject_kind == "tool":
        out.append(FindingResource(type="mcp.tool", name=detection.actor, namespace=ns))
    return out


def _observables(detection: Detection) -> list[FindingObservable]:
    """The values a SOC pivots on: the actor key (99 Other), the caller's address (2) and principal (4)."""
    _, ip, principal = _caller(detection)
    out = [FindingObservable(name="unmapped.actor", type_id=99, value=detection.actor)]
    if ip:
        out.append(FindingObservable(name="evidences.src_endpoint.ip", type_id=2, value=ip))
    if principal:
        out.append(FindingObservable(name="evidences.actor.user.name", type_id=4, value=principal))
    return out
