"""Worker settings, read once in the entry point (env prefix ``KUBEWARD_WORKER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ingest import Policy
from ingest.honeytokens import HoneytokenSettings
from ingest.kafkaauth import KafkaSecurity
from ingest.signing import DEV_VERDICT_KEY, KEY_ID_PATTERN
from models import ModelError, registry
from models.rules import DEFAULT_RULES
from streams.enrichers import ENRICHERS

__all__ = ["WorkerSettings"]


class WorkerSettings(BaseSettings):
    """Everything the Faust worker needs; nested ``policy`` reads ``KUBEWARD_WORKER_POLICY__<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="KUBEWARD_WORKER_", env_nested_delimiter="__", frozen=True, extra="forbid")

    app_id: str = Field(default="kubeward-worker", description="Kafka consumer group and changelog prefix")
    bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers")
    web_host: str = Field(default="127.0.0.1", description="address of /metrics and the Faust web views; in a pod 0.0.0.0, with a NetworkPolicy letting only the monitoring namespace in (the Faust views show table contents)")
    web_port: int = Field(default=6066, ge=1, le=65535, description="port of /metrics and the Faust web views")
    window_s: int = Field(default=60, ge=1, description="tumbling window per actor, seconds")
    learn_windows: int = Field(default=3, ge=0, description="windows before an actor's destinations are considered learned")
    score_threshold: float = Field(default=0.5, gt=0, le=1)
    rules_dir: Path | None = Field(default=None, description="detection rule files (YAML) instead of the shipped models/rules/")
    rule_overrides: dict[str, dict[str, Any]] = Field(default_factory=dict, description='per-deployment tuning of rules, e.g. KUBEWARD_WORKER_RULE_OVERRIDES=\'{"scraping-rate": {"floor": 300}, "shadow-endpoint": {"status": "disabled"}}\'')
    detectors: list[str] | None = Field(default=None, description="rule ids to run; none: every enabled rule of rules_dir")
    enrichers: list[str] = Field(default_factory=lambda: sorted(ENRICHERS), description="stateful analysers whose signals rules read (ownership, ...); a rule whose enricher is off reads 0")
    enricher_flush_s: float = Field(default=60.0, gt=0, description="how often the enrichers' state (ownership table, ...) and cohort histograms are written to the changelog")
    honeytokens: HoneytokenSettings = Field(default_factory=HoneytokenSettings, description="declared honeytokens (KUBEWARD_WORKER_HONEYTOKENS__FILE, ...): any use is a finding and a block")
    model_path: Path | None = Field(default=None, description="a per-cohort anomaly model (kubeward train; skops) scored beside the rules and reloaded when the file changes; none by default: on the evaluation no model beat the rules at equal false positives")
    model_mode: str = Field(default="observe", pattern="^(observe|inherit)$", description="observe: the model's findings never enforce; inherit: the policy's mode")
    batch_max_messages: int = Field(default=500, ge=1, description="messages merged into one processing batch at most")
    batch_within_s: float = Field(default=0.005, gt=0, description="how long the agent gathers messages before processing them")
    fetch_backoff_s: float = Field(default=0.005, gt=0, description="aiokafka's wait before re-fetching while records are being handed over (its default is 0.1)")
    max_message_bytes: int = Field(default=16 << 20, ge=1024, description="larger messages go to the dead-letter topic")
    dlq_raw_cap: int = Field(default=64 << 10, ge=0, description="bytes of the original message kept in a dead letter")
    state_flush_s: float = Field(default=5.0, gt=0, description="how often touched state buckets are written to the changelog")
    state_buckets: int = Field(default=32, ge=1, description="changelog entries per partition (power of two); fewer means larger, rarer writes")
    state_idle_ttl_s: float = Field(default=86_400.0, ge=0, description="evict a key (actor, client address) whose latest event is this many seconds of event time behind the worker's event clock (the median time of the newest batch; never the wall clock), checked every 1/32 of it; 0: never. An evicted key loses its baselines, learned destinations and flags and learns again if it comes back (streams.eviction)")
    state_budget_bytes: int = Field(default=256 << 20, ge=0, description="bytes of per-key state (actor, client address and rare-column tables) one partition may hold; past it the least recently active keys are evicted down to 90% (0: no budget). A worker holds one such share per partition it is assigned; the enrichers' tables have budgets of their own")
    topic_replication_factor: int = Field(default=1, ge=1, description="replicas of the topics the worker declares itself (its state changelog); 3 on a cluster of three brokers or more, as `kubeward kafka topics` creates the others")
    verdict_key: SecretStr = Field(default=SecretStr(DEV_VERDICT_KEY),
                                   description="HMAC key verdicts are signed with (the development default is refused unless the worker runs with --dev)")
    verdict_key_id: str = Field(default="k1", pattern=KEY_ID_PATTERN, description="the id signed verdicts carry (key_id): shims pick the key by it")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity, description="how the worker authenticates to Kafka (KUBEWARD_WORKER_KAFKA__PROTOCOL, __USERNAME, __PASSWORD, ...)")
    policy: Policy = Field(default_factory=Policy, description="the policy until the policy topic says otherwise; its name is the one followed")
    follow_policy: bool = Field(default=True, description="follow enforcement.policy.v1: the newest valid snapshot named policy.name replaces policy")
    specs_dir: Path | None = Field(default=None, description="declared OpenAPI specs (<namespace>.<service>.json|yaml); deprecated endpoints count as retired-API hits, others shadow/declared in the inventory")
    inventory_interval_s: float = Field(default=10.0, gt=0, description="how often changed endpoint records go to api.inventory.v1")
    findings_update_s: float = Field(default=300.0, ge=0, description="findings are deduplicated per actor and attack: the first detection is published (OCSF activity Create), later ones are folded into a count published as an Update at most this often per finding (0: every repeat at once); a finding closes after an hour without detections (streams.findingdedup)")
    mcp_learn_s: float = Field(default=300.0, ge=0, description="an MCP server's tools seen within this many seconds of its first tools/list are pinned as they are (trust on first use); later changes are rug-pulls, later tools new (streams.toolpins)")
    policy_sync_timeout_s: float = Field(default=10.0, ge=0, description="how long verdicts wait at start for the policy topic to be read (then the policy in force decides)")

    @field_validator("rule_overrides")
    @classmethod
    def _rules_load(cls, overrides: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        """The rule files lint clean with the overrides applied."""
        try:
            registry(info.data.get("rules_dir") or DEFAULT_RULES, overrides)
        except ModelError as exc:
            raise ValueError(str(exc)) from None
        return overrides

    @field_validator("detectors")
    @classmethod
    def _known_detectors(cls, names: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if names is None or "rule_overrides" not in info.data:
            return names
        known = registry(info.data.get("rules_dir") or DEFAULT_RULES, info.data["rule_overrides"])
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"unknown detectors {unknown}; valid names: {', '.join(sorted(known))}")
        return names

    def detector_names(self) -> list[str]:
        """The rules to run: ``detectors``, else every enabled rule."""
        if self.detectors is not None:
            return list(self.detectors)
        return sorted(registry(self.rules_dir or DEFAULT_RULES, self.rule_overrides))

    @field_validator("enrichers")
    @classmethod
    def _known_enrichers(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in ENRICHERS]
        if unknown:
            raise ValueError(f"unknown enrichers {unknown}; valid names: {', '.join(sorted(ENRICHERS))}")
        return names

    @field_validator("state_idle_ttl_s")
    @classmethod
    def _ttl_spans_windows(cls, ttl: float, info: ValidationInfo) -> float:
        window = info.data.get("window_s", 60)
        if 0 < ttl < 2 * window:
            raise ValueError(f"must be 0 (never) or at least two windows ({2 * window} s with window_s={window}), got {ttl}")
        return ttl

    @field_validator("state_budget_bytes")
    @classmethod
    def _budget_holds_keys(cls, budget: int) -> int:
        if 0 < budget < 1 << 20:
            raise ValueError(f"must be 0 (no budget) or at least 1 MiB (1048576), got {budget}")
        return budget

    @field_validator("state_buckets")
    @classmethod
    def _power_of_two(cls, buckets: int) -> int:
        if buckets & (buckets - 1):
            raise ValueError(f"must be a power of two, got {buckets}")
        return buckets
