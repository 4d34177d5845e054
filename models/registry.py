"""Detectors by name: every enabled rule of the shipped rule files, plus models. An unknown name raises an error listing the valid ones."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from models.base import Detector
from models.detectors import RuleDetector
from models.errors import UnknownDetectorError
from models.rules import DEFAULT_RULES, load_rules

__all__ = ["REGISTRY", "build_detectors", "detector_factories", "registry"]

SHIPPED_RULES = DEFAULT_RULES


def registry(path: Path = SHIPPED_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Callable[[], Detector]]:
    """Detector factories by name for the enabled rules of ``path`` (with ``overrides`` applied)."""
    return {rule.id: partial(RuleDetector, rule) for rule in load_rules(path, overrides) if rule.enabled}


REGISTRY: dict[str, Callable[[], Detector]] = registry()


def detector_factories(names: list[str] | None, path: Path = SHIPPED_RULES,
                       overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Callable[[], Detector]]:
    """Factories of the named detectors (every enabled rule when ``names`` is None), the rule files read once."""
    known = REGISTRY if Path(path) == SHIPPED_RULES and not overrides else registry(path, overrides)
    unknown = [name for name in names or () if name not in known]
    if unknown:
        raise UnknownDetectorError(f"unknown detector {unknown[0]!r}; valid names: {', '.join(sorted(known))}")
    return [known[name] for name in (sorted(known) if names is None else names)]


def build_detectors(names: list[str], path: Path = SHIPPED_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Detector]:
    """Instantiate detectors by name (rule ids of ``path``, with ``overrides`` applied)."""
    return [factory() for factory in detector_factories(names, path, overrides)]
