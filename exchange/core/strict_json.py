"""One strict JSON decoder for whatever an untrusted party sends us (tokens, request bodies).

Duplicate member names are refused at any depth (RFC 7515 §4, RFC 7519 §4, RFC 8725 §3.7):
two components reading the first and the last of two ``"sub"`` members would be looking at
two different documents. ``NaN``/``Infinity`` are not JSON (RFC 8259 §6) and are refused too.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateMemberError(ValueError):
    """A member name appears twice in one object; ``name`` is the first repeated one."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"duplicate member name {name!r}")


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateMemberError(name)
            seen.add(name)
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_refuse_constant)


# Deeper than any real token or request needs; and a limit of our own, not the interpreter's
# (Python 3.13's decoder no longer stops at the recursion limit, and deeply nested values
# would break whatever walks them later: CEL, the audit JSON, the logs).
MAX_DEPTH = 64


def loads(text: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Decode ``text``; ``DuplicateMemberError``, ``ValueError`` (incl. JSONDecodeError) or
    ``RecursionError`` (nested deeper than ``max_depth``) on refusal."""
    value = _DECODER.decode(text)
    if text.count("[") + text.count("{") > max_depth:  # cheap: only then can it be too deep
        _check_depth(value, max_depth)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            raise RecursionError(f"nested deeper than {max_depth}")
        stack.extend((child, depth + 1) for child in children)
