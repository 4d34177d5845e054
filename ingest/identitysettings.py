"""How a node component derives identities, as a settings section shared by the shim and the collector.

One ``IdentitySettings`` section (``KUBEWARD_SHIM_IDENTITY__*``,
``KUBEWARD_COLLECTOR_IDENTITY__*``) so that both sides of a call derive the same
actor from the same headers: the principal hash key, JWT checks, trusted hops
and gateways, the data planes whose forwarded identity headers the shim
believes, the cluster's networks, the destination header, and where pod
addresses come from. ``build_identity`` turns it into the ``IdentityConfig`` and
pod lookup that ``ingest.identity.IdentityResolver`` takes (reading the JWKS
file and starting a pod watch when asked: call it from an entry point).
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from ingest.errors import SettingsError
from ingest.identity import IdentityConfig
from ingest.podsource import pod_lookup

__all__ = ["IdentitySettings", "build_identity", "identity_config"]

_NETWORKS = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "fd00::/8", "::1/128"]
_LOOPBACK = ["127.0.0.0/8", "::1/128"]


class IdentitySettings(BaseModel):
    """The identity section of a node component's settings (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    principal_key: SecretStr = Field(default=SecretStr("kubeward-dev-principal-key"), description="key of the principal hash (the same on every shim and collector)")
    jwt_hs256_secret: SecretStr | None = Field(default=None, description="check HS256 JWT signatures with this secret; unset = claims are read unverified")
    jwks_path: Path | None = Field(default=None, description="JWKS file to check RS256/ES256 JWT signatures")
    trusted_hops: int = Field(default=0, ge=0, description="x-forwarded-for entries appended by proxies we trust, counted from the right (0: the TCP peer)")
    trusted_proxies: list[str] = Field(default_factory=list, description="CIDRs of gateways whose own x-forwarded-for entry is believed (calls through them belong to the address they saw)")
    trusted_data_planes: list[str] = Field(
        default_factory=lambda: list(_LOOPBACK),
        description=("CIDRs of the data planes that ask the shim (Envoy, nginx, Traefik; the gRPC callers of ext_authz and ext_proc): "
                     "only from them are x-forwarded-for (trusted_hops), x-forwarded-client-cert and x-kubeward-* believed; any other "
                     "peer is itself the client. Default loopback (a data plane on the same host or in the same pod); in a cluster, "
                     "the gateways' or nodes' CIDRs. The shim's setting: a collector reads what its data plane logged and ignores it"),
    )
    internal_networks: list[str] = Field(default_factory=lambda: list(_NETWORKS), description="CIDRs of the cluster; other client addresses are external")
    destination_header: str = Field(default="x-kubeward-destination", description="header the data plane sets to name the destination service (ns/name or name)")
    pods_file: Path | None = Field(default=None, description="static JSON map of client address -> 'namespace/workload' (hosts without a Kubernetes API, the demo)")
    pod_watch: bool = Field(default=False, description="map client addresses to workloads by watching pods (in-cluster, or kubeconfig)")
    kubeconfig: str | None = Field(default=None, description="kubeconfig for the pod watch; unset = in-cluster")

    @field_validator("trusted_proxies", "trusted_data_planes", "internal_networks")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a CIDR (10.0.0.0/8, fd00::/8): {exc}") from None
        return values


def identity_config(settings: IdentitySettings) -> IdentityConfig:
    """The ``IdentityConfig`` of these settings (reads the JWKS file when one is named)."""
    jwks = None
    if settings.jwks_path is not None:
        try:
            jwks = json.loads(Path(settings.jwks_path).read_text())
        except (OSError, ValueError) as exc:
            raise SettingsError(f"identity.jwks_path={str(settings.jwks_path)!r}: {exc}") from exc
    return IdentityConfig(
        principal_key=settings.principal_key.get_secret_value().encode(),
        jwt_hs256_secret=settings.jwt_hs256_secret.get_secret_value().encode() if settings.jwt_hs256_secret else None,
        jwks=jwks,
        trusted_hops=settings.trusted_hops,
        trusted_proxies=tuple(settings.trusted_proxies),
        trusted_data_planes=tuple(settings.trusted_data_planes),
        internal_networks=tuple(settings.internal_networks),
        destination_header=settings.destination_header,
    )


def build_identity(settings: IdentitySettings) -> tuple[IdentityConfig, Any, Any]:
    """(``IdentityConfig``, pod lookup or None, pod watcher or None) for these settings."""
    pods, watcher = pod_lookup(settings.pods_file, settings.pod_watch, settings.kubeconfig)
    return identity_config(settings), pods, watcher
