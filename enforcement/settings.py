"""Shim settings, read once in the entry point (env prefix ``KUBEWARD_SHIM_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enforcement.signatures import DEFAULT_RULES
from ingest import Policy

__all__ = ["ShimSettings"]


class ShimSettings(BaseSettings):
    """Everything one shim needs; nested ``policy`` reads ``KUBEWARD_SHIM_POLICY__<FIELD>``."""

    # env_parse_none_str: KUBEWARD_SHIM_BOOTSTRAP=None means no Kafka (deploy.runtime.process writes None so).
    model_config = SettingsConfigDict(env_prefix="KUBEWARD_SHIM_", env_nested_delimiter="__", frozen=True, extra="forbid", env_parse_none_str="None")

    host: str = Field(default="127.0.0.1", description="address of the decision endpoint")
    port: int = Field(default=9191, ge=0, le=65535, description="HTTP check port (Envoy ext_authz HTTP, nginx auth_request, Traefik ForwardAuth)")
    grpc_port: int | None = Field(default=None, ge=0, le=65535, description="Envoy ext_authz gRPC check port (envoy.service.auth.v3.Authorization/Check; Istio envoyExtAuthzGrpc, Envoy Gateway); unset = off")
    admin_port: int = Field(default=9192, ge=0, le=65535, description="/metrics, /healthz and /stats")
    adapter: Literal["envoy", "nginx", "traefik"] = Field(default="envoy", description="which data plane asks on the HTTP check port (enforcement/adapters/)")
    bootstrap: str | None = Field(default="127.0.0.1:9092", description="Kafka; None runs without control topic or reports")
    path_prefix: str = Field(default="", description="prefix the data plane adds before the original path (Envoy path_prefix)")
    trusted_hops: int = Field(
        default=1,
        ge=0,
        description="proxies whose x-forwarded-for entries are trusted, counted from the right; 1 = the data plane that asks (Envoy use_remote_address, nginx $remote_addr); 0 = the TCP peer",
    )
    trust_kubeward_headers: bool = Field(
        default=True,
        description="obey x-kubeward-source-workload/-principal/-namespace on checks; safe only when the data plane strips client x-kubeward-* headers, as every shipped configuration does",
    )
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs of gateways whose own x-forwarded-for entry is believed (calls through them belong to the address they saw)")
    internal_networks: list[str] = Field(default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fd00::/8", "::1/128"],
                                         description="CIDRs of the cluster; other client addresses are external")
    pods_file: Path | None = Field(default=None, description="static JSON map of client address -> 'namespace/workload' (hosts without a Kubernetes API, the demo)")
    pod_watch: bool = Field(default=False, description="map client addresses to workloads by watching pods (in-cluster, or kubeconfig)")
    kubeconfig: str | None = Field(default=None, description="kubeconfig for the pod watch; unset = in-cluster")
    destination_header: str = Field(default="x-kubeward-destination", description="header the data plane sets to name the destination service (ns/name or name)")
    principal_key: SecretStr = Field(default=SecretStr("kubeward-dev-principal-key"), description="key of the principal hash (must match the collectors')")
    jwt_hs256_secret: SecretStr | None = Field(default=None, description="check HS256 JWT signatures with this secret; unset = claims are read unverified")
    jwks_path: Path | None = Field(default=None, description="JWKS file to check RS256/ES256 JWT signatures")
    verdict_key: SecretStr = Field(default=SecretStr("kubeward-dev-verdict-key"), description="HMAC key verdicts must carry")
    object_id_key: SecretStr = Field(default=SecretStr("kubeward-dev-object-key"), description="key for hashing object ids in reports")
    report: Literal["all", "denied", "none"] = Field(default="all", description="which decisions are published as RequestSummary (unparsed checks count as denied)")
    failure_mode: Literal["allow", "deny"] = Field(default="allow", description="answer before the verdict cache has synced and for checks the shim cannot parse")
    timing_sample: int = Field(
        default=16,
        ge=0,
        description="time one check in this many (a power of two) for kubeward_authz_decision_duration_seconds; 0 = off; timing every check costs about 10% of the per-check CPU, one in 16 about 2%",
    )
    rules_path: Path = Field(default=DEFAULT_RULES, description="inline signature rules (YAML)")
    policy: Policy = Field(default_factory=Policy)

    @field_validator("timing_sample")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"timing_sample must be 0 or a power of two, got {value}")
        return value
