"""Feature names of an actor window, the rows every detector scores.

``streams`` computes these from its per-actor state for each actor touched by
a batch; notebooks and training compute the same names from Parquet. Counts
cover the current tumbling window; ``baseline_*`` are the actor's exponentially
weighted averages over its past windows.
"""

from __future__ import annotations

__all__ = ["FEATURES"]

FEATURES: tuple[str, ...] = (
    "requests",  # calls in the window
    "distinct_objects",  # estimated distinct object ids touched
    "denied",  # 403 and 404 answers
    "auth_failures",  # 401 answers
    "pii",  # sensitive values returned (all types)
    "response_bytes",  # bytes returned to the actor
    "novel_destinations",  # calls to services the actor had not called once learned
    "inline_hits",  # calls an inline signature flagged (injection, traversal)
    "retired_hits",  # calls to retired or undocumented endpoints
    "baseline_distinct",  # EWMA of distinct_objects over past windows
    "baseline_pii",  # EWMA of pii over past windows
    "age_windows",  # windows since the actor was first seen
    "is_service",  # 1 when the actor is a workload without an end-user principal
)
