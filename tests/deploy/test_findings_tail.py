"""deploy.findingview (what ``kubeward findings tail`` filters and prints) and the command's parser, without Kafka."""

from __future__ import annotations

import json

import pytest

from deploy.cli import build_parser
from deploy.findingview import TABLE_HEADER, FindingFilter, decode, json_line, parse_severity, row, table_row
from ingest import Policy, Reason
from streams.exposure import exposure_finding
from streams.policy import decide, to_finding
from streams.processor import Detection

T0 = 1_700_000_000.0


def _finding(attack_class: str = "bola", actor: str = "shop/web|mallory", score: float = 0.8, namespace: str = "shop", kind: str = "actor") -> object:
    det = Detection(actor, attack_class, score, (Reason(detector="r", score=score, evidence="e"),), T0, namespace, "orders", {}, subject_kind=kind)
    return to_finding(det, decide(det, Policy(), T0, b"k"))


@pytest.mark.parametrize(("text", "value"), [("high", 4), ("HIGH", 4), ("critical", 5), ("info", 1), ("3", 3)])
def test_severity_by_name_or_id(text: str, value: int) -> None:
    assert parse_severity(text) == value


def test_an_unknown_severity_lists_the_names() -> None:
    with pytest.raises(ValueError, match="high"):
        parse_severity("severe")


def test_filters_by_severity_class_owasp_technique_namespace_and_actor() -> None:
    bola, creds = _finding("bola", score=0.8), _finding("credential_abuse", actor="10.0.0.9", score=0.55, namespace="auth", kind="ip")
    assert FindingFilter().matches(bola) and FindingFilter().matches(creds)
    assert [FindingFilter(min_severity=4).matches(f) for f in (bola, creds)] == [True, False]  # 0.8 High, 0.55 Low
    for wanted in ("bola", "API1:2023", "api1", "T1190"):
        assert FindingFilter(classes=(wanted,)).matches(bola) and not FindingFilter(classes=(wanted,)).matches(creds), wanted
    assert FindingFilter(classes=("API2", "bola")).matches(creds)
    assert [FindingFilter(namespace="auth").matches(f) for f in (bola, creds)] == [False, True]
    assert FindingFilter(namespace="shop").matches(_finding(namespace="payments"))  # the calling workload's namespace
    assert [FindingFilter(actor="mallory").matches(f) for f in (bola, creds)] == [True, False]
    assert FindingFilter(actor="10.0.0.9").matches(creds)


def test_an_endpoint_finding_has_its_endpoint_for_actor() -> None:
    finding = exposure_finding("accounts", "GET", "/users/{id}", "user.password_hash", T0)
    assert FindingFilter(actor="/users/{id}", classes=("API3",)).matches(finding)
    assert row(finding)[4] == "accounts GET /users/{id}" and row(finding)[5] == "accounts"


def test_the_table_row_and_json_line() -> None:
    finding = _finding()
    cells = row(finding)
    assert cells == ("2023-11-14T22:13:20Z", "High", "bola", "API1:2023", "shop/web|mallory", "shop/orders", "1", "bola detected")
    line = table_row(finding)
    assert line.startswith("2023-11-14T22:13:20Z") and line.endswith("bola detected") and TABLE_HEADER.startswith("TIME")
    assert json.loads(json_line(finding))["finding_info"]["uid"] == finding.finding_info.uid  # type: ignore[attr-defined]
    assert decode(json_line(finding).encode()) == finding and decode(b"{}") is None and decode(None) is None


def test_the_subcommand_parses_every_option() -> None:
    args = build_parser().parse_args(["findings", "tail", "--bootstrap", "b:1", "--from-beginning", "--max", "3", "--severity", "high",
                                      "--class", "API1", "--class", "bola", "--namespace", "shop", "--actor", "mallory", "--output", "json"])
    assert (args.bootstrap, args.from_beginning, args.follow, args.max, args.severity) == ("b:1", True, False, 3, "high")
    assert (args.classes, args.namespace, args.actor, args.output) == (["API1", "bola"], "shop", "mallory", "json")


def test_help_explains_the_filters(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["findings", "tail", "--help"])
    text = capsys.readouterr().out
    assert "--severity" in text and "OWASP" in text and "activity Create" in text and "--from-beginning" in text
