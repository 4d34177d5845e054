"""Detectors by name. An unknown name raises an error listing the valid ones."""

from __future__ import annotations

import inspect
from typing import Any

from models.base import Detector
from models.detectors import (
    AuthFailureDetector,
    InlineSignatureDetector,
    NovelDestinationDetector,
    ObjectBreadthDetector,
    RetiredEndpointDetector,
    VolumeDetector,
)
from models.errors import UnknownDetectorError

__all__ = ["REGISTRY", "build_detectors"]

REGISTRY: dict[str, type[Detector]] = {
    "auth_failures": AuthFailureDetector,
    "bola_breadth": ObjectBreadthDetector,
    "inline_signature": InlineSignatureDetector,
    "novel_destination": NovelDestinationDetector,
    "pii_volume": VolumeDetector,
    "retired_endpoint": RetiredEndpointDetector,
}


def build_detectors(names: list[str], **shared: Any) -> list[Detector]:
    """Instantiate detectors by registry name; ``shared`` hyperparameters go to those that take them."""
    out = []
    for name in names:
        if name not in REGISTRY:
            raise UnknownDetectorError(f"unknown detector {name!r}; valid names: {', '.join(sorted(REGISTRY))}")
        cls = REGISTRY[name]
        accepted = inspect.signature(cls.__init__).parameters
        out.append(cls(**{k: v for k, v in shared.items() if k in accepted}))
    return out
