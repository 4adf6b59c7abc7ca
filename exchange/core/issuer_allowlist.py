"""The platform's list of upstream issuers tenants may trust, ``JWTEX_ALLOWED_UPSTREAM_ISSUERS``
(docs/operators.md#allowed-upstream-issuers). Pure.

An entry is an exact issuer URL, or a prefix pattern ``https://HOST/PATH*``. A pattern matches
at a path boundary only, never inside a host name or a path segment:

- ``https://gitlab.example.com/*`` matches ``https://gitlab.example.com`` and every issuer under
  it, not ``https://gitlab.example.com.evil.test``;
- ``https://ci.example.com/tenants/*`` (or ``…/tenants*``) matches ``https://ci.example.com/tenants``
  and ``https://ci.example.com/tenants/acme``, not ``https://ci.example.com/tenantsX``;
- what a pattern's ``*`` stands for may not hold a ``.`` or ``..`` segment, ``%``, ``\\``, ``?``,
  ``#`` or ``@``: a path that a server could read as leaving the prefix never matches.

Comparison is exact, as for a token's ``iss``: no case folding, no trailing-slash leniency. A pattern's ``*`` comes
last and follows a path (``https://host*`` is refused: it would match other hosts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["IssuerAllowlist", "allowlist_parse"]

SETTING = "JWTEX_ALLOWED_UPSTREAM_ISSUERS"
_UNSAFE_REST = re.compile(r"[%\\?#@]|(^|/)\.\.?(/|$)")


def _entry_problem(entry: str) -> str | None:
    """Why ``entry`` is not an issuer URL or a ``https://HOST/PATH*`` pattern; None when it is."""
    base = entry[:-1] if entry.endswith("*") else entry
    if "*" in base:
        return f"{entry!r}: '*' may only end a pattern"
    try:
        parts = urlsplit(base)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{entry!r} is not a URL ({exc})"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return f"{entry!r} is not an absolute URL with a host"
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        return f"{entry!r}: an issuer has no credentials, query or fragment"
    if entry.endswith("*") and not parts.path.startswith("/"):
        return f"{entry!r}: a pattern's '*' follows a path (https://host/*), never the host name"
    if entry.endswith("*") and _UNSAFE_REST.search(parts.path):
        return f"{entry!r}: a pattern's path has no '.' or '..' segment, '%', '\\\\' or '@'"
    return None


@dataclass(frozen=True)
class IssuerAllowlist:
    """Exact issuer URLs, and the bases of prefix patterns (without ``*`` or a trailing ``/``)."""

    exact: frozenset[str]
    prefixes: tuple[str, ...]
    entries: tuple[str, ...]  # as the operators wrote them, for messages
    problems: tuple[str, ...] = ()  # entries that are neither: they match nothing (a system check says so)

    def allows(self, issuer: str) -> bool:
        if not isinstance(issuer, str):
            return False
        if issuer in self.exact:
            return True
        for base in self.prefixes:
            if issuer == base:
                return True
            if issuer.startswith(base + "/") and not _UNSAFE_REST.search(issuer[len(base) :]):
                return True
        return False

    def problem(self, issuer: str, *, what: str = "The issuer") -> str | None:
        """The refusal of ``issuer`` (one message for the admin, ``jwtex_apply`` and the check), or None."""
        if self.allows(issuer):
            return None
        shown = ", ".join(self.entries[:5]) + (f" and {len(self.entries) - 5} more" if len(self.entries) > 5 else "")
        return (
            f"{what} is not one this service allows: its operators let tenants trust only the upstream issuers "
            f"of {SETTING} ({shown or 'none'})."
        )


def allowlist_parse(value: str | None) -> IssuerAllowlist | None:
    """The setting's value (entries separated by commas or whitespace) as an allowlist; None when
    unset or empty (any issuer the URL rule accepts). An entry that is neither an issuer URL nor a
    pattern matches nothing and is listed in ``problems``: a mistake narrows, never widens."""
    entries = tuple(entry for entry in re.split(r"[\s,]+", value or "") if entry)
    if not entries:
        return None
    exact, prefixes, problems = set(), [], []
    for entry in entries:
        problem = _entry_problem(entry)
        if problem is not None:
            problems.append(problem)
        elif entry.endswith("*"):
            prefixes.append(entry[:-1].rstrip("/"))
        else:
            exact.add(entry)
    return IssuerAllowlist(frozenset(exact), tuple(prefixes), entries, tuple(problems))
