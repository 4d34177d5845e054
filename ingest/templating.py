"""Path templating: concrete paths to templates plus the object ids they name.

A segment is an object id when it is all digits, a UUID, a long hex string, or
a long token mixing letters and digits. ``/orders/81231/items`` becomes
``/orders/{id}/items`` with ids ``["81231"]``. Ids are hashed with a key before
they leave the node (``hash_object_id``); raw ids are never published by default.
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["hash_object_id", "template_path"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_HEX = re.compile(r"^[0-9a-fA-F]{12,}$")
_TOKEN = re.compile(r"^(?=.*\d)[A-Za-z0-9_-]{10,}$")


def _is_id(segment: str) -> bool:
    return segment.isdigit() or bool(_UUID.match(segment) or _HEX.match(segment) or _TOKEN.match(segment))


def template_path(path: str) -> tuple[str, list[str]]:
    """Split the query off, replace id-like segments by ``{id}``; return template and ids.

    >>> template_path("/orders/81231/items?expand=1")
    ('/orders/{id}/items', ['81231'])
    """
    path = path.split("?", 1)[0]
    segments, ids = [], []
    for seg in path.split("/"):
        if seg and _is_id(seg):
            ids.append(seg)
            segments.append("{id}")
        else:
            segments.append(seg)
    return "/".join(segments) or "/", ids


def hash_object_id(object_id: str, key: bytes) -> str:
    """Keyed BLAKE2b of an object id, 16 hex characters (stable per key, not reversible).

    Keys longer than BLAKE2b's 64 bytes are first reduced with an unkeyed BLAKE2b.
    """
    if len(key) > 64:
        key = hashlib.blake2b(key).digest()
    return hashlib.blake2b(object_id.encode(), key=key, digest_size=8).hexdigest()
