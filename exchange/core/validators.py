"""Validators shared by every way a configuration is written (admin forms, presets,
``jwtex_apply``): one rule, one message, wherever the value comes from
(docs/configuration-file.md#validation).

Pure: values in, a message (or None) out. The guarded fetch (``exchange.fetch``) enforces the
same rules again when it connects; these refuse what the URL alone already shows, at save time.
``issuer_problems`` is the one check of an issuer beyond its fields' own bounds, and
``rule_problems`` the one check of a rule: the model's ``clean()`` (so the admin's forms) and
the file loader (``jwtex_apply``) both report what they say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .issuer_allowlist import IssuerAllowlist
from .jwks import KeySet, static_jwks_clean
from .limits import SUPPORTED_UPSTREAM_ALGORITHMS
from .rules.spec import rule_findings, rule_spec_of, session_tag_entry_problem
from .shared_issuers import owner_pinning_problem

# (field, where within it — "" for the whole value, "[2]" for its third item —, message)
Problem = tuple[str, str, str]


INSECURE_SETTING = "JWTEX_ALLOW_INSECURE_ISSUERS"

# ipaddress's is_private/is_global leave these out (Python 3.11), so they are named here.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 shared address space
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the low 32 bits are an IPv4 address


def address_is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is a public unicast address: the only kind jwtex connects to
    (loopback, private, link-local — the cloud metadata service at 169.254.169.254 —, CGNAT,
    multicast, reserved and unspecified are not; IPv4 embedded in IPv6 is judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo or (None, None))[1]
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and not address_is_public(embedded):
            return False
    return not (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address in _CGNAT
        or not address.is_global
    )


def url_problem(value: str, *, what: str, allow_insecure: bool, is_issuer: bool = False) -> str | None:
    """Why ``value`` cannot be an upstream URL (``what`` names it: "The issuer"), or None."""
    if not isinstance(value, str) or not value or value != value.strip():
        return f"{what} must be an absolute URL without surrounding spaces."
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{what} is not a valid URL ({exc})."
    if parts.scheme == "http" and not allow_insecure:
        return f"{what} must be an https URL; http:// is allowed only with {INSECURE_SETTING} (development and tests)."
    if parts.scheme not in ("https", "http"):
        return f"{what} must be an https URL."
    if not parts.hostname:
        return f"{what} has no host."
    if parts.username is not None or parts.password is not None:
        return f"{what} must not contain credentials."
    if is_issuer and (parts.query or parts.fragment):
        # OpenID Connect Discovery 1.0 §3: an issuer has no query or fragment component.
        return f"{what} must not have a query or fragment."
    if not allow_insecure and not _host_may_be_public(parts.hostname):
        return (
            f"{what} points at {parts.hostname}, a loopback, private or link-local address; such hosts are allowed "
            f"only with {INSECURE_SETTING} (development and tests)."
        )
    return None


def _host_may_be_public(host: str) -> bool:
    """False for what the name alone shows to be non-public: ``localhost`` and non-public IP
    literals. Other names are resolved (and refused if need be) when fetched."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return address_is_public(ipaddress.ip_address(host))
    except ValueError:
        return True


def audiences_problems(value: Any) -> list[Problem]:
    """An issuer's audiences: a non-empty list of non-empty strings."""
    if not isinstance(value, list):
        return [("audiences", "", "expected a list of audience strings")]
    if not value:
        return [("audiences", "", "list at least one audience")]
    return [
        ("audiences", f"[{index}]", "an audience must not be empty" if isinstance(item, str) else "expected a string")
        for index, item in enumerate(value)
        if not isinstance(item, str) or not item
    ]


def algorithms_problems(value: Any) -> list[Problem]:
    """An issuer's signature algorithms: some, each supported (never none or HMAC), each once."""
    if not isinstance(value, list):
        return [("algorithms", "", "expected a list of algorithm names")]
    if not value:
        return [("algorithms", "", "list at least one algorithm")]
    supported = ", ".join(SUPPORTED_UPSTREAM_ALGORITHMS)
    problems: list[Problem] = [
        ("algorithms", f"[{index}]", f"unsupported algorithm {alg!r} (supported: {supported})")
        for index, alg in enumerate(value)
        if alg not in SUPPORTED_UPSTREAM_ALGORITHMS
    ]
    if len({repr(alg) for alg in value}) != len(value):
        problems.append(("algorithms", "", "an algorithm is listed twice"))
    return problems


