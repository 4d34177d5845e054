"""Building settings objects with errors that name the key and the bad value."""

from __future__ import annotations

from typing import Any, TypeVar

import os

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as _SourceError

from ingest.errors import SettingsError

__all__ = ["build_settings"]

S = TypeVar("S", bound=BaseSettings)


def build_settings(cls: type[S], **overrides: Any) -> S:
    """Instantiate a settings class (environment + overrides); raise ``SettingsError`` naming key and value."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        problems = []
        for err in exc.errors():
            key = "__".join(str(p) for p in err["loc"])
            problems.append(f"{prefix}{key.upper()}={err.get('input')!r}: {err['msg']}")
        raise SettingsError(f"invalid {cls.__name__}: " + "; ".join(problems)) from exc
    except _SourceError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        seen = ", ".join(f"{k}={v!r}" for k, v in sorted(os.environ.items()) if k.startswith(prefix)) or "none"
        raise SettingsError(f"invalid {cls.__name__}: {exc} (complex values must be JSON, e.g. '[\"a\", \"b\"]'); {prefix}* variables: {seen}") from exc
