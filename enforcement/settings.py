"""Shim settings, read once in the entry point (env prefix ``KUBEWARD_SHIM_``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from enforcement.allowlist import AllowList, AllowListError
from enforcement.allowlistfile import load_allowlist
from enforcement.fasttier import FastTierConfig
from enforcement.propertyschema import SchemaValidationSettings
from enforcement.redaction import RedactionSettings
from enforcement.signatures import DEFAULT_RULES
from ingest import Policy
from ingest.errors import SettingsError
from ingest.honeytokens import HoneytokenSettings
from ingest.identitysettings import IdentitySettings
from ingest.kafkaauth import KafkaSecurity
from ingest.signing import DEV_VERDICT_KEY, KEY_ID_PATTERN

__all__ = ["AllowListSettings", "FastTierSettings", "InspectionSettings", "RedactionSettings", "SchemaValidationSettings", "ShimSettings"]


def _loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InspectionSettings(BaseModel):
    """Inline inspection of the whole request (``KUBEWARD_SHIM_INSPECTION__*``): engines, scoring, limits.

    Scores add up per request, CRS-style: each rule that fires adds its score
    (critical 5, error 4, warning 3, notice 2); a request whose total reaches
    ``threshold`` is an inline finding. Rules above ``paranoia`` are not run.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="run inline inspection at all")
    paranoia: int = Field(default=1, ge=1, le=4, description="highest rule paranoia level run (1 = fewest false positives, 4 = most recall)")
    threshold: int = Field(default=5, ge=1, description="score at which a request is an inline finding (one critical rule = 5)")
    decode_passes: int = Field(default=2, ge=1, le=4, description="percent-decoding passes (bounded: a value encoded more often is itself suspicious)")
    headers: tuple[str, ...] = Field(default=("user-agent", "referer", "cookie", "content-type", "x-*"), description="request headers inspected (lower-case; a trailing * matches a prefix)")
    max_body_bytes: int = Field(default=65536, ge=0, description="request body bytes inspected (and read from the data plane); 0 = bodies not inspected")
    oversize: Literal["inspect_prefix", "deny", "allow"] = Field(
        default="inspect_prefix",
        description="a body past max_body_bytes: inspect its first max_body_bytes (default), deny it, or allow it uninspected",
    )
    budget_ms: float = Field(
        default=50.0,
        gt=0,
        description=("time budget of the RE2 scan of one request: text crafted to make the scan slow (15-26 ms per KB) is cut off here, "
                     "well before the data plane's check timeout (250 ms in the shipped configurations, which then fail open); "
                     "ordinary 40 KB JSON bodies take under 10 ms on a cold process, under 2 ms warm"),
    )
    over_budget: Literal["deny", "allow"] = Field(
        default="deny",
        description="a request whose scan exceeds budget_ms: the finding 'inspection-budget' at the threshold (deny in enforce mode), or allow with what was found so far",
    )
    max_values: int = Field(default=512, ge=1, description="values (path segments, query args, headers, body leaves) inspected per request; the rest are skipped and counted")
    prompt_injection: bool = Field(default=True, description="scan the tool results model-API calls hand the model (tool, function and ipython messages; Responses tool outputs) for prompt injection (enforcement.promptinline)")
    prompt_model_floor: float = Field(default=0.8, ge=0.5, le=1.0, description="classifier score at which a tool result in a model call is denied inline when no rule matched (the stream's findings use 0.5)")
    prompt_max_chars: int = Field(default=8192, ge=1, description="characters of a model call's tool results scanned inline, newest first, a long result by its head and tail (the stream scans whole tool results)")


