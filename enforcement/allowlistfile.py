"""Reading a ``KubewardAllowList`` file strictly (``enforcement.allowlist`` holds the list and its matcher).

``load_allowlist(path)`` reads a YAML (or JSON) file; ``allowlist_from_dict``
checks a parsed document. Both collect every problem and raise
``AllowListError`` naming the key and the bad value (``file:line`` where the
file says): an unknown key (with the nearest valid one), a wrong ``kind`` or
``version``, a template that does not start with ``/``, carries a query or
unbalanced braces, a caller that is no peer name, the same endpoint twice.
``endpoint_problems(item)`` runs the per-entry checks on one entry, so a writer
(``deploy.policysuggest.shim_allowlist``) can leave out what the shim would refuse.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from enforcement.allowlist import _NAME, _PLACEHOLDER, KIND, VERSION, AllowedEndpoint, AllowList, AllowListError, _caller
from ingest.yamlfile import StrictLoader

__all__ = ["allowlist_from_dict", "endpoint_problems", "load_allowlist"]

_TOP_KEYS = ("kind", "version", "thresholds", "endpoints")
_ENDPOINT_KEYS = ("destination", "method", "path_template", "callers")
_THRESHOLD_KEYS = ("min_calls", "min_callers")
_METHOD = re.compile(r"[A-Z][A-Z_-]{0,23}|-")


def _template_problem(template: str) -> str | None:
    if template == "-":
        return None
    if not template.startswith("/"):
        return "must start with '/'"
    if "?" in template or "#" in template:
        return "must not carry a query or fragment"
    if any(c.isspace() for c in template):
        return "must not contain whitespace"
    rest = _PLACEHOLDER.sub("", template)
    if "{" in rest or "}" in rest:
        return "has a brace that opens or closes no placeholder ('{name}' within one segment)"
    return None


def _at(where: str, problem: str) -> str:
    return f"{where}: {problem}" if where else problem


def _unknown(keys: Iterable[Any], valid: tuple[str, ...], where: str) -> list[str]:
    out = []
    for key in keys:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (valid: {', '.join(valid)})"
            out.append(_at(where, f"unknown key {key!r}{hint}"))
    return out


def _caller_problems(callers: Any) -> list[str]:
    if not isinstance(callers, list):
        return [f"callers={callers!r}: expected a list of caller names"]
    out = []
    for name in callers:
        try:
            if not isinstance(name, str):
                raise ValueError("expected a string")
            _caller(name)
        except ValueError as exc:
            out.append(f"callers: {name!r}: {exc}")
    return out


def _endpoint_problems(item: Any, where: str) -> list[str]:
    if not isinstance(item, Mapping):
        return [_at(where, f"expected a mapping with {', '.join(_ENDPOINT_KEYS)}, got {item!r}")]
    errors = _unknown(item, _ENDPOINT_KEYS, where)
    errors += [_at(where, f"missing key {k!r}") for k in _ENDPOINT_KEYS if k not in item]
    dest, method, template, callers = (item.get(k) for k in _ENDPOINT_KEYS)
    if "destination" in item and not (isinstance(dest, str) and dest.count("/") <= 1 and all(_NAME.fullmatch(p) for p in dest.split("/"))):
        errors.append(_at(where, f"destination={dest!r}: expected 'namespace/service' (or 'service')"))
    if "method" in item and not (isinstance(method, str) and _METHOD.fullmatch(method)):
        errors.append(_at(where, f"method={method!r}: expected an upper-case HTTP method (GET, POST...)"))
    if "path_template" in item:
        problem = _template_problem(template) if isinstance(template, str) else "expected a string"
        if problem:
            errors.append(_at(where, f"path_template={template!r}: {problem}"))
    if "callers" in item:
        errors += [_at(where, p) for p in _caller_problems(callers)]
    return errors


def endpoint_problems(item: Any) -> list[str]:
    """What the loader would refuse in one ``endpoints`` item (``key=value: why`` each); empty when it loads.

    >>> endpoint_problems({"destination": "shop/orders", "method": "GET", "path_template": "/orders/{id", "callers": ["shop/web"]})
    ["path_template='/orders/{id': has a brace that opens or closes no placeholder ('{name}' within one segment)"]
    """
    return _endpoint_problems(item, "")


def _top_problems(doc: Mapping[str, Any], where: str) -> list[str]:
    errors = _unknown(doc, _TOP_KEYS, where)
    if doc.get("kind") != KIND:
        errors.append(f"{where}: kind={doc.get('kind')!r}: expected {KIND!r}")
    if doc.get("version") != VERSION or isinstance(doc.get("version"), bool):
        errors.append(f"{where}: version={doc.get('version')!r}: expected {VERSION} (the only version this shim reads)")
    thresholds = doc.get("thresholds", {})
    if not isinstance(thresholds, Mapping):
        errors.append(f"{where}: thresholds={thresholds!r}: expected a mapping")
    else:
        errors += _unknown(thresholds, _THRESHOLD_KEYS, f"{where}: thresholds")
    if not isinstance(doc.get("endpoints"), list):
        errors.append(f"{where}: endpoints={doc.get('endpoints')!r}: expected a list")
    return errors


def allowlist_from_dict(doc: Any, source: str = "<allow-list>", lines: list[int] | None = None) -> AllowList:
    """Check a parsed document and build its ``AllowList``; ``AllowListError`` lists every problem.

    ``lines``: the line of each endpoint in the file (for messages as ``source:line``).
    """
    if not isinstance(doc, Mapping):
        raise AllowListError(f"{source}: expected a {KIND} mapping (kind, version, endpoints), got {type(doc).__name__}")
    errors = _top_problems(doc, f"{source}:1" if lines is not None else source)
    found = doc.get("endpoints")
    items: list[Any] = found if isinstance(found, list) else []
    entries: list[AllowedEndpoint] = []
    seen: dict[tuple[str, str, str], str] = {}
    for i, item in enumerate(items):
        line = lines[i] if lines is not None and i < len(lines) else 0
        where = f"{source}:{line}: endpoints[{i}]" if line else f"{source}: endpoints[{i}]"
        problems = _endpoint_problems(item, where)
        errors += problems
        if problems:
            continue
        key = (item["destination"], item["method"], item["path_template"])
        if key in seen:
            errors.append(f"{where}: {' '.join(key)} is listed twice (first at {seen[key]}): merge the callers into one entry")
            continue
        seen[key] = where
        entries.append(AllowedEndpoint.build(*key, item["callers"], line))
    if errors:
        raise AllowListError(f"invalid allow-list ({len(errors)} problems):\n  " + "\n  ".join(errors))
    return AllowList(entries, source)


def _endpoint_lines(root: yaml.Node | None) -> list[int]:
    """1-based line of each item of the top-level ``endpoints`` list."""
    for key, value in getattr(root, "value", []) or []:
        if getattr(key, "value", None) == "endpoints" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def load_allowlist(path: Path) -> AllowList:
    """The allow-list in a YAML (or JSON) file; ``AllowListError`` names the file, the line, the key and the value."""
    try:
        loader = StrictLoader(path.read_text())
        try:
            root = loader.get_single_node()  # composed once: the document and the line of each entry
            doc = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise AllowListError(f"{path}:{line}: {exc.context + ': ' if exc.context else ''}{exc.problem}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AllowListError(f"{path}: cannot read the allow-list: {exc}") from None
    return allowlist_from_dict(doc, str(path), _endpoint_lines(root))
