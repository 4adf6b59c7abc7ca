"""AWS rules for what jwtex emits (docs/rules.md#aws-limits): session tag limits, the tags claim and the
source identity claim (docs/rules.md#source-identity). Pure."""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "AWS_CLAIM_PREFIX",
    "AWS_SOURCE_IDENTITY_CLAIM",
    "AWS_TAGS_CLAIM",
    "MAX_SOURCE_IDENTITY_LENGTH",
    "MIN_SOURCE_IDENTITY_LENGTH",
    "STS_AUDIENCE",
    "MAX_SESSION_TAGS",
    "MAX_SUBJECT_LENGTH",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "MAX_TRANSITIVE_TAG_KEYS",
    "MAX_WEB_IDENTITY_TOKEN_LENGTH",
    "TagValueError",
    "aws_source_identity",
    "aws_tag",
    "is_aws_claim",
    "session_tag_key_validate",
    "session_tag_value_validate",
    "source_identity_problem",
]

# The audience of a web identity token meant for AWS STS (AssumeRoleWithWebIdentity), as the IAM
# OIDC provider's client id lists it (IAM User Guide, "Create an OpenID Connect (OIDC) identity
# provider in IAM"): a tenant's default audience, and what the console proposes.
STS_AUDIENCE = "sts.amazonaws.com"

# AWS STS ``Tag`` type (STS API Reference, "Tag"; IAM User Guide, "Pass session tags in
# AWS STS" → "Things to know about session tags"): "You can pass up to 50 session tags.
# The plain text session tag keys can't exceed 128 characters, and the values can't
# exceed 256 characters." Key: length 1–128, pattern ``[\p{L}\p{Z}\p{N}_.:/=+\-@]+``;
# value: length 0–256, pattern ``[\p{L}\p{Z}\p{N}_.:/=+\-@]*``. Lengths are counted in
# Unicode code points here (Python ``len``).
MAX_SESSION_TAGS = 50
MAX_TAG_KEY_LENGTH = 128
MAX_TAG_VALUE_LENGTH = 256
# IAM User Guide, "Tagging IAM resources" → "Rules for tagging": the ``aws:`` prefix is
# reserved for AWS use; STS refuses session tag keys that start with it.
RESERVED_TAG_KEY_PREFIX = "aws:"
# The ASCII punctuation the AWS pattern allows besides \p{L}, \p{Z} and \p{N}.
_TAG_EXTRA_CHARACTERS = frozenset("_.:/=+-@")
_TAG_CATEGORY_CLASSES = frozenset("LZN")  # \p{L} letters, \p{Z} separators, \p{N} numbers
# Exact for ASCII: the only ASCII characters in L/Z/N are letters, digits and the space.
_ASCII_TAG_RE = re.compile(r"[A-Za-z0-9 _.:/=+\-@]*")
_ASCII_REFUSED_RE = re.compile(r"[\x00-\x1f!-*,;<>?\[-^`{-\x7f]")  # every ASCII character the above refuses

