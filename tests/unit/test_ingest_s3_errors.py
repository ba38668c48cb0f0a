"""Ingest against an S3 source whose client is faked in memory: what users see when the bucket
refuses access, is empty, or denies single objects. (tests/cluster/test_ingest_s3.py runs the
same against MinIO.)"""

from __future__ import annotations

import argparse
import hashlib
import io

import pytest
import yaml
from botocore.exceptions import ClientError
from test_ingest import docmodel_file

from docmodel.artifacts import RevisionLayout, read_manifest
from docmodel.storage import LocalStore, S3Store
from docmodel_trainer import common, ingest

from testkit.corpus import CORPUS, TEST_FILES


class FakeS3:
    """The three calls S3Store makes while ingesting: list pages, get objects."""

    def __init__(
        self, objects: dict[str, bytes], deny: set[str] = frozenset(), deny_list: bool = False
    ):
        self.objects = objects
        self.deny = deny
        self.deny_list = deny_list
        self.gets: list[str] = []

    def get_paginator(self, name: str):
        assert name == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str):
        if self.deny_list:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "denied"}}, "ListObjectsV2"
            )
        contents = [
            {"Key": k, "ETag": f'"{hashlib.md5(v).hexdigest()}"', "Size": len(v)}
            for k, v in sorted(self.objects.items())
            if k.startswith(Prefix)
        ]
        yield {"Contents": contents}

    def get_object(self, Bucket: str, Key: str):
        if Key in self.deny:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")
        self.gets.append(Key)
        return {"Body": io.BytesIO(self.objects[Key])}


def use_s3(monkeypatch, fake: FakeS3) -> None:
    def open_source(spec, source_dir=None):
        assert source_dir is None
        return S3Store(spec.source.bucket, spec.source.prefix, client=fake)

    monkeypatch.setattr(ingest, "open_source", open_source)


def corpus_objects(prefix: str = "handbook/") -> dict[str, bytes]:
    return {prefix + name: (CORPUS / name).read_bytes() for name in TEST_FILES}


def run_s3(tmp_path, *extra: str):
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)
    args = parser.parse_args(
        ["--docmodel", str(docmodel_file(tmp_path)), "--store", str(tmp_path / "store"), *extra]
    )
    try:
        return ingest.run(args), ""
    except common.JobError as exc:
        return exc.exit_code, str(exc)


def test_access_denied_exits_storage_naming_bucket_and_prefix(tmp_path, monkeypatch):
    use_s3(monkeypatch, FakeS3({}, deny_list=True))
    rc, message = run_s3(tmp_path)
    assert rc == common.EXIT_STORAGE
    assert "bucket=larkspur-docs prefix=handbook" in message and "AccessDenied" in message


def test_empty_prefix_exits_no_data_naming_bucket_and_prefix(tmp_path, monkeypatch):
    use_s3(monkeypatch, FakeS3({"other/readme.md": b"# Elsewhere\n\nText.\n"}))
    rc, message = run_s3(tmp_path)
    assert rc == common.EXIT_NO_DATA
    assert "no documents under bucket=larkspur-docs prefix=handbook" in message


def test_a_denied_object_is_skipped_and_listed(tmp_path, monkeypatch):
    fake = FakeS3(corpus_objects(), deny={"handbook/hr/leave-policy.pdf"})
    use_s3(monkeypatch, fake)
    rc, _ = run_s3(tmp_path, "--revision", "r1")
    assert rc == 0
    manifest = read_manifest(
        LocalStore(tmp_path / "store"), RevisionLayout("docs", "handbook", "r1"), "dataset"
    )
    assert manifest is not None
    (skipped,) = manifest.details["documents_skipped"]
    assert skipped["key"] == "hr/leave-policy.pdf" and "access denied" in skipped["reason"]


def test_rerun_downloads_zero_document_bytes_and_no_qa_files_are_fetched(tmp_path, monkeypatch):
    fake = FakeS3(corpus_objects())
    use_s3(monkeypatch, fake)
    assert run_s3(tmp_path, "--revision", "r1")[0] == 0
    assert len(fake.gets) == 9  # the documents; *.qa.jsonl only with the provided generator
    fake.gets.clear()
    assert run_s3(tmp_path, "--revision", "r2")[0] == 0
    assert fake.gets == []


@pytest.mark.parametrize("code", ["InvalidAccessKeyId", "SignatureDoesNotMatch"])
def test_wrong_credentials_are_access_denied(tmp_path, monkeypatch, code):
    fake = FakeS3({})

    def paginate(Bucket, Prefix):
        raise ClientError({"Error": {"Code": code, "Message": "x"}}, "ListObjectsV2")

    fake.paginate = paginate  # type: ignore[method-assign]
    use_s3(monkeypatch, fake)
    rc, message = run_s3(tmp_path)
    assert rc == common.EXIT_STORAGE and "larkspur-docs" in message and code in message


UNSAFE = {
    "handbook/../escape.md": "'.' or '..' component",
    "handbook/./hidden.md": "'.' or '..' component",
    "handbook//absolute.md": "starts with '/'",
    "handbook/dir//twice.md": "empty component",
}


def test_unsafe_keys_are_skipped_with_a_reason_never_read_and_change_no_revision(
    tmp_path, monkeypatch
):
    """Keys S3 allows and MinIO refuses (so the listing is faked): never read, never written
    outside the work directory, listed as skipped; the revision is the one without them, in
    the one function ingest and the operator both use."""
    from docmodel.api import parse_docmodel
    from docmodel.revision import list_source

    clean = corpus_objects()
    objects = {**clean, **{k: b"# Escape\n\nAnything.\n" for k in UNSAFE}}
    fake = FakeS3(objects)
    use_s3(monkeypatch, fake)
    rc, message = run_s3(tmp_path, "--revision", "r1")
    assert rc == 0, message
    assert not set(UNSAFE) & set(fake.gets)
    assert not (tmp_path.parent / "escape.md").exists()
    manifest = read_manifest(
        LocalStore(tmp_path / "store"), RevisionLayout("docs", "handbook", "r1"), "dataset"
    )
    assert manifest is not None
    skipped = {s["key"]: s["reason"] for s in manifest.details["documents_skipped"]}
    for key, why in UNSAFE.items():
        relative = key.removeprefix("handbook/")
        assert relative in skipped and why in skipped[relative], (key, skipped)

    spec = parse_docmodel(yaml.safe_load(docmodel_file(tmp_path).read_text())).spec
    with_unsafe = list_source(spec, S3Store("docs", "handbook/", client=FakeS3(objects)))
    without = list_source(spec, S3Store("docs", "handbook/", client=FakeS3(clean)))
    assert with_unsafe.revision == without.revision
    assert len(with_unsafe.selection.unsafe) == len(UNSAFE)
