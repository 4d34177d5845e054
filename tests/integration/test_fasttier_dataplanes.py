"""The shim's fast tier through Envoy, nginx and Traefik (real binaries), no Kafka needed.

A principal reading distinct orders is refused by the data plane on the request that completes the shipped
enumeration floor (``fast_tier.max_distinct_objects``) and on its next requests, whatever the path; another
principal behind the same client address is not touched; a signed lift of the principal, applied to the
shim's cache as the control consumer would, lets it through again. A scanner's burst of inline findings
refuses its next, unflagged, request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from deploy.runtime.echo import EchoUpstream
from deploy.runtime.process import free_port
from enforcement.settings import FastTierSettings, ShimSettings
from ingest import Subject, Verdict
from tests.integration.test_dataplanes import JWT_SECRET, NAMES, START, TRAVERSAL, Plane, ShimThread, call, principal, token

pytestmark = pytest.mark.integration

FLOOR = FastTierSettings().max_distinct_objects


@pytest.fixture(scope="module")
def upstream() -> Iterator[EchoUpstream]:
    with EchoUpstream() as up:
        yield up


@pytest.fixture(scope="module", params=NAMES)
def plane(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, upstream: EchoUpstream) -> Iterator[Plane]:
    name = request.param
    settings = ShimSettings(
        bootstrap=None, port=free_port(), admin_port=free_port(), adapter=name, report="none",
        identity={"jwt_hs256_secret": JWT_SECRET.decode(), "trusted_hops": 1}, policy={"default_mode": "enforce"},
    )  # fmt: skip
    with ShimThread(settings) as running, START[name](tmp_path_factory.mktemp(name), settings.port, upstream.port) as proxy:
        running.shim.synced.set()  # no Kafka here: the cache is as synced as it will get
        yield Plane(proxy, running.shim)


def test_an_enumeration_is_refused_on_the_request_that_completes_it(plane: Plane) -> None:
    walker = {"authorization": token(f"walker-{plane.proxy.name}")}
    statuses = [call(plane.proxy, f"/orders/{7000 + i}", walker).status for i in range(FLOOR)]
    assert statuses[:-1] == [200] * (FLOOR - 1), "below the floor every read reaches the upstream"
    assert statuses[-1] == 403
    assert call(plane.proxy, "/profile", walker).status == 403  # the actor, not the endpoint
    neighbour = {"authorization": token(f"neighbour-{plane.proxy.name}")}
    assert call(plane.proxy, "/orders/7000", neighbour).status == 200  # same address, another principal
    # a signed lift of the principal, as the control consumer applies it, lifts the local verdict too
    now = time.time()
    lift = Verdict(id="lift-walker", subject=Subject(kind="principal", value=principal(f"walker-{plane.proxy.name}")), action="lift",
                   mode="enforce", expires_at=now + 600, issued_at=now, evidence_time=now)
    assert plane.shim.cache.apply(lift)
    assert call(plane.proxy, "/profile", walker).status == 200


def test_a_burst_of_inline_findings_refuses_the_scanners_next_request(plane: Plane) -> None:
    scanner = {"authorization": token(f"scanner-{plane.proxy.name}")}
    hits = plane.shim.settings.fast_tier.inline_hits
    assert [call(plane.proxy, TRAVERSAL, scanner).status for _ in range(hits)] == [403] * hits
    assert call(plane.proxy, "/orders/1", scanner).status == 403
    assert call(plane.proxy, "/orders/1", {"authorization": token(f"bystander-{plane.proxy.name}")}).status == 200
