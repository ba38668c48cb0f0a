"""One logging setup for every DocModel process: `HH:MM:SS LEVEL logger message`, or JSON.

Messages follow the cluster's style: capitalised, past tense, key=value, the object named
(`Published adapter revision=3f2a9c01de uri=s3://...`).
"""

from __future__ import annotations

import json
import logging
import sys

from docmodel.settings import LogSettings

# Libraries whose INFO chatter (connection pools, retries, file locks) drowns the progress lines,
# and bitsandbytes, which warns at import on machines without its optional CPU kernels.
QUIET = {
    "botocore": logging.WARNING,
    "boto3": logging.WARNING,
    "urllib3": logging.WARNING,
    "s3transfer": logging.WARNING,
    "httpx": logging.WARNING,
    "filelock": logging.WARNING,
    "bitsandbytes": logging.ERROR,
}


LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup_logging(fmt: str = "text") -> None:
    """Log to stderr at `DOCMODEL_LOG_LEVEL` (INFO by default), as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    level = LogSettings.from_env().log_level.upper()
    if level not in LEVELS:
        root.setLevel(logging.INFO)
        logging.getLogger("docmodel").warning(
            "Ignored DOCMODEL_LOG_LEVEL=%r: use one of %s", level, ", ".join(LEVELS)
        )
    else:
        root.setLevel(level)
    for name, quiet_level in QUIET.items():
        logging.getLogger(name).setLevel(quiet_level)
