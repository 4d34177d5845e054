"""Kubeward enforcement: the inline shim that data planes ask before a call passes.

Contract: ``decide(request, cache, buckets, inspector, policy, now)`` is pure
and cheap (dictionary lookups, a token bucket, inline inspection of the whole
request with libinjection and one RE2 set scan; never a model). The verdict cache follows the compacted ``enforcement.verdicts.v1``
topic and obeys only verdicts with a valid HMAC. Observe mode never denies.
Imports only ``ingest``, so the data plane never loads detection code.
"""

from enforcement.cache import CachedVerdict, VerdictCache
from enforcement.decision import ALLOW, Decision, Inspection, Inspector, RequestView, decide
from enforcement.errors import EnforcementError, RuleLoadError
from enforcement.inspection import Inspectors, WafInspector, build_inspector
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from enforcement.signatures import Signature, SignatureSet, lint, load_signatures

__all__ = [
    "ALLOW",
    "CachedVerdict",
    "Decision",
    "EnforcementError",
    "Inspection",
    "Inspector",
    "Inspectors",
    "RequestView",
    "RuleLoadError",
    "ShimSettings",
    "Signature",
    "SignatureSet",
    "TokenBuckets",
    "VerdictCache",
    "WafInspector",
    "build_inspector",
    "decide",
    "lint",
    "load_signatures",
]
