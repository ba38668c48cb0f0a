"""Ingest against real S3 (the dev environment's MinIO): listing and fetching through boto3,
the parsed-document cache in an S3 artifact store, and what users see on access denied and on
an empty prefix."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from docmodel.artifacts import RevisionLayout, read_manifest
from docmodel.storage import open_store
from docmodel_devenv.pytest_plugin import S3Bucket
from docmodel_trainer import common, ingest

from testkit.corpus import CORPUS, TEST_FILES

pytestmark = pytest.mark.cluster

PREFIX = "handbook"


def upload_corpus(bucket: S3Bucket) -> dict[str, int]:
    client = bucket.client()
    sizes = {}
    for name in TEST_FILES:
        path = CORPUS / name
        key = f"{PREFIX}/{name}"
        client.put_object(Bucket=bucket.name, Key=key, Body=path.read_bytes())
        sizes[key] = path.stat().st_size
    return sizes


def ingest_s3(
    tmp_path: Path, bucket: S3Bucket, *extra: str, prefix: str = PREFIX
) -> tuple[int, str]:
    manifest = {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": "handbook", "namespace": "docs"},
        "spec": {"source": {"bucket": bucket.name, "prefix": prefix, "endpoint": bucket.endpoint}},
    }
    path = tmp_path / "docmodel.yaml"
    path.write_text(yaml.safe_dump(manifest))
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    store = f"s3://{bucket.name}/artifacts"
    args = parser.parse_args(["--docmodel", str(path), "--store", store, *extra])
    try:
        return ingest.run(args), ""
    except common.JobError as exc:
        return exc.exit_code, str(exc)


@pytest.fixture
def s3_env(s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch) -> S3Bucket:
    for name, value in s3_bucket.env().items():
        monkeypatch.setenv(name, value)
    return s3_bucket


def details(bucket: S3Bucket, revision: str) -> dict:
    store = open_store(f"s3://{bucket.name}/artifacts")
    manifest = read_manifest(store, RevisionLayout("docs", "handbook", revision), "dataset")
    assert manifest is not None
    return manifest.details


def test_ingest_from_minio_and_rerun_downloads_nothing(tmp_path, s3_env):
    sizes = upload_corpus(s3_env)
    assert ingest_s3(tmp_path, s3_env, "--revision", "first")[0] == 0
    first = details(s3_env, "first")
    documents = sum(v for k, v in sizes.items() if not k.endswith(".qa.jsonl"))
    assert first["bytes_downloaded"] == documents
    assert first["documents_parsed"] == 9 and first["eval_pairs"] > 0

    assert ingest_s3(tmp_path, s3_env, "--revision", "second")[0] == 0
    assert details(s3_env, "second")["bytes_downloaded"] == 0

    body = (CORPUS / "data/retention.md").read_bytes() + b"\nArchive owner: Records team\n"
    s3_env.client().put_object(Bucket=s3_env.name, Key=f"{PREFIX}/data/retention.md", Body=body)
    assert ingest_s3(tmp_path, s3_env, "--revision", "third")[0] == 0
    assert details(s3_env, "third")["bytes_downloaded"] == len(body)


def test_wrong_credentials_exit_storage_naming_bucket_and_prefix(tmp_path, s3_env, monkeypatch):
    upload_corpus(s3_env)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    # The artifact store keeps working credentials: only the source is refused.
    monkeypatch.setenv("DOCMODEL_STORE_AWS_ACCESS_KEY_ID", s3_env.credentials.access_key)
    monkeypatch.setenv("DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY", s3_env.credentials.secret_key)
    rc, message = ingest_s3(tmp_path, s3_env)
    assert rc == common.EXIT_STORAGE
    assert f"bucket={s3_env.name} prefix={PREFIX}" in message
    assert "not-the-secret" not in message


def test_empty_prefix_exits_no_data_naming_bucket_and_prefix(tmp_path, s3_env):
    upload_corpus(s3_env)
    rc, message = ingest_s3(tmp_path, s3_env, prefix="nothing-here")
    assert rc == common.EXIT_NO_DATA
    assert f"bucket={s3_env.name} prefix=nothing-here" in message
