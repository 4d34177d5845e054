"""Errors of the enforcement package.

    EnforcementError
     ├── RuleLoadError      an inline signature file is invalid (names file, rule and key)
     ├── AllowListError     an allow-list file is invalid (names file, line, key and value; enforcement.allowlist)
     └── UnparsedRequest    a data plane's check request cannot be read (enforcement.adapters.httpcheck)

A verdict whose HMAC does not match is not an error: the shim counts and ignores it.
"""

from __future__ import annotations

__all__ = ["EnforcementError", "RuleLoadError"]


class EnforcementError(Exception):
    """Root of every error raised by ``enforcement``."""


class RuleLoadError(EnforcementError):
    """An inline rule file or rule is invalid."""

