"""ingest.policyfile: strict file loading, snapshot checks, the next snapshot, and which snapshot wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import Policy
from ingest.errors import SettingsError
from ingest.policyfile import (
    LoadedPolicy,
    PolicyTracker,
    check_target,
    decode_snapshot,
    encode_snapshot,
    load_policy_file,
    next_snapshot,
    parse_policy,
    with_mode,
)


def record(version: int, **fields: object) -> tuple[bytes, bytes]:
    return encode_snapshot(Policy(version=str(version), **fields))  # type: ignore[arg-type]


# ------------------------------------------------------------------ which snapshot wins


def test_the_first_topic_snapshot_replaces_the_settings_policy_whatever_its_version() -> None:
    tracker = PolicyTracker(Policy(version="7", default_mode="enforce"))
    update = tracker.offer(*record(2))
    assert update.result == "applied" and tracker.policy.version == "2" and tracker.from_topic


def test_then_only_a_version_at_least_the_applied_one_applies() -> None:
    tracker = PolicyTracker(Policy())
    tracker.offer(*record(3, default_mode="enforce"))
    assert tracker.offer(*record(2)).result == "stale"
    assert tracker.offer(*record(3, default_mode="enforce")).result == "unchanged"
    # the same version written again later wins, as compaction keeps the later record
    assert tracker.offer(*record(3, modes={"shop": "enforce"})).result == "applied"
    assert tracker.offer(*record(4)).result == "applied" and tracker.version == "4"


@pytest.mark.parametrize(
    ("key", "value", "detail"),
    [
        (b"default", None, "tombstone"),
        (b"default", b"[]", "snapshot=[]: Input should be an object"),
        (b"default", b'{"version": "0"}', "version='0'"),
        (b"default", b'{"version": 2}', "version=2"),
        (b"default", b'{"modes": {"shop": "block"}}', "modes.shop='block'"),
        (b"default", b'{"verdict_ttl_s": -1}', "verdict_ttl_s=-1"),
        (None, b'{"name": "default"}', "record key None"),
    ],
)
def test_an_invalid_record_is_rejected_naming_what_is_wrong_and_the_policy_stays(key: bytes | None, value: bytes | None, detail: str) -> None:
    tracker = PolicyTracker(Policy())
    tracker.offer(*record(2, default_mode="enforce"))
    update = tracker.offer(key, value)
    assert update.result == "invalid" and detail in update.detail
    assert tracker.policy.default_mode == "enforce" and update.policy is tracker.policy


def test_records_of_other_policies_are_ignored() -> None:
    tracker = PolicyTracker(Policy(name="edge"))
    assert tracker.offer(*record(5)).result == "ignored"
    assert not tracker.from_topic and tracker.offer(*record(2, name="edge")).result == "applied"


def test_unknown_fields_on_the_wire_are_ignored_as_the_wire_contract_says() -> None:
    policy = decode_snapshot(b"default", b'{"name": "default", "version": "2", "added_in_a_later_release": 1}')
    assert policy.version == "2"


# ------------------------------------------------------------------ building the next snapshot


def test_with_mode_sets_or_removes_one_entry_and_bumps_the_version() -> None:
    base = Policy(version="4", modes={"shop": "enforce"})
    assert with_mode(base, "enforce", "shop/orders").modes == {"shop": "enforce", "shop/orders": "enforce"}
    assert with_mode(base, None, "shop").modes == {}
    changed = with_mode(base, "enforce", None)
    assert (changed.default_mode, changed.version, changed.modes) == ("enforce", "5", {"shop": "enforce"})
    with pytest.raises(SettingsError, match="default mode cannot be removed"):
        with_mode(base, None, None)


@given(
    namespace=st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    service=st.none() | st.from_regex(r"[a-z][a-z0-9]{0,8}", fullmatch=True),
    mode=st.sampled_from(["observe", "enforce"]),
    default=st.sampled_from(["observe", "enforce"]),
)
def test_a_set_mode_is_the_mode_that_applies_there(namespace: str, service: str | None, mode: str, default: str) -> None:
    target = f"{namespace}/{service}" if service else namespace
    policy = with_mode(Policy(default_mode=default), mode, target)  # type: ignore[arg-type]
    assert policy.mode_for(namespace, service or "any") == mode and policy.version == "2"


def test_next_snapshot_is_one_above_the_topic_and_refuses_a_stale_edit() -> None:
    current = Policy(version="6")
    assert next_snapshot(current, LoadedPolicy(Policy(default_mode="enforce"), None)).version == "7"
    assert next_snapshot(current, LoadedPolicy(Policy(), 6)).version == "7"
    assert next_snapshot(None, LoadedPolicy(Policy(), None)).version == "2"
    with pytest.raises(SettingsError, match="edited from version 5 but the topic holds version 6"):
        next_snapshot(current, LoadedPolicy(Policy(), 5))


@pytest.mark.parametrize("target", ["shop", "shop/orders", "a-b/c-d", "x" * 63])
def test_good_targets(target: str) -> None:
    assert check_target(target) == target


@pytest.mark.parametrize("target", ["", "Shop", "shop/", "/orders", "a/b/c", "shop_1", "-shop", "x" * 64])
def test_bad_targets_are_named(target: str) -> None:
    with pytest.raises(SettingsError, match="modes key"):
        check_target(target)


# ------------------------------------------------------------------ files


def test_a_file_names_file_line_key_and_value(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: default\nmodes:\n  shop: enforce\n  blog: enforcd\n")
    with pytest.raises(SettingsError) as err:
        load_policy_file(path)
    assert str(err.value).startswith(f"{path}:4: modes.blog='enforcd'")


def test_a_file_without_version_and_with_one(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("default_mode: enforce\n")
    assert load_policy_file(path) == LoadedPolicy(Policy(default_mode="enforce"), None)
    path.write_text("default_mode: enforce\nversion: '3'\n")
    assert load_policy_file(path).based_on == 3


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read the policy file"):
        load_policy_file(tmp_path / "absent.yaml")


def test_parse_policy_rejects_a_bad_name() -> None:
    with pytest.raises(SettingsError, match="name='Prod Policy'"):
        parse_policy({"name": "Prod Policy"})
