"""What every Envoy ext_proc server of ours shares: the service name and the empty CONTINUE answer per message kind.

Both the read-only tap (``ingest.collectors.extproc``) and the redaction
adapter (``enforcement.adapters.envoy_extproc``) answer most messages with an
empty response of the matching kind, which tells Envoy to continue unchanged.
The instances are shared and never mutated.
"""

from __future__ import annotations

from ingest.proto import envoy_ext_proc_pb2 as ext_proc

__all__ = ["CONTINUE", "SERVICE_NAME"]

SERVICE_NAME: str = ext_proc.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name

#: message kind (the ``ProcessingRequest`` oneof field) -> the empty answer of that kind
CONTINUE: dict[str, ext_proc.ProcessingResponse] = {
    "request_headers": ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse()),
    "response_headers": ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse()),
    "request_body": ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse()),
    "response_body": ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse()),
    "request_trailers": ext_proc.ProcessingResponse(request_trailers=ext_proc.TrailersResponse()),
    "response_trailers": ext_proc.ProcessingResponse(response_trailers=ext_proc.TrailersResponse()),
}
