"""Turning detections into verdicts and OCSF findings: the only place actions are chosen.

``decide`` is pure: a detection, the policy snapshot and the clock give the
verdict (the action the policy names for the attack class, else the rule's,
else ``block``: ``throttle`` comes with the policy's rate and burst, ``redact``
has the shim's ext_proc adapter mask the subject's response bodies; the
subject is the actor or the client address the rule judged, scoped to a
service and path template when the rule asks for it; mode from the
destination's namespace or service, capped at ``observe`` by experimental
rules; expiry from the policy TTL). ``to_finding`` renders the same decision as an
OCSF 1.5 Detection Finding for SOC tools.
"""

from __future__ import annotations

import uuid

from ingest import Finding, FindingInfo, Policy, Scope, Subject, Verdict, sign_verdict
from ingest.signing import VerdictKeys
from streams.processor import Detection

__all__ = ["decide", "severity_for", "to_finding"]

_SEVERITY_STEPS = ((0.9, 5), (0.75, 4), (0.6, 3), (0.5, 2))


def severity_for(score: float) -> int:
    """OCSF severity_id for a score: 0.5 Low, 0.6 Medium, 0.75 High, 0.9 Critical, else Informational."""
    return next((sev for floor, sev in _SEVERITY_STEPS if score >= floor), 1)


def decide(detection: Detection, policy: Policy, now: float, key: bytes | VerdictKeys) -> Verdict:
    """The signed verdict for a detection under a policy (``key``: the keys signed with, or one key of id "")."""
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
        finding_ids=[str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeward:{detection.actor}:{detection.scope}:{detection.evidence_time}"))],
        policy_version=policy.version,
        issued_at=now,
        evidence_time=detection.evidence_time,
    )
    return key.sign(verdict) if isinstance(key, VerdictKeys) else sign_verdict(verdict, key)


def to_finding(detection: Detection, verdict: Verdict) -> Finding:
    """The OCSF Detection Finding for a verdict."""
    enforced = verdict.mode == "enforce"
    evidence = "; ".join(f"{r.detector}: {r.evidence}" for r in detection.reasons)
    return Finding(
        time=int(verdict.issued_at * 1000),
        severity_id=severity_for(detection.score),
        confidence_score=int(round(detection.score * 100)),
        action_id=2 if enforced else 0,
        disposition_id=2 if enforced else 15,
        message=f"{detection.attack_class} by {detection.actor}: {evidence}",
        finding_info=FindingInfo(
            uid=verdict.finding_ids[0],
            title=f"{detection.attack_class.replace('_', ' ')} detected",
            desc=evidence,
            types=[detection.attack_class],
            analytic={"name": detection.reasons[0].detector, "type_id": 1, "type": "Rule"},
        ),
        unmapped={"actor": detection.actor, "verdict_id": verdict.id, "mode": verdict.mode},
    )
