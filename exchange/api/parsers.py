"""Request-body parsing for the JSON API: malformed input is a 400, never a 500."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class _DuplicateMember(ValueError):
    pass


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Refused for the same reason the verifier refuses them in a token (RFC 8725 §3.7): a
    # proxy or WAF that reads the first "subject_token" and this service reading the last
    # would be looking at two different requests.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateMember("duplicate member name")
    return obj


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


class StrictJSONParser(JSONParser):
    """DRF's ``JSONParser`` without its gaps (the ``ParseError`` detail is safe to show): a body nested deeper than the decoder's
    recursion limit raised ``RecursionError`` (a 500), an unknown charset ``LookupError``;
    duplicate member names and NaN/Infinity are refused too."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            text = stream.read().decode(encoding)
            return json.JSONDecoder(object_pairs_hook=_object_pairs, parse_constant=_refuse_constant).decode(text)
        except _DuplicateMember:
            raise ParseError("The body repeats a member name.") from None
        except RecursionError:
            raise ParseError("The body is nested too deeply.") from None
        except (ValueError, LookupError):  # JSONDecodeError, UnicodeError, unknown charset
            raise ParseError("The body is not valid JSON.") from None