def static_jwks_problem(value: Any) -> str | None:
    """Why ``value`` cannot be an issuer's static key set (docs/configuration-file.md#issuer-keys), or None."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not isinstance(value.get("keys"), list):
        return 'expected a JWKS: a mapping with a "keys" list'
    if not all(isinstance(key, Mapping) for key in value["keys"]):
        return 'every entry of "keys" must be a JWK (a mapping)'
    try:
        keys = KeySet.from_jwks(static_jwks_clean(value))  # only the members a JWK defines
    except ValueError as exc:
        return str(exc)
    if not keys.keys:
        return "the JWKS has no usable public key (RSA, EC or OKP)"
    return None


def issuer_problems(
    *,
    issuer: Any,
    jwks_uri: Any,
    audiences: Any,
    algorithms: Any,
    static_jwks: Any,
    allow_insecure: bool,
    allowlist: IssuerAllowlist | None = None,
) -> list[Problem]:
    """Everything wrong with an issuer's settings beyond each field's own bounds, in field order.
    ``allowlist``: the operators' ``JWTEX_ALLOWED_UPSTREAM_ISSUERS`` (None: any issuer), judged
    after the URL rule (docs/operators.md#allowed-upstream-issuers)."""
    problems: list[Problem] = []
    problem = url_problem(issuer, what="The issuer", allow_insecure=allow_insecure, is_issuer=True)
    if not problem and allowlist is not None:
        problem = allowlist.problem(issuer)
    if problem:
        problems.append(("issuer", "", problem))
    if jwks_uri:
        problem = url_problem(jwks_uri, what="The JWKS URI", allow_insecure=allow_insecure)
        if problem:
            problems.append(("jwks_uri", "", problem))
    problems += audiences_problems(audiences)
    problems += algorithms_problems(algorithms)
    problem = static_jwks_problem(static_jwks)
    if problem:
        problems.append(("static_jwks", "", problem))
    return problems


def _problem_at(path: str, message: str) -> Problem:
    """A rule check's ``(field path, message)`` (``session_tags.repo``, ``audiences[0]``) as a Problem."""
    cut = min((index for index in (path.find("."), path.find("[")) if index >= 0), default=len(path))
    return path[:cut], path[cut:], message


def _rule_shape_problems(fields: Mapping[str, Any]) -> list[Problem]:
    """What a rule's JSON fields hold that a rule cannot be read from (the file's own type checks
    find these first; a form or a script can still hand the model such values)."""
    problems: list[Problem] = []
    tags = fields["session_tags"]
    if not isinstance(tags, dict):
        problems.append(("session_tags", "", "expected a mapping of tag keys to CEL expressions"))
    else:
        for key, entry in tags.items():
            problem = "a key must be a string" if not isinstance(key, str) else session_tag_entry_problem(entry)
            if problem:
                problems.append(("session_tags", f".{key}", problem))
    claims = fields["claims"]
    if not isinstance(claims, dict):
        problems.append(("claims", "", "expected a mapping of claim names to CEL expressions"))
    else:
        problems += [
            ("claims", f".{name}", "expected a claim name (a string) and a CEL expression (a string)")
            for name, source in claims.items()
            if not isinstance(name, str) or not isinstance(source, str)
        ]
    for name in ("audiences", "transitive_tag_keys"):
        value = fields[name]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            problems.append((name, "", "expected a list of strings"))
    return problems


def rule_problems(
    fields: Mapping[str, Any],
    *,
    issuer_urls: Sequence[str],
    claim_types: Mapping[str, tuple[str, str]],
    allow_insecure: bool,
) -> tuple[list[Problem], list[Problem]]:
    """Everything wrong with a rule (its stored values, model field → value), and its warnings: its
    shape, its expressions, session tags, claims, lifetime and outputs (``rule_findings``), the
    mapper's URL, and the owner pin a shared CI issuer needs (``owner_pinning_problem``).
    ``issuer_urls``: the URLs of the issuers it applies to; ``claim_types``: what their platforms
    send (for the warnings about comparisons)."""
    problems = _rule_shape_problems(fields)
    if problems:
        return problems, []
    findings = rule_findings(rule_spec_of(fields), claim_types=claim_types)
    problems = [_problem_at(path, message) for path, message in findings.errors]
    if fields["effect"] == "mapper" and fields["mapper_url"]:
        problem = url_problem(fields["mapper_url"], what="The mapper URL", allow_insecure=allow_insecure)
        if problem:
            problems.append(("mapper_url", "", problem))
    problem = owner_pinning_problem(
        effect=fields["effect"], when=fields["when"], any_owner=fields["any_owner"], issuer_urls=issuer_urls
    )
    if problem:
        problems.append(("when", "", problem))
    return problems, [_problem_at(path, message) for path, message in findings.warnings]
