"""The command line: every make target's command exists; rules lint reports every problem."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def test_rules_lint_passes_the_shipped_pack_and_names_each_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "lint"]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: x\n")
    assert main(["rules", "lint", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:2: rule x: missing key 'pattern'" in out


def test_every_kubeward_command_in_the_makefile_exists() -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    used = set(re.findall(r"\$\(BIN\)/kubeward (\S+)", (ROOT / "Makefile").read_text()))
    assert used and used <= commands, used - commands


@pytest.mark.parametrize("command", ["shim", "worker"])
def test_the_shim_and_worker_refuse_the_development_key_without_dev(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert "is the development key" in err and f"KUBEWARD_{command.upper()}_VERDICT_KEY" in err and "--dev" in err


def test_the_shim_refuses_the_development_key_among_its_accepted_keys(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_VERDICT_KEY", "a-real-secret")
    monkeypatch.setenv("KUBEWARD_SHIM_VERDICT_KEYS_ACCEPTED", '{"k0": "kubeward-dev-verdict-key"}')
    assert main(["shim"]) == 2
    assert "(or an accepted key) is the development key" in capsys.readouterr().err


def test_a_lift_is_signed_with_the_workers_key_and_refuses_the_development_key(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.policy import signing_keys
    from ingest import Subject, Verdict
    from ingest.signing import VerdictKeys

    assert main(["policy", "lift", "ip:10.0.0.9", "--bootstrap", "127.0.0.1:1"]) == 2
    assert "KUBEWARD_WORKER_VERDICT_KEY is unset" in capsys.readouterr().err
    assert main(["policy", "lift", "nonsense", "--dev"]) == 2
    assert "expected <kind>:<value>" in capsys.readouterr().err
    monkeypatch.setenv("KUBEWARD_WORKER_VERDICT_KEY", "s3cret")
    monkeypatch.setenv("KUBEWARD_WORKER_VERDICT_KEY_ID", "k7")
    lift = signing_keys().sign(Verdict(id="l", subject=Subject(kind="ip", value="10.0.0.9"), action="lift", expires_at=2.0, issued_at=1.0, evidence_time=1.0))
    assert lift.key_id == "k7" and VerdictKeys("k7", {"k7": b"s3cret"}).verify(lift)
