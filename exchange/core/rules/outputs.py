"""Running one compiled CEL program, and turning its result into what a token holds. Pure.

An engine failure of any kind (pyo3's ``PanicException`` is a ``BaseException``) becomes an
``EvaluationError``, which denies; a result becomes a tag value (a string, number or bool) or
plain JSON (an extra claim), or fails the same way.
"""

from __future__ import annotations

import math
from typing import Any

import cel

from ..aws import TagValueError
from .cel_guard import PASSTHROUGH

__all__ = ["EvaluationError", "program_execute", "json_value", "tag_problem", "tag_value"]


class EvaluationError(Exception):
    def __init__(self, cause: BaseException | str) -> None:
        self.cause = cause
        if isinstance(cause, str):
            text = cause
        else:
            detail = str(cause)
            text = f"{type(cause).__name__}: {detail}" if detail else type(cause).__name__
        super().__init__(text)


def program_execute(program: cel.Program, context: Any) -> Any:
    if isinstance(context, EvaluationError):  # the claims could not be given to CEL at all
        raise context
    try:
        return program.execute(context)
    except PASSTHROUGH:
        raise
    except BaseException as exc:  # KeyError, TypeError, … and pyo3 PanicException alike
        raise EvaluationError(exc) from None


def tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "true" if value else "false"
    if isinstance(value, int):  # CEL int and uint both arrive as int
        return str(value)
    kind = "null" if value is None else type(value).__name__
    raise EvaluationError(f"a session tag value must be a string, number or bool, not {kind}")


def json_value(value: Any, path: str) -> Any:
    """Convert a CEL result to plain JSON-serialisable Python, or fail."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise EvaluationError(f"{path} is {value!r}, which JSON cannot represent")
    if isinstance(value, (list, tuple)):
        return [json_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise EvaluationError(f"{path} has a {type(key).__name__} map key; JSON object keys are strings")
            result[key] = json_value(item, f"{path}.{key}")
        return result
    raise EvaluationError(f"{path} is a {type(value).__name__}, which is not JSON")


def tag_problem(exc: Exception, value: Any, source: str) -> str:
    """What is wrong with a tag value, and what to write instead (for the audit and the
    simulator; never the client's description)."""
    if not isinstance(exc, TagValueError) or not isinstance(value, str):
        return str(exc)
    shown = repr(value if len(value) <= 64 else value[:61] + "...")
    fix = f"use aws_tag({source.strip()})"
    if exc.kind == "character" and exc.character is not None:
        return f"{shown} contains {exc.character!r}, which AWS refuses in tags — {fix}"
    if exc.kind == "length":
        return f"the value is {len(value)} characters, over AWS's 256 — {fix} (it cuts to 256)"
    if exc.kind == "reserved":
        return f"{shown} starts with 'aws:', which AWS reserves — {fix}"
    return str(exc)
