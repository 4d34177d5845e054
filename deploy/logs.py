"""Structured logging: one JSON object per line, with the ``extra`` fields of each call."""

from __future__ import annotations

import json
import logging
import sys

__all__ = ["setup_logging"]

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        doc.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "info") -> None:
    """Send ``kubeward.*`` logs as JSON lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("kubeward")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
