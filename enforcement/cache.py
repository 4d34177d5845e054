"""The shim's local verdict cache: subject keys to compiled verdicts.

Lookups are dictionary gets on ``kind:value`` keys; each entry keeps only what
the hot path needs. A verdict replaces an older one for the same subject; a
tombstone removes it; expired entries are ignored at lookup and purged lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import Verdict

__all__ = ["CachedVerdict", "VerdictCache"]


@dataclass(frozen=True, slots=True)
class CachedVerdict:
    """What a shim needs from a verdict at request time."""

    action: str
    mode: str
    expires_at: float
    scope_service: str | None
    rate_per_s: float
    burst: int
    reason: str
    verdict_id: str


class VerdictCache:
    """Subject key -> cached verdict, with counts for metrics."""

    def __init__(self) -> None:
        self.entries: dict[str, CachedVerdict] = {}
        self.applied = 0
        self.removed = 0

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, verdict: Verdict) -> None:
        """Add or replace the verdict of its subject."""
        reason = verdict.reasons[0].detector if verdict.reasons else "verdict"
        self.entries[verdict.subject.cache_key] = CachedVerdict(
            action=verdict.action,
            mode=verdict.mode,
            expires_at=verdict.expires_at,
            scope_service=verdict.scope.service if verdict.scope else None,
            rate_per_s=verdict.rate_per_s or 1.0,
            burst=verdict.burst or 1,
            reason=reason,
            verdict_id=verdict.id,
        )
        self.applied += 1

    def remove(self, cache_key: str) -> None:
        """Lift the verdict of a subject (a tombstone on the compacted topic)."""
        if self.entries.pop(cache_key, None) is not None:
            self.removed += 1

    def find(self, keys: tuple[str, ...], service: str | None, now: float) -> tuple[str, CachedVerdict] | None:
        """The first live verdict among ``keys`` whose scope matches the destination service."""
        entries = self.entries
        for key in keys:
            hit = entries.get(key)
            if hit is not None and hit.expires_at > now and (hit.scope_service is None or hit.scope_service == service):
                return key, hit
        return None

    def purge(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        dead = [k for k, v in self.entries.items() if v.expires_at <= now]
        for k in dead:
            del self.entries[k]
        return len(dead)
