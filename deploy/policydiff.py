"""Suggested policy objects against deployed ones: a unified diff per object, for review before applying.

Objects are matched by (API group, kind, namespace, name); the version of the
API is not part of the key (``security.istio.io/v1beta1`` and ``/v1`` are the
same stored object). Each side is reduced to what a reviewer compares:
``apiVersion``, ``kind``, ``metadata.name``/``namespace``/``labels`` and
``spec``; what the API server adds (uid, resourceVersion, managedFields,
annotations, status) is dropped, so a cluster read back after an apply diffs
empty against the suggestion it came from.

* ``added``: suggested, not deployed; ``changed``: both, different;
  ``unchanged``: both, equal;
* ``removed``: deployed with ``app.kubernetes.io/managed-by: kubeward`` and no
  longer suggested;
* ``unmanaged``: deployed by someone else, not suggested: listed, never diffed.

Only the kinds compared (those of the formats asked for) are looked at. Both
sides are printed with sorted keys: a server answers in its own key order.

Pure: objects in, ``ObjectDiff`` records out (``deploy.policysuggestcli`` reads
directories and clusters).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from deploy.policysuggest import MANAGED_BY

__all__ = ["FORMAT_KINDS", "POLICY_KINDS", "ObjectDiff", "diff_objects", "normalize", "object_key", "policy_objects"]

#: the kind each format of ``kubeward policy suggest`` writes, as (API group, kind)
FORMAT_KINDS = {"istio": ("security.istio.io", "AuthorizationPolicy"), "cilium": ("cilium.io", "CiliumNetworkPolicy"),
                "networkpolicy": ("networking.k8s.io", "NetworkPolicy")}
POLICY_KINDS = frozenset(FORMAT_KINDS.values())

Status = Literal["added", "removed", "changed", "unchanged", "unmanaged"]
Key = tuple[str, str, str, str]


def object_key(obj: dict[str, Any]) -> Key:
    """(API group, kind, namespace, name); a missing namespace is ``default``."""
    meta = obj.get("metadata") or {}
    return (str(obj.get("apiVersion", "")).rpartition("/")[0], str(obj.get("kind", "")), str(meta.get("namespace") or "default"),
            str(meta.get("name", "")))


def policy_objects(objects: Iterable[Any]) -> list[dict[str, Any]]:
    """The objects of the kinds the suggestion writes (anything else in a directory or cluster is ignored)."""
    return [o for o in objects if isinstance(o, dict) and object_key(o)[:2] in POLICY_KINDS]


def normalize(obj: dict[str, Any]) -> dict[str, Any]:
    """What a reviewer compares: apiVersion, kind, name, namespace, labels, spec."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {"name": meta.get("name"), "namespace": meta.get("namespace") or "default"}
    if meta.get("labels"):
        kept["labels"] = dict(meta["labels"])
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept, "spec": obj.get("spec") or {}}


@dataclass(frozen=True)
class ObjectDiff:
    """One object's comparison: its key, status, and the unified diff (deployed -> suggested; empty when equal or unmanaged)."""

    key: Key
    status: Status
    text: str

    @property
    def name(self) -> str:
        """``Kind/namespace/name``."""
        return "/".join(self.key[1:])

    @property
    def added_lines(self) -> int:
        """Lines the suggestion adds."""
        return sum(1 for line in self.text.splitlines() if line.startswith("+") and not line.startswith("+++"))

    @property
    def removed_lines(self) -> int:
        """Lines the suggestion removes."""
        return sum(1 for line in self.text.splitlines() if line.startswith("-") and not line.startswith("---"))


def _lines(obj: dict[str, Any] | None) -> list[str]:
    return [] if obj is None else yaml.safe_dump(normalize(obj), sort_keys=True, default_flow_style=False).splitlines(keepends=True)


def _managed(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def diff_objects(suggested: Iterable[dict[str, Any]], deployed: Iterable[dict[str, Any]],
                 kinds: Iterable[tuple[str, str]] | None = None) -> list[ObjectDiff]:
    """One ``ObjectDiff`` per object on either side (see the module docstring), sorted by key.

    ``kinds`` ((API group, kind) pairs, default: those suggested) are compared; deployed objects of other kinds are ignored.

    >>> new = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "a", "namespace": "x"}, "spec": {"podSelector": {}}}
    >>> [(d.status, d.added_lines) for d in diff_objects([new], [])]
    [('added', 7)]
    """
    mine = {object_key(o): o for o in suggested}
    compared = {key[:2] for key in mine} if kinds is None else set(kinds)
    theirs = {object_key(o): o for o in policy_objects(deployed) if object_key(o)[:2] in compared}
    out = []
    for key in sorted(set(mine) | set(theirs)):
        before, after = theirs.get(key), mine.get(key)
        if after is None and before is not None and not _managed(before):
            out.append(ObjectDiff(key, "unmanaged", ""))
            continue
        label = "/".join(key[1:])
        text = "".join(difflib.unified_diff(_lines(before), _lines(after), f"deployed/{label}", f"suggested/{label}"))
        status: Status = "added" if before is None else "removed" if after is None else "changed" if text else "unchanged"
        out.append(ObjectDiff(key, status, text))
    return out
