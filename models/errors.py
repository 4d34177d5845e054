"""Errors of the models package.

    ModelError
     └── UnknownDetectorError   a registry name that does not exist (lists the valid ones)

Detectors need no ``fit`` before scoring: an unfitted detector uses its floor hyperparameter.
"""

from __future__ import annotations

__all__ = ["ModelError", "UnknownDetectorError"]


class ModelError(Exception):
    """Root of every error raised by ``models``."""


class UnknownDetectorError(ModelError, KeyError):
    """No detector is registered under the requested name."""

