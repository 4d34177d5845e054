"""The shim's decision read back from access-log entries (file JSON, Traefik JSON, Envoy ALS) into ``decision``.

A refusal counts only from the data plane's answer with a refusing status; a request
header counts only as a value the shim puts on calls it lets through. So a client's
own ``x-kubeward-decision`` cannot make an allowed call look refused (hiding its
status from the detectors) or a refused one look answered.
"""

from __future__ import annotations

from typing import Any

import pytest

from ingest.collectors.accesslog import from_traefik, observation_from_envoy
from ingest.collectors.als import observation_from_entry
from ingest.observation import logged_decision
from ingest.summarize import Summarizer
from tests.ingest.test_als import make_entry

BASE: dict[str, Any] = {"start_time": "2024-05-01T10:00:00.000Z", "method": "GET", "path": "/orders/1", "request_id": "r1"}


@pytest.mark.parametrize(
    ("status", "answered", "forwarded", "would", "expected"),
    [
        (403, "deny", None, None, "deny"),
        (429, "throttle", None, None, "throttle"),
        (403, "deny", "allow", None, "deny"),  # Traefik: a refused call's request header is the client's
        (403, "DENY ", None, None, "deny"),
        (200, None, "allow", None, "allow"),
        (200, "allow", None, None, "allow"),  # nginx: the shim's answer to the auth_request
        (200, None, "allow", "deny", "observe:deny"),
        (200, None, "allow", "throttle", "observe:throttle"),
        (200, None, "allow", "forged", "allow"),
        (200, None, "redact", None, "redact"),
        (200, None, "unparsed", None, "unparsed"),
        (200, None, "deny", None, None),  # never a refusal from the request
        (200, None, "throttle", "deny", None),
        (200, "deny", None, None, None),  # an upstream's header on a success
        (200, "deny", "allow", None, "allow"),
        (None, "deny", None, None, None),
        (403, None, None, None, None),  # the API's own 403
        (403, "forged", None, None, None),
        (503, "unavailable", None, None, None),  # nginx fail-closed: not a shim decision
        (200, "-", "-", "-", None),
    ],
)
def test_logged_decision(status: int | None, answered: str | None, forwarded: str | None, would: str | None, expected: str | None) -> None:
    assert logged_decision(status, answered, forwarded, would) == expected


def test_envoy_file_entries_carry_the_decision_into_the_summary() -> None:
    denied = observation_from_envoy({**BASE, "response_code": 403, "kubeward_decision": "deny", "kubeward_forwarded_decision": None})
    allowed = observation_from_envoy({**BASE, "response_code": 200, "kubeward_decision": None, "kubeward_forwarded_decision": "allow", "kubeward_would": None})
    observed = observation_from_envoy({**BASE, "response_code": 200, "kubeward_forwarded_decision": "allow", "kubeward_would": "deny"})
    api_refused = observation_from_envoy({**BASE, "response_code": 403})
    assert [o.decision for o in (denied, allowed, observed, api_refused)] == ["deny", "allow", "observe:deny", None]
    rows = Summarizer().summarize_many([denied, allowed, api_refused])
    assert [(r["status"], r["decision"]) for r in rows] == [(403, "deny"), (200, "allow"), (403, None)]


def test_a_client_sent_deny_never_marks_an_allowed_call() -> None:
    """Were a client's header logged (a data plane that does not strip it): the request side never says deny, nor does a success."""
    forged = observation_from_envoy({**BASE, "response_code": 200, "kubeward_forwarded_decision": "deny", "kubeward_would": None})
    echoed = observation_from_envoy({**BASE, "response_code": 200, "kubeward_decision": "deny", "kubeward_forwarded_decision": "allow"})
    assert (forged.decision, echoed.decision) == (None, "allow")
    # a client header is a request header: the only request-side key read is kubeward_forwarded_decision, which never refuses
    assert observation_from_envoy({**BASE, "response_code": 200, "x_kubeward_decision": "deny"}).decision is None


def test_decision_values_that_are_not_strings_count_as_absent() -> None:
    obs = observation_from_envoy({**BASE, "response_code": 403, "kubeward_decision": 7, "kubeward_forwarded_decision": ["deny"], "kubeward_would": {}})
    assert (obs.status, obs.decision) == (403, None)


def test_nginx_format_entries() -> None:
    """nginx's kubeward format: strings throughout, empty for absent values, one decision key (the auth answer)."""
    common = {**BASE, "bytes_received": "120", "bytes_sent": "15", "duration": "3", "downstream_peer_address": "10.0.0.7", "kubeward_would": ""}
    denied = observation_from_envoy({**common, "response_code": "403", "kubeward_decision": "deny"})
    allowed = observation_from_envoy({**common, "response_code": "200", "kubeward_decision": "allow"})
    down = observation_from_envoy({**common, "response_code": "503", "kubeward_decision": ""})
    assert [(o.status, o.decision) for o in (denied, allowed, down)] == [(403, "deny"), (200, "allow"), (503, None)]
    assert (denied.duration_ms, denied.peer_ip) == (3.0, "10.0.0.7")


TRAEFIK = {"StartUTC": "2026-12-03T06:43:20.146033946Z", "RequestMethod": "GET", "RequestPath": "/orders/1?n=1", "RequestHost": "api.example",
           "RequestContentSize": 0, "DownstreamContentSize": 15, "Duration": 1814369, "ClientHost": "127.0.0.1",
           "ServiceName": "orders@file", "request_Authorization": "Bearer a.b.c", "request_User-Agent": "curl/8",
           "request_X-Kubeward-Destination": "shop/orders", "level": "info", "msg": ""}


