"""Configuration files: YAML (the strict loader: no anchors or aliases, no repeated keys) or JSON
(the strict decoder) in, YAML or JSON out, with errors that name the line and column."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

from ..core import strict_json, strict_yaml
from .schema import ConfigError

__all__ = ["config_dump", "config_load"]


# --------------------------------------------------------------------------- files


def _load_yaml(text: str, source: str) -> Any:
    try:
        return strict_yaml.loads(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError([(source, f"{where}{exc.problem or exc.context}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([(source, f"not valid YAML: {exc}")]) from None


def _load_json(text: str, source: str) -> Any:
    try:
        return strict_json.loads(text)
    except strict_json.DuplicateMemberError as exc:
        raise ConfigError([(source, f"duplicate key {exc.name!r} in a JSON object")]) from None
    except json.JSONDecodeError as exc:
        raise ConfigError([(source, f"line {exc.lineno}, column {exc.colno}: {exc.msg}")]) from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, nesting deeper than any config needs
        raise ConfigError([(source, f"not valid JSON: {exc}")]) from None


def config_load(text: str, *, source: str = "<stdin>", fmt: str | None = None) -> Any:
    """Parse a document. ``fmt`` is ``"json"``, ``"yaml"`` or ``None`` (guess: JSON when it
    starts with ``{``, else YAML — YAML also reads most JSON). Raises ``ConfigError``."""
    if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
        try:
            return _load_json(text, source)
        except ConfigError:
            if fmt == "json":
                raise
            # A YAML flow mapping also starts with "{": let YAML have a go (and explain).
    return _load_yaml(text, source)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # never an anchor: what is written must load again (revisions are restored from it)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line CEL reads best as a literal block; PyYAML falls back to quoting if it can't.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def config_dump(document: Mapping[str, Any], *, fmt: str = "yaml") -> str:
    if fmt == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    # A wide line so CEL expressions are never folded over several lines.
    return yaml.dump(
        document,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=1 << 16,
    )
