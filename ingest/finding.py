"""OCSF 1.5 Detection Finding (class 2004), the record of ``security.findings.v1``, and its parts.

``Finding`` is the SOC-facing record of a detection: metadata, ``finding_info`` (uid, title, the OWASP tags and
the ATT&CK / ATLAS attacks of ``models.taxonomy``), who and what (``evidences``, ``resources``, ``observables``),
the action and disposition of the ``security_control`` profile, and for deduplicated findings ``count`` and the
first and last time. Sibling captions OCSF expects (``severity``, ``activity_name``, ``type_name``, ...) are
derived fields. Re-exported by ``ingest.schema``, the wire contract of every topic.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, computed_field

from ingest.record import Record as _Record

__all__ = ["Finding", "FindingActor", "FindingApi", "FindingAttack", "FindingEndpoint", "FindingEntity", "FindingEvidence",
           "FindingInfo", "FindingMetadata", "FindingObservable", "FindingResource", "FindingTag"]

_SEVERITIES = ("Unknown", "Informational", "Low", "Medium", "High", "Critical", "Fatal")
_ACTIVITIES = {1: "Create", 2: "Update", 3: "Close", 99: "Other"}
_STATUSES = {1: "New", 2: "In Progress", 3: "Suppressed", 4: "Resolved", 5: "Archived", 99: "Other"}
_CONFIDENCES = {1: "Low", 2: "Medium", 3: "High"}


class FindingMetadata(_Record):
    """OCSF ``metadata``: product, schema version and the profiles used (``security_control``: action, disposition)."""

    version: str = "1.5.0"
    product: dict[str, str] = Field(default_factory=lambda: {"name": "Kubeward", "vendor_name": "Kubeward"})
    profiles: list[str] = Field(default_factory=lambda: ["security_control"])


class FindingEntity(_Record):
    """An OCSF entity by id and name: a ``technique``, ``sub_technique`` or ``tactic``, a ``user``, a ``service``."""

    uid: str
    name: str


class FindingAttack(_Record):
    """OCSF ``attack``: one MITRE ATT&CK or ATLAS technique (its parent as ``technique`` when it is a sub-technique)."""

    technique: FindingEntity
    sub_technique: FindingEntity | None = None
    tactic: FindingEntity
    version: str


class FindingTag(_Record):
    """OCSF ``key_value_object`` in ``finding_info.tags``: e.g. ``owasp_api_2023`` = ``API1:2023 Broken Object ...``."""

    name: str
    value: str


class FindingResource(_Record):
    """OCSF ``resource_details``: what a finding is about (``kubernetes.service``, ``api.endpoint``, ``mcp.tool``)."""

    type: str
    name: str
    namespace: str | None = None
    uid: str | None = None


class FindingActor(_Record):
    """OCSF ``actor``: the principal as ``user`` and the calling workload as ``app_name``."""

    user: FindingEntity | None = None
    app_name: str | None = None


class FindingEndpoint(_Record):
    """OCSF ``network_endpoint`` of the caller: its address and workload name."""

    ip: str | None = None
    name: str | None = None


class FindingApi(_Record):
    """OCSF ``api``: the operation (``GET /orders/{id}``) and the service that serves it."""

    operation: str
    service: FindingEntity | None = None


class FindingEvidence(_Record):
    """OCSF ``evidences``: who did it (actor, source endpoint) and on which API."""

    actor: FindingActor | None = None
    src_endpoint: FindingEndpoint | None = None
    api: FindingApi | None = None


class FindingObservable(_Record):
    """OCSF ``observable``: a value SOC tools pivot on (``type_id`` 2 IP address, 4 user name, 99 other)."""

    name: str
    type_id: int
    value: str


class FindingInfo(_Record):
    """OCSF ``finding_info``: uid, title, description, analytic, types, ATT&CK/ATLAS ``attacks``, OWASP ``tags``."""

    uid: str
    title: str
    desc: str = ""
    types: list[str] = Field(default_factory=list)
    analytic: dict[str, str | int] = Field(default_factory=dict)
    attacks: list[FindingAttack] = Field(default_factory=list)
    tags: list[FindingTag] = Field(default_factory=list)
    first_seen_time: int | None = Field(default=None, description="Unix milliseconds of the first detection folded in")
    last_seen_time: int | None = Field(default=None, description="Unix milliseconds of the latest detection folded in")


class Finding(_Record):
    """An OCSF 1.5 Detection Finding (class_uid 2004), the SOC-facing record of a detection.

    ``activity_id`` 1 (Create) is a finding's first record; 2 (Update) carries the
    same ``finding_info.uid`` with ``count`` detections folded in between
    ``start_time`` and ``end_time`` (``streams.findingdedup``). ``type_uid`` and the
    captions (``severity``, ``activity_name``...) are derived, never stored apart.
    ``action_id``/``disposition_id`` come from OCSF's ``security_control`` profile.
    """

    activity_id: Literal[1, 2, 3, 99] = 1
    category_uid: Literal[2] = 2
    class_uid: Literal[2004] = 2004
    time: int = Field(description="Unix milliseconds")
    severity_id: int = Field(ge=0, le=6)
    confidence_score: int = Field(ge=0, le=100)
    status_id: Literal[1, 2, 3, 4, 5, 99] = 1
    is_alert: bool = True
    action_id: int = Field(default=0, ge=0, le=99)
    disposition_id: int = Field(default=15, ge=0, le=99)
    count: int = Field(default=1, ge=1, description="detections this record stands for")
    start_time: int | None = Field(default=None, description="Unix milliseconds of the first detection")
    end_time: int | None = Field(default=None, description="Unix milliseconds of the latest detection")
    message: str
    metadata: FindingMetadata = Field(default_factory=FindingMetadata)
    finding_info: FindingInfo
    resources: list[FindingResource] = Field(default_factory=list)
    evidences: list[FindingEvidence] = Field(default_factory=list)
    observables: list[FindingObservable] = Field(default_factory=list)
    unmapped: dict[str, str] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type_uid(self) -> int:
        """class_uid * 100 + activity_id (200401 Create, 200402 Update)."""
        return self.class_uid * 100 + self.activity_id

    @computed_field  # type: ignore[prop-decorator]
    @property
    def activity_name(self) -> str:
        """Caption of ``activity_id``."""
        return _ACTIVITIES[self.activity_id]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def type_name(self) -> str:
        """Caption of ``type_uid``."""
        return f"Detection Finding: {self.activity_name}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def class_name(self) -> str:
        """Caption of ``class_uid``."""
        return "Detection Finding"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def category_name(self) -> str:
        """Caption of ``category_uid``."""
        return "Findings"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def severity(self) -> str:
        """Caption of ``severity_id``."""
        return _SEVERITIES[self.severity_id]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> str:
        """Caption of ``status_id``."""
        return _STATUSES[self.status_id]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def confidence_id(self) -> int:
        """1 Low, 2 Medium, 3 High from ``confidence_score`` (below 50, below 80, else)."""
        return 3 if self.confidence_score >= 80 else 2 if self.confidence_score >= 50 else 1

    @computed_field  # type: ignore[prop-decorator]
    @property
    def confidence(self) -> str:
        """Caption of ``confidence_id``."""
        return _CONFIDENCES[self.confidence_id]

    def to_wire(self) -> bytes:
        """The JSON value published on ``security.findings.v1``: absent (null or empty analytic) attributes left out, as
        OCSF does (an OCSF analytic needs a ``type_id``)."""
        empty = None if self.finding_info.analytic else {"finding_info": {"analytic"}}
        return self.model_dump_json(exclude_none=True, exclude=empty).encode()
