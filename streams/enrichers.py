"""The worker's enrichers by name: the stateful analysers whose per-row signals the feature table folds.

``build_enrichers(names, context)`` instantiates them in order; ``ENRICHERS``
lists them. A rule whose signal comes from an enricher that is switched off
(or, for honeytokens, has nothing declared) reads 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ingest.honeytokens import Honeytokens
from streams.agentbehaviour import AgentBehaviour, AgentBehaviourConfig
from streams.agentsignals import AgentSignals
from streams.batch import Enricher
from streams.credentials import CredentialTables
from streams.edges import EdgeConfig, EdgeEnricher
from streams.honeytokens import HoneytokenEnricher
from streams.identityflood import IdentityFlood, IdentityFloodConfig
from streams.ownership import OwnershipEnricher

__all__ = ["ENRICHERS", "EnricherContext", "build_enrichers"]


@dataclass(frozen=True)
class EnricherContext:
    """What enrichers may need from the worker's settings."""

    window_s: int = 60
    learn_windows: int = 3
    honeytokens: Honeytokens | None = None


#: name -> factory; a factory may return None (nothing to do under these settings)
ENRICHERS: dict[str, Callable[[EnricherContext], Enricher | None]] = {
    "agents": lambda ctx: AgentSignals(window_s=int(ctx.window_s)),
    "agentbehaviour": lambda ctx: AgentBehaviour(AgentBehaviourConfig.from_windows(ctx.window_s, ctx.learn_windows)),
    "credentials": lambda ctx: CredentialTables(),
    "edges": lambda ctx: EdgeEnricher(EdgeConfig.from_windows(ctx.window_s, ctx.learn_windows)),
    "honeytokens": lambda ctx: None if ctx.honeytokens is None else HoneytokenEnricher(ctx.honeytokens),
    "identityflood": lambda ctx: IdentityFlood(IdentityFloodConfig.from_windows(ctx.window_s, ctx.learn_windows)),
    "ownership": lambda ctx: OwnershipEnricher(),
}


def build_enrichers(names: Sequence[str], context: EnricherContext | None = None) -> list[Enricher]:
    """Fresh enrichers by name; an unknown name raises ``ValueError`` listing the valid ones."""
    unknown = [n for n in names if n not in ENRICHERS]
    if unknown:
        raise ValueError(f"unknown enrichers {unknown}; valid names: {', '.join(sorted(ENRICHERS))}")
    ctx = context or EnricherContext()
    return [e for e in (ENRICHERS[n](ctx) for n in names) if e is not None]
