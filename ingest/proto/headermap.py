"""Envoy's ``HeaderMap`` as a plain dict: the one reading of it shared by the ext_authz gRPC adapter, the ext_proc
redaction adapter and the ext_proc tap.

Names are lower-cased; ``raw_value`` (bytes, what Envoy sends when ``encode_raw_headers`` is on) is decoded as UTF-8,
else ``value`` is used; repeated names are joined with commas, as HTTP folds them.
"""

from __future__ import annotations

from ingest.proto import envoy_core_pb2 as core

__all__ = ["header_dict"]


def header_dict(header_map: core.HeaderMap) -> dict[str, str]:
    """Lower-case names to values; repeated names joined with commas."""
    found: dict[str, str] = {}
    for h in header_map.headers:
        key = h.key.lower()
        value = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
        found[key] = f"{found[key]},{value}" if key in found else value
    return found
