"""Each shared concept is defined once, in the layer that owns it: a syntax-tree census of
the source packages (so a reshaped copy under the same name is caught), and identity checks
that the images use the core's definitions rather than copies."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

from testkit.invalid_specs import ROOT

PACKAGES = [
    ROOT / "core" / "docmodel",
    ROOT / "local" / "docmodel_local",
    ROOT / "operator" / "docmodel_operator",
    ROOT / "trainer-image" / "docmodel_trainer",
    ROOT / "server-image" / "docmodel_server",
    ROOT / "devenv" / "docmodel_devenv",
]

# Concept -> the one module (relative to the repository) allowed to define it.
ONE_DEFINITION = {
    "EXIT_OK": "core/docmodel/failures.py",
    "EXIT_UNEXPECTED": "core/docmodel/failures.py",
    "EXIT_BAD_INPUT": "core/docmodel/failures.py",
    "EXIT_NO_DATA": "core/docmodel/failures.py",
    "EXIT_STORAGE": "core/docmodel/failures.py",
    "EXIT_UPSTREAM": "core/docmodel/failures.py",
    "S3Credentials": "core/docmodel/storage.py",
    "VLLM_LORA_RANKS": "core/docmodel/modelfacts.py",
    "ADAPTER_CONFIG": "core/docmodel/modelfacts.py",
    "adapter_facts": "core/docmodel/modelfacts.py",
    "child_labels": "core/docmodel/labels.py",
    "own_pods": "core/docmodel/labels.py",
    "server_pods": "core/docmodel/labels.py",
    "stop_token_ids": "core/docmodel/modelfacts.py",
    "peft_compat": "core/docmodel/modelfacts.py",
    "Verdict": "core/docmodel/api/status.py",
    "fetch_adapter": "core/docmodel/artifacts.py",
    "paired_bootstrap": "core/docmodel/stats.py",
    "SettingsError": "core/docmodel/settings.py",
    "CONTEXT_INSTRUCTION": "core/docmodel/retrieval.py",
    "context_messages": "core/docmodel/retrieval.py",
    "question_messages": "core/docmodel/retrieval.py",
    "fit_context_messages": "core/docmodel/retrieval.py",
    "BM25Retriever": "core/docmodel/search.py",
}
# Wrappers that adapt the core's definition to a job (error -> exit code) and say so.
WRAPPERS = {("fetch_adapter", "trainer-image/docmodel_trainer/fetch.py")}


def definitions(packages: list[Path] = PACKAGES, root: Path = ROOT) -> dict[str, list[str]]:
    """Every name bound by def, class or assignment (not by an import), and where."""
    found: dict[str, list[str]] = defaultdict(list)
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            where = path.relative_to(root).as_posix()
            tree = ast.parse(path.read_text(), filename=where)
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    found[node.name].append(where)
                elif isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            found[target.id].append(where)
                elif (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and node.value is not None
                ):
                    found[node.target.id].append(where)
    return found


@pytest.mark.parametrize("name", sorted(ONE_DEFINITION))
def test_exactly_one_definition(name: str) -> None:
    places = [p for p in definitions()[name] if (name, p) not in WRAPPERS]
    assert places == [ONE_DEFINITION[name]], f"{name} is defined in {places}"


def test_the_images_use_the_cores_definitions() -> None:
    from docmodel import artifacts, failures, modelfacts
    from docmodel_server import engine, model_files, vllm_engine
    from docmodel_trainer import common, generation, modeling

    assert model_files.fetch_adapter is artifacts.fetch_adapter
    assert modeling.peft_compat is modelfacts.peft_compat
    assert engine.peft_compat is modelfacts.peft_compat
    assert engine.stop_token_ids is modelfacts.stop_token_ids
    assert generation.stop_token_ids is modelfacts.stop_token_ids
    assert vllm_engine.vllm_max_lora_rank is modelfacts.vllm_max_lora_rank
    for name in ("EXIT_OK", "EXIT_BAD_INPUT", "EXIT_NO_DATA", "EXIT_STORAGE", "EXIT_UPSTREAM"):
        assert getattr(common, name) is getattr(failures, name)


def test_the_gates_decision_is_named_with_the_apis_verdict() -> None:
    import typing

    from docmodel import api, gate

    assert typing.get_type_hints(gate.Decision.name.fget)["return"] is api.Verdict


def test_the_census_sees_a_reshaped_copy(tmp_path: Path) -> None:
    """A copy in another shape (an annotated assignment of a computed tuple where the original
    is a literal, or a lambda bound to a function's name) is still a second definition."""
    core, image = tmp_path / "core", tmp_path / "image"
    core.mkdir()
    image.mkdir()
    (core / "facts.py").write_text(
        "VLLM_LORA_RANKS = (1, 8, 16)\n\ndef stop_token_ids(tok):\n    return [tok.eos]\n"
    )
    (image / "copy.py").write_text(
        "class Engine:\n"
        "    VLLM_LORA_RANKS: tuple[int, ...] = tuple(range(8, 24, 8))\n"
        "stop_token_ids = lambda tok: [tok.eos]\n"
    )
    found = definitions([core, image], tmp_path)
    assert found["VLLM_LORA_RANKS"] == ["core/facts.py", "image/copy.py"]
    assert found["stop_token_ids"] == ["core/facts.py", "image/copy.py"]


# Literal strings that only their vocabulary module spells out; every other module imports it.
VOCABULARY = {
    "app.kubernetes.io/": "core/docmodel/labels.py",
    "adapter_config.json": "core/docmodel/modelfacts.py",
}


def test_label_keys_and_adapter_files_are_spelled_in_one_place() -> None:
    """A label key or the adapter's config file name written out anywhere else is a second
    definition of it (docstrings and comments do not count: they are not constants in code)."""
    bad = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), filename=where)
            docstrings = {
                id(node.body[0].value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                and node.body
                and isinstance(node.body[0], ast.Expr)
            }
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Constant)
                    and isinstance(node.value, str)
                    and id(node) not in docstrings
                ):
                    for literal, home in VOCABULARY.items():
                        if literal in node.value and where != home:
                            bad.append(f"{where}:{node.lineno} {literal}")
    assert not bad, bad