class FastTierSettings(BaseModel):
    """The shim's own fast signals (``KUBEWARD_SHIM_FAST_TIER__*``, ``enforcement.fasttier``): acted on in the shim on the
    request that completes them, with the action and mode the policy gives the attack class and destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=True, description="count and act on the fast signals in the shim")
    window_s: float = Field(default=10.0, gt=0, description="length of a counting window, from its first counted request")
    max_distinct_objects: int = Field(
        default=150, ge=0,
        description="distinct object ids of one service a principal may read within window_s; reaching it is an enumeration (0 = off)",
    )
    workloads: bool = Field(
        default=False,
        description=("also act on a workload calling without a principal (inline repeats); off by default: behind one gateway workload "
                     "every anonymous caller is that workload. Principals count only when verified (a JWT checked with a key, "
                     "an API key, a session, the data plane's assertion), addresses only without principal and workload"),
    )
    inline_hits: int = Field(default=3, ge=0, description="inline findings of a principal or client address within window_s after which its every request is refused: a scanner's burst (0 = off)")
    block_s: float = Field(default=300.0, gt=0, description="how long a local verdict stands (the worker's verdict, or a signed lift, usually comes first)")
    max_actors: int = Field(default=50_000, ge=100, description="windows open at once, and local verdicts standing; past it the oldest is dropped (counted)")

    def config(self) -> FastTierConfig:
        """The pure core's configuration."""
        return FastTierConfig(self.window_s, self.max_distinct_objects, self.inline_hits, self.block_s, self.max_actors, self.workloads)


