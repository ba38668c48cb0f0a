"""Log lines as structured records, so tests assert on what a line says (its event and its
`key=value` fields) rather than on its wording.

    for fields in events(capsys.readouterr().err, "Trained"):
        assert int(fields["step"].split("/")[0]) >= 1
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# `docmodel.logs`' text format: `HH:MM:SS LEVEL logger message`.
PREFIX = re.compile(r"^\d\d:\d\d:\d\d [A-Z]+ \S+ ")
FIELD = re.compile(r"\b([a-z_][a-z0-9_]*)=(\S+)")


def parse(message: str) -> tuple[str, dict[str, str]]:
    """(event, fields): the words before the first `key=value`, and every `key=value`."""
    first = FIELD.search(message)
    event = (message[: first.start()] if first else message).strip()
    return event, {k: v.rstrip(";,:") for k, v in FIELD.findall(message)}


def messages(source: str | Iterable[logging.LogRecord]) -> list[str]:
    """Messages of stderr text in `docmodel.logs`' format, or of captured log records."""
    if isinstance(source, str):
        return [PREFIX.sub("", line) for line in source.splitlines() if PREFIX.match(line)]
    return [record.getMessage() for record in source]


def events(source: str | Iterable[logging.LogRecord], event: str) -> list[dict[str, str]]:
    """The fields of every line whose event is `event`, in order."""
    out = []
    for message in messages(source):
        name, fields = parse(message)
        if name == event:
            out.append(fields)
    return out
