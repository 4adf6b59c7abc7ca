"""Request-body parsing for the JSON API: malformed input is a 400, never a 500."""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from ..core import strict_json


class StrictJSONParser(JSONParser):
    """DRF's ``JSONParser`` without its gaps (the ``ParseError`` detail is safe to show): a body nested deeper than
    the decoder's recursion limit raised ``RecursionError`` (a 500), an unknown charset ``LookupError``;
    duplicate member names and NaN/Infinity are refused too."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        try:
            text = stream.read().decode(encoding)
            return strict_json.loads(text)
        except strict_json.DuplicateMemberError:
            raise ParseError("The body repeats a member name.") from None
        except RecursionError:
            raise ParseError("The body is nested too deeply.") from None
        except (ValueError, LookupError):  # JSONDecodeError, UnicodeError, unknown charset
            raise ParseError("The body is not valid JSON.") from None
