"""YAML for configuration and rule files: safe, and strict about duplicate keys.

``StrictLoader`` is the safe loader (libyaml's when PyYAML was built with it,
several times faster on the rule packs) that refuses a mapping with the same key
twice, naming the key and its line: with a plain loader the second silently
wins, so a typo'd override would go unnoticed. Policy files and rule packs
load with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["SafeLoader", "StrictLoader", "duplicate_ids", "read_rule_file", "read_rule_files", "rule_files"]

#: the fastest safe loader this PyYAML has (same documents, same errors and marks)
SafeLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class StrictLoader(SafeLoader):  # type: ignore[valid-type,misc]
    """A safe loader that rejects duplicate keys, naming the line."""


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(None, None, f"a key must be a plain value, not {type(key).__name__}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return dict(loader.construct_mapping(node, deep=deep))


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _item_lines(text: str, list_key: str) -> list[int]:
    """1-based line of each item of the top-level ``list_key`` list."""
    root = yaml.compose(text, Loader=SafeLoader)
    for key, value in getattr(root, "value", []):
        if getattr(key, "value", None) == list_key and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def read_rule_file(path: Path, file_keys: frozenset[str], list_key: str = "rules") -> tuple[list[Any], list[int], list[str]]:
    """The items of a rule file's top-level ``list_key`` list, the line of each, and the file-level errors.

    Errors read ``file:line: message``; a file that does not parse gives no items and its parse error.
    """
    try:
        text = path.read_text()
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        context = f"{exc.context}: " if exc.context else ""
        return [], [], [f"{path}:{line}: {context}{exc.problem}"]
    except (OSError, yaml.YAMLError) as exc:
        return [], [], [f"{path}: {exc}"]
    items = doc.get(list_key) if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return [], [], [f"{path}:1: expected a top-level {list_key!r} list"]
    errors = [f"{path}:1: unknown top-level key {k!r}" for k in doc if k not in file_keys]
    return items, _item_lines(text, list_key), errors


def rule_files(path: Path) -> list[Path]:
    """The ``*.yaml`` files of a directory (sorted), or the file itself."""
    return sorted(path.glob("*.yaml")) if path.is_dir() else [path]


def read_rule_files(path: Path, file_keys: frozenset[str]) -> tuple[list[tuple[str, Any]], list[str]]:
    """(``file:line: rule <id>``, rule) of every rule in a file or directory, and the file-level errors."""
    files = rule_files(path)
    if not files:
        return [], [f"{path}: no *.yaml rule files"]
    found: list[tuple[str, Any]] = []
    errors: list[str] = []
    for file in files:
        rules, lines, file_errors = read_rule_file(file, file_keys)
        errors += file_errors
        for i, rule in enumerate(rules):
            rule_id = rule.get("id", "?") if isinstance(rule, dict) else "?"
            found.append((f"{file}:{lines[i] if i < len(lines) else 0}: rule {rule_id}", rule))
    return found, errors


def duplicate_ids(found: list[tuple[str, Any]]) -> list[str]:
    """An error for every rule whose id an earlier rule already has (``found`` as ``read_rule_files`` gives it)."""
    seen: dict[str, str] = {}
    errors = []
    for where, rule in found:
        if isinstance(rule, dict) and "id" in rule:
            rid = str(rule["id"])
            if rid in seen:
                errors.append(f"{where}: duplicate rule id {rid!r} (first at {seen[rid]})")
            seen.setdefault(rid, where)
    return errors
