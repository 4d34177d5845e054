"""deploy.runtime.kube and kubebuild without building or running anything: cache location, go.mod rewriting, missing go."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.runtime import kube, kubebuild

_UPSTREAM = """module k8s.io/kubernetes

go 1.26.0

require k8s.io/api v0.0.0

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/apimachinery => ./staging/src/k8s.io/apimachinery
\tgithub.com/some/fork v1.2.3 => github.com/other/fork v1.2.4
)

replace go.etcd.io/etcd/api/v3 => ../api
"""


def test_cache_dir_follows_xdg_cache_home_and_names_both_versions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kube.cache_dir() == tmp_path / "kubeward" / "kube" / f"v{kube.KUBE_VERSION}-etcd{kube.ETCD_VERSION}-b{kubebuild._BUILD}"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert kube.cache_dir().parent == Path.home() / ".cache" / "kubeward" / "kube"


def test_only_local_replaces_are_remapped_to_published_versions() -> None:
    replaced = kubebuild._local_replaces(_UPSTREAM)
    assert replaced == ["k8s.io/api", "k8s.io/apimachinery", "go.etcd.io/etcd/api/v3"]
    wrapper = kubebuild._wrapper_go_mod("kube-apiserver", "k8s.io/kubernetes", "v1.37.2", replaced, "v0.37.2")
    assert "require k8s.io/kubernetes v1.37.2" in wrapper
    assert "\tk8s.io/apimachinery => k8s.io/apimachinery v0.37.2" in wrapper and "other/fork" not in wrapper


def test_existing_binaries_are_reused_without_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    for name in ("etcd", "kube-apiserver"):
        (tmp_path / "bin" / name).write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert kube.ensure_binaries(tmp_path) == tmp_path / "bin"


def test_a_missing_go_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(kube.KubeError, match="`go` not found on PATH.*install Go"):
        kube.ensure_binaries(tmp_path)


def test_kube_apiserver_is_linked_with_its_release_version() -> None:
    ldflags = kubebuild._TARGETS["kube-apiserver"][4]
    assert f"-X k8s.io/component-base/version.gitVersion=v{kube.KUBE_VERSION}" in ldflags
    assert f"version.gitMinor={kube.KUBE_VERSION.split('.')[1]} " in ldflags + " " and kubebuild._TARGETS["etcd"][4] == ""
