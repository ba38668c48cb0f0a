"""The Go tool families: how their cache directory is keyed, Helm's version flags, and which
families the dev environment itself needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel_devenv import build


def test_a_familys_own_go_sources_key_its_cache_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build, "TOOLS_DIR", tmp_path)
    module = tmp_path / "runner"
    module.mkdir()
    (module / "go.mod").write_text(
        "module example.test/runner\n\nrequire github.com/yuin/gopher-lua v1.1.1\n"
    )
    (module / "go.sum").write_text("github.com/yuin/gopher-lua v1.1.1 h1:x\n")
    family = build.Family("runner", "github.com/yuin/gopher-lua", ("example.test/runner",))
    without_code = family.go_sum_hash()
    (module / "main.go").write_text("package main\n\nfunc main() {}\n")
    with_code = family.go_sum_hash()
    (module / "main.go").write_text("package main\n\nfunc main() { println() }\n")
    assert len({without_code, with_code, family.go_sum_hash()}) == 3
    assert family.bin_dir().name == f"runner-v1.1.1-{family.go_sum_hash()}"


def test_helm_reports_its_version_and_the_kubernetes_version_of_its_client_go() -> None:
    helm = build.FAMILIES["helm"]
    client_go = helm.required_version("k8s.io/client-go")
    assert client_go is not None and client_go.startswith("v0.")
    flags = helm.resolved_ldflags()
    assert f"-X helm.sh/helm/v3/internal/version.version={helm.version()}" in flags
    minor = client_go.split(".")[1]
    assert f"-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={minor}" in flags


def test_the_dev_environment_requires_only_its_own_families() -> None:
    needed = {name for name, family in build.FAMILIES.items() if family.devenv}
    assert needed == {"kubernetes", "etcd", "kwok", "minio"}
    assert not build.FAMILIES["helm"].devenv and not build.FAMILIES["argocd-health"].devenv
