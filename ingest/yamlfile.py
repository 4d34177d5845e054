"""YAML for configuration and rule files: safe, and strict about duplicate keys.

``StrictLoader`` is ``yaml.SafeLoader`` that refuses a mapping with the same key
twice, naming the key and its line: with a plain loader the second silently
wins, so a typo'd override would go unnoticed. Policy files and rule packs
load with it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["StrictLoader", "read_rule_file"]


class StrictLoader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys, naming the line."""


def _strict_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _strict_mapping)


def _item_lines(text: str, list_key: str) -> list[int]:
    """1-based line of each item of the top-level ``list_key`` list."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
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
