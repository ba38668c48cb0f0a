"""Cluster tests: a real API server, controllers, kwok nodes, the local node and MinIO."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel_devenv.pytest_plugin import (  # noqa: F401
    Kube,
    devenv,
    kube,
    kueue,
    namespace,
    s3_bucket,
    training_operator,
)
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import kubectl

CRD_DIR = Path(__file__).resolve().parents[2] / "crds"


@pytest.fixture(scope="session")
def crd(devenv: DevEnv, kube: Kube) -> str:  # noqa: F811
    """The DocModel CRD, applied from crds/ and Established."""
    kubectl(devenv, "apply", "--server-side", "-f", str(CRD_DIR))
    kubectl(
        devenv, "wait", "--for=condition=Established", "--timeout=60s", "crd/docmodels.docmodel.dev"
    )
    return "docmodels.docmodel.dev"
