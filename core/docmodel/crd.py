"""Render the DocModel CustomResourceDefinition from the API models.

    python -m docmodel.crd            # rewrite crds/docmodel.dev_docmodels.yaml and the chart's copy
    python -m docmodel.crd --check    # exit 1 when either is out of date

The Helm chart renders the CRD from its own copy (charts/docmodel-operator/files/crds/), which
is written and checked together with crds/ whenever the output is the default path.

The OpenAPI schema is derived from `docmodel.api`: descriptions, defaults, enums, bounds and
patterns come from the pydantic fields; cross-field rules come from `docmodel.api.RULES` as
`x-kubernetes-validations`. Object-valued sections whose fields all have defaults get
`default: {}` so that the API server fills them in, as the models do.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from docmodel import api, labels

CRD_FILENAME = f"{api.GROUP}_{api.PLURAL}.yaml"
NAME_RULE = {
    "rule": "self.metadata.name.size() <= 40 && "
    "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
    "message": "metadata.name must start with a letter, hold only lower-case letters, digits "
    "and '-', and be at most 40 characters (it names the Service, Deployments and Jobs)",
}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {
        "name": "Candidate",
        "type": "string",
        "description": "Candidate score on the gating metric",
        "jsonPath": ".status.candidate.score",
    },
    {
        "name": "Baseline",
        "type": "string",
        "description": "RAG baseline score on the gating metric",
        "jsonPath": ".status.candidate.baselineScore",
    },
    {"name": "Serving", "type": "string", "jsonPath": ".status.serving.revision"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.serving.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _models(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """All models reachable from `root`, by class name (pydantic's $defs keys)."""
    found: dict[str, type[BaseModel]] = {}
    pending = [root]
    while pending:
        model = pending.pop()
        if model.__name__ in found:
            continue
        found[model.__name__] = model
        for field in model.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    pending.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = [annotation]
    out = []
    while args:
        item = args.pop()
        out.append(item)
        args.extend(getattr(item, "__args__", ()))
    return out


def _default_of(field: FieldInfo) -> tuple[bool, Any]:
    """(has a default worth publishing, its wire value)."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is not PydanticUndefined:
        value = field.default
    else:
        return False, None
    if value is None:
        return False, None
    if isinstance(value, BaseModel):
        return True, {}
    return True, value


class _Converter:
    def __init__(self, root: type[BaseModel]):
        self.schema = root.model_json_schema(by_alias=True, mode="validation")
        self.defs: dict[str, Any] = self.schema.get("$defs", {})
        self.models = _models(root)

    def model(self, name: str) -> dict[str, Any]:
        model = self.models[name]
        source = self.defs.get(name, self.schema)
        out: dict[str, Any] = {"type": "object"}
        if model.__doc__:
            out["description"] = " ".join(model.__doc__.split())
        props: dict[str, Any] = {}
        required: list[str] = []
        by_alias = {(info.alias or key): info for key, info in model.model_fields.items()}
        for prop_name, prop_schema in source.get("properties", {}).items():
            info = by_alias[prop_name]
            converted = self.node(prop_schema)
            if info.description:
                converted["description"] = info.description
            has_default, default = _default_of(info)
            if has_default:
                converted["default"] = default
            elif info.is_required():
                required.append(prop_name)
            props[prop_name] = _ordered(converted)
        out["properties"] = props
        if required:
            out["required"] = required
        rules = [
            {"rule": r.cel, "message": r.message, "fieldPath": r.field_path}
            for r in api.RULES
            if r.on is model
        ]
        if rules:
            out["x-kubernetes-validations"] = rules
        return out

    def node(self, schema: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in schema:
            return self.model(schema["$ref"].rsplit("/", 1)[-1])
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express a union in a structural schema: {schema}")
            return self.node(options[0])
        out: dict[str, Any] = {}
        kind = schema.get("type")
        if "enum" in schema or "const" in schema:
            out["type"] = kind or "string"
            out["enum"] = schema.get("enum", [schema.get("const")])
        elif kind == "array":
            out["type"] = "array"
            out["items"] = self.node(schema["items"])
        elif kind == "object":
            out["type"] = "object"
            if "additionalProperties" in schema and isinstance(
                schema["additionalProperties"], dict
            ):
                out["additionalProperties"] = self.node(schema["additionalProperties"])
            if "patternProperties" in schema:  # a map whose keys the model constrains
                out.update(_map_of(schema, self.node))
        elif kind in ("string", "integer", "number", "boolean"):
            out["type"] = kind
        else:
            raise ValueError(f"unsupported schema node: {schema}")
        for key in (
            "pattern",
            "format",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
        ):
            if key in schema:
                out[key] = schema[key]
        for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
            if bound in schema:
                out[bound] = schema[bound]
            if flag in schema:  # JSON Schema 2020 number -> OpenAPI v3.0 boolean
                out[bound] = schema[flag]
                out[flag] = True
        return out


def _map_of(schema: dict[str, Any], node: Any) -> dict[str, Any]:
    """A map with constrained keys: a structural schema has no `patternProperties` or
    `propertyNames`, so the values' schema becomes `additionalProperties` and the key rules a
    CEL rule (the API server bounds its cost by the map's `maxProperties`)."""
    ((key_pattern, value_schema),) = schema["patternProperties"].items()
    checks = [f'k.matches(r"{key_pattern}")']
    max_key = (schema.get("propertyNames") or {}).get("maxLength")
    if max_key is not None:
        checks.insert(0, f"size(k) <= {max_key}")
    if "maxProperties" not in schema:
        raise ValueError(f"a map with constrained keys needs a maximum size: {schema}")
    return {
        "additionalProperties": node(value_schema),
        "x-kubernetes-validations": [
            {
                "rule": f"self.all(k, {' && '.join(checks)})",
                "message": "keys must be Kubernetes label keys (an optional DNS-subdomain "
                "prefix and '/', then a name of at most 63 letters, digits, '-', '_' or '.')",
            }
        ],
    }


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    first = ["description", "type", "default", "enum"]
    return {k: node[k] for k in first if k in node} | {
        k: v for k, v in node.items() if k not in first
    }


def openapi_schema() -> dict[str, Any]:
    """The CRD's openAPIV3Schema."""
    spec = _Converter(api.DocModelSpec).model("DocModelSpec")
    status = _Converter(api.DocModelStatus).model("DocModelStatus")
    conditions = status["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    conditions["items"]["properties"]["lastTransitionTime"]["format"] = "date-time"
    return {
        "type": "object",
        "description": "DocModel turns documentation in S3 into a fine-tuned, evaluated and "
        "served LLM, and keeps it current.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [NAME_RULE],
    }


def render() -> dict[str, Any]:
    """The whole CustomResourceDefinition."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{api.PLURAL}.{api.GROUP}",
            "labels": {labels.PART_OF: labels.APP_NAME},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": api.KIND,
                "listKind": f"{api.KIND}List",
                "plural": api.PLURAL,
                "singular": api.SINGULAR,
                "shortNames": api.SHORT_NAMES,
                "categories": ["all", "docmodel"],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                }
            ],
        },
    }


def render_yaml() -> str:
    header = "# Generated by `python -m docmodel.crd` from core/docmodel/api/. Do not edit.\n"
    return header + yaml.safe_dump(render(), sort_keys=False, width=100)


def default_path() -> Path:
    return Path(__file__).resolve().parents[2] / "crds" / CRD_FILENAME


def chart_path() -> Path:
    """The Helm chart's copy, which its CRD template reads."""
    root = Path(__file__).resolve().parents[2]
    return root / "charts" / "docmodel-operator" / "files" / "crds" / CRD_FILENAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is out of date")
    parser.add_argument("--output", type=Path, default=default_path())
    args = parser.parse_args(argv)
    text = render_yaml()
    outputs = [args.output]
    if args.output.resolve() == default_path() and chart_path().parents[2].is_dir():
        outputs.append(chart_path())
    if args.check:
        stale = [p for p in outputs if (p.read_text() if p.exists() else "") != text]
        for path in stale:
            sys.stderr.write(f"{path} is out of date: run `python -m docmodel.crd`\n")
        return 1 if stale else 0
    for path in outputs:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        sys.stderr.write(f"Wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
