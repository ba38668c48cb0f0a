"""The DocModel CRD on a real API server: served descriptions, schema validation."""

from __future__ import annotations

import json

import pytest
from clusterlib import kubectl
from kubernetes.client.exceptions import ApiException

from docmodel_devenv.pytest_plugin import Kube
from docmodel_devenv.stack import DevEnv

from invalid_specs import InvalidCase, load_cases

pytestmark = pytest.mark.cluster

GROUP, VERSION, PLURAL = "docmodel.dev", "v1alpha1", "docmodels"


def test_kubectl_explain_serves_field_descriptions(devenv: DevEnv, crd: str) -> None:
    result = kubectl(devenv, "explain", "docmodels.spec.training")
    assert "How the adapter is trained." in result.stdout
    assert "epochs" in result.stdout


def test_valid_example_is_accepted(kube: Kube, crd: str, namespace: str) -> None:
    import yaml

    from invalid_specs import BASE

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
    with pytest.raises(ApiException) as raised:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, case.manifest
        )
    assert raised.value.status == 422, raised.value.body
    message = json.loads(raised.value.body)["message"]
    assert case.field in message, message
