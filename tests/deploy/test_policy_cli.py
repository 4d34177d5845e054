"""``kubeward policy set|show|apply`` without a broker: the topic is an in-memory list of records.

``read_policy`` and ``publish_policy`` are the only Kafka I/O of ``deploy.policy``;
they are replaced by a fake topic that answers as a follower would
(``ingest.policyfile.PolicyTracker``), so these tests run what the commands
compute, print and refuse. The same commands against the real broker run in
``tests/integration/test_policy.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kafka.errors import KafkaTimeoutError

import deploy.policy as cli
from ingest import Policy
from ingest.policyfile import PolicyTracker, encode_snapshot


class FakeTopic:
    """Records of enforcement.policy.v1, in order."""

    def __init__(self) -> None:
        self.records: list[tuple[bytes, bytes]] = []

    def read(self, bootstrap: str, name: str = "default", timeout_s: float = 10.0) -> Policy | None:
        tracker = PolicyTracker(Policy(name=name))
        for key, value in self.records:
            tracker.offer(key, value)
        return tracker.policy if tracker.from_topic else None

    def publish(self, bootstrap: str, policy: Policy, timeout_s: float = 10.0) -> None:
        self.records.append(encode_snapshot(policy))


@pytest.fixture
def topic(monkeypatch: pytest.MonkeyPatch) -> FakeTopic:
    fake = FakeTopic()
    monkeypatch.setattr(cli, "read_policy", fake.read)
    monkeypatch.setattr(cli, "publish_policy", fake.publish)
    return fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["policy", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_set_starts_from_the_default_bumps_the_version_and_prints_what_it_published(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "set", "--mode", "enforce", "--namespace", "shop")
    assert code == 0
    published = Policy.model_validate_json(topic.records[-1][1])
    assert Policy.model_validate_json(out) == published
    assert (published.version, published.modes, published.default_mode) == ("2", {"shop": "enforce"}, "observe")
    assert topic.records[-1][0] == b"default" and "version 2" in err


def test_each_set_builds_on_the_snapshot_in_force(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "set", "--mode", "enforce", "--namespace", "shop")
    run(capsys, "set", "--mode", "observe", "--service", "shop/orders")
    run(capsys, "set", "--mode", "enforce")
    current = topic.read("")
    assert current is not None and current.version == "4"
    assert current.modes == {"shop": "enforce", "shop/orders": "observe"} and current.default_mode == "enforce"
    code, out, _ = run(capsys, "set", "--inherit", "--service", "shop/orders")
    assert code == 0 and Policy.model_validate_json(out).modes == {"shop": "enforce"}


def test_set_for_another_policy_name_leaves_the_default_alone(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "set", "--mode", "enforce", "--name", "edge")
    assert topic.read("", "edge") is not None and topic.read("", "default") is None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (("set", "--mode", "enforce", "--service", "shop"), "--service='shop'"),
        (("set", "--mode", "enforce", "--namespace", "shop/orders"), "--namespace='shop/orders'"),
        (("set", "--mode", "enforce", "--namespace", "Shop_Floor"), "'Shop_Floor'"),
        (("set", "--inherit"), "default mode cannot be removed"),
    ],
)
def test_bad_targets_are_refused_naming_the_value(topic: FakeTopic, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], named: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2 and named in err and topic.records == []


def test_a_mode_typo_is_refused_by_the_parser(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["policy", "set", "--mode", "enforced", "--namespace", "shop"])
    assert exit_.value.code == 2 and "'enforced'" in capsys.readouterr().err and topic.records == []


def test_dry_run_publishes_nothing(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "set", "--mode", "enforce", "--namespace", "shop", "--dry-run")
    assert code == 0 and Policy.model_validate_json(out).modes == {"shop": "enforce"} and "would publish" in err
    assert topic.records == []


def test_show_prints_the_snapshot_in_force_or_says_there_is_none(topic: FakeTopic, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show")
    assert code == 0 and Policy.model_validate_json(out) == Policy() and "no snapshot" in err
    run(capsys, "set", "--mode", "enforce", "--namespace", "shop")
    _, out, err = run(capsys, "show")
    assert Policy.model_validate_json(out).modes == {"shop": "enforce"} and "version 2 in force" in err


POLICY_YAML = """\
# what the cluster should do
default_mode: observe
modes:
  shop: enforce
  shop/orders: observe
