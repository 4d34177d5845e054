"""YAML for configuration and rule files: safe, and strict about duplicate keys.

``StrictLoader`` is ``yaml.SafeLoader`` that refuses a mapping with the same key
twice, naming the key and its line: with a plain loader the second silently
wins, so a typo'd override would go unnoticed. Policy files and rule packs
load with it.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["StrictLoader"]


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
