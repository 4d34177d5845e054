"""Collector settings, read once in the entry point (env prefix ``KUBEWARD_COLLECTOR_``).

Sections are nested models read as ``KUBEWARD_COLLECTOR_<SECTION>__<FIELD>``
(``KUBEWARD_COLLECTOR_FILES__PATHS='["/var/log/pods/*/istio-proxy/*.log"]'``,
``KUBEWARD_COLLECTOR_JOIN__EXPECTED='["shim", "access_log"]'``). A source runs
when its section is enabled: ``files`` when it has paths, ``replay`` when it
has files, the servers (``otlp``, ``als``, ``extproc``) when ``enabled``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest.collectors.join import DEFAULT_PRECEDENCE
from ingest.identitysettings import IdentitySettings as SharedIdentity
from ingest.kafkaauth import KafkaSecurity

__all__ = ["CollectorSettings", "FileSettings", "IdentitySettings", "JoinSettings", "PublishSettings", "ReplaySettings", "ServerSettings"]

_SECTION = ConfigDict(frozen=True, extra="forbid")


class FileSettings(BaseModel):
    """JSON access-log files on the node (``ingest.collectors.files``)."""

    model_config = _SECTION

    paths: list[str] = Field(default_factory=list, description="glob patterns, e.g. /var/log/pods/*/istio-proxy/*.log")
    state_path: Path = Field(default=Path("/var/lib/kubeward/collector/offsets.json"), description="where read offsets are kept across restarts")
    initial_position: Literal["beginning", "end"] = Field(default="end", description="where files found at the very first start begin (no state file yet)")
    poll_s: float = Field(default=0.25, gt=0, description="rescan interval, and the wait when nothing new was written")
    rotate_wait_s: float = Field(default=5.0, ge=0, description="how long a rotated-away file is still read")
    max_line_bytes: int = Field(default=1 << 20, ge=1024, description="longer lines go to the dead-letter topic")
    text_lines: Literal["dead_letter", "skip"] = Field(default="dead_letter", description="what to do with lines that are not JSON (istio-proxy also logs text): dead_letter or skip (counted)")


class ServerSettings(BaseModel):
    """A receiving server (OTLP/HTTP, Envoy access-log service, ext_proc tap)."""

    model_config = _SECTION

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0: any free port")


class ReplaySettings(BaseModel):
    """Recorded traffic to replay once (HAR 1.2 or JSONL of observations)."""

    model_config = _SECTION

    har: list[Path] = Field(default_factory=list)
    jsonl: list[Path] = Field(default_factory=list)
    speed: float = Field(default=0.0, ge=0, description="0 as fast as possible, 1 real time, 2 twice as fast")
    rebase_time: bool = Field(default=False, description="shift recorded times so the first call happens now")


class JoinSettings(BaseModel):
    """How observations of one call from several reporters are joined by request id."""

    model_config = _SECTION

    expected: list[str] = Field(default_factory=lambda: ["access_log"], description="reporters that make a call complete")
    hold_s: float = Field(default=2.0, ge=0, description="how long an incomplete call waits for the other reporters")
    max_pending: int = Field(default=100_000, ge=1, description="calls held at most; the oldest is released beyond")
    precedence: list[str] = Field(default_factory=lambda: list(DEFAULT_PRECEDENCE), description="reporter order for fields both saw (first wins)")


class IdentitySettings(SharedIdentity):
    """The shared identity section (``ingest.identitysettings``) plus how the collector hashes ids and paths."""

    object_id_key: SecretStr = Field(default=SecretStr("kubeward-dev-object-key"), description="key of the object-id hash (must match the shims')")
    keep_raw_path: bool = Field(default=False, description="publish the raw path beside the template (off: paths may carry secrets)")


class PublishSettings(BaseModel):
    """The summary publisher (``ingest.publish.SummaryPublisher``)."""

    model_config = _SECTION

    envelope_rows: int = Field(default=1000, ge=1)
    linger_ms: float = Field(default=50.0, ge=0)
    max_buffered_rows: int = Field(default=200_000, ge=1)
    compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    client_id: str = "kubeward-collector"
    spool_dir: Path | None = Field(default=None, description="envelopes the broker cannot take (unreachable, or past max_buffered_rows) wait here on disk and are replayed in order; unset = no spool")
    spool_max_bytes: int = Field(default=1 << 30, ge=1 << 20, description="cap of the spool; envelopes past it are dropped and counted (kubeward_publish_spool_rows_total{result=dropped})")
    delivery_timeout_ms: int | None = Field(default=None, ge=1000, description="how long a send may take before its envelope goes to the spool (kafka-python's default when unset)")


class CollectorSettings(BaseSettings):
    """Everything one per-node collector needs."""

    model_config = SettingsConfigDict(env_prefix="KUBEWARD_COLLECTOR_", env_nested_delimiter="__", frozen=True, extra="forbid")

    bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity, description="how the collector authenticates to Kafka (KUBEWARD_COLLECTOR_KAFKA__PROTOCOL, __USERNAME, __PASSWORD, ...)")
    node_name: str | None = Field(default=None, description="this node's name, for logs")
    metrics_host: str = Field(default="0.0.0.0", description="address of the Prometheus /metrics endpoint")
    metrics_port: int | None = Field(default=9466, ge=0, le=65535, description="Prometheus port (0: any free port, None: none)")
    tick_s: float = Field(default=0.05, gt=0, description="how often held joins expire and lingering envelopes are sent")
    checkpoint_s: float = Field(default=5.0, gt=0, description="how often file offsets are committed (a snapshot is committed one interval after it was taken)")
    stop_timeout_s: float = Field(default=30.0, gt=0, description="how long a graceful stop may wait for sources and the broker")
    dlq_raw_cap: int = Field(default=4096, ge=0, description="bytes of an unusable input kept in its dead letter")
    files: FileSettings = Field(default_factory=FileSettings)
    otlp: ServerSettings = Field(default_factory=lambda: ServerSettings(port=4318))
    als: ServerSettings = Field(default_factory=lambda: ServerSettings(port=9301))
    extproc: ServerSettings = Field(default_factory=lambda: ServerSettings(port=9302))
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    specs_dir: Path | None = Field(default=None, description="declared OpenAPI specs (<namespace>.<service>.json|yaml or x-kubeward-service); their templates win over learned ones")
    max_body_bytes: int = Field(default=65536, ge=0, description="bytes of each body the ext_proc tap keeps for feature extraction")
    join: JoinSettings = Field(default_factory=JoinSettings)
    identity: IdentitySettings = Field(default_factory=IdentitySettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)

    @model_validator(mode="after")
    def _checkpoint_after_hold(self) -> Self:
        if self.checkpoint_s <= self.join.hold_s + self.tick_s:
            raise ValueError(f"checkpoint_s={self.checkpoint_s} must exceed join.hold_s + tick_s = "
                             f"{self.join.hold_s + self.tick_s}: a committed offset must be past the joiner")
        return self
