"""Argo CD's view of DocModels (argocd/): the health script, run by gopher-lua as Argo CD runs it,
says what health_test.yaml expects for every kind of status; the argocd-cm snippet carries the
same script; the example Application orders its sync waves and ignores what the operator
writes."""

from __future__ import annotations

import json
import subprocess
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from docmodel import api

from testkit.chartlib import ARGOCD, HEALTH, binary, one, render

CASES = yaml.safe_load((HEALTH / "health_test.yaml").read_text())["tests"]


def health(obj_path: Path, script: Path = HEALTH / "health.lua", *flags: str) -> dict[str, Any]:
    """What the script returns for the object, as Argo CD reads it."""
    result = subprocess.run(
        [str(binary("argocd-health", "argocd-health")), *flags, str(script), str(obj_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def _load(path: str) -> dict[str, Any]:
    obj: dict[str, Any] = yaml.safe_load((HEALTH / path).read_text())
    return obj


@pytest.mark.parametrize("case", CASES, ids=lambda case: Path(case["inputPath"]).stem)
def test_health_script_gives_the_expected_status(case: dict[str, Any]) -> None:
    assert health(HEALTH / case["inputPath"]) == case["healthStatus"]


def test_cases_cover_every_phase_and_the_edge_cases() -> None:
    objs = {case["inputPath"]: _load(case["inputPath"]) for case in CASES}
    listed = set(objs)
    on_disk = {f"testdata/{p.name}" for p in (HEALTH / "testdata").glob("*.yaml")}
    assert listed == on_disk, "every testdata file is a case in health_test.yaml, and only those"
    phases = {(obj.get("status") or {}).get("phase") for obj in objs.values()}
    assert set(typing.get_args(api.Phase)) <= phases, "a case for every phase"
    assert any("status" not in obj for obj in objs.values()), "a DocModel with no status yet"
    assert any(
        obj.get("status", {}).get("observedGeneration", 0) < obj["metadata"]["generation"]
        for obj in objs.values()
    ), "a status behind the spec's generation"
    statuses = {case["healthStatus"]["status"] for case in CASES}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: Path(case["inputPath"]).stem)
def test_every_case_is_a_valid_docmodel(case: dict[str, Any]) -> None:
    """The script reads the fields the API defines: each object, status included, parses."""
    api.parse_docmodel(_load(case["inputPath"]))


def test_runner_opens_only_what_argo_cd_opens(tmp_path: Path) -> None:
    """A script from argocd-cm gets the base and table libraries, not string: the same script
    fails here unless the libraries are opened (Argo CD's useOpenLibs)."""
    script = tmp_path / "health.lua"
    script.write_text('return {status = string.format("%s", "Healthy"), message = "m"}')
    obj = HEALTH / "testdata" / "ready.yaml"
    closed = subprocess.run(
        [str(binary("argocd-health", "argocd-health")), str(script), str(obj)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert closed.returncode == 1 and "format" in closed.stderr, closed.stderr
    assert health(obj, script, "-open-libs") == {"status": "Healthy", "message": "m"}
    script.write_text('return {status = "Fine"}')
    assert health(obj, script)["status"] == "Unknown"  # as Argo CD treats an unknown code


def test_argocd_cm_snippet_carries_the_script() -> None:
    snippet = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert snippet["metadata"] == {"name": "argocd-cm", "namespace": "argocd"}
    key = "resource.customizations.health.docmodel.dev_DocModel"
    assert snippet["data"][key] == (HEALTH / "health.lua").read_text()


def _application() -> dict[str, Any]:
    app: dict[str, Any] = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    return app


def test_application_syncs_the_crd_before_the_operator_before_docmodels() -> None:
    app = _application()
    chart_source, docmodel_source = app["spec"]["sources"]
    assert chart_source["path"] == "charts/docmodel-operator"
    docs = render(chart_source["helm"]["valuesObject"], release=chart_source["helm"]["releaseName"])

    def wave(obj: dict[str, Any]) -> int:
        annotations = obj["metadata"].get("annotations") or {}
        return int(annotations.get("argocd.argoproj.io/sync-wave", "0"))

    crd = one(docs, "CustomResourceDefinition")
    assert wave(crd) < wave(one(docs, "Deployment")) == 0
    assert "Prune=false" in crd["metadata"]["annotations"]["argocd.argoproj.io/sync-options"]
    docmodels = sorted((ARGOCD.parent / docmodel_source["path"]).glob("*.yaml"))
    assert docmodels
    for path in docmodels:
        obj = yaml.safe_load(path.read_text())
        api.parse_docmodel(obj)
        assert wave(obj) > 0, f"{path.name} must sync after the operator"
    options = app["spec"]["syncPolicy"]["syncOptions"]
    assert "SkipDryRunOnMissingResource=true" in options


def test_application_ignores_what_the_operator_and_the_api_server_write() -> None:
    ignored = {
        (rule["group"], rule["kind"]): rule["jsonPointers"]
        for rule in _application()["spec"]["ignoreDifferences"]
    }
    assert ignored[("docmodel.dev", "DocModel")] == ["/status"]
    assert ignored[("apiextensions.k8s.io", "CustomResourceDefinition")] == ["/status"]
