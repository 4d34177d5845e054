"""Merging two sources' observations of one call."""

from __future__ import annotations

from ingest.observation import HttpObservation, merge


def test_merge_fills_gaps_and_first_wins() -> None:
    shim = HttpObservation(10.0, "GET", "/a?x=1", "shim", request_id="r", headers={"authorization": "Bearer t"}, decision="deny", inline_findings=("sqli",))
    log = HttpObservation(10.2, "GET", "/a?x=1", "access_log", request_id="r", headers={"user-agent": "ua", "authorization": "other"},
                          status=403, response_bytes=12, duration_ms=1.5)
    m = merge(shim, log)
    assert m.reporter == "shim+access_log"
    assert (m.status, m.response_bytes, m.duration_ms, m.decision, m.inline_findings) == (403, 12, 1.5, "deny", ("sqli",))
    assert m.headers == {"authorization": "Bearer t", "user-agent": "ua"}
    assert m.time == 10.0
    assert merge(m, log).reporter == "shim+access_log"
