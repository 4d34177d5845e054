"""One finding per actor and attack, with counts: what reaches ``security.findings.v1``.

Contract: ``FindingDedup.offer(key, finding, now)`` takes the finding of one
detection, keyed by ``finding_key(subject kind, actor, attack class)``, and
returns the records to publish now. The first detection of a key opens a
finding: its record goes out as it is (activity 1, Create). Later detections of
the key, while the finding is open, are folded into it: ``count`` grows,
``start_time``/``end_time`` (and ``finding_info.first_seen_time``/
``last_seen_time``) span the first and latest detection, the severity is the
highest seen; an Update (activity 2, the same ``finding_info.uid``) goes out
at most every ``update_s`` seconds per finding, and ``due(now)`` returns the
Updates whose interval has passed with detections still unpublished (the
worker calls it on a timer, so a count is published even when the attack stops).
``uid(key, now)`` names the open finding, so each verdict of a repeat names
the finding it was folded into. A finding closes when its key has seen no
detection for ``window_s``; the next detection opens a new one.

Bounded: at most ``max_keys`` open findings; past that the least recently
detected one is closed (its unpublished count goes out first) and counted in
``counts["evicted"]``. ``counts`` also holds ``created``, ``updated`` and
``folded``. State is per worker: summaries are keyed by actor, so one actor's
detections reach one worker; after a rebalance the new owner opens a new finding.
Pure: the clock is passed in.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from ingest import Finding

__all__ = ["FindingDedup", "finding_key"]


def finding_key(subject_kind: str, actor: str, attack_class: str) -> str:
    """The deduplication key of a detection: its subject and attack class (``actor:shop/web|alice bola``)."""
    return f"{subject_kind}:{actor} {attack_class}"


@dataclass
class _Open:
    """One open finding: its uid, the span and count of its detections, what was published of it and when."""

    uid: str
    first_ms: int
    last_ms: int
    count: int
    published: int
    published_at: float
    seen_at: float
    severity_id: int
    latest: Finding


class FindingDedup:
    """Open findings per key and the records to publish for them (see the module docstring)."""

    def __init__(self, update_s: float = 300.0, window_s: float = 3600.0, max_keys: int = 50_000):
        if update_s < 0 or window_s <= 0 or max_keys < 1:
            raise ValueError(f"update_s={update_s} must be >= 0, window_s={window_s} > 0 and max_keys={max_keys} >= 1")
        self.update_s, self.window_s, self.max_keys = update_s, window_s, max_keys
        self._open: OrderedDict[str, _Open] = OrderedDict()  # least recently detected first
        self.counts = {"created": 0, "updated": 0, "folded": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._open)

    def uid(self, key: str, now: float) -> str | None:
        """The uid of the finding open for ``key`` at ``now``, if any."""
        entry = self._open.get(key)
        return entry.uid if entry is not None and now - entry.seen_at <= self.window_s else None

    def offer(self, key: str, finding: Finding, now: float) -> list[Finding]:
        """Fold one detection's finding in; the records to publish now (a Create, or an Update when due)."""
        out = self._close_idle(now)
        entry = self._open.get(key)
        if entry is None:
            out += self._create(key, finding, now)
            return out
        first, last = _span(finding)
        entry.first_ms, entry.last_ms = min(entry.first_ms, first), max(entry.last_ms, last)
        entry.count += 1
        entry.seen_at, entry.latest = now, finding
        entry.severity_id = max(entry.severity_id, finding.severity_id)
        self._open.move_to_end(key)
        self.counts["folded"] += 1
        if now - entry.published_at >= self.update_s:
            out.append(self._update(entry, now))
        return out

    def due(self, now: float) -> list[Finding]:
        """The Updates whose interval has passed with detections unpublished; closes the findings idle past the window."""
        out = self._close_idle(now)
        for entry in self._open.values():
            if entry.count > entry.published and now - entry.published_at >= self.update_s:
                out.append(self._update(entry, now))
        return out

    def _create(self, key: str, finding: Finding, now: float) -> list[Finding]:
        out = []
        if len(self._open) >= self.max_keys:
            _, oldest = self._open.popitem(last=False)
            self.counts["evicted"] += 1
            if oldest.count > oldest.published:
                out.append(self._update(oldest, now))
        first, last = _span(finding)
        self._open[key] = _Open(finding.finding_info.uid, first, last, 1, 1, now, now, finding.severity_id, finding)
        self.counts["created"] += 1
        return [*out, finding]

    def _close_idle(self, now: float) -> list[Finding]:
        """Close the findings whose key saw no detection for ``window_s`` (oldest first); their unpublished counts."""
        out = []
        while self._open:
            key, entry = next(iter(self._open.items()))
            if now - entry.seen_at <= self.window_s:
                break
            del self._open[key]
            if entry.count > entry.published:
                out.append(self._update(entry, now))
        return out

    def _update(self, entry: _Open, now: float) -> Finding:
        entry.published, entry.published_at = entry.count, now
        self.counts["updated"] += 1
        latest = entry.latest
        info = latest.finding_info.model_copy(update={"uid": entry.uid, "first_seen_time": entry.first_ms, "last_seen_time": entry.last_ms})
        return latest.model_copy(update={
            "activity_id": 2, "time": int(now * 1000), "count": entry.count, "start_time": entry.first_ms,
            "end_time": entry.last_ms, "severity_id": entry.severity_id, "finding_info": info,
        })


def _span(finding: Finding) -> tuple[int, int]:
    """(first, last) milliseconds a finding stands for: its start and end time, else its time."""
    first = finding.start_time if finding.start_time is not None else finding.time
    return first, finding.end_time if finding.end_time is not None else first