AWS_TAGS_CLAIM = "https://aws.amazon.com/tags"
# IAM User Guide, "Monitor and control actions taken with assumed roles" → "Setting the source identity
# with AssumeRoleWithWebIdentity": the claim STS makes the session's SourceIdentity.
AWS_SOURCE_IDENTITY_CLAIM = "https://aws.amazon.com/source_identity"
# Claims under this prefix are AWS's to read (the two above, and whatever AWS names next). A token
# carries one only through the field that checks it: any other is refused as an extra claim
# (docs/rules.md#extra-claims), compared without case as a URL's scheme and host are.
AWS_CLAIM_PREFIX = "https://aws.amazon.com/"
# STS API Reference, AssumeRole/AssumeRoleWithWebIdentity, ``SourceIdentity``: length 2–64, pattern
# ``[\w+=,.@-]*`` (``\w`` is ASCII there: letters, digits, ``_``); IAM User Guide, "Monitor and
# control actions taken with assumed roles": a value may not begin with ``aws:`` (which the pattern
# already excludes: it has no ``:``; checked in any case all the same).
MIN_SOURCE_IDENTITY_LENGTH = 2
MAX_SOURCE_IDENTITY_LENGTH = 64
_SOURCE_IDENTITY_RE = re.compile(r"[A-Za-z0-9_+=,.@-]*")
_SOURCE_IDENTITY_REFUSED_RE = re.compile(r"[^A-Za-z0-9_+=,.@-]")
# IAM User Guide, "Pass session tags in AWS STS": up to 50 transitive keys, each one of the tags.
MAX_TRANSITIVE_TAG_KEYS = 50
# STS API Reference, AssumeRoleWithWebIdentity: ``WebIdentityToken`` is 4 to 20,000 characters.
MAX_WEB_IDENTITY_TOKEN_LENGTH = 20_000
# STS API Reference, AssumeRoleWithWebIdentity response: ``SubjectFromWebIdentityToken`` (the
# token's ``sub``, which trust policies test as ``…:sub``) is at most 255 characters.
MAX_SUBJECT_LENGTH = 255


