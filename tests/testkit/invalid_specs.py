"""The shared list of invalid DocModel specs (tests/data/invalid_specs.yaml)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "invalid_specs.yaml"
BASE = ROOT / "examples" / "minimal.yaml"


@dataclass(frozen=True)
class InvalidCase:
    id: str
    field: str  # dotted path the error message must name, e.g. spec.training.epochs
    manifest: dict[str, Any]  # the whole DocModel object

    @property
    def leaf(self) -> str:
        return self.field.rsplit(".", 1)[-1]


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj.setdefault(part, {})
    obj[leaf] = value


def _unset(obj: dict[str, Any], path: str) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        obj = obj[part]
    del obj[leaf]


def load_cases(name_prefix: str = "") -> list[InvalidCase]:
    """Every invalid case as a full manifest; `name_prefix` renames objects (for clusters)."""
    base = yaml.safe_load(BASE.read_text())
    cases = []
    for raw in yaml.safe_load(DATA.read_text()):
        manifest = copy.deepcopy(base)
        manifest["metadata"] = {"name": f"{name_prefix}{raw['id']}"[:40].rstrip("-")}
        for path, value in (raw.get("set") or {}).items():
            _set(manifest, path, value)
        for path in raw.get("unset") or []:
            _unset(manifest, path)
        cases.append(InvalidCase(raw["id"], raw["field"], manifest))
    return cases
