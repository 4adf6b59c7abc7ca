"""What AWS STS ``AssumeRoleWithWebIdentity`` accepts of a web identity token, written from the
AWS documentation independently of exchange.core.aws, so the tests do not check the code
against itself.

- STS API Reference, AssumeRoleWithWebIdentity: ``WebIdentityToken`` 4–20,000 characters;
  ``SubjectFromWebIdentityToken`` (the ``sub``) at most 255.
- IAM User Guide, "Pass session tags in AWS STS": at most 50 session tags and 50 transitive
  keys (each one of the tags); tag keys 1–128 and values 0–256 characters of
  ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]``; keys are case-insensitive (no two differ by case only);
  the ``aws:`` prefix is reserved for keys and values, in any case.
- STS API Reference, AssumeRoleWithWebIdentity → SourceIdentity (the
  ``https://aws.amazon.com/source_identity`` claim, IAM User Guide "Monitor and control actions
  taken with assumed roles"): 2–64 characters matching ``[\\w+=,.@-]*`` (``\\w`` ASCII: letters,
  digits, ``_``), not beginning with ``aws:``.
"""

from __future__ import annotations

import base64
import json
import unicodedata

TAGS_CLAIM = "https://aws.amazon.com/tags"
SOURCE_IDENTITY_CLAIM = "https://aws.amazon.com/source_identity"
_SOURCE_IDENTITY_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+=,.@-")


def _tag_text_ok(text: str, *, minimum: int, maximum: int) -> bool:
    if not isinstance(text, str) or not minimum <= len(text) <= maximum:
        return False
    if text.lower().startswith("aws:"):
        return False
    return all(ch in "_.:/=+-@" or unicodedata.category(ch)[0] in "LZN" for ch in text)


def sts_problems(token: str) -> list[str]:
    """Every reason STS would refuse ``token``; empty when it would accept it."""
    problems = []
    if not 4 <= len(token) <= 20_000:
        problems.append(f"token length {len(token)}")
    segment = token.split(".")[1]
    payload = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    sub = payload.get("sub")
    if not isinstance(sub, str) or not 1 <= len(sub) <= 255:
        problems.append("sub")
    if SOURCE_IDENTITY_CLAIM in payload:
        identity = payload[SOURCE_IDENTITY_CLAIM]
        if not (
            isinstance(identity, str)
            and 2 <= len(identity) <= 64
            and set(identity) <= _SOURCE_IDENTITY_CHARACTERS
            and not identity.lower().startswith("aws:")
        ):
            problems.append("source identity")
    tags = payload.get(TAGS_CLAIM)
    if tags is None:
        return problems
    principal = tags.get("principal_tags", {})
    if len(principal) > 50:
        problems.append(f"{len(principal)} tags")
    folded = [key.casefold() for key in principal]
    if len(set(folded)) != len(folded):
        problems.append("tag keys differ only by case")
    for key, values in principal.items():
        if not _tag_text_ok(key, minimum=1, maximum=128):
            problems.append(f"tag key {key!r}")
        if not (isinstance(values, list) and len(values) == 1 and _tag_text_ok(values[0], minimum=0, maximum=256)):
            problems.append(f"tag value of {key!r}")
    transitive = tags.get("transitive_tag_keys", [])
    if len(transitive) > 50 or not set(transitive) <= set(principal):
        problems.append("transitive keys")
    return problems
