"""Revision ids, digests, layout and manifests."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel import api
from docmodel.artifacts import Manifest, RevisionLayout, publish_dir, read_manifest
from docmodel.digests import revision_id, source_digest
from docmodel.storage import LocalStore, NotFound, ObjectInfo, download_tree, matches

SPEC = {"source": {"bucket": "docs", "secretRef": {"name": "s3"}}}


def test_source_digest_ignores_order_and_tracks_changes() -> None:
    a = [ObjectInfo("a.md", "e1", 10), ObjectInfo("b.md", "e2", 20)]
    assert source_digest(a) == source_digest(list(reversed(a)))
    assert source_digest(a) != source_digest([ObjectInfo("a.md", "e9", 10), a[1]])


def test_revision_is_deterministic_and_tracks_training_settings() -> None:
    spec = api.parse_spec(SPEC)
    rev = revision_id(spec, "sha256:1")
    assert rev == revision_id(api.parse_spec(SPEC), "sha256:1")
    assert len(rev) == 10
    assert rev != revision_id(spec, "sha256:2")
    more_epochs = api.parse_spec({**SPEC, "training": {"epochs": 5}})
    assert rev != revision_id(more_epochs, "sha256:1")


def test_serving_and_credentials_do_not_change_the_revision() -> None:
    rev = revision_id(api.parse_spec(SPEC), "sha256:1")
    other = api.parse_spec(
        {"source": {"bucket": "docs", "secretRef": {"name": "rotated"}}, "serving": {"replicas": 3}}
    )
    assert revision_id(other, "sha256:1") == rev


def test_layout() -> None:
    layout = RevisionLayout("ml", "handbook", "abc123")
    assert layout.key("adapter", "x.bin") == "ml/handbook/rev-abc123/adapter/x.bin"
    assert layout.uri("s3://b/p/", "eval", "report.json") == (
        "s3://b/p/ml/handbook/rev-abc123/eval/report.json"
    )


def test_publish_writes_files_and_manifest(tmp_path: Path) -> None:
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w" * 100)
    (src / "sub" / "config.json").write_text("{}")
    store = LocalStore(tmp_path / "store")
    layout = RevisionLayout("ns", "m", "r1")
    assert read_manifest(store, layout, "adapter") is None
    uri = publish_dir(src, store, layout, Manifest(kind="adapter", revision="r1"))
    assert uri.endswith("ns/m/rev-r1/adapter")
    manifest = read_manifest(store, layout, "adapter")
    assert manifest is not None
    assert {f.path for f in manifest.files} == {"weights.bin", "sub/config.json"}
    assert next(f for f in manifest.files if f.path == "weights.bin").size == 100
    copied = download_tree(store, layout.dir("adapter"), tmp_path / "copy")
    assert (tmp_path / "copy" / "weights.bin").read_bytes() == b"w" * 100
    assert len(copied) == 3


def test_download_of_nothing_names_the_place(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="nothing under"):
        download_tree(LocalStore(tmp_path), "missing", tmp_path / "out")


def test_local_store_refuses_escaping_keys(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    with pytest.raises(Exception, match="escapes"):
        store.put_bytes("../outside", b"x")


@pytest.mark.parametrize(
    ("key", "ok"),
    [("a.md", True), ("x/y/a.md", True), ("drafts/a.md", False), ("a.bin", False)],
)
def test_matches(key: str, ok: bool) -> None:
    assert matches(key, ["**/*.md"], ["drafts/**"]) is ok


@pytest.mark.parametrize(
    "change",
    [
        {"training": {"tolerations": [{"key": "gpu", "operator": "Exists"}]}},
        {"training": {"activeDeadlineSeconds": 3600, "backoffLimit": 5}},
        {"training": {"resources": {"gpu": 2, "memory": "80Gi"}, "image": "trainer:2"}},
        {"evaluation": {"minImprovement": 0.1, "mustBeatServing": False}},
        {"retraining": {"schedule": "0 3 * * *"}, "suspend": True, "historyLimit": 3},
        {
            "dataset": {
                "generator": "teacher",
                "teacher": {
                    "endpoint": "http://t:8000/v1",
                    "model": "m",
                    "maxConcurrency": 64,
                    "secretRef": {"name": "other", "key": "k"},
                },
            }
        },
    ],
)
def test_run_settings_do_not_change_the_revision(change: dict[str, object]) -> None:
    base = dict(SPEC)
    if "dataset" in change:  # compare teacher settings with the same teacher
        base = {
            **SPEC,
            "dataset": {
                "generator": "teacher",
                "teacher": {"endpoint": "http://t:8000/v1", "model": "m"},
            },
        }
    assert revision_id(api.parse_spec({**base, **change}), "sha256:1") == revision_id(
        api.parse_spec(base), "sha256:1"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"training": {"lora": {"r": 32}}},
        {"training": {"learningRate": 1e-4}},
        {"baseModel": {"name": "other/model"}},
        {"dataset": {"seed": 7}},
        {"dataset": {"chunking": {"maxTokens": 512}}},
        {"source": {"bucket": "docs", "prefix": "other/"}},
    ],
)
def test_training_settings_change_the_revision(change: dict[str, object]) -> None:
    assert revision_id(api.parse_spec({**SPEC, **change}), "sha256:1") != revision_id(
        api.parse_spec(SPEC), "sha256:1"
    )


def test_republishing_withdraws_the_old_manifest_before_uploading(tmp_path: Path) -> None:
    src = tmp_path / "eval"
    src.mkdir()
    (src / "report.json").write_text("{}")
    store = LocalStore(tmp_path / "store")
    layout = RevisionLayout("ns", "m", "r1")
    publish_dir(src, store, layout, Manifest(kind="eval", revision="r1"))

    seen: list[bool] = []
    upload = store.upload_file

    def spying_upload(path: Path, key: str) -> None:
        seen.append(store.exists(layout.key("eval", "manifest.json")))
        upload(path, key)

    store.upload_file = spying_upload  # type: ignore[method-assign]
    (src / "report.json").write_text('{"new": true}')
    publish_dir(src, store, layout, Manifest(kind="eval", revision="r1"))
    assert seen == [False]  # no manifest while the new files went up
    manifest = read_manifest(store, layout, "eval")
    assert manifest is not None and manifest.files[0].size == len('{"new": true}')


def test_local_store_delete_is_idempotent(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("a/b.txt", b"x")
    store.delete("a/b.txt")
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")


def test_select_sources_is_what_the_revision_digest_covers() -> None:
    from docmodel.selection import select_sources

    listed = [
        ObjectInfo("guide.md", "e1", 10),
        ObjectInfo("empty.md", "e2", 0),  # skipped by ingest, still an input
        ObjectInfo("image.png", "e3", 10),  # not matched by the default globs
        ObjectInfo("guide.qa.jsonl", "e4", 10),
    ]
    spec = api.parse_spec(SPEC)
    chosen = select_sources(spec, listed)
    assert [o.key for o in chosen.documents] == ["guide.md", "empty.md"]
    assert chosen.qa_files == []  # QA files count only for the provided generator
    provided = api.parse_spec({**SPEC, "dataset": {"generator": "provided"}})
    assert [o.key for o in select_sources(provided, listed).qa_files] == ["guide.qa.jsonl"]
    elsewhere = select_sources(provided, listed, [ObjectInfo("qa/x.qa.jsonl", "e5", 5)])
    assert [o.key for o in elsewhere.qa_files] == ["qa/x.qa.jsonl"]
    assert chosen.digest == source_digest(chosen.documents)
    assert chosen.digest != select_sources(spec, [*listed, ObjectInfo("new.md", "e6", 1)]).digest


def test_every_dataset_and_training_field_is_on_exactly_one_list() -> None:
    """A new field must say whether it changes what is trained (and so the revision id)."""
    from docmodel.api import DatasetSpec, TrainingSpec
    from docmodel.digests import NOT_TRAINING_FIELDS, TRAINING_FIELDS

    for section, model in (("dataset", DatasetSpec), ("training", TrainingSpec)):
        wire = {f.alias or n for n, f in model.model_fields.items()}
        on, off = set(TRAINING_FIELDS[section]), set(NOT_TRAINING_FIELDS[section])
        assert not on & off, f"{section}: on both lists: {sorted(on & off)}"
        assert wire == on | off, f"{section}: on neither list: {sorted(wire - on - off)}"


def test_the_data_protocol_version_is_part_of_the_revision(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from docmodel import digests
    from docmodel.api import parse_spec

    spec = parse_spec({"source": {"bucket": "docs"}})
    now = digests.revision_id(spec, "sha256:x")
    monkeypatch.setattr(digests, "DATA_PROTOCOL", digests.DATA_PROTOCOL - 1)
    assert digests.revision_id(spec, "sha256:x") != now
