"""What the shim inspects a request with, built once from its settings: the rule engines, request-schema
validation, prompt injection in what model calls send, and honeytokens, composed into the one ``Inspector`` that ``decide`` runs.

The shim (``enforcement.shim``) and the offline evaluation's shim (``deploy.lab.enforcer``) build it here, so
the evaluation inspects requests exactly as a deployment does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from enforcement.decision import Inspector
from enforcement.honeytokens import HoneytokenInspector
from enforcement.inspection import Inspectors, build_inspector
from enforcement.promptinline import PromptInspector
from enforcement.propertyschema import PropertySchemaValidator, build_property_validator
from enforcement.settings import ShimSettings

__all__ = ["ShimInspectors", "build_shim_inspectors"]


@dataclass
class ShimInspectors:
    """The composed inspector and its parts (the parts keep their own counters for metrics)."""

    inspector: Inspector
    waf: Any
    schema: PropertySchemaValidator | None
    honeytokens: HoneytokenInspector | None
    prompt: PromptInspector | None = None


def build_shim_inspectors(settings: ShimSettings, clock: Callable[[], float] = time.monotonic) -> ShimInspectors:
    """Rule engines, then schema validation (when enabled), prompt injection in model calls (when enabled), then
    honeytokens (when a file is configured)."""
    waf = build_inspector(settings.inspection, settings.rules_path)
    inspector: Any = waf
    sv = settings.schema_validation
    schema = build_property_validator(sv.spec_dir, sv, threshold=settings.inspection.threshold, clock=clock) if sv.enabled else None
    if schema is not None:
        inspector = Inspectors(inspector, schema)
    prompt = None
    if settings.inspection.enabled and settings.inspection.prompt_injection:
        prompt = PromptInspector(settings.inspection.threshold, settings.inspection.prompt_max_chars, model_floor=settings.inspection.prompt_model_floor)
        inspector = Inspectors(inspector, prompt)
    tokens = settings.honeytokens.load()
    honeytokens = None if tokens is None else HoneytokenInspector(tokens, max_body_bytes=settings.inspection.max_body_bytes)
    if honeytokens is not None:
        inspector = Inspectors(inspector, honeytokens)
    return ShimInspectors(inspector, waf, schema, honeytokens, prompt)