def test_traefik_entries() -> None:
    denied = observation_from_envoy({**TRAEFIK, "DownstreamStatus": 403, "downstream_X-Kubeward-Decision": "deny", "request_X-Kubeward-Decision": "allow"})
    allowed = observation_from_envoy({**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Decision": "allow"})
    observed = observation_from_envoy({**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Decision": "allow", "request_X-Kubeward-Would": "deny"})
    forged = observation_from_envoy({**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Decision": "deny"})
    assert [o.decision for o in (denied, allowed, observed, forged)] == ["deny", "allow", "observe:deny", None]
    assert (denied.method, denied.path, denied.status, denied.authority, denied.peer_ip, denied.route) == ("GET", "/orders/1?n=1", 403, "api.example", "127.0.0.1", "orders")
    assert denied.headers == {"authorization": "Bearer a.b.c", "user-agent": "curl/8", "x-kubeward-destination": "shop/orders"}
    assert denied.duration_ms == pytest.approx(1.814369) and denied.response_bytes == 15
    assert abs(denied.time - 1796280200.146034) < 1e-3
    assert Summarizer().summarize(denied)["destination"]["service"] == "orders"


def test_from_traefik_keeps_only_what_it_knows() -> None:
    assert from_traefik({"RequestMethod": "GET", "RequestPath": "/a", "OriginStatus": 0, "request_X-Other": "x"}) == {"method": "GET", "path": "/a"}


def _als(status: int, request: dict[str, str] | None = None, response: dict[str, str] | None = None) -> Any:
    entry = make_entry(response__response_code__value=status)
    for name, value in (request or {}).items():
        entry.request.request_headers[name] = value
    for name, value in (response or {}).items():
        entry.response.response_headers[name] = value
    return observation_from_entry(entry)


def test_als_entries_carry_the_decision() -> None:
    denied = _als(403, response={"x-kubeward-decision": "deny"})
    throttled = _als(429, {"x-kubeward-decision": "allow"}, {"x-kubeward-decision": "throttle"})
    allowed = _als(201, {"x-kubeward-decision": "allow"})
    observed = _als(201, {"x-kubeward-decision": "allow", "x-kubeward-would": "deny"})
    forged = _als(201, {"x-kubeward-decision": "deny"})
    echoed = _als(201, response={"x-kubeward-decision": "deny"})
    plain = _als(403)
    got = [o.decision if o is not None else "missing" for o in (denied, throttled, allowed, observed, forged, echoed, plain)]
    assert got == ["deny", "throttle", "allow", "observe:deny", None, None, None]
    for obs in (throttled, allowed, observed, forged):
        assert obs is not None and not {"x-kubeward-decision", "x-kubeward-would"} & set(obs.headers)
        assert obs.headers["authorization"] == "Bearer a.b.c"


# ------------------------------------------------------------------ Traefik: the shim's request id


def test_traefik_allowed_call_takes_the_id_the_shim_put_on_the_request() -> None:
    obs = observation_from_envoy({**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Decision": "allow", "request_X-Kubeward-Request-Id": "s1"})
    assert (obs.request_id, obs.decision) == ("s1", "allow")
    assert "x-kubeward-request-id" not in obs.headers


def test_traefik_refused_call_takes_the_id_the_shim_answered_never_the_clients() -> None:
    refused = {**TRAEFIK, "DownstreamStatus": 403, "downstream_X-Kubeward-Decision": "deny"}
    assert observation_from_envoy({**refused, "downstream_X-Kubeward-Request-Id": "s2", "request_X-Kubeward-Request-Id": "mine"}).request_id == "s2"
    assert observation_from_envoy({**refused, "request_X-Kubeward-Request-Id": "mine"}).request_id is None
    throttled = {**TRAEFIK, "DownstreamStatus": 429, "downstream_X-Kubeward-Decision": "throttle", "downstream_X-Kubeward-Request-Id": "s3"}
    assert observation_from_envoy(throttled).request_id == "s3"


def test_traefik_success_ignores_an_id_the_upstream_answered() -> None:
    doc = {**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Request-Id": "s4", "downstream_X-Kubeward-Request-Id": "upstream"}
    assert observation_from_envoy(doc).request_id == "s4"
    # an upstream's own 404 with a decision header it echoed is no refusal by the shim either
    echoed = {**doc, "DownstreamStatus": 404, "downstream_X-Kubeward-Decision": "allow"}
    assert observation_from_envoy(echoed).request_id == "s4"


def test_traefik_x_request_id_wins_over_the_shims() -> None:
    doc = {**TRAEFIK, "DownstreamStatus": 200, "request_X-Request-Id": "r9", "request_X-Kubeward-Request-Id": "s5"}
    assert observation_from_envoy(doc).request_id == "r9"
    assert observation_from_envoy({**doc, "request_X-Request-Id": "-"}).request_id == "s5"


@pytest.mark.parametrize("value", ["", "-", None, 7])
def test_traefik_missing_or_odd_ids_are_no_id(value: Any) -> None:
    assert observation_from_envoy({**TRAEFIK, "DownstreamStatus": 200, "request_X-Kubeward-Request-Id": value}).request_id is None
