"""The whole object (`DocModel`), and the one way from a manifest to it: validation whose
errors name each bad field."""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from docmodel.api.base import DNS_LABEL_PATTERN, ApiModel
from docmodel.api.rules import _rules_for
from docmodel.api.spec import DocModelSpec
from docmodel.api.status import DocModelStatus


class ObjectMeta(BaseModel):
    """The part of metadata DocModel reads."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(
        min_length=1,
        max_length=40,
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
        description="Names the Service, Deployments and Jobs, so it is a DNS-1035 label of at "
        "most 40 characters.",
    )
    namespace: str = Field(default="default", pattern=DNS_LABEL_PATTERN)


class DocModel(BaseModel):
    """A whole DocModel object."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["docmodel.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["DocModel"]
    metadata: ObjectMeta
    spec: DocModelSpec
    status: DocModelStatus | None = None


_Parsed = TypeVar("_Parsed", "DocModel", "DocModelSpec")


class SpecError(ValueError):
    """A DocModel that is not valid; `errors` is a list of (field path, message)."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        lines = [f"{path}: {message}" for path, message in errors]
        super().__init__("invalid DocModel:\n  " + "\n  ".join(lines))


def _camel_path(loc: tuple[int | str, ...]) -> str:
    if loc and loc[-1] == "[key]":  # a map key: the map is the field (as the API server says)
        loc = loc[:-2]
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]" if parts else f"[{item}]"
        else:
            parts.append(to_camel(item) if "_" in item else item)
    return ".".join(parts)


def _check_rules(obj: Any, path: str, errors: list[tuple[str, str]]) -> None:
    """Walk the model tree and apply every cross-field rule."""
    if isinstance(obj, ApiModel):
        for rule in _rules_for(type(obj)):
            if not rule.check(obj):
                errors.append((path + rule.field_path, rule.message))
        for name in type(obj).model_fields:
            child = getattr(obj, name)
            _check_rules(child, f"{path}.{to_camel(name)}", errors)
    elif isinstance(obj, list):
        for index, item in enumerate(obj):
            _check_rules(item, f"{path}[{index}]", errors)


def docmodel_manifest(obj: Any) -> Any:
    """What defines a DocModel, from a manifest or from an object read back from the API
    server: apiVersion, kind, metadata's name and namespace, and spec. Server-side metadata
    (uid, managedFields, ...) and status are dropped; anything else is kept, so an unknown
    top-level field is still refused by name."""
    if not isinstance(obj, dict):
        return obj  # validation names what it is
    out = {k: v for k, v in obj.items() if k != "status"}
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        out["metadata"] = {k: meta[k] for k in ("name", "namespace") if k in meta}
    return out


def _validate(cls: type[_Parsed], data: Any, at: tuple[str, ...]) -> _Parsed:
    """Validate `data` as `cls`, then its spec's rules; `SpecError` names each bad field."""
    try:
        model = cls.model_validate(data)
    except ValidationError as exc:
        errors = [(_camel_path(at + tuple(error["loc"])), error["msg"]) for error in exc.errors()]
        raise SpecError(errors) from None
    rule_errors: list[tuple[str, str]] = []
    _check_rules(model.spec if isinstance(model, DocModel) else model, "spec", rule_errors)
    if rule_errors:
        raise SpecError(rule_errors)
    return model


def parse_docmodel(obj: Any) -> DocModel:
    """The one way from a manifest, or an object the API server returned, to a typed DocModel
    (see `docmodel_manifest`); raise `SpecError` naming each bad field."""
    return _validate(DocModel, docmodel_manifest(obj), ())


def parse_spec(spec: Any) -> DocModelSpec:
    """Validate a spec alone; errors are named from `spec.`, as in a whole DocModel."""
    return _validate(DocModelSpec, spec, ("spec",))


def spec_to_wire(spec: DocModelSpec) -> dict[str, Any]:
    """The spec as the API server stores it (camelCase, defaults filled, unset optionals omitted)."""
    return spec.model_dump(by_alias=True, exclude_none=True, mode="json")
