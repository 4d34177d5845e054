"""Building settings objects with errors that name the key and the bad value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import os

from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pydantic_settings import SettingsError as _SourceError

from ingest.errors import SettingsError

__all__ = ["build_settings", "unknown_variables"]

S = TypeVar("S", bound=BaseSettings)


def unknown_variables(cls: type[BaseSettings], environ: Mapping[str, str]) -> list[str]:
    """Variables with the class's prefix that name no setting (``KUBEWARD_SHIM_PROT``): a typo pydantic would ignore.

    >>> from enforcement.settings import ShimSettings
    >>> unknown_variables(ShimSettings, {"KUBEWARD_SHIM_PORT": "1", "KUBEWARD_SHIM_PROT": "2", "OTHER": "3"})
    ['KUBEWARD_SHIM_PROT']
    """
    prefix = str(cls.model_config.get("env_prefix", "")).upper()
    delimiter = cls.model_config.get("env_nested_delimiter") or None
    if not prefix:
        return []
    fields = {name.upper() for name in cls.model_fields}
    unknown = []
    for name in environ:
        if name.upper().startswith(prefix):
            head = name[len(prefix):].upper()
            if (head.split(delimiter)[0] if delimiter else head) not in fields:
                unknown.append(name)
    return sorted(unknown)


def build_settings(cls: type[S], **overrides: Any) -> S:
    """Instantiate a settings class (environment + overrides); raise ``SettingsError`` naming key and value.

    A variable with the class's prefix that names no setting is an error too (a misspelt
    ``KUBEWARD_SHIM_FAILUR_MODE`` would otherwise leave the default in force without a word).
    """
    unknown = unknown_variables(cls, os.environ)
    if unknown:
        prefix = str(cls.model_config.get("env_prefix", ""))
        raise SettingsError(f"invalid {cls.__name__}: " + "; ".join(f"{name}={os.environ[name]!r}: no such setting" for name in unknown)
                            + f" (settings: {', '.join(prefix + n.upper() for n in sorted(cls.model_fields))})")
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
