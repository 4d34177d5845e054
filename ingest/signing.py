"""HMAC signatures on verdicts, so a shim obeys only verdicts from our workers.

The signature covers the canonical JSON of every field but ``signature``.
"""

from __future__ import annotations

import hashlib
import hmac

from ingest.schema import Verdict

__all__ = ["sign_verdict", "verify_verdict"]


def _digest(verdict: Verdict, key: bytes) -> str:
    body = verdict.model_dump_json(exclude={"signature"}).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_verdict(verdict: Verdict, key: bytes) -> Verdict:
    """Return a copy of the verdict carrying its HMAC-SHA256 signature."""
    return verdict.model_copy(update={"signature": _digest(verdict, key)})


def verify_verdict(verdict: Verdict, key: bytes) -> bool:
    """True when the verdict's signature matches its content under ``key``."""
    return hmac.compare_digest(verdict.signature, _digest(verdict, key))
