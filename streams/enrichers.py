"""The worker's enrichers by name: the stateful analysers whose per-row signals the feature table folds.

``build_enrichers(names)`` instantiates them in order; ``ENRICHERS`` lists
them. A rule whose signal comes from an enricher that is switched off reads 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from streams.batch import Enricher
from streams.credentials import CredentialTables
from streams.ownership import OwnershipEnricher

__all__ = ["ENRICHERS", "build_enrichers"]

ENRICHERS: dict[str, Callable[[], Enricher]] = {
    "credentials": CredentialTables,
    "ownership": OwnershipEnricher,
}


def build_enrichers(names: Sequence[str]) -> list[Enricher]:
    """Fresh enrichers by name; an unknown name raises ``ValueError`` listing the valid ones."""
    unknown = [n for n in names if n not in ENRICHERS]
    if unknown:
        raise ValueError(f"unknown enrichers {unknown}; valid names: {', '.join(sorted(ENRICHERS))}")
    return [ENRICHERS[n]() for n in names]
