"""Kubeward enforcement: the inline shim that data planes ask before a call passes.

Contract: ``decide(request, cache, buckets, signatures, policy, now)`` is pure
and cheap (dictionary lookups, a token bucket, short regular expressions; never
a model). The verdict cache follows the compacted ``enforcement.verdicts.v1``
topic and obeys only verdicts with a valid HMAC. Observe mode never denies.
Imports only ``ingest``, so the data plane never loads detection code.
"""

from enforcement.cache import CachedVerdict, VerdictCache
from enforcement.decision import ALLOW, Decision, RequestView, decide
from enforcement.errors import EnforcementError, RuleLoadError
from enforcement.ratelimit import TokenBuckets
from enforcement.settings import ShimSettings
from enforcement.signatures import Signature, SignatureSet, lint, load_signatures

__all__ = [
    "ALLOW",
    "CachedVerdict",
    "Decision",
    "EnforcementError",
    "RequestView",
    "RuleLoadError",
    "ShimSettings",
    "Signature",
    "SignatureSet",
    "TokenBuckets",
    "VerdictCache",
    "decide",
    "lint",
    "load_signatures",
]
