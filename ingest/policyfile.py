"""Policy snapshots: the file format, the checks every snapshot passes, and which snapshot wins.

One ``Policy`` (``ingest.schema``) drives both the shim's inline mode and the
worker's verdict mode. It travels whole and versioned on the compacted topic
``enforcement.policy.v1``, keyed by its name (``default`` unless configured).
This module is pure (no Kafka, no clock); the CLI (``deploy.policy``), the
shim's control consumer and the worker use it so that all three agree.

* ``load_policy_file(path)`` reads a YAML or JSON file strictly: unknown and
  duplicate keys and bad values are rejected with the file, line, key and
  value, so a typo never silently means ``observe``. A ``version`` in a file is
  the version it was edited from (optimistic concurrency, as Kubernetes'
  ``resourceVersion``); ``next_snapshot`` checks it against the topic.
* ``decode_snapshot(key, value)`` is what a follower accepts from the topic:
  unknown fields are ignored (the wire contract), values are checked as strictly
  as in a file, and the record key must be the snapshot's name.
* ``with_mode`` and ``next_snapshot`` build the next snapshot (version + 1).
* ``PolicyTracker`` decides which snapshot is in force (xDS ACK/NACK style): the
  first valid snapshot from the topic replaces the one from settings; after
  that a snapshot applies when its version is at least the applied one (an equal
  version from a later record wins, as compaction keeps the later record); an
  invalid one is rejected and the applied policy stays.

Errors are ``ingest.errors.SettingsError`` and name the key and the bad value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from ingest.errors import SettingsError
from ingest.schema import Mode, Policy
from ingest.yamlfile import SafeLoader as _SafeLoader
from ingest.yamlfile import StrictLoader as _StrictLoader

__all__ = [
    "DEFAULT_POLICY_NAME",
    "LoadedPolicy",
    "PolicyTracker",
    "PolicyUpdate",
    "check_policy",
    "check_target",
    "decode_snapshot",
    "encode_snapshot",
    "load_policy_file",
    "next_snapshot",
    "parse_policy",
    "version_of",
    "with_mode",
]

DEFAULT_POLICY_NAME = "default"
_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_TARGET = re.compile(rf"{_LABEL}(?:/{_LABEL})?")
_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9._]{0,251}[a-z0-9])?")
_KEYS = frozenset(Policy.model_fields)

Result = Literal["applied", "unchanged", "stale", "ignored", "invalid"]


def check_target(target: str) -> str:
    """A ``modes`` key: a namespace (``shop``) or ``namespace/service`` (``shop/orders``), DNS labels."""
    if not _TARGET.fullmatch(target):
        raise SettingsError(f"modes key {target!r} is not 'namespace' or 'namespace/service' (lower-case DNS labels)")
    return target


def version_of(policy: Policy) -> int:
    """The snapshot's version as a number (versions are positive decimal integers)."""
    if not (policy.version.isascii() and policy.version.isdigit() and len(policy.version) <= 18 and int(policy.version) >= 1):
        raise SettingsError(f"version={policy.version[:40]!r}: must be a positive integer of at most 18 digits")
    return int(policy.version)


def check_policy(policy: Policy) -> Policy:
    """The checks the schema alone does not make (name, version, ``modes`` keys); returns the policy."""
    if not _NAME.fullmatch(policy.name):
        raise SettingsError(f"name={policy.name!r}: must be lower-case letters, digits, '-', '.' or '_'")
    version_of(policy)
    for target in policy.modes:
        check_target(target)
    return policy


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'snapshot'}={e.get('input')!r}: {e['msg']}" for e in exc.errors())