class TagValueError(ValueError):
    """A tag value AWS refuses; ``kind`` is "type", "length", "character" or "reserved" and, for a
    refused character, ``character`` names it (for the denial's hint)."""

    def __init__(self, message: str, *, kind: str, character: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.character = character


def _bad_tag_character(text: str) -> str | None:
    if text.isascii():
        if _ASCII_TAG_RE.fullmatch(text):
            return None
        return next(ch for ch in text if not _ASCII_TAG_RE.fullmatch(ch))
    for ch in text:
        if ch not in _TAG_EXTRA_CHARACTERS and unicodedata.category(ch)[0] not in _TAG_CATEGORY_CLASSES:
            return ch
    return None


def _describe_character(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" {ch!r}" if ch.isprintable() else "")


_ALLOWED_CHARACTERS_TEXT = "letters, numbers, spaces and _ . : / = + - @"


def session_tag_key_validate(key: str) -> None:
    """Raise ``ValueError`` unless ``key`` is a session tag key AWS STS accepts."""
    if not isinstance(key, str):
        raise ValueError("A session tag key must be a string.")
    if not 1 <= len(key) <= MAX_TAG_KEY_LENGTH:
        raise ValueError(
            f"Session tag key must be 1 to {MAX_TAG_KEY_LENGTH} characters long (AWS limit); it is {len(key)}."
        )
    bad = _bad_tag_character(key)
    if bad is not None:
        raise ValueError(
            f"Session tag key {key!r} contains {_describe_character(bad)}; AWS allows only {_ALLOWED_CHARACTERS_TEXT}."
        )
    if key[: len(RESERVED_TAG_KEY_PREFIX)].lower() == RESERVED_TAG_KEY_PREFIX:
        raise ValueError(f"Session tag key {key!r} starts with 'aws:', which AWS reserves.")


def session_tag_value_validate(key: str, value: str) -> None:
    """Raise ``TagValueError`` unless ``value`` is a value AWS STS accepts for tag ``key``.

    The message names the key and the offending character, never the whole value.
    """
    if not isinstance(value, str):
        raise TagValueError(
            f"Session tag {key!r}: the value must be a string, not {type(value).__name__}.", kind="type"
        )
    if len(value) > MAX_TAG_VALUE_LENGTH:
        raise TagValueError(
            f"Session tag {key!r}: the value is {len(value)} characters long; "
            f"AWS allows at most {MAX_TAG_VALUE_LENGTH}.",
            kind="length",
        )
    bad = _bad_tag_character(value)
    if bad is not None:
        raise TagValueError(
            f"Session tag {key!r}: the value contains {_describe_character(bad)}; "
            f"AWS allows only {_ALLOWED_CHARACTERS_TEXT}.",
            kind="character",
            character=bad,
        )
    if value[: len(RESERVED_TAG_KEY_PREFIX)].lower() == RESERVED_TAG_KEY_PREFIX:
        raise TagValueError(f"Session tag {key!r}: the value starts with 'aws:', which AWS reserves.", kind="reserved")


def aws_tag(value: str) -> str:
    """``value`` as a tag value AWS accepts, deterministically: every character AWS refuses
    becomes ``_``, the result is cut to 256 characters, and a leading ``aws:`` (any case) becomes
    ``aws_``. Valid values come back unchanged, and ``aws_tag(aws_tag(v)) == aws_tag(v)``.
    The rules' CEL function of the same name (``aws_tag(claims.actor)``)."""
    if not isinstance(value, str):
        raise TypeError(f"aws_tag() takes a string, not {type(value).__name__}")
    # Each character maps to one, so cutting first gives the same result and bounds the work to
    # 256 characters whatever the claim's size (the rules' cost model counts on it: cel_cost).
    value = value[:MAX_TAG_VALUE_LENGTH]
    if not (value.isascii() and _ASCII_TAG_RE.fullmatch(value)):
        value = _ASCII_REFUSED_RE.sub("_", value)
        if not value.isascii():  # ASCII is settled above; the rest by Unicode category (L, Z, N)
            category = unicodedata.category
            value = "".join(ch if ch < "\x80" or category(ch)[0] in _TAG_CATEGORY_CLASSES else "_" for ch in value)
    if value[: len(RESERVED_TAG_KEY_PREFIX)].lower() == RESERVED_TAG_KEY_PREFIX:
        value = value[:3] + "_" + value[4:]
    return value


def is_aws_claim(name: str) -> bool:
    """Whether ``name`` is in AWS's claim namespace (``https://aws.amazon.com/…``, any case)."""
    return isinstance(name, str) and name[: len(AWS_CLAIM_PREFIX)].lower() == AWS_CLAIM_PREFIX


def source_identity_problem(value: object) -> str | None:
    """Why STS would refuse ``value`` as a source identity; None when it accepts it. Names the
    first refused character, never more of the value."""
    if not isinstance(value, str):
        return f"the source identity must be a string, not {'null' if value is None else type(value).__name__}"
    if not MIN_SOURCE_IDENTITY_LENGTH <= len(value) <= MAX_SOURCE_IDENTITY_LENGTH:
        return (
            f"the source identity is {len(value)} characters long; AWS takes "
            f"{MIN_SOURCE_IDENTITY_LENGTH} to {MAX_SOURCE_IDENTITY_LENGTH}"
        )
    if value[: len(RESERVED_TAG_KEY_PREFIX)].lower() == RESERVED_TAG_KEY_PREFIX:
        return "the source identity starts with 'aws:', which AWS reserves"
    if not _SOURCE_IDENTITY_RE.fullmatch(value):
        bad = _SOURCE_IDENTITY_REFUSED_RE.search(value).group()
        return (
            f"the source identity contains {_describe_character(bad)}; AWS allows only ASCII letters, "
            "digits and _ + = , . @ -"
        )
    return None


def aws_source_identity(value: str) -> str:
    """``value`` as a source identity AWS accepts, deterministically: every character AWS refuses
    (anything but ASCII letters, digits and ``_+=,.@-``) becomes ``_``, the result is cut to 64
    characters, and one shorter than 2 is padded with ``_`` (``""`` → ``"__"``, ``"x"`` → ``"x_"``).
    Valid values come back unchanged, and ``aws_source_identity(aws_source_identity(v))`` is
    ``aws_source_identity(v)``. A leading ``aws:`` cannot survive: ``:`` becomes ``_``. The rules'
    CEL function of the same name (``aws_source_identity(claims.actor)``)."""
    if not isinstance(value, str):
        raise TypeError(f"aws_source_identity() takes a string, not {type(value).__name__}")
    # One character for one, so cutting first bounds the work to 64 characters (cel_cost counts on it).
    value = _SOURCE_IDENTITY_REFUSED_RE.sub("_", value[:MAX_SOURCE_IDENTITY_LENGTH])
    return value.ljust(MIN_SOURCE_IDENTITY_LENGTH, "_")
