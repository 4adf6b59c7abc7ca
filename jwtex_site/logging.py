"""One log format for web, worker and beat (docs/operations.md#logs): one JSON object per line on stderr.

Structured fields come from ``extra={"jwtex": {...}}``. ``JWTEX_LOG_FORMAT=text`` (what
``make run`` uses) prints the same records as readable lines for a person at a terminal.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "jwtex", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger: message key=value …`` (UTC)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_time(record)[11:23]} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        fields = getattr(record, "jwtex", None)
        if isinstance(fields, dict):
            line += "".join(f" {key}={value}" for key, value in fields.items() if value is not None)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line
