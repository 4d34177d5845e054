"""The one small interface every data-plane adapter implements.

An adapter translates, and nothing else: ``view`` turns the data plane's check
request (an HTTP request for Envoy ext_authz HTTP, nginx ``auth_request`` and
Traefik ForwardAuth; a protobuf ``CheckRequest`` for Envoy ext_authz gRPC) into
the ``RequestView`` that ``enforcement.decision.decide`` reads, and ``respond``
turns the ``Decision`` into what that data plane understands (status, headers,
body). Identity, destination and templating come from ``ingest`` so that the
shim and the collectors derive the same actor from the same request.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from enforcement.decision import Decision, RequestView

__all__ = ["Adapter"]

Req = TypeVar("Req", contravariant=True)
Resp = TypeVar("Resp", covariant=True)


class Adapter(Protocol, Generic[Req, Resp]):
    """Translate one data plane's check request and response."""

    name: str

    def view(self, request: Req) -> RequestView:
        """The decision input for one check request."""
        ...

    def respond(self, decision: Decision, view: RequestView) -> Resp:
        """The data plane's answer for a decision."""
        ...
