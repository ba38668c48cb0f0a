"""Pytest fixtures for tests against the real local cluster and S3.

One dev environment (etcd, kube-apiserver, controller manager, scheduler, kwok
nodes, the local node's pod runner, MinIO) per test session, started only when
a test first asks for it. Import the fixtures into a conftest::

    from docmodel_devenv.pytest_plugin import devenv, kube, namespace, s3_bucket  # noqa: F401

The training engines (`engines`) have their own fixtures, one of each per test module that
asks: ``training_operator`` (Kubeflow's training operator, PyTorchJobs) and ``kueue`` (Kueue
managing Jobs and PyTorchJobs, its webhooks registered).

Set ``DOCMODEL_DEVENV_KEEP=1`` to keep the working directory (logs, kubeconfig).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from docmodel_devenv.settings import DevenvSettings

from .build import BuildError
from .engines import Kueue, TrainingOperator
from .kubeapi import create_namespace
from .minio import S3Endpoint, put_secret
from .stack import DevEnv


@pytest.fixture(scope="session")
def devenv() -> Iterator[DevEnv]:
    """The running dev environment (started once per session)."""
    try:
        env = DevEnv.create(keep_workdir=DevenvSettings.from_env().devenv_keep)
    except BuildError as error:
        missing = str(error)
    else:
        missing = ""
    if missing:
        pytest.fail(missing, pytrace=False)
    env.start()
    try:
        yield env
    finally:
        env.stop()


@dataclass
class Kube:
    """Clients of the official ``kubernetes`` package, bound to the dev cluster."""

    kubeconfig: Path
    api_client: Any
    core: Any
    apps: Any
    batch: Any
    custom: Any
    apiextensions: Any


@pytest.fixture(scope="session")
def kube(devenv: DevEnv) -> Iterator[Kube]:
    from kubernetes import client, config

    api_client = config.new_client_from_config(config_file=str(devenv.kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield Kube(
            kubeconfig=devenv.kubeconfig,
            api_client=api_client,
            core=client.CoreV1Api(api_client),
            apps=client.AppsV1Api(api_client),
            batch=client.BatchV1Api(api_client),
            custom=client.CustomObjectsApi(api_client),
            apiextensions=client.ApiextensionsV1Api(api_client),
        )
    finally:
        api_client.close()


def _name_for(request: pytest.FixtureRequest, limit: int) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    suffix = secrets.token_hex(3)
    return f"{base[: limit - len(suffix) - 1].strip('-')}-{suffix}"


@pytest.fixture
def namespace(devenv: DevEnv, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace (with its default ServiceAccount), deleted after the test."""
    assert devenv.api is not None
    api = devenv.api
    name = _name_for(request, 63)
    create_namespace(api, name)
    yield name
    api.delete("v1", "namespaces", name)


@dataclass(frozen=True)
class S3Bucket:
    """A fresh bucket in the dev environment's MinIO."""

    name: str
    credentials: S3Endpoint

    @property
    def endpoint(self) -> str:
        return self.credentials.endpoint

    def client(self) -> Any:
        return self.credentials.client()

    def env(self) -> dict[str, str]:
        return self.credentials.env()

    def put_secret(self, devenv: DevEnv, namespace: str, name: str = "docmodel-s3") -> str:
        """Write the credentials into ``namespace`` as a Secret; return its name."""
        assert devenv.api is not None
        put_secret(devenv.api, self.credentials, namespace, name)
        return name


@pytest.fixture
def s3_bucket(devenv: DevEnv, request: pytest.FixtureRequest) -> S3Bucket:
    assert devenv.minio is not None and devenv.s3 is not None
    name = _name_for(request, 63)
    devenv.minio.create_bucket(name)
    return S3Bucket(name, devenv.s3)


@pytest.fixture(scope="module")
def training_operator(devenv: DevEnv) -> Iterator[TrainingOperator]:
    """Kubeflow's training operator on the dev cluster (PyTorchJob CRD installed, its
    validating webhook registered), for the tests of one module."""
    operator = TrainingOperator.for_devenv(devenv).start()
    try:
        yield operator
    finally:
        operator.stop()


@pytest.fixture(scope="module")
def kueue(devenv: DevEnv) -> Iterator[Kueue]:
    """Kueue on the dev cluster (its CRDs and the PyTorchJob CRD installed, its webhooks
    registered; integrations batch/job and kubeflow.org/pytorchjob), for the tests of one
    module. Queues: `engines.create_resource_flavor`, `create_cluster_queue`,
    `create_local_queue`."""
    engine = Kueue.for_devenv(devenv).start()
    try:
        yield engine
    finally:
        engine.stop()
