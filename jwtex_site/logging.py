"""One log format for web, worker and beat (docs/operations.md#logs): one JSON object per line on stderr.

Structured fields come from ``extra={"jwtex": {...}}``. ``JWTEX_LOG_FORMAT=text`` (what
``make run`` uses) prints the same records as readable lines for a person at a terminal.
``logging_config`` is the one configuration every process applies: Django's ``LOGGING`` (so the
web processes, the Celery worker and beat) and the web servers' own (jwtex_site/serve.py).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from jwtex_site import environment


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


def configured(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``logging_config`` as the environment asks for it (``JWTEX_LOG_FORMAT``, ``JWTEX_LOG_LEVEL``,
    ``JWTEX_ACCESS_LOG``); ``environment.BadVariable`` for a format that is neither json nor text."""
    return logging_config(
        log_format=environment.log_format(environ),
        level=environment.text("JWTEX_LOG_LEVEL", environ),
        access_log=environment.access_log(environ),
    )


def _stderr(level: str) -> dict[str, Any]:
    return {"handlers": ["console"], "level": level, "propagate": False}


def logging_config(*, log_format: str, level: str, access_log: bool) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of every jwtex process: one handler on stderr in
    ``log_format`` (``json`` or ``text``), the root at ``level`` (``JWTEX_LOG_LEVEL``)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {"()": "jwtex_site.logging.JsonFormatter"},
            "text": {"()": "jwtex_site.logging.TextFormatter"},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": log_format, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # One stream: Django's own loggers go through the same handler, once.
            "django": _stderr("INFO"),
            "django.server": _stderr("INFO"),
            # The CEL engine warns once per failed call of a rule's Python function (aws_tag of a list…):
            # a rule could write a line per list element per exchange. The failure denies and is audited.
            "cel": {"level": "ERROR"},
            # make serve's servers: their start-up and error lines, and the access log unless
            # JWTEX_ACCESS_LOG=0 (gunicorn's is quieted here; granian is told so on its command line).
            "gunicorn.error": _stderr("INFO"),
            "gunicorn.access": _stderr("INFO" if access_log else "WARNING"),
            "_granian": _stderr("INFO"),
            "granian.access": _stderr("INFO"),
        },
    }
