"""Validate findings as OCSF 1.5.0 Detection Findings with pydantic-ocsf, offline (its bundled schema).

pydantic-ocsf's models accept unknown attributes (``extra="allow"``), so ``validate`` also
walks the validated model and refuses any attribute the 1.5.0 schema does not define, but
for the ``security_control`` profile's ``action_id``/``disposition_id`` (the profile the
finding's metadata declares), whose values it checks against the schema's enums.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import ocsf
from ocsf.v1_5_0.events import DetectionFinding
from pydantic import BaseModel

from ingest import Finding

__all__ = ["validate"]

_PROFILE_ATTRIBUTES = {"action_id", "disposition_id"}


@cache
def _enum(attribute: str) -> set[int]:
    schema = json.loads((Path(ocsf.__file__).parent / "schemas" / "v1_5_0.json").read_text())
    return {int(k) for k in schema["dictionary"]["attributes"][attribute]["enum"]}


def _extras(model: BaseModel, path: str) -> set[str]:
    out = {f"{path}.{k}" for k in (model.model_extra or {})}
    for name in type(model).model_fields:
        if name == "unmapped":
            continue
        value = getattr(model, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, BaseModel):
                out |= _extras(item, f"{path}.{name}")
    return out


def validate(finding: Finding | bytes) -> DetectionFinding:
    """The finding (or its wire JSON) validated as an OCSF 1.5.0 Detection Finding; ``AssertionError`` or
    ``ValidationError`` say what is wrong."""
    raw: dict[str, Any] = json.loads(finding.to_wire() if isinstance(finding, Finding) else finding)
    event = DetectionFinding.model_validate(raw)
    unknown = _extras(event, "$") - {f"$.{a}" for a in _PROFILE_ATTRIBUTES}
    assert not unknown, f"attributes OCSF 1.5.0 does not define: {sorted(unknown)}"
    assert raw["metadata"]["version"] == "1.5.0" and "security_control" in raw["metadata"].get("profiles", [])
    for attribute in _PROFILE_ATTRIBUTES:
        assert raw.get(attribute, 0) in _enum(attribute), f"{attribute}={raw.get(attribute)} is not in the OCSF 1.5.0 enum"
    assert all(isinstance(v, str) for v in raw.get("unmapped", {}).values())
    return event
