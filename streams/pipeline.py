"""What the worker does with one message, without Kafka: decode, score, decide.

``Pipeline.handle`` takes a summaries-topic message (partition, key, value)
and returns an ``Outcome``: verdicts and findings (plus endpoint findings such
as excessive data exposure, ``streams.exposure``), the findings to publish once
deduplicated per actor and attack (``streams.findingdedup``), a dead letter if
the message was unusable, and changelog writes of the state buckets that are
due. The Faust app (``streams.app``) only moves these to and from Kafka.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from ingest import DeadLetter, EndpointRecord, Finding, Verdict
from ingest.schema import AgentRecord, McpToolRecord
from ingest.envelope import decode_messages, encode_table
from ingest.signing import verdict_keys
from models.registry import detector_factories
from models.rules import DEFAULT_RULES
from models.reload import ModelReloader
from streams.exposure import ExposureTracker
from streams.findingdedup import FindingDedup, finding_key
from streams.agents import AgentInventory
from streams.changelogparts import join as join_parts
from streams.changelogparts import split as split_parts
from streams.inventory import Inventory
from streams.enrichers import EnricherContext, build_enrichers
from streams.policy import decide, to_finding
from streams.processor import BatchProcessor, Detection, ProcessorConfig
from streams.settings import WorkerSettings
from streams.state import PART_BYTES
from streams.toolpins import ToolPinConfig, ToolPins

__all__ = ["Outcome", "Pipeline", "processor_config", "state_key"]

log = logging.getLogger("kubeward.worker")

#: rows gathered before the inventory and exposure tracker fold them (or ``inventory_interval_s``, whichever first)
_FOLD_ROWS = 20_000
#: the changelog suffix of the MCP tool pins (``streams.toolpins``)
_TOOL_PINS = "toolpins"
#: summaries with a time at or past this are dead-lettered (a time in milliseconds is far past it): state keeps times as
#: uint32 seconds (flagged_until adds a verdict TTL), so a summary stamped after ~2105 would overflow them
_LATEST_TIME = float(2**32 - 10**7)



def processor_config(settings: WorkerSettings, deprecated: Iterable[str] = (),
                     declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None) -> ProcessorConfig:
    """The processor's configuration from the worker settings (the one place it is built from them).

    ``deprecated`` adds ``service METHOD /template`` keys of endpoints the declared specs mark deprecated;
    ``declared`` (service -> {(method, template): deprecated}) says which endpoints the specs list.
    """
    specs = declared or {}
    services = frozenset(svc.rpartition("/")[2] for svc in specs)
    endpoints = frozenset(f"{svc.rpartition('/')[2]} {m} {t}" for svc, spec in specs.items() for m, t in spec)
    return ProcessorConfig(
        window_s=settings.window_s,
        score_threshold=settings.score_threshold,
        flag_ttl_s=int(settings.policy.verdict_ttl_s),
        buckets=settings.state_buckets,
        learn_windows=settings.learn_windows,
        retired_endpoints=frozenset(settings.policy.retired_endpoints) | frozenset(deprecated),
        declared_endpoints=endpoints,
        declared_services=services,
        idle_ttl_s=settings.state_idle_ttl_s,
        state_budget_bytes=settings.state_budget_bytes,
    )


def state_key(partition: int, bucket: int | str) -> bytes:
    """The changelog key of one state bucket (or of the destination index) of one partition."""
    return f"{partition}:{bucket}".encode()


@dataclass
class Outcome:
    """Everything one message produced."""

    rows: int = 0
    newest_time: float | None = None
    detections: list[Detection] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    dead_letters: list[tuple[bytes | None, DeadLetter]] = field(default_factory=list)
    state_writes: list[tuple[bytes, bytes]] = field(default_factory=list)
    inventory: list[EndpointRecord | AgentRecord | McpToolRecord] = field(default_factory=list)
    #: findings about endpoints, not actors (no verdict): ``streams.exposure``; kept apart so findings[i] stays verdicts[i]'s
    exposures: list[Finding] = field(default_factory=list)
    #: what goes to security.findings.v1 for ``findings``: one record per actor and attack, repeats folded into counted
    #: Updates (``streams.findingdedup``)
    published: list[Finding] = field(default_factory=list)

    @property
    def dead_letter(self) -> DeadLetter | None:
        """The first dead letter, if any (an unusable message, or a batch's rows with unusable times)."""
        return self.dead_letters[0][1] if self.dead_letters else None


class Pipeline:
    """Per-partition processors plus the policy; pure apart from the clock passed in."""

    def __init__(self, settings: WorkerSettings, topic: str, declared: Mapping[str, Mapping[tuple[str, str], bool]] | None = None):
        self.settings = settings
        self.topic = topic
        self._keys = verdict_keys(settings.verdict_key, settings.verdict_key_id)
        self.inventory = Inventory(declared)
        self.agents = AgentInventory()
        self.exposure = ExposureTracker()
        self.config = processor_config(settings, self.inventory.zombie_keys(), self.inventory.declared)
        self._last_inventory = 0.0
        self.processors: dict[int, BatchProcessor] = {}
        self._last_flush: dict[int, float] = {}
        self._last_full_flush: dict[int, float] = {}
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._models = ModelReloader(settings.model_path) if settings.model_path is not None else None
        self._enricher_context = EnricherContext(settings.window_s, settings.learn_windows, settings.honeytokens.load())
        self._detector_factories = detector_factories(settings.detectors, settings.rules_dir or DEFAULT_RULES, settings.rule_overrides)
        self._blanks: dict[int, BatchProcessor] = {}  # built ahead of a partition's first message (``prepare``)
        self.tools = ToolPins(ToolPinConfig(learn_s=settings.mcp_learn_s))
        self.findings = FindingDedup(update_s=settings.findings_update_s)

    def prepare(self, partitions: Iterable[int]) -> None:
        """Build the processors of newly assigned partitions now (their detectors and preallocated tables cost
        a fraction of a second each), so that the first messages do not wait for it; state is restored on first use."""
        for partition in partitions:
            if partition not in self.processors and partition not in self._blanks:
                self._blanks[partition] = self._new_processor()

    def _new_processor(self) -> BatchProcessor:
        return BatchProcessor(self.config, [make() for make in self._detector_factories],
                              build_enrichers(self.settings.enrichers, self._enricher_context))

    def processor(self, partition: int, stored: Iterable[tuple[bytes, bytes]]) -> BatchProcessor:
        """The partition's processor, restored from stored state (changelog keys ``<partition>:<suffix>``) on first use."""
        if partition not in self.processors:
            proc = self._blanks.pop(partition, None)
            if proc is None:
                proc = self._new_processor()
            prefix = f"{partition}:".encode()
            stored, broken = join_parts(kv for kv in stored if kv[0].startswith(prefix))
            for key in broken:
                log.warning("changelog value with a part missing; that state starts empty", extra={"key": key.decode(errors="replace")})
            proc.restore((k[len(prefix):].decode(), v) for k, v in stored if k.startswith(prefix))
            for k, v in stored:
                if k == state_key(partition, _TOOL_PINS):
                    self.tools.restore(v)
            self.processors[partition] = proc
        return self.processors[partition]

    def drain(self) -> list[Finding]:
        """Fold what is still gathered (at the end of a replay); the exposure findings it raised."""
        return self._fold_pending()

    def _fold_pending(self) -> list[Finding]:
        """Fold the batches gathered since the last fold into the inventory and the exposure tracker.

        Both change slowly and publish on an interval, so they take the batches of a few
        seconds at once (their fixed cost per fold is paid once, not per batch of a few rows).
        """
        if not self._pending:
            return []
        table = pa.concat_tables(self._pending, promote_options="default") if len(self._pending) > 1 else self._pending[0]
        self._pending, self._pending_rows = [], 0
        self.inventory.update(table)
        self.agents.update(table)
        return self.exposure.update(table)

    def due_findings(self, now: float) -> list[Finding]:
        """Counted Updates of open findings whose interval has passed (the worker asks on a timer)."""
        return self.findings.due(now)

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's state (its new owner restores it from the changelog)."""
        self.processors.pop(partition, None)
        self._blanks.pop(partition, None)
        self._last_flush.pop(partition, None)
        self._last_full_flush.pop(partition, None)

    def dead_letter(self, error: str, value: bytes, partition: int | None, offset: int | None, now: float) -> DeadLetter:
        """A dead letter for an unusable message, raw bytes capped."""
        raw = base64.b64encode(value[: self.settings.dlq_raw_cap]).decode()
        return DeadLetter(error=error, source="worker", time=now, topic=self.topic, partition=partition, offset=offset, raw_bytes=len(value), raw_b64=raw)

    def _drop_bad_times(self, table: pa.Table, messages: list[tuple[bytes | None, bytes, int | None]], partition: int, now: float,
                        out: Outcome) -> pa.Table | None:
        """The rows whose time is a Unix time in seconds; the others become one dead letter (their ids, their rows).

        A NaN, an infinity or a time in milliseconds would poison every decayed sum and window of its actor.
        The dead letter holds the refused rows as an Arrow envelope (replayable once fixed), its error their
        count and the first ids; with one message in the batch it keeps that message's key and offset.
        """
        times = np.asarray(table["time"].to_numpy(zero_copy_only=False), dtype=np.float64)
        bad = ~((times >= 0) & (times < _LATEST_TIME))  # NaN compares false
        if not bad.any():
            return table
        refused = table.filter(pa.array(bad))
        ids = refused["id"].to_pylist()
        error = (f"{len(ids)} summaries with a time that is not a Unix time in seconds (NaN, infinite, negative or in "
                 f"milliseconds), ids {ids[:5]}{' ...' if len(ids) > 5 else ''}, first time {refused['time'][0].as_py()!r}")
        key, offset = (messages[0][0], messages[0][2]) if len(messages) == 1 else (None, None)
        out.dead_letters.append((key, self.dead_letter(error, encode_table(refused), partition, offset, now)))
        kept = table.filter(pa.array(~bad))
        return kept if kept.num_rows else None

    def handle(self, partition: int, value: bytes, offset: int | None, now: float, stored: Iterable[tuple[bytes, bytes]] = (), key: bytes | None = None) -> Outcome:
        """Process one message of the summaries topic."""
        return self.handle_many(partition, [(key, value, offset)], now, stored)

    def handle_many(self, partition: int, messages: list[tuple[bytes | None, bytes, int | None]], now: float, stored: Iterable[tuple[bytes, bytes]] = ()) -> Outcome:
        """Process several messages of one partition as one batch (in order): the fixed cost is paid once."""
        out = Outcome()
        table, errors = decode_messages([value for _, value, _ in messages], self.settings.max_message_bytes)
        for i, error in errors:
            key, value, offset = messages[i]
            out.dead_letters.append((key, self.dead_letter(error, value, partition, offset, now)))
        if table is not None:
            table = self._drop_bad_times(table, messages, partition, now, out)
        if table is None:
            return out
        proc = self.processor(partition, stored)
        if self._models is not None:
            loaded = self._models.current()
            if loaded is not None and loaded.detector is not proc.model:
                loaded.detector.mode = self.settings.model_mode  # type: ignore[attr-defined]
                proc.use_models([loaded.detector])
        self.tools.apply_approvals(self.settings.policy.approved_tools)
        out.detections = proc.process(table) + self.tools.update(table)
        out.rows, out.newest_time = table.num_rows, proc.newest_time
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= _FOLD_ROWS or now - self._last_inventory >= self.settings.inventory_interval_s:
            out.exposures = self._fold_pending()
        if now - self._last_inventory >= self.settings.inventory_interval_s:
            self._last_inventory = now
            out.inventory = [*self.inventory.take_changed(), *self.agents.take_changed()]
        for det in out.detections:
            opened = finding_key(det.subject_kind, det.actor, det.attack_class)
            verdict = decide(det, self.settings.policy, now, self._keys, self.findings.uid(opened, now))
            out.verdicts.append(verdict)
            out.findings.append(to_finding(det, verdict))
            out.published += self.findings.offer(opened, out.findings[-1], now)
        if now - self._last_flush.get(partition, 0.0) >= self.settings.state_flush_s:
            self._last_flush[partition] = now
            everything = now - self._last_full_flush.get(partition, 0.0) >= self.settings.enricher_flush_s
            if everything:
                self._last_full_flush[partition] = now
            writes = [(state_key(partition, suffix), blob) for suffix, blob in proc.checkpoint(everything)]
            if everything:
                writes.append((state_key(partition, _TOOL_PINS), self.tools.export()))
            out.state_writes = split_parts(writes, PART_BYTES)  # an enricher's state may pass what Kafka takes in one record
        return out
