"""Kubeward ingest: the wire contract of every topic and the ways records enter Kafka.

``ingest.schema`` defines ``RequestSummary``, ``Verdict``, ``Finding`` and
``Policy`` once; ``ingest.envelope`` packs summaries into Arrow IPC envelopes;
``ingest.simulator`` generates a labelled cluster's traffic; ``ingest.publish``
(imported explicitly, it loads Kafka) hands records to the broker. This root
stays free of Kafka imports so that pure code can depend on it cheaply.
"""

from ingest.envelope import (
    EnvelopeError,
    arrow_schema,
    decode_message,
    encode_envelope,
    encode_rows,
    row_to_summary,
    summaries_from_table,
    summary_row,
    summary_to_row,
)
from ingest.errors import IngestError, PublishError, SettingsError
from ingest.schema import (
    DeadLetter,
    Destination,
    EndpointRecord,
    Finding,
    FindingInfo,
    GroundTruth,
    Policy,
    Reason,
    RequestSummary,
    Scope,
    Source,
    Subject,
    Verdict,
    actor_key,
)
from ingest.signing import sign_verdict, verify_verdict
from ingest.bodies import BodyFeatures, body_features
from ingest.identity import Identity, IdentityConfig, IdentityResolver
from ingest.observation import HttpObservation
from ingest.openapi import DeclaredEndpoint, SpecError, SpecIndex, load_spec, parse_spec
from ingest.pods import PodDirectory, PodIdentity
from ingest.summarize import OutcomeRule, Summarizer, SummarizerConfig
from ingest.templating import PathTemplater, hash_object_id, template_path
from ingest.topics import DLQ, FINDINGS, INVENTORY, POLICY, SUMMARIES, VERDICTS, TopicSpec

__all__ = [
    "DLQ",
    "FINDINGS",
    "INVENTORY",
    "POLICY",
    "SUMMARIES",
    "VERDICTS",
    "BodyFeatures",
    "DeadLetter",
    "DeclaredEndpoint",
    "Destination",
    "EndpointRecord",
    "EnvelopeError",
    "Finding",
    "FindingInfo",
    "GroundTruth",
    "HttpObservation",
    "Identity",
    "IdentityConfig",
    "IdentityResolver",
    "IngestError",
    "OutcomeRule",
    "PathTemplater",
    "PodDirectory",
    "PodIdentity",
    "Policy",
    "PublishError",
    "Reason",
    "RequestSummary",
    "Scope",
    "SettingsError",
    "Source",
    "SpecError",
    "SpecIndex",
    "Subject",
    "Summarizer",
    "SummarizerConfig",
    "TopicSpec",
    "Verdict",
    "actor_key",
    "arrow_schema",
    "body_features",
    "decode_message",
    "encode_envelope",
    "encode_rows",
    "hash_object_id",
    "load_spec",
    "parse_spec",
    "row_to_summary",
    "sign_verdict",
    "summaries_from_table",
    "summary_row",
    "summary_to_row",
    "template_path",
    "verify_verdict",
]
