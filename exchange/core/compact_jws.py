"""A compact JWS's structure (RFC 7515 §7.1), checked and decoded before anything else of an
upstream token (docs/verification.md#structure). Pure.

``jwt_parse`` accepts a strict compact JWS whose header and payload are UTF-8 JSON objects
without duplicate members (RFC 7515 §4, RFC 7519 §4, RFC 8725 §3.7), and raises
``InvalidRequest`` (400) or ``RequestTooLarge`` (413); the signature and the claims are
``jwt_verify``'s (exchange.core.verification).
"""

from __future__ import annotations

import binascii
import json
import re
from typing import Any

from . import strict_json
from .errors import InvalidRequest, RequestTooLarge
from .limits import MAX_TOKEN_BYTES
from .values import ParsedToken

__all__ = ["jwt_parse"]

# RFC 4648 §3.5 / RFC 7515 §2: the last character of an unpadded segment must leave its
# unused bits zero, otherwise several strings decode to the same bytes (a signature could
# be "changed" without changing it).
_CANONICAL_LAST = {2: frozenset(b"AQgw"), 3: frozenset(b"AEIMQUYcgkosw048")}
_COMPACT_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
_URLSAFE_TO_STD = bytes.maketrans(b"-_", b"+/")
_PADDING = (b"", b"", b"==", b"=")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SEGMENT_NAMES = ("header", "payload", "signature")


_OUTSIDE_ALPHABET = "The token has a character outside the base64url alphabet (letters, digits, - and _, and two dots)."


def _too_large(size: int, max_bytes: int) -> str:
    return f"The token is {size} bytes, over the limit of {max_bytes}."


def _malformed(reason: str) -> InvalidRequest:
    return InvalidRequest("The token is malformed.", reason=reason)


def _decode_segment(segment: bytes, index: int) -> bytes:
    # The alphabet was checked on the whole token; here only the canonical form (RFC 4648
    # §3.5): a length of 1 mod 4 is never valid, and the last character's unused bits are 0.
    rem = len(segment) % 4
    if rem == 1 or (rem and segment[-1] not in _CANONICAL_LAST[rem]):
        raise _malformed(f"The token's {_SEGMENT_NAMES[index]} is not canonical base64url (RFC 4648 §3.5).")
    return binascii.a2b_base64(segment.translate(_URLSAFE_TO_STD) + _PADDING[rem])


def _decode_json_object(raw: bytes, index: int) -> dict[str, Any]:
    name = _SEGMENT_NAMES[index]
    try:
        text = raw.decode("utf-8")  # strictly UTF-8 (RFC 7515 §2, RFC 8259 §8.1): no UTF-16/32 sniffing
        value = strict_json.loads(text)
        # A lone surrogate escape ("\ud800") is valid JSON syntax but no Unicode text; it
        # would break every later UTF-8 encoding (audit, logs, CEL). Checked only when such
        # an escape is present at all.
        if _SURROGATE_ESCAPE.search(text):
            json.dumps(value, ensure_ascii=False).encode("utf-8")
    except strict_json.DuplicateMemberError:
        raise _malformed(f"The token's {name} names a member twice.") from None
    except RecursionError:
        raise _malformed(f"The token's {name} is nested too deeply.") from None
    except (UnicodeError, ValueError):  # incl. JSONDecodeError, int digit limit
        raise _malformed(f"The token's {name} is not UTF-8 JSON.") from None
    if not isinstance(value, dict):
        raise _malformed(f"The token's {name} is not a JSON object.")
    return value


def jwt_parse(token: str | bytes, *, max_bytes: int = MAX_TOKEN_BYTES) -> ParsedToken:
    """Check a compact JWS's structure (RFC 7515 §7.1) and decode it; no signature check."""
    if not isinstance(token, (str, bytes, bytearray)):
        raise _malformed("The token is not text.")
    # Size first, before any other work (docs/verification.md#structure).
    if len(token) > max_bytes:
        raise RequestTooLarge(reason=_too_large(len(token), max_bytes))
    if isinstance(token, str):
        if not token.isascii():  # never a valid token; but size is still checked in bytes first
            size = len(token.encode("utf-8", "surrogatepass"))
            if size > max_bytes:
                raise RequestTooLarge(reason=_too_large(size, max_bytes))
            raise _malformed(_OUTSIDE_ALPHABET)
        data = token.encode("ascii")
    else:
        data = bytes(token)

    if data[:1].isspace() or data[-1:].isspace():
        # The usual mistake (a token file written by echo, `curl -d @file`): say what it is.
        raise InvalidRequest(
            "The token is malformed: it has surrounding whitespace, e.g. a trailing newline.",
            reason="The token has leading or trailing whitespace, e.g. a trailing newline.",
        )
    # Exactly three segments: no JWE (five), no JSON serialization, no nesting (RFC 7516 §9).
    if data.count(b".") != 2:
        parts = data.count(b".") + 1
        raise _malformed(
            f"The token has {parts} {'part' if parts == 1 else 'parts'} separated by dots; "
            "a signed JWT has 3 (header.payload.signature)."
        )
    # RFC 7515 §2/§7.1: base64url without padding, whitespace or anything else. Deleting the
    # allowed bytes leaves nothing only for a clean token (a C loop; a regex is 4x slower).
    if data.translate(None, _COMPACT_ALPHABET):
        raise _malformed(_OUTSIDE_ALPHABET)
    header_b64, payload_b64, signature_b64 = data.split(b".")
    if not signature_b64:
        raise _malformed("The token's signature is empty: it is not signed.")
    header_raw = _decode_segment(header_b64, 0)
    payload_raw = _decode_segment(payload_b64, 1)
    signature = _decode_segment(signature_b64, 2)
    return ParsedToken(
        header=_decode_json_object(header_raw, 0),
        claims=_decode_json_object(payload_raw, 1),
        signing_input=data[: len(header_b64) + 1 + len(payload_b64)],
        signature=signature,
    )
