"""The base of every record on Kubeward's topics: frozen, unknown fields ignored (readers of newer writers)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Record"]


class Record(BaseModel):
    """Frozen; fields a newer writer added are ignored, so old readers keep working."""

    model_config = ConfigDict(frozen=True, extra="ignore")
