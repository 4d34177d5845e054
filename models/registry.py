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

__all__ = ["REGISTRY", "build_detectors", "registry"]

SHIPPED_RULES = DEFAULT_RULES


def registry(path: Path = SHIPPED_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Callable[[], Detector]]:
    """Detector factories by name for the enabled rules of ``path`` (with ``overrides`` applied)."""
    return {rule.id: partial(RuleDetector, rule) for rule in load_rules(path, overrides) if rule.enabled}


REGISTRY: dict[str, Callable[[], Detector]] = registry()


def build_detectors(names: list[str], path: Path = SHIPPED_RULES, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> list[Detector]:
    """Instantiate detectors by name (rule ids of ``path``, with ``overrides`` applied)."""
    known = REGISTRY if Path(path) == SHIPPED_RULES and not overrides else registry(path, overrides)
    out = []
    for name in names:
        if name not in known:
            raise UnknownDetectorError(f"unknown detector {name!r}; valid names: {', '.join(sorted(known))}")
        out.append(known[name]())
    return out
