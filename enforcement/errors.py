"""Errors of the enforcement package.

    EnforcementError
     ├── RuleLoadError      an inline signature file is invalid (names file, rule and key)
     └── SignatureError     a verdict's HMAC does not match; the shim ignores it
"""

from __future__ import annotations

__all__ = ["EnforcementError", "RuleLoadError", "SignatureError"]


class EnforcementError(Exception):
    """Root of every error raised by ``enforcement``."""


class RuleLoadError(EnforcementError):
    """An inline rule file or rule is invalid."""


class SignatureError(EnforcementError):
    """A verdict failed its HMAC check."""
