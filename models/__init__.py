"""Kubeward models: features, detectors behind one interface, and their registry.

Every detector implements ``models.base.Detector``: ``fit(frame)`` learns
thresholds from benign actor windows, ``score_many(frame)`` returns scores in
[0, 1] (0.5 = at threshold, higher = more anomalous) and ``explain(row)`` says
why. Detectors never choose an action; ``streams`` does, with a policy.
"""

from models.base import Detector, Frame, frame_from_row
from models.detectors import (
    AuthFailureDetector,
    CountThresholdDetector,
    InlineSignatureDetector,
    NovelDestinationDetector,
    ObjectBreadthDetector,
    RetiredEndpointDetector,
    VolumeDetector,
)
from models.errors import ModelError, UnknownDetectorError
from models.features import FEATURES
from models.registry import REGISTRY, build_detectors

__all__ = [
    "FEATURES",
    "REGISTRY",
    "AuthFailureDetector",
    "CountThresholdDetector",
    "Detector",
    "Frame",
    "InlineSignatureDetector",
    "ModelError",
    "NovelDestinationDetector",
    "ObjectBreadthDetector",
    "RetiredEndpointDetector",
    "UnknownDetectorError",
    "VolumeDetector",
    "build_detectors",
    "frame_from_row",
]
