"""The blueprint's model, page and OpenAPI export, on inventory records of the shape the workers publish."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from deploy.blueprint import read_jsonl, write_blueprint
from deploy.blueprinthtml import MARK_COLORS, render_page
from deploy.blueprintmodel import build_blueprint, caller_of
from ingest.openapiexport import openapi_documents
from ingest.schema import AgentRecord, EndpointRecord, Finding, FindingInfo, McpToolRecord

T0 = 1.8e9


def endpoint(service: str, method: str, template: str, **kw: Any) -> EndpointRecord:
    base: dict[str, Any] = {"namespace": "shop", "calls": 100, "callers": 3, "top_callers": ["shop/frontend|user-1", "shop/frontend|user-2"],
                            "auth_types": ["jwt"], "statuses": {"200": 95, "404": 5}, "first_seen": T0, "last_seen": T0 + 60}
    return EndpointRecord(service=service, method=method, path_template=template, **{**base, **kw})


RECORDS: list[Any] = [
    endpoint("orders", "GET", "/orders/{id}", spec_status="declared", data_types=["email"]),
    endpoint("orders", "GET", "/internal/debug/vars", spec_status="shadow", auth_types=["none"], top_callers=["198.51.100.7|-"]),
    endpoint("orders", "GET", "/v1/orders/{id}", spec_status="deprecated"),
    endpoint("orders", "POST", "/orders", spec_status="declared", statuses={"201": 40}),
    endpoint("api.psp.example.com", "POST", "/v1/charges", namespace=None, auth_types=["mtls"], top_callers=["payments/checkout|-"]),
    AgentRecord(agent="agents/support-bot", namespace="agents", mcp_servers=["mcp-shop"], tools_called={"mcp-shop/lookup_order": 12},
                models={"gpt-4o-mini": 5}, sent_sensitive=2, first_seen=T0, last_seen=T0 + 30),
    McpToolRecord(server="mcp-shop", name="lookup_order", definition_hash="ab" * 32, definitions_seen=2, calls=12, callers=1,
                  first_seen=T0, last_seen=T0 + 30),
]


def finding(unmapped: dict[str, str], severity: int = 4) -> Finding:
    return Finding(time=int(T0 * 1000), severity_id=severity, confidence_score=80, message="m",
                   finding_info=FindingInfo(uid=str(unmapped), title="t"), unmapped=unmapped)


def test_marks_and_risk_follow_the_records() -> None:
    bp = build_blueprint(RECORDS, [finding({"service": "orders", "method": "GET", "path_template": "/internal/debug/vars"}),
                                   finding({"actor": "198.51.100.7|-"})])
    eps = {e.key: e for e in bp.endpoints}
    assert eps["shop/orders GET /internal/debug/vars"].marks == ("shadow", "unauthenticated")
    assert eps["shop/orders GET /v1/orders/{id}"].marks == ("zombie",)
    assert eps["shop/orders GET /orders/{id}"].marks == ("sensitive",)
    assert eps["api.psp.example.com POST /v1/charges"].marks == ("undeclared", "external")
    assert eps["shop/orders GET /internal/debug/vars"].findings == 1 and eps["shop/orders GET /internal/debug/vars"].risk == 25 + 20 + 15
    assert eps["shop/orders POST /orders"].risk == 0
    assert bp.callers["198.51.100.7"].findings == 1 and bp.callers["shop/frontend"].principals == {"user-1", "user-2"}
    assert bp.tools["mcp-shop/lookup_order"].marks == ("changed",)
    assert bp.agent_tools == [("agents/support-bot", "mcp-shop/lookup_order", 12)]
    assert bp.summary()["marks"] == {"external": 1, "sensitive": 1, "shadow": 1, "unauthenticated": 1, "undeclared": 1, "zombie": 1}


def test_the_newest_record_of_a_key_wins() -> None:
    old = endpoint("orders", "GET", "/orders/{id}", spec_status="declared", last_seen=T0 + 1)
    new = endpoint("orders", "GET", "/orders/{id}", spec_status="dormant", last_seen=T0 + 99)
    assert [e.marks for e in build_blueprint([new, old]).endpoints] == [("zombie",)]


def test_caller_of_splits_actor_keys() -> None:
    assert caller_of("shop/frontend|user-7") == ("shop/frontend", "user-7")
    assert caller_of("10.0.0.9|-") == ("10.0.0.9", None)
    assert caller_of("-|user-9") == ("(no workload)", "user-9")


def test_one_anonymous_call_among_authenticated_ones_is_not_unauthenticated() -> None:
    mixed = endpoint("orders", "GET", "/orders", spec_status="declared", auth_types=["jwt", "none"])
    assert build_blueprint([mixed]).endpoints[0].marks == ()


def test_the_page_is_self_contained_and_carries_every_endpoint() -> None:
    page = render_page(build_blueprint(RECORDS), subtitle="test <run>")
    assert "<script src" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "test &lt;run&gt;" in page
    data = json.loads(page.split('id="blueprint-data">')[1].split("</script>")[0])
    assert len(data["endpoints"]) == 5 and data["summary"]["agents"] == 1
    for mark in ("shadow", "zombie", "sensitive", "external", "changed"):
        assert MARK_COLORS[mark] in page


def test_a_path_with_markup_cannot_break_out_of_the_page() -> None:
    evil = endpoint("orders", "GET", "/x/</script><script>alert(1)</script>")
    page = render_page(build_blueprint([evil]))
    assert "<script>alert(1)" not in page


def test_openapi_documents_are_valid_openapi_3_1() -> None:
    docs = openapi_documents(r for r in RECORDS if isinstance(r, EndpointRecord))
    assert list(docs) == [(None, "api.psp.example.com"), ("shop", "orders")]
    for doc in docs.values():
        validate(doc)  # raises on an invalid document
    orders = docs[("shop", "orders")]
    assert orders["openapi"] == "3.1.0"
    assert orders["paths"]["/v1/orders/{id}"]["get"]["deprecated"] is True
    assert orders["paths"]["/orders/{id}"]["parameters"][0]["name"] == "id"
    assert set(orders["paths"]["/orders"]["post"]["responses"]) == {"201"}
    assert orders["components"]["securitySchemes"]["bearerJwt"]["bearerFormat"] == "JWT"
    assert orders["paths"]["/internal/debug/vars"]["get"]["x-kubeward"]["spec_status"] == "shadow"


def test_repeated_placeholders_get_distinct_names() -> None:
    doc = openapi_documents([endpoint("docs", "GET", "/a/{id}/b/{id}")])[("shop", "docs")]
    validate(doc)
    assert list(doc["paths"]) == ["/a/{id}/b/{id2}"]


def test_jsonl_files_skip_and_count_unreadable_lines(tmp_path: Path) -> None:
    path = tmp_path / "inventory.jsonl"
    path.write_text("\n".join([RECORDS[0].model_dump_json(), "{not json", '{"kind": "endpoint"}', RECORDS[5].model_dump_json()]))
    records, bad = read_jsonl(path, "record")
    assert [type(r).__name__ for r in records] == ["EndpointRecord", "AgentRecord"] and bad == 2


def test_write_blueprint_writes_the_page_and_documents(tmp_path: Path) -> None:
    bp = write_blueprint(RECORDS, [], tmp_path / "b.html", None, tmp_path / "openapi")
    assert (tmp_path / "b.html").read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "openapi").iterdir()) == ["api.psp.example.com.openapi.json", "shop_orders.openapi.json"]
    assert bp.summary()["endpoints"] == 5


@pytest.mark.parametrize("flag", ["--inventory"])
def test_cli_names_a_missing_file(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import main

    assert main(["blueprint", flag, str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "b.html")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


def test_a_service_name_from_traffic_cannot_leave_the_openapi_dir(tmp_path: Path) -> None:
    out = tmp_path / "openapi"
    write_blueprint([endpoint("../../escaped", "GET", "/x")], [], tmp_path / "b.html", None, out)
    assert [p.parent for p in tmp_path.rglob("*.openapi.json")] == [out]
    assert not (tmp_path.parent / "escaped.openapi.json").exists()


# --- one service name in two namespaces ---------------------------------------------------------------------------

TWO_NAMESPACES: list[Any] = [
    endpoint("api", "GET", "/x", namespace="shop", top_callers=["shop/web|u1"], spec_status="declared", calls=10),
    endpoint("api", "GET", "/x", namespace="billing", top_callers=["billing/job|-"], spec_status="shadow", calls=3),
    endpoint("api", "POST", "/charge", namespace="billing", spec_status="shadow"),
]


def test_one_service_name_in_two_namespaces_is_two_services() -> None:
    bp = build_blueprint(TWO_NAMESPACES)
    assert list(bp.services) == ["billing/api", "shop/api"]
    assert [(e.key, e.calls, e.marks) for e in bp.services["shop/api"].endpoints] == [("shop/api GET /x", 10, ())]
    assert [e.key for e in bp.services["billing/api"].endpoints] == ["billing/api POST /charge", "billing/api GET /x"]
    assert bp.callers["shop/web"].endpoints == {"shop/api GET /x"} and bp.callers["billing/job"].endpoints == {"billing/api GET /x"}
    assert bp.summary()["services"] == 2 and bp.summary()["endpoints"] == 3


def test_a_finding_counts_in_its_namespace_or_in_every_one_when_it_names_none() -> None:
    named = finding({"service": "api", "namespace": "billing", "method": "GET", "path_template": "/x"})
    bare = finding({"service": "api", "method": "GET", "path_template": "/x"}, severity=2)
    whole = finding({"service": "api", "namespace": "shop"}, severity=1)
    eps = {e.key: e for e in build_blueprint(TWO_NAMESPACES, [named, bare, whole]).endpoints}
    assert eps["billing/api GET /x"].findings == 2 and eps["shop/api GET /x"].findings == 2  # named + bare; bare + whole
    assert eps["billing/api POST /charge"].findings == 0


def test_an_exposure_finding_counts_in_the_namespace_its_resources_name() -> None:
    """The workers' exposure findings name the namespace in their OCSF resources (not in ``unmapped``): the blueprint
    reads it there, so billing's leak raises billing's endpoint only."""
    from streams.exposure import exposure_finding

    leak = exposure_finding("api", "GET", "/x", "user.ssn", T0, namespace="billing")
    assert "namespace" not in leak.unmapped
    eps = {e.key: e for e in build_blueprint(TWO_NAMESPACES, [leak]).endpoints}
    assert eps["billing/api GET /x"].findings == 1 and eps["shop/api GET /x"].findings == 0


def test_probed_paths_are_marked_apart_and_a_real_undocumented_endpoint_stays_shadow() -> None:
    """The demo's traversal probes and a 404'd guess are ``probed``: no shadow, zombie or undeclared mark, no risk of
    their own, last in their service, left out of the endpoint count; the shadow endpoint that answers 200 stays shadow."""
    probes = [endpoint("documents", "GET", "/documents/..%2F..%2F..%2Fetc%2Fshadow", spec_status="shadow", statuses={"400": 4}, probed=True),
              endpoint("documents", "GET", "/etc/passwd", spec_status="dormant", statuses={"404": 2}, probed=True),
              endpoint("ghost", "GET", "/wp-login.php", spec_status="undeclared", statuses={"404": 1}, probed=True),
              endpoint("documents", "GET", "/documents/{id}", spec_status="declared"),
              endpoint("documents", "GET", "/internal/export", spec_status="shadow")]
    bp = build_blueprint(probes)
    eps = {e.key: e for e in bp.endpoints}
    assert eps["shop/documents GET /internal/export"].marks == ("shadow",) and eps["shop/documents GET /internal/export"].risk == 25
    for key in ("shop/documents GET /documents/..%2F..%2F..%2Fetc%2Fshadow", "shop/documents GET /etc/passwd", "shop/ghost GET /wp-login.php"):
        assert eps[key].marks == ("probed",) and eps[key].risk == 0
    assert [e.template for e in bp.services["shop/documents"].endpoints][-2:] == ["/documents/..%2F..%2F..%2Fetc%2Fshadow", "/etc/passwd"]
    assert bp.summary()["marks"] == {"probed": 3, "shadow": 1} and bp.summary()["endpoints"] == 2
    page = render_page(bp)
    assert "2 probed" in page and "1 probed" in page and "#99a3a4" in page
    old = endpoint("documents", "GET", "/etc/passwd", spec_status="shadow").model_dump(exclude={"probed"})
    assert build_blueprint([EndpointRecord.model_validate(old)]).endpoints[0].marks == ("shadow",)  # a record from before the flag


def test_an_answered_traversal_is_high_risk_in_its_own_colour() -> None:
    """A traversal path that got a 200 is no endpoint (left out of the endpoint count and the OpenAPI documents) but
    a traversal that worked: its own mark, a high risk; probed paths take no risk from a finding about their service
    and never count as high-risk; a 422-answering shadow endpoint stays shadow."""
    records = [endpoint("documents", "GET", "/documents/..%2F..%2Fproc%2Fself%2Fenviron", spec_status="shadow", statuses={"200": 1},
                        traversal_answered=True),
               endpoint("documents", "GET", "/etc/passwd", spec_status="shadow", statuses={"404": 2}, auth_types=["none"], probed=True),
               endpoint("documents", "POST", "/internal/exec", spec_status="shadow", statuses={"422": 3, "500": 1}),
               endpoint("documents", "GET", "/documents/{id}", spec_status="declared")]
    service_wide = [finding({"service": "documents", "namespace": "shop"}, severity=5) for _ in range(2)]
    bp = build_blueprint(records, service_wide)
    eps = {e.key: e for e in bp.endpoints}
    worked, probe = eps["shop/documents GET /documents/..%2F..%2Fproc%2Fself%2Fenviron"], eps["shop/documents GET /etc/passwd"]
    assert worked.marks == ("traversal-answered",) and worked.risk == 100  # 70 + the service's findings
    alone = {e.key: e for e in build_blueprint(records).endpoints}[worked.key]
    assert alone.risk == 70 and alone.findings == 0  # on its own: high-risk
    assert probe.marks == ("probed", "unauthenticated") and probe.risk == 20 and probe.findings == 0
    assert eps["shop/documents POST /internal/exec"].marks == ("shadow",) and eps["shop/documents POST /internal/exec"].risk == 75
    summary = bp.summary()
    assert summary["endpoints"] == 2 and summary["marks"]["traversal-answered"] == 1 and summary["marks"]["probed"] == 1
    assert summary["high_risk"] == 3  # the answered traversal, the shadow endpoint, the declared one with the findings
    risky_probe = endpoint("ghost", "GET", "/.env", spec_status="undeclared", statuses={"404": 1}, probed=True, auth_types=["none"],
                           namespace=None, data_types=["secret"])
    assert build_blueprint([risky_probe]).endpoints[0].risk == 50 and build_blueprint([risky_probe]).summary()["high_risk"] == 0
    assert build_blueprint([risky_probe]).services["ghost"].risk == 0  # a service's risk leaves its probed paths out
    page = render_page(bp)
    assert MARK_COLORS["traversal-answered"] in page and "1 traversal answered" in page and "1 probed" in page
    assert list(openapi_documents(records)) == [("shop", "documents")]
    assert list(openapi_documents(records)[("shop", "documents")]["paths"]) == ["/documents/{id}", "/internal/exec"]
    old = records[0].model_dump(exclude={"traversal_answered"})
    assert build_blueprint([EndpointRecord.model_validate(old)]).endpoints[0].marks == ("shadow",)  # a record from before the flag


def test_an_old_record_without_namespace_keeps_the_old_key() -> None:
    old = endpoint("api.psp.example.com", "POST", "/v1/charges", namespace=None)
    assert old.key == "api.psp.example.com POST /v1/charges"
    assert [e.key for e in build_blueprint([old]).endpoints] == [old.key]


def test_the_page_and_documents_keep_the_two_apart(tmp_path: Path) -> None:
    page = render_page(build_blueprint(TWO_NAMESPACES))
    data = json.loads(page.split('id="blueprint-data">')[1].split("</script>")[0])
    assert sorted((e["namespace"], e["service"], e["method"]) for e in data["endpoints"]) == [
        ("billing", "api", "GET"), ("billing", "api", "POST"), ("shop", "api", "GET")]
    write_blueprint(TWO_NAMESPACES, [], tmp_path / "b.html", None, tmp_path / "openapi")
    files = {p.name: json.loads(p.read_text()) for p in (tmp_path / "openapi").iterdir()}
    assert sorted(files) == ["billing_api.openapi.json", "shop_api.openapi.json"]
    assert files["shop_api.openapi.json"]["servers"] == [{"url": "http://api.shop.svc.cluster.local"}]
    assert files["billing_api.openapi.json"]["servers"] == [{"url": "http://api.billing.svc.cluster.local"}]
    assert sorted(files["billing_api.openapi.json"]["paths"]) == ["/charge", "/x"] and list(files["shop_api.openapi.json"]["paths"]) == ["/x"]
    for doc in files.values():
        validate(doc)


def test_two_services_whose_safe_file_names_meet_get_two_files(tmp_path: Path) -> None:
    write_blueprint([endpoint("a", "GET", "/x", namespace="ns"), endpoint("ns_a", "GET", "/y", namespace=None)], [], tmp_path / "b.html",
                    None, tmp_path / "openapi")
    assert sorted(p.name for p in (tmp_path / "openapi").iterdir()) == ["ns_a-2.openapi.json", "ns_a.openapi.json"]


# --- --findings-since -----------------------------------------------------------------------------------------------

def test_duration_s_reads_durations_and_rejects_others() -> None:
    import argparse

    from deploy.blueprint import duration_s

    assert [duration_s(t) for t in ("24h", "90m", "7d", "1h30m", "45s", "90", "0.5h", "all")] == [86400, 5400, 604800, 5400, 45, 90, 1800, None]
    for bad in ("", "h", "1x", "1h30", "-1h", "24 h"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a duration"):
            duration_s(bad)


def _topic_reads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> dict[str, float | None]:
    """Run ``kubeward blueprint`` with the topic reader replaced: topic -> the ``since`` it was read from."""
    import deploy.blueprint as blueprint
    from deploy.cli import main

    reads: dict[str, float | None] = {}

    def fake_read_topic(bootstrap: str, topic: str, what: str, credentials: Path | None = None, timeout_s: float = 30.0,
                        since: float | None = None) -> tuple[list[Any], int]:
        reads[topic] = since
        return [], 0

    monkeypatch.setattr(blueprint, "read_topic", fake_read_topic)
    assert main(["blueprint", "--out", str(tmp_path / "b.html"), *argv]) == 0
    return reads


def test_the_findings_topic_is_read_from_24_hours_ago_by_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import time

    before = time.time()
    reads = _topic_reads(monkeypatch, tmp_path)
    assert reads["api.inventory.v1"] is None  # compacted: always whole
    assert before - 86400 - 1 <= (reads["security.findings.v1"] or 0) <= time.time() - 86400
    assert "of the last 24 h" in (tmp_path / "b.html").read_text()


def test_findings_since_bounds_the_findings_topic(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import time

    reads = _topic_reads(monkeypatch, tmp_path, "--findings-since", "2h")
    assert abs((reads["security.findings.v1"] or 0) - (time.time() - 7200)) < 5
    assert _topic_reads(monkeypatch, tmp_path, "--findings-since", "all")["security.findings.v1"] is None


def test_findings_since_leaves_jsonl_findings_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    old = finding({"service": "orders"}).model_copy(update={"time": 1000})
    (tmp_path / "f.jsonl").write_text(old.model_dump_json() + "\n")
    reads = _topic_reads(monkeypatch, tmp_path, "--findings", str(tmp_path / "f.jsonl"), "--findings-since", "1h")
    assert "security.findings.v1" not in reads and "1 findings" in (tmp_path / "b.html").read_text()


def test_findings_since_is_in_the_help_and_a_bad_value_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    from deploy.cli import main

    with pytest.raises(SystemExit):
        main(["blueprint", "--help"])
    assert "--findings-since DURATION" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["blueprint", "--findings-since", "soon"])
    assert exited.value.code == 2 and "not a duration" in capsys.readouterr().err