verdict_ttl_s: 600
"""


def test_apply_publishes_a_file_as_the_next_version(topic: FakeTopic, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "set", "--mode", "enforce")  # version 2 in force
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY_YAML)
    code, out, _ = run(capsys, "apply", "-f", str(path))
    published = Policy.model_validate_json(out)
    assert code == 0 and published == topic.read("")
    assert (published.version, published.default_mode, published.verdict_ttl_s) == ("3", "observe", 600.0)
    assert published.modes == {"shop": "enforce", "shop/orders": "observe"}


def test_what_show_prints_can_be_applied_back(topic: FakeTopic, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "set", "--mode", "enforce", "--namespace", "shop")
    _, out, _ = run(capsys, "show")
    path = tmp_path / "policy.json"
    path.write_text(out.replace('"shop": "enforce"', '"shop": "observe"'))
    code, out, _ = run(capsys, "apply", "-f", str(path))
    assert code == 0 and Policy.model_validate_json(out).modes == {"shop": "observe"} and topic.read("").version == "3"  # type: ignore[union-attr]


def test_apply_refuses_a_file_edited_from_an_older_version(topic: FakeTopic, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run(capsys, "set", "--mode", "enforce", "--namespace", "shop")
    _, shown, _ = run(capsys, "show")
    run(capsys, "set", "--mode", "enforce", "--namespace", "blog")  # someone else moves the topic on
    path = tmp_path / "policy.json"
    path.write_text(shown)
    code, _, err = run(capsys, "apply", "-f", str(path))
    assert code == 2 and "edited from version 2" in err and "holds version 3" in err and len(topic.records) == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("defualt_mode: enforce\n", "policy.yaml:1: unknown key 'defualt_mode'='enforce'"),
        ("modes:\n  shop: enforced\n", "policy.yaml:2: modes.shop='enforced'"),
        ("modes:\n  shop: on\n", "modes.shop=True"),
        ("modes:\n  Shop Floor: enforce\n", "policy.yaml:2: modes key 'Shop Floor'"),
        ("default_mode: enforce\ndefault_mode: observe\n", "policy.yaml:2: duplicate key 'default_mode'"),
        ("verdict_ttl_s: soon\n", "verdict_ttl_s='soon'"),
        ("version: 2.5\n", "version=2.5"),
        ("- enforce\n", "must be a mapping"),
    ],
)
def test_apply_rejects_a_bad_file_naming_key_and_value_and_publishes_nothing(
    topic: FakeTopic, capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, named: str
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    code, out, err = run(capsys, "apply", "-f", str(path))
    assert code == 2 and named in err and out == "" and topic.records == []


def test_apply_reads_json_and_rejects_its_duplicate_keys(topic: FakeTopic, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"default_mode": "enforce", "modes": {"shop": "observe"}}))
    assert run(capsys, "apply", "-f", str(path))[0] == 0
    path.write_text('{"default_mode": "enforce", "default_mode": "observe"}')
    code, _, err = run(capsys, "apply", "-f", str(path))
    assert code == 2 and "duplicate key 'default_mode'" in err and len(topic.records) == 1


def test_an_unreachable_broker_is_reported_with_its_address(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def unreachable(*args: object, **kwargs: object) -> None:
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    monkeypatch.setattr(cli, "read_policy", unreachable)
    code, out, err = run(capsys, "show", "--bootstrap", "127.0.0.1:1")
    assert code == 1 and out == "" and "Kafka at 127.0.0.1:1" in err and "Unable to bootstrap" in err


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        ("", "Most specific wins"),
        ("set", "Without --namespace or --service the default mode changes"),
        ("apply", "Unknown or duplicate keys and bad values are rejected"),
        ("show", "valid input for 'apply -f'"),
    ],
)
def test_every_command_explains_itself(capsys: pytest.CaptureFixture[str], command: str, phrase: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["policy", *([command] if command else []), "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0 and phrase in out
    assert command == "" or "--bootstrap BOOTSTRAP" in out


def test_policy_without_a_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys)
    assert code == 2 and "enforcement.policy.v1" in out and "kubeward policy set --mode enforce --namespace shop" in out
