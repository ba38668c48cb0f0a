"""The DocModel CRD on a real API server: served descriptions, schema validation."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from docmodel_devenv.pytest_plugin import Kube
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import kubectl, wait_for
from testkit.invalid_specs import InvalidCase, load_cases

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "docmodel.dev", "v1alpha1", "docmodels"


def test_kubectl_explain_serves_field_descriptions(devenv: DevEnv, crd: str) -> None:
    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    result = wait_for(
        lambda: (
            (r := kubectl(devenv, "explain", "docmodels.spec.training", check=False)).returncode
            == 0
            and r
        ),
        30,
        "kubectl explain docmodels.spec.training",
        interval=0.5,
    )
    assert "How the adapter is trained." in result.stdout
    assert "epochs" in result.stdout


def test_valid_example_is_accepted(kube: Kube, crd: str, namespace: str) -> None:
    import yaml

    from testkit.invalid_specs import BASE

    manifest = yaml.safe_load(BASE.read_text())
    manifest["metadata"] = {"name": "handbook"}
    created = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest
    )
    # Defaults come from the served schema.
    assert created["spec"]["training"], created["spec"]


@pytest.mark.parametrize("case", load_cases(), ids=lambda case: case.id)
def test_invalid_spec_is_rejected_naming_the_field(
    kube: Kube, crd: str, namespace: str, case: InvalidCase
) -> None:
    # Strict field validation, as `kubectl apply` asks for: unknown fields are errors too.
    with pytest.raises(ApiException) as raised:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, case.manifest, field_validation="Strict"
        )
    # 422 Invalid from the schema; 400 BadRequest from strict decoding (unknown fields).
    assert raised.value.status in (400, 422), raised.value.body
    message = json.loads(raised.value.body or "{}")["message"]
    assert case.field in message, message


@pytest.mark.parametrize("example", ["minimal.yaml", "complete.yaml"])
def test_server_defaults_equal_the_models_defaults(
    kube: Kube, crd: str, namespace: str, example: str
) -> None:
    """What the API server stores for an example is what the Python models make of it."""
    import yaml

    from docmodel import api

    from testkit.invalid_specs import ROOT

    manifest = yaml.safe_load((ROOT / "examples" / example).read_text())
    manifest["metadata"] = {"name": "defaults-" + example.split(".")[0], "namespace": namespace}
    created = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict"
    )
    assert created["spec"] == api.spec_to_wire(api.parse_docmodel(manifest).spec)
