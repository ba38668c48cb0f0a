"""The DocModel API: models, CRD, examples and the shared invalid-spec list agree."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from docmodel import api, crd

from testkit.invalid_specs import ROOT, load_cases

CRD_PATH = ROOT / "crds" / crd.CRD_FILENAME
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def _schema() -> dict[str, Any]:
    return _crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_structural_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Default a value the way the API server does (absent fields get `default`, recursively)."""
    if schema.get("type") == "object" and isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name not in value and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            if name in value:
                value[name] = apply_structural_defaults(child, value[name])
    elif schema.get("type") == "array" and isinstance(value, list):
        return [apply_structural_defaults(schema["items"], item) for item in value]
    return value


def test_committed_crd_matches_models() -> None:
    assert CRD_PATH.read_text() == crd.render_yaml(), "run `python -m docmodel.crd`"


def test_crd_has_status_printer_columns_and_short_name() -> None:
    loaded = _crd()
    version = loaded["spec"]["versions"][0]
    assert loaded["spec"]["names"]["shortNames"] == ["dm"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    for expected in ("Phase", "Candidate", "Baseline", "Serving", "Endpoint", "Age"):
        assert expected in columns
    assert loaded["metadata"]["name"] == "docmodels.docmodel.dev"


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        out += _walk(child, f"{path}.{name}")
    if "items" in schema:
        out += _walk(schema["items"], f"{path}[]")
    return out


def test_every_spec_field_has_a_description() -> None:
    spec = _schema()["properties"]["spec"]
    missing = [p for p, node in _walk(spec, "spec") if not node.get("description")]
    missing = [p for p in missing if not p.endswith("[]")]
    assert missing == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(example: Path) -> None:
    model = api.parse_docmodel(yaml.safe_load(example.read_text()))
    assert model.spec.source.bucket == "acme-docs"


def test_complete_example_sets_every_spec_field() -> None:
    complete = yaml.safe_load((ROOT / "examples" / "complete.yaml").read_text())
    spec_schema = _schema()["properties"]["spec"]

    def unset(schema: dict[str, Any], value: Any, path: str) -> list[str]:
        missing = []
        for name, child in schema.get("properties", {}).items():
            if name not in value:
                missing.append(f"{path}.{name}")
            elif child.get("type") == "object" and "properties" in child:
                missing += unset(child, value[name], f"{path}.{name}")
        return missing

    assert unset(spec_schema, complete["spec"], "spec") == []


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_model_defaults_equal_crd_defaults(example: Path) -> None:
    manifest = yaml.safe_load(example.read_text())
    by_server = apply_structural_defaults(_schema()["properties"]["spec"], manifest["spec"])
    by_models = api.spec_to_wire(api.parse_docmodel(manifest).spec)
    assert by_server == by_models


def test_defaults_are_the_product_defaults() -> None:
    spec = api.parse_spec({"source": {"bucket": "docs"}})
    assert spec.base_model.name == "meta-llama/Llama-3.1-8B-Instruct"
    assert spec.training.method == "qlora"
    assert spec.training.resources.gpu == 1
    assert spec.evaluation.baseline.retriever == "Hybrid"
    assert spec.evaluation.baseline.embedding_model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert spec.dataset.generator == "extractive"


def test_invalid_case_list_is_large_enough() -> None:
    assert len(load_cases()) >= 15


@pytest.mark.parametrize("case", load_cases(), ids=lambda c: c.id)
def test_invalid_spec_is_rejected_naming_the_field(case: Any) -> None:
    with pytest.raises(api.SpecError) as info:
        api.parse_docmodel(case.manifest)
    paths = [path for path, _ in info.value.errors]
    assert case.field in paths, f"{case.id}: expected {case.field} in {paths}"
    assert case.field in str(info.value)


def test_cron_values_are_checked_beyond_their_shape() -> None:
    with pytest.raises(api.SpecError, match=r"spec\.retraining\.schedule"):
        api.parse_spec({"source": {"bucket": "docs"}, "retraining": {"schedule": "61 * * * *"}})
    assert (
        api.parse_spec(
            {"source": {"bucket": "docs"}, "retraining": {"schedule": "@daily"}}
        ).retraining.schedule
        == "@daily"
    )


def test_name_rule_matches_models() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    manifest["metadata"]["name"] = "x" * 41
    with pytest.raises(api.SpecError, match=r"metadata\.name"):
        api.parse_docmodel(manifest)
    rule = _schema()["x-kubernetes-validations"][0]["rule"]
    assert "size() <= 40" in rule


def test_cel_rules_come_from_the_python_rules() -> None:
    rules = [
        r["rule"] for _, node in _walk(_schema()) for r in node.get("x-kubernetes-validations", [])
    ]
    for rule in api.RULES:
        assert rule.cel in rules


@pytest.mark.parametrize(
    ("value", "seconds"), [("10m", 600), ("1h30m", 5400), ("45s", 45), ("2h", 7200)]
)
def test_duration_seconds(value: str, seconds: int) -> None:
    assert api.duration_seconds(value) == seconds


def test_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="soon"):
        api.duration_seconds("soon")


def test_an_object_read_back_from_the_api_server_parses_as_its_manifest() -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())
    stored = copy.deepcopy(manifest)
    stored["metadata"].update(
        uid="0b7c", generation=3, resourceVersion="912", managedFields=[{"manager": "kubectl"}]
    )
    stored["status"] = {"phase": "Serving", "fieldFromAnOlderOperator": True}
    assert api.parse_docmodel(stored) == api.parse_docmodel(manifest)
    assert api.parse_docmodel(stored).status is None
    # Dropping what the server adds never hides the user's own mistakes.
    with pytest.raises(api.SpecError, match="specs"):
        api.parse_docmodel({**manifest, "specs": {}})
    with pytest.raises(api.SpecError, match=r"spec\.source\.bucket"):
        api.parse_spec({"source": {}})
    with pytest.raises(api.SpecError, match="valid dictionary"):
        api.parse_docmodel(["not", "a", "mapping"])
