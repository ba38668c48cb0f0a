"""The resource's identity (group, version, kind), the product defaults, the value patterns
the API server and Python both check, and `ApiModel`, the base of every model."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "docmodel.dev"


VERSION = "v1alpha1"


API_VERSION = f"{GROUP}/{VERSION}"


KIND = "DocModel"


PLURAL = "docmodels"


SINGULAR = "docmodel"


SHORT_NAMES = ["dm"]


DEFAULT_BASE_MODEL = "meta-llama/Llama-3.1-8B-Instruct"


DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


DEFAULT_TARGET_MODULES = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
]


DEFAULT_INCLUDE = ["**/*.md", "**/*.markdown", "**/*.txt", "**/*.html", "**/*.htm", "**/*.pdf"]


# A bucket name as S3 defines it (3-63 chars, lower case, digits, dots, hyphens).
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


# Whitespace as a character class, the same in Python's (Rust) and the API server's (Go)
# regular expressions: Go's `\s` is ASCII only, Rust's is every Unicode space, so a URL with
# a no-break space would pass the CRD and fail only in Python. Both read this class alike.
_SPACE = r"\s\v\x85\p{Z}"


S3_URI_PATTERN = rf"^s3://[a-z0-9][a-z0-9.-]{{1,61}}[a-z0-9](/[^{_SPACE}]*)?$"


# No user:password@ and no query string: credentials belong in Secrets, never in a URL that
# is stored in manifests and shown in logs.
HTTP_URL_PATTERN = rf"^https?://[^{_SPACE}/@?#]+(/[^{_SPACE}?#]*)?$"


DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"


# Kubernetes' own rules for values copied into pod specs, so a bad one is refused at apply time
# (by these patterns in the CRD and in Python), not when the Job is created.
# A label key or taint key: an optional DNS-subdomain prefix and `/`, then a name of at most 63.
QUALIFIED_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


LABEL_VALUE_PATTERN = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


# An image reference: [registry[:port]/]path[:tag][@sha256:digest], as the container runtime
# parses it (path components lower case).
IMAGE_PATTERN = (
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"(:[0-9]+)?/)?[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
)


DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"


# The shortest source poll: each one lists the whole source. A cron schedule has five fields,
# so it fires at most once a minute, above this floor too.
MIN_POLL_SECONDS = 30


def _cron_field(values: str, names: str | None = None) -> str:
    """One cron field: `*`, a value or a range of `values` (or `names`), an optional `/step`,
    items separated by commas."""
    atom = f"({values}|{names})" if names else f"({values})"
    item = rf"(\*|{atom}(-{atom})?)(/[1-9][0-9]*)?"
    return rf"{item}(,{item})*"


# Five cron fields, each within its range (minute 0-59, hour 0-23, day 1-31 or ?/L, month 1-12
# or jan-dec, weekday 0-7 or sun-sat or ?), or an @-macro: the API server refuses a value out
# of range as Python does. croniter still checks what a pattern cannot (a weekday range that
# runs backwards).
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    + r"[ \t]+".join(
        [
            _cron_field(r"[0-5]?[0-9]"),
            _cron_field(r"[01]?[0-9]|2[0-3]"),
            "(" + _cron_field(r"0?[1-9]|[12][0-9]|3[01]") + r"|\?|L)",
            _cron_field(r"0?[1-9]|1[0-2]", "(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)"),
            "(" + _cron_field("[0-7]", "(?i:sun|mon|tue|wed|thu|fri|sat)") + r"|\?)",
        ]
    )
    + ")$"
)


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, no unknown fields."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )


class SecretRef(ApiModel):
    """A reference to a Secret in the DocModel's namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN_PATTERN,
        description="Name of the Secret in the same namespace as the DocModel.",
    )


class SecretKeyRef(SecretRef):
    """A reference to one key of a Secret in the DocModel's namespace."""

    key: str = Field(
        min_length=1,
        max_length=253,
        description="Key inside the Secret whose value is used.",
    )


def duration_seconds(value: str) -> int:
    """Parse a duration such as `1h30m` or `45s` into seconds."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} is not a duration such as 10m or 1h30m")
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)([smh])", value))
