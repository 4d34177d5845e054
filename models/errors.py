"""Errors of the models package.

    ModelError
     ├── UnknownDetectorError   a registry name that does not exist (lists the valid ones)
     └── NotFittedError         ``score`` called before ``fit`` on a detector that needs it
"""

from __future__ import annotations

__all__ = ["ModelError", "NotFittedError", "UnknownDetectorError"]


class ModelError(Exception):
    """Root of every error raised by ``models``."""


class UnknownDetectorError(ModelError, KeyError):
    """No detector is registered under the requested name."""


class NotFittedError(ModelError):
    """The detector has learned state that ``fit`` has not set yet."""