def _normalized_version(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < 1:
        raise SettingsError(f"{where}version={value!r}: must be a positive integer")
    return int(value)


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy read from a file, with the version it was edited from (``None``: the file names none)."""

    policy: Policy
    based_on: int | None


def parse_policy(doc: Any, where: str = "", lines: Mapping[str, int] | None = None) -> LoadedPolicy:
    """Validate a parsed document strictly: unknown keys and bad values raise ``SettingsError`` naming them."""
    lines = lines or {}

    def at(key: str) -> str:
        return f"{where}:{lines[key]}: " if key in lines else (f"{where}: " if where else "")

    if not isinstance(doc, dict):
        raise SettingsError(f"{at('')}a policy must be a mapping of keys, got {type(doc).__name__}")
    unknown = [k for k in doc if k not in _KEYS]
    if unknown:
        key = unknown[0]
        raise SettingsError(f"{at(str(key))}unknown key {key!r}={doc[key]!r}; valid keys: {', '.join(sorted(_KEYS))}")
    fields = dict(doc)
    based_on = _normalized_version(fields.pop("version"), at("version")) if "version" in fields else None
    try:
        policy = Policy.model_validate(fields, strict=True)
    except ValidationError as exc:
        first = ".".join(str(p) for p in exc.errors()[0]["loc"])
        raise SettingsError(f"{at(first)}{_problems(exc)}") from exc
    try:
        check_policy(policy)
    except SettingsError as exc:
        key = "name" if not _NAME.fullmatch(policy.name) else next(f"modes.{t}" for t in policy.modes if not _TARGET.fullmatch(t))
        raise SettingsError(f"{at(key)}{exc}") from exc
    return LoadedPolicy(policy, based_on)


def _key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key and of each key one level down (``modes.shop``)."""
    root = yaml.compose(text, Loader=_SafeLoader)
    found: dict[str, int] = {}
    for key, value in root.value if isinstance(root, yaml.MappingNode) else []:
        found[str(key.value)] = key.start_mark.line + 1
        for sub, _ in value.value if isinstance(value, yaml.MappingNode) else []:
            found[f"{key.value}.{sub.value}"] = sub.start_mark.line + 1
    return found


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise SettingsError(f"duplicate key {key!r}")
        out[key] = value
    return out


def load_policy_file(path: Path) -> LoadedPolicy:
    """Read a policy from a YAML file (or JSON, by the ``.json`` suffix); errors name file, line, key and value."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the policy file: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise SettingsError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text, object_pairs_hook=_no_duplicates)
        except (json.JSONDecodeError, SettingsError) as exc:
            raise SettingsError(f"{path}: {exc}") from exc
        except RecursionError:
            raise SettingsError(f"{path}: nested too deeply to be a policy") from None
        return parse_policy(doc, str(path))
    try:
        doc = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
        lines = _key_lines(text)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise SettingsError(f"{path}:{line}: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: {exc}") from exc
    except RecursionError:
        raise SettingsError(f"{path}: nested too deeply to be a policy") from None
    return parse_policy(doc, str(path), lines)


def encode_snapshot(policy: Policy) -> tuple[bytes, bytes]:
    """The (key, value) of a snapshot on the policy topic, after the checks every snapshot passes."""
    check_policy(policy)
    return policy.name.encode(), policy.model_dump_json().encode()


def decode_snapshot(key: bytes | None, value: bytes | None) -> Policy:
    """A snapshot from the policy topic, checked; ``SettingsError`` names what is wrong."""
    if value is None:
        raise SettingsError(f"key={key!r}: a tombstone is not a policy; the applied policy stays")
    try:
        policy = check_policy(Policy.model_validate_json(value, strict=True))
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from exc
    if key is None or key.decode("utf-8", "replace") != policy.name:
        raise SettingsError(f"record key {key!r} is not the snapshot's name {policy.name!r}")
    return policy


def with_mode(current: Policy, mode: Mode | None, target: str | None) -> Policy:
    """``current`` with one mode changed and its version bumped.

    ``target`` is ``None`` for the default mode, else a namespace or
    ``namespace/service``; ``mode`` ``None`` removes that entry (it then
    inherits the namespace's or the default mode).
    """
    if target is None:
        if mode is None:
            raise SettingsError("the default mode cannot be removed; give a mode")
        changed: dict[str, Any] = {"default_mode": mode}
    else:
        modes = {k: v for k, v in current.modes.items() if k != check_target(target)}
        changed = {"modes": modes if mode is None else {**modes, target: mode}}
    return check_policy(current.model_copy(update={**changed, "version": str(version_of(current) + 1)}))


def next_snapshot(current: Policy | None, loaded: LoadedPolicy) -> Policy:
    """The snapshot to publish for a file: version one above the topic's; refuses a file edited from another version."""
    proposed = loaded.policy
    if current is not None and loaded.based_on is not None and loaded.based_on != version_of(current):
        raise SettingsError(
            f"version={loaded.based_on}: the file was edited from version {loaded.based_on} but the topic holds "
            f"version {current.version} of policy {proposed.name!r}; show the current one and edit that, or drop 'version'"
        )
    base = version_of(current) if current is not None else (loaded.based_on or 1)
    return check_policy(proposed.model_copy(update={"version": str(base + 1)}))


def with_tool_approved(current: Policy, tool: str, digest: str) -> Policy:
    """``current`` with an MCP tool's definition approved (``<server>/<tool>`` -> sha256 hex, the server being
    ``<namespace>/<service>`` or the service alone, as the tool's verdict names it) and its version bumped."""
    server, _, name = tool.rpartition("/")
    if not server or not name:
        raise SettingsError(f"tool={tool!r}: expected <namespace>/<service>/<tool> (or <service>/<tool>), as the verdict names it, e.g. shop/mcp/send_invoice")
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise SettingsError(f"hash={digest!r}: expected the 64 hex digits of the definition hash (the inventory's mcp-tool record)")
    approved = {**current.approved_tools, tool: digest}
    return check_policy(current.model_copy(update={"approved_tools": approved, "version": str(version_of(current) + 1)}))


@dataclass(frozen=True)
class PolicyUpdate:
    """What one record of the policy topic did: the result, the policy in force after it, and why."""

    result: Result
    policy: Policy
    detail: str = ""


class PolicyTracker:
    """The policy in force for one name, fed record by record from the policy topic.

    Starts from the settings' policy; ``offer`` returns a ``PolicyUpdate``
    whose ``result`` is ``applied`` (the new policy is in force), ``unchanged``
    (the same snapshot again), ``stale`` (a lower version than the applied one),
    ``ignored`` (another policy's record) or ``invalid`` (rejected; the applied
    policy stays).
    """

    def __init__(self, initial: Policy):
        self.name = initial.name
        self.policy = initial
        self.from_topic = False

    @property
    def version(self) -> str:
        """The version of the policy in force."""
        return self.policy.version

    def offer(self, key: bytes | None, value: bytes | None) -> PolicyUpdate:
        """Consider one record of the policy topic."""
        if key is not None and key != self.name.encode():
            return PolicyUpdate("ignored", self.policy, f"policy {key.decode('utf-8', 'replace')!r}")
        try:
            snapshot = decode_snapshot(key, value)
        except SettingsError as exc:
            return PolicyUpdate("invalid", self.policy, str(exc))
        if self.from_topic and snapshot == self.policy:
            return PolicyUpdate("unchanged", self.policy)
        if self.from_topic and version_of(snapshot) < version_of(self.policy):
            return PolicyUpdate("stale", self.policy, f"version {snapshot.version} is below the applied {self.policy.version}")
        self.policy, self.from_topic = snapshot, True
        return PolicyUpdate("applied", snapshot)
