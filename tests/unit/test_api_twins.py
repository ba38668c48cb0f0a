"""Python and the API server refuse the same specs: every rule the models enforce is found by
introspection (field constraints in the JSON schema the models produce, validators on the
models) and must reach the CRD, or be a `Rule` (CEL + Python), or be listed in `PYTHON_ONLY`
(which the operator enforces with `InvalidSpec`)."""

from __future__ import annotations

from typing import Any

from docmodel import api, crd

# JSON-schema keywords that validate, and what the CRD must carry for each.
EQUIVALENT = {
    "pattern": ("pattern",),
    "minimum": ("minimum",),
    "maximum": ("maximum",),
    "exclusiveMinimum": ("minimum", "exclusiveMinimum"),
    "exclusiveMaximum": ("maximum", "exclusiveMaximum"),
    "minLength": ("minLength",),
    "maxLength": ("maxLength",),
    "minItems": ("minItems",),
    "maxItems": ("maxItems",),
    "minProperties": ("minProperties",),
    "maxProperties": ("maxProperties",),
    "enum": ("enum",),
    "const": ("enum",),
    "patternProperties": ("x-kubernetes-validations",),
    "propertyNames": ("x-kubernetes-validations",),
}
IGNORED = {"title", "description", "default", "type", "$ref", "anyOf", "items", "properties"}
IGNORED |= {"additionalProperties", "required", "examples", "format", "$defs"}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[-1]]
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:
        merged = {k: v for k, v in schema.items() if k != "anyOf"}
        return {**_resolve(options[0], defs), **merged}
    return schema


def _walk(model: dict[str, Any], crd_node: dict[str, Any], path: str, defs: dict, out: list):
    model = _resolve(model, defs)
    for keyword in model:
        if keyword in IGNORED:
            continue
        needed = EQUIVALENT.get(keyword)
        if needed is None:
            out.append(f"{path}: keyword {keyword!r} has no CRD equivalent known to this test")
        elif not all(k in crd_node for k in needed):
            out.append(f"{path}: {keyword} is checked in Python but not by the API server")
    for name, child in (model.get("properties") or {}).items():
        crd_child = (crd_node.get("properties") or {}).get(name)
        if crd_child is None:
            out.append(f"{path}.{name}: missing from the CRD")
            continue
        _walk(child, crd_child, f"{path}.{name}", defs, out)
    if "items" in model and isinstance(model["items"], dict):
        _walk(model["items"], crd_node.get("items") or {}, f"{path}[]", defs, out)
    extra = model.get("additionalProperties")
    if isinstance(extra, dict):
        _walk(extra, crd_node.get("additionalProperties") or {}, f"{path}.*", defs, out)
    for value in (model.get("patternProperties") or {}).values():
        _walk(value, crd_node.get("additionalProperties") or {}, f"{path}.*", defs, out)


def test_every_field_constraint_reaches_the_crd() -> None:
    schema = api.DocModelSpec.model_json_schema(by_alias=True, mode="validation")
    spec_node = crd.openapi_schema()["properties"]["spec"]
    problems: list[str] = []
    _walk(schema, spec_node, "spec", schema.get("$defs", {}), problems)
    assert problems == []


def _models() -> dict[str, type[api.ApiModel]]:
    return {m.__name__: m for m in crd._models(api.DocModelSpec).values()}


def test_every_python_validator_has_a_cel_twin_or_is_enforced_by_the_operator() -> None:
    found = set()
    for name, model in _models().items():
        decorators = model.__pydantic_decorators__
        for kind in ("field_validators", "model_validators"):
            found |= {(name, validator) for validator in getattr(decorators, kind)}
    assert found, "the introspection found no validators at all"
    assert found == set(api.PYTHON_ONLY), (
        "a validator with no CEL twin must be a Rule (CEL + Python) or be listed in "
        f"api.PYTHON_ONLY: found {sorted(found)}, listed {sorted(api.PYTHON_ONLY)}"
    )


def _crd_rules(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
        return own + [r for v in node.values() for r in _crd_rules(v)]
    if isinstance(node, list):
        return [r for v in node for r in _crd_rules(v)]
    return []


def test_every_rule_is_in_the_crd() -> None:
    rules = _crd_rules(crd.openapi_schema())
    for rule in api.RULES:
        assert rule.cel in rules, rule.cel
        assert rule.on.__name__ in _models()
