"""The descriptor pool every module generated from ``ingest/proto/*.proto`` registers in.

A pool of our own, not protobuf's default one: the subset declares upstream
names (``google.rpc.Status``, ``envoy.config.core.v3.HeaderValue``) that other
libraries may register in the default pool with different contents, which
protobuf rejects as duplicate symbols. The well-known types the subset imports
are added first, because a pool resolves dependencies only within itself.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool, duration_pb2, timestamp_pb2, wrappers_pb2

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
for _module in (duration_pb2, timestamp_pb2, wrappers_pb2):
    POOL.AddSerializedFile(_module.DESCRIPTOR.serialized_pb)
