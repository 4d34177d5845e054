"""fetch_jars names the missing tool instead of failing obscurely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from deploy.runtime import broker


@pytest.mark.parametrize("missing", [("java",), ("mvn",), ("java", "mvn")])
def test_fetch_jars_names_missing_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        missing: tuple[str, ...]) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda tool, *a, **kw: None if tool in missing else real_which(tool, *a, **kw))
    with pytest.raises(broker.BrokerError) as excinfo:
        broker.fetch_jars(cache_dir=tmp_path)
    message = str(excinfo.value)
    for tool in missing:
        assert tool in message.split(" not found")[0]
    assert "apt-get install openjdk-17-jre-headless maven" in message
    assert not (tmp_path / "libs").exists()


def test_fetch_jars_with_empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(broker.BrokerError, match=r"java and mvn not found on PATH"):
        broker.fetch_jars(cache_dir=tmp_path / "cache")


def test_fetch_jars_is_a_no_op_when_jars_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "kafka_2.13-4.1.2.jar").touch()
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert broker.fetch_jars(cache_dir=tmp_path) == tmp_path / "libs"
