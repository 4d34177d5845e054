"""ingest.config.build_settings: settings errors name the key and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from enforcement.settings import ShimSettings
from ingest import IngestError, Policy, SettingsError
from ingest.config import build_settings
from streams.settings import WorkerSettings


@pytest.mark.parametrize("cls", [WorkerSettings, ShimSettings])
def test_defaults_build_without_environment(cls: type[BaseSettings]) -> None:
    settings = build_settings(cls)
    assert isinstance(settings, cls)
    assert settings.policy == Policy()  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("cls", "env", "value", "key_shown"),
    [
        (WorkerSettings, "KUBEWARD_WORKER_WEB_PORT", "not-a-port", "KUBEWARD_WORKER_WEB_PORT='not-a-port'"),
        (WorkerSettings, "KUBEWARD_WORKER_WEB_PORT", "70000", "KUBEWARD_WORKER_WEB_PORT='70000'"),
        (WorkerSettings, "KUBEWARD_WORKER_SCORE_THRESHOLD", "0", "KUBEWARD_WORKER_SCORE_THRESHOLD='0'"),
        (WorkerSettings, "KUBEWARD_WORKER_POLICY__DEFAULT_MODE", "block", "KUBEWARD_WORKER_POLICY__DEFAULT_MODE='block'"),
        (WorkerSettings, "KUBEWARD_WORKER_POLICY__VERDICT_TTL_S", "-5", "KUBEWARD_WORKER_POLICY__VERDICT_TTL_S='-5'"),
        (ShimSettings, "KUBEWARD_SHIM_FAILURE_MODE", "maybe", "KUBEWARD_SHIM_FAILURE_MODE='maybe'"),
        (ShimSettings, "KUBEWARD_SHIM_REPORT", "some", "KUBEWARD_SHIM_REPORT='some'"),
        (ShimSettings, "KUBEWARD_SHIM_PORT", "-1", "KUBEWARD_SHIM_PORT='-1'"),
        (ShimSettings, "KUBEWARD_SHIM_POLICY__THROTTLE_BURST", "zero", "KUBEWARD_SHIM_POLICY__THROTTLE_BURST='zero'"),
    ],
)
def test_a_bad_env_value_names_key_and_value(monkeypatch: pytest.MonkeyPatch, cls: type[BaseSettings], env: str, value: str, key_shown: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        build_settings(cls)
    message = str(info.value)
    assert message.startswith(f"invalid {cls.__name__}: ")
    assert key_shown in message


def test_every_bad_value_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_PORT", "x")
    monkeypatch.setenv("KUBEWARD_SHIM_FAILURE_MODE", "y")
    with pytest.raises(SettingsError) as info:
        build_settings(ShimSettings)
    assert "KUBEWARD_SHIM_PORT='x'" in str(info.value) and "KUBEWARD_SHIM_FAILURE_MODE='y'" in str(info.value)


def test_a_bad_override_names_key_and_value() -> None:
    with pytest.raises(SettingsError, match=r"KUBEWARD_WORKER_WINDOW_S=0: "):
        build_settings(WorkerSettings, window_s=0)


def test_an_unknown_override_is_rejected() -> None:
    with pytest.raises(SettingsError, match=r"KUBEWARD_SHIM_PROT=1: Extra inputs are not permitted"):
        build_settings(ShimSettings, prot=1)


def test_settings_error_is_an_ingest_error() -> None:
    assert issubclass(SettingsError, IngestError)


def test_good_env_values_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_WORKER_WINDOW_S", "30")
    monkeypatch.setenv("KUBEWARD_WORKER_DETECTORS", '["bola_breadth", "auth_failures"]')
    monkeypatch.setenv("KUBEWARD_WORKER_POLICY__DEFAULT_MODE", "enforce")
    monkeypatch.setenv("KUBEWARD_WORKER_POLICY__MODES", '{"shop/orders": "observe"}')
    monkeypatch.setenv("KUBEWARD_WORKER_VERDICT_KEY", "s3cret")
    settings = build_settings(WorkerSettings)
    assert settings.window_s == 30
    assert settings.detectors == ["bola_breadth", "auth_failures"]
    assert settings.policy.default_mode == "enforce"
    assert settings.policy.mode_for("shop", "orders") == "observe"
    assert settings.verdict_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_good_shim_overrides_work(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    settings = build_settings(ShimSettings, port=0, failure_mode="deny", rules_path=rules, policy={"default_mode": "enforce"})
    assert (settings.port, settings.failure_mode, settings.rules_path) == (0, "deny", rules)
    assert settings.policy.default_mode == "enforce"


def test_keyword_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_PORT", "8080")
    assert build_settings(ShimSettings).port == 8080
    assert build_settings(ShimSettings, port=9000).port == 9000


def test_other_prefixes_are_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_WINDOW_S", "5")  # a shim variable, not the worker's
    monkeypatch.setenv("WINDOW_S", "5")
    assert build_settings(WorkerSettings).window_s == 60


def test_settings_are_frozen() -> None:
    settings = build_settings(WorkerSettings)
    with pytest.raises(Exception, match="frozen"):
        settings.window_s = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("env", "value"),
    [("KUBEWARD_WORKER_DETECTORS", "bola_breadth,auth_failures"), ("KUBEWARD_WORKER_POLICY__MODES", "shop=enforce")],
)
def test_an_undecodable_complex_env_value_is_a_settings_error(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError) as info:
        build_settings(WorkerSettings)
    assert env in str(info.value) and value in str(info.value)


def test_an_unknown_detector_name_is_a_settings_error() -> None:
    with pytest.raises(SettingsError, match="KUBEWARD_WORKER_DETECTORS"):
        build_settings(WorkerSettings, detectors=["bola_breadth", "no_such_detector"])


def test_state_buckets_must_be_a_power_of_two() -> None:
    with pytest.raises(SettingsError, match="KUBEWARD_WORKER_STATE_BUCKETS=3"):
        build_settings(WorkerSettings, state_buckets=3)


def test_an_unknown_variable_is_rejected_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_FAILUR_MODE", "deny")  # misspelt: the default would stay in force silently
    with pytest.raises(SettingsError, match=r"KUBEWARD_SHIM_FAILUR_MODE='deny': no such setting"):
        build_settings(ShimSettings)


def test_nested_and_known_variables_are_not_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEWARD_SHIM_FAST_TIER__ENABLED", "false")
    monkeypatch.setenv("KUBEWARD_SHIM_PORT", "9999")
    monkeypatch.setenv("KUBEWARD_WORKER_PROT", "1")  # another component's prefix
    assert build_settings(ShimSettings).port == 9999
