"""Kubeward models: the feature table, detectors behind one interface, rules as data, and their registry.

Every detector implements ``models.base.Detector``: ``fit(frame)`` learns
thresholds from benign key windows, ``score_many(frame)`` returns scores in
[0, 1] (0.5 = at threshold, higher = more anomalous) and ``explain(row)`` says
why. Threshold detectors are YAML rules (``models.rules``, files in
``models/rules/``) over features declared once in ``models.features``.
Detectors never choose an action; ``streams`` does, with a policy.
"""

from models.base import Detector, Frame, frame_from_row
from models.detectors import RuleDetector
from models.errors import ModelError, UnknownDetectorError
from models.features import FEATURE_TABLE, FEATURES, Feature, feature, features_for
from models.registry import REGISTRY, build_detectors, registry
from models.rules import Rule, load_rules

__all__ = [
    "FEATURES",
    "FEATURE_TABLE",
    "REGISTRY",
    "Detector",
    "Feature",
    "Frame",
    "ModelError",
    "Rule",
    "RuleDetector",
    "UnknownDetectorError",
    "build_detectors",
    "feature",
    "features_for",
    "frame_from_row",
    "load_rules",
    "registry",
]