class AllowListSettings(BaseModel):
    """The learned L7 allow-list the shim enforces (``KUBEWARD_SHIM_ALLOW_LIST__*``, ``enforcement.allowlist``): the
    ``allowlist.yaml`` that ``kubeward policy suggest --format shim`` writes. Calls to a destination it names are refused
    unless it lists their method, path template and caller, in the mode the policy gives the destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: Path | None = Field(default=None, description="KubewardAllowList file (YAML or JSON); unset or empty: off")
    reload_s: float = Field(default=10.0, ge=0, description=("seconds between checks of the file for a change (its modification time and size); "
                                                            "a changed file that does not load is logged and counted, and the list in force stays; 0 = read once at start"))

    @field_validator("file", mode="before")
    @classmethod
    def _empty_is_off(cls, value: object) -> object:
        return None if value is None or (isinstance(value, str) and not value.strip()) else value

    def load(self) -> AllowList | None:
        """The allow-list, or None when no file is configured; ``SettingsError`` names the setting, and the bad key or value."""
        if self.file is None:
            return None
        try:
            return load_allowlist(self.file)
        except AllowListError as exc:
            raise SettingsError(f"KUBEWARD_SHIM_ALLOW_LIST__FILE={str(self.file)!r}: {exc}") from None


class ShimSettings(BaseSettings):
    """Everything one shim needs; nested ``policy`` reads ``KUBEWARD_SHIM_POLICY__<FIELD>``."""

    # env_parse_none_str: KUBEWARD_SHIM_BOOTSTRAP=None means no Kafka (deploy.runtime.process writes None so).
    model_config = SettingsConfigDict(env_prefix="KUBEWARD_SHIM_", env_nested_delimiter="__", frozen=True, extra="forbid", env_parse_none_str="None")

    host: str = Field(default="127.0.0.1", description="address of the decision endpoint")
    port: int = Field(default=9191, ge=0, le=65535, description="HTTP check port (Envoy ext_authz HTTP, nginx auth_request, Traefik ForwardAuth)")
    grpc_port: int | None = Field(default=None, ge=0, le=65535, description="Envoy ext_authz gRPC check port (envoy.service.auth.v3.Authorization/Check; Istio envoyExtAuthzGrpc, Envoy Gateway); unset = off")
    admin_port: int = Field(default=9192, ge=0, le=65535, description="/metrics, /healthz, /readyz and /stats")
    admin_host: str = Field(default="127.0.0.1", description="address of the admin port; an address other than loopback needs admin_token")
    admin_token: SecretStr | None = Field(
        default=None,
        description="bearer token /metrics and /stats require (Authorization: Bearer <token>); /healthz and /readyz stay open for probes",
    )
    stale_after_s: float = Field(
        default=60.0, gt=0,
        description="verdict cache age (since the broker last confirmed it current) past which /healthz and /readyz report stale; the cache keeps answering",
    )
    unready_when_stale: bool = Field(
        default=False,
        description=("a stale cache also fails /readyz (503). Off by default: every replica loses the same broker at once, and a readiness "
                     "gate dropping them all would leave the data plane with its failure mode for every request instead of a cache that still answers"),
    )
    warm_up_timeout_s: float = Field(default=30.0, ge=0, description="longest wait for the inline classifier to load before the check ports open")
    adapter: Literal["envoy", "nginx", "traefik"] = Field(default="envoy", description="which data plane asks on the HTTP check port (enforcement/adapters/)")
    bootstrap: str | None = Field(default="127.0.0.1:9092", description="Kafka; None runs without control topic or reports")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity, description="how the shim authenticates to Kafka (KUBEWARD_SHIM_KAFKA__PROTOCOL, __USERNAME, __PASSWORD, ...)")
    path_prefix: str = Field(default="", description="prefix the data plane adds before the original path (Envoy path_prefix)")
    trust_kubeward_headers: bool = Field(
        default=True,
        description="obey x-kubeward-source-workload/-principal/-namespace on checks; safe only when the data plane strips client x-kubeward-* headers, as every shipped configuration does",
    )
    honeytokens: HoneytokenSettings = Field(default_factory=HoneytokenSettings,
                                            description="declared honeytokens: any use is denied inline and reported (KUBEWARD_SHIM_HONEYTOKENS__FILE, ...)")
    identity: IdentitySettings = Field(default_factory=lambda: IdentitySettings(trusted_hops=1),
                                       description="how identities are derived (KUBEWARD_SHIM_IDENTITY__*); trusted_hops defaults to 1: the data plane that asks")
    verdict_key: SecretStr = Field(default=SecretStr(DEV_VERDICT_KEY),
                                   description="HMAC key verdicts must carry (the development default is refused unless the shim runs with --dev)")
    verdict_key_id: str = Field(default="k1", pattern=KEY_ID_PATTERN, description="the id verdicts signed with verdict_key carry (key_id)")
    verdict_keys_accepted: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='more keys verdicts may be signed with, by id, while keys rotate, e.g. KUBEWARD_SHIM_VERDICT_KEYS_ACCEPTED=\'{"k2": "<new key>"}\'',
    )
    object_id_key: SecretStr = Field(default=SecretStr("kubeward-dev-object-key"), description="key for hashing object ids in reports")
    report: Literal["all", "denied", "none"] = Field(default="all", description="which decisions are published as RequestSummary (unparsed checks count as denied)")
    report_queue_max: int = Field(
        default=50_000, ge=1,
        description="decisions waiting to be reported; past it (Kafka away or slow) they are dropped and counted in kubeward_shim_reports_dropped_total",
    )
    failure_mode: Literal["allow", "deny"] = Field(default="allow", description="answer before the verdict cache has synced and for checks the shim cannot parse")
    timing_sample: int = Field(
        default=16,
        ge=0,
        description="time one check in this many (a power of two) for kubeward_authz_decision_duration_seconds; 0 = off; timing every check costs about 10% of the per-check CPU, one in 16 about 2%",
    )
    rules_path: Path = Field(default=DEFAULT_RULES, description="inline signature rules (YAML)")
    inspection: InspectionSettings = Field(default_factory=InspectionSettings, description="inline inspection of path, query, headers and body (KUBEWARD_SHIM_INSPECTION__*)")
    schema_validation: SchemaValidationSettings = Field(
        default_factory=SchemaValidationSettings,
        description="request-schema validation, declared and learned: mass assignment and type violations (KUBEWARD_SHIM_SCHEMA_VALIDATION__*)",
    )
    redaction: RedactionSettings = Field(default_factory=RedactionSettings, description="inline redaction through Envoy ext_proc (KUBEWARD_SHIM_REDACTION__*)")
    fast_tier: FastTierSettings = Field(default_factory=FastTierSettings,
                                        description="enumeration bursts and repeated inline findings acted on in the shim at once (KUBEWARD_SHIM_FAST_TIER__*)")
    allow_list: AllowListSettings = Field(default_factory=AllowListSettings,
                                          description="the learned L7 allow-list enforced per destination (KUBEWARD_SHIM_ALLOW_LIST__FILE, ...)")
    policy: Policy = Field(default_factory=Policy)

    @model_validator(mode="after")
    def _admin_exposed_only_with_token(self) -> ShimSettings:
        if self.admin_token is None and not _loopback(self.admin_host):
            raise ValueError(f"admin_host={self.admin_host!r} is not a loopback address: set admin_token too, or keep admin_host=127.0.0.1")
        return self

    @field_validator("timing_sample")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"timing_sample must be 0 or a power of two, got {value}")
        return value