def test_log_keys_are_snake_case() -> None:
    """`key=value` log lines use one key style everywhere (parsers and dashboards rely on it);
    an all-capitals name is an environment variable being quoted, not a key."""
    import re

    key = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)=%")
    methods = {"debug", "info", "warning", "error", "exception", "critical"}
    bad = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in methods
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    for name in key.findall(node.args[0].value):
                        if name != name.lower() and not name.isupper():  # upper: a variable
                            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert not bad, bad


def _docmodel_variable(node: ast.AST) -> str | None:
    """The `DOCMODEL_*` name read by `os.environ.get(...)`, `os.getenv(...)` or
    `os.environ[...]`, if `node` is such a read."""
    if isinstance(node, ast.Call) and node.args:
        func = ast.unparse(node.func)
        if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
            arg = node.args[0]
        else:
            return None
    elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
        arg = node.slice
    else:
        return None
    if isinstance(arg, ast.Constant) and str(arg.value).startswith("DOCMODEL_"):
        return str(arg.value)
    return None


def test_docmodel_variables_are_read_only_through_typed_settings() -> None:
    """Every process reads its `DOCMODEL_*` variables as fields of an `EnvSettings` subclass
    (pydantic-settings; `docmodel.settings`), never with a plain environment lookup, and every
    settings class derives from it."""
    reads, classes = [], []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            where = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(), filename=where)
            for node in ast.walk(tree):
                name = _docmodel_variable(node)
                if name is not None:
                    reads.append(f"{where}:{node.lineno} {name}")  # type: ignore[attr-defined]
                if isinstance(node, ast.ClassDef) and any(
                    ast.unparse(b) == "BaseSettings" for b in node.bases
                ):
                    classes.append(f"{where} {node.name}")
    assert reads == []
    assert classes == ["core/docmodel/settings.py EnvSettings"]
