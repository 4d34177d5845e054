"""Errors of the ingest package.

    IngestError
     ├── EnvelopeError      a summaries-topic message cannot be decoded
     ├── SettingsError      a configuration value is invalid (names key and value)
     ├── PublishError       the publisher cannot hand records to Kafka
     ├── SpecError          an OpenAPI/Swagger document cannot be read (ingest.openapi)
     ├── PodEventError      a pod watch event cannot be applied (ingest.pods)
     └── PodWatchError      the pod watch cannot start (ingest.podwatch)
"""

from __future__ import annotations

__all__ = ["IngestError", "PublishError", "SettingsError"]


class IngestError(Exception):
    """Root of every error raised by ``ingest``."""


class SettingsError(IngestError):
    """A configuration key has a bad value; the message names both."""


class PublishError(IngestError):
    """Records could not be handed to Kafka within the configured bounds."""
