"""Shim settings, read once in the entry point (env prefix ``KUBEWARD_SHIM_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from enforcement.signatures import DEFAULT_RULES
from ingest import Policy

__all__ = ["ShimSettings"]


class ShimSettings(BaseSettings):
    """Everything one shim needs; nested ``policy`` reads ``KUBEWARD_SHIM_POLICY__<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="KUBEWARD_SHIM_", env_nested_delimiter="__", frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="address of the decision endpoint")
    port: int = Field(default=9191, ge=0, le=65535, description="ext_authz HTTP decision port")
    admin_port: int = Field(default=9192, ge=0, le=65535, description="/metrics, /healthz and /stats")
    bootstrap: str | None = Field(default="127.0.0.1:9092", description="Kafka; None runs without control topic or reports")
    path_prefix: str = Field(default="", description="prefix the data plane adds before the original path (Envoy path_prefix)")
    verdict_key: SecretStr = Field(default=SecretStr("kubeward-dev-verdict-key"), description="HMAC key verdicts must carry")
    object_id_key: SecretStr = Field(default=SecretStr("kubeward-dev-object-key"), description="key for hashing object ids in reports")
    report: Literal["all", "denied", "none"] = Field(default="all", description="which decisions are published as RequestSummary")
    failure_mode: Literal["allow", "deny"] = Field(default="allow", description="answer before the verdict cache has synced")
    rules_path: Path = Field(default=DEFAULT_RULES, description="inline signature rules (YAML)")
    policy: Policy = Field(default_factory=Policy)
