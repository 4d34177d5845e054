"""HMAC signatures on verdicts, so a shim obeys only verdicts (and lifts) from our workers.

The signature covers the canonical JSON of every field but ``signature``,
``key_id`` included, so a verdict cannot be moved to another key. Keys rotate by
id: workers sign with one key (``VerdictKeys.signing_id``); shims accept every
key they hold, picked by the verdict's ``key_id``. Rotation: give the shims the
new key beside the old (``verdict_keys_accepted``), then switch the workers to
it, then drop the old key from the shims once the verdicts it signed have
expired (the policy's ``verdict_ttl_s``, 15 min by default).

``DEV_VERDICT_KEY`` is the development key every setting defaults to: the
worker and the shim refuse to start with it unless ``--dev`` says so.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import SecretStr

from ingest.schema import Verdict

__all__ = ["DEV_VERDICT_KEY", "KEY_ID_PATTERN", "VerdictKeys", "sign_verdict", "verdict_keys", "verify_verdict"]

DEV_VERDICT_KEY = "kubeward-dev-verdict-key"
KEY_ID_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"


def _digest(verdict: Verdict, key: bytes) -> str:
    # An empty key_id is left out, so verdicts signed before keys had ids still verify (a rolling upgrade mixes both).
    body = verdict.model_dump_json(exclude={"signature", "key_id"} if not verdict.key_id else {"signature"}).encode()
    return hmac.new(key, body, hashlib.sha256).hexdigest()


def sign_verdict(verdict: Verdict, key: bytes, key_id: str | None = None) -> Verdict:
    """Return a copy of the verdict carrying its HMAC-SHA256 signature (and ``key_id`` when given)."""
    if key_id is not None:
        verdict = verdict.model_copy(update={"key_id": key_id})
    return verdict.model_copy(update={"signature": _digest(verdict, key)})


def verify_verdict(verdict: Verdict, key: bytes) -> bool:
    """True when the verdict's signature matches its content under ``key``."""
    # bytes: compare_digest refuses a str with non-ASCII characters (TypeError), and a record must never raise here
    return hmac.compare_digest(verdict.signature.encode("utf-8", "surrogatepass"), _digest(verdict, key).encode())


@dataclass(frozen=True)
class VerdictKeys:
    """The keys one process signs with and accepts, by id.

    >>> keys = VerdictKeys("k2", {"k2": b"new", "k1": b"old"})
    >>> v = Verdict(id="v", subject={"kind": "ip", "value": "10.0.0.1"}, action="block", expires_at=2.0, issued_at=1.0, evidence_time=1.0)
    >>> signed = keys.sign(v)
    >>> signed.key_id, keys.verify(signed), VerdictKeys("k1", {"k1": b"old"}).verify(signed)
    ('k2', True, False)
    """

    signing_id: str
    keys: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.signing_id not in self.keys:
            raise ValueError(f"verdict_key_id={self.signing_id!r} names no key held (held: {sorted(self.keys)})")

    def sign(self, verdict: Verdict) -> Verdict:
        """The verdict signed with the signing key, its ``key_id`` set."""
        return sign_verdict(verdict, self.keys[self.signing_id], self.signing_id)

    def verify(self, verdict: Verdict) -> bool:
        """True when the key the verdict names is held and its signature matches (an unknown id is False; a verdict
        without ``key_id``, written before keys had ids, is verified with the current key)."""
        key = self.keys.get(verdict.key_id or self.signing_id)
        return key is not None and verify_verdict(verdict, key)

    @property
    def uses_dev_key(self) -> bool:
        """Whether any key held is the development key."""
        return any(hmac.compare_digest(k, DEV_VERDICT_KEY.encode()) for k in self.keys.values())


def verdict_keys(key: SecretStr, key_id: str, accepted: Mapping[str, SecretStr] | None = None) -> VerdictKeys:
    """The keys of a process's settings: ``key`` (signed with, and accepted) under ``key_id``, plus ``accepted`` by id."""
    held = {name: secret.get_secret_value().encode() for name, secret in (accepted or {}).items()}
    held[key_id] = key.get_secret_value().encode()
    return VerdictKeys(key_id, held)
