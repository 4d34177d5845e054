"""Token buckets per subject, for throttle verdicts."""

from __future__ import annotations

__all__ = ["TokenBuckets"]


class TokenBuckets:
    """One bucket per key: ``rate`` tokens per second up to ``burst``; state is two floats per key."""

    def __init__(self) -> None:
        self._state: dict[str, list[float]] = {}

    def __len__(self) -> int:
        return len(self._state)

    def take(self, key: str, rate: float, burst: int, now: float) -> float:
        """Take one token. Returns 0.0 when granted, else seconds until the next token."""
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = [float(burst), now]
        tokens = min(float(burst), state[0] + (now - state[1]) * rate)
        state[1] = now
        if tokens >= 1.0:
            state[0] = tokens - 1.0
            return 0.0
        state[0] = tokens
        return (1.0 - tokens) / rate
