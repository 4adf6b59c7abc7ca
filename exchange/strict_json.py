"""One strict JSON decoder for whatever an untrusted party sends us (tokens, request bodies).

Duplicate member names are refused at any depth (RFC 7515 §4, RFC 7519 §4, RFC 8725 §3.7):
two components reading the first and the last of two ``"sub"`` members would be looking at
two different documents. ``NaN``/``Infinity`` are not JSON (RFC 8259 §6) and are refused too.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateMemberError(ValueError):
    pass


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateMemberError("duplicate member name")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


_DECODER = json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_refuse_constant)


def loads(text: str) -> Any:
    """Decode ``text``; ``DuplicateMemberError``, ``ValueError`` (incl. JSONDecodeError) or
    ``RecursionError`` (nesting deeper than the interpreter allows) on refusal."""
    return _DECODER.decode(text)
