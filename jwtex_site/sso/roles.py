"""The roles claim → tenant roles (docs/operators.md#single-sign-on). Pure: values in, values out.

Each value of the claim (``groups`` by default) that starts with the prefix names one tenant
role, ``{prefix}{tenant}:{role}`` (``jwtex:acme:operator``); the value ``superuser_value`` makes a
platform superuser. Anything else is someone else's group and is ignored. Two roles for one
tenant: the stronger one counts (owner > operator > auditor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RANK = {"auditor": 1, "operator": 2, "owner": 3}


@dataclass(frozen=True)
class ClaimedRoles:
    tenants: dict[str, str] = field(default_factory=dict)  # tenant slug → role
    superuser: bool = False
    refused: tuple[str, ...] = ()  # values under the prefix that name no role: said in the log

    @property
    def any(self) -> bool:
        return self.superuser or bool(self.tenants)


def claim_values(claims: dict, claim: str) -> list[str]:
    """The claim's values: a list of strings, or one string (some providers send a single
    group as a string; Keycloak may send a space-separated ``roles`` string: not split)."""
    value = claims.get(claim)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def roles_from_claim(values: Iterable[str], *, prefix: str, superuser_value: str) -> ClaimedRoles:
    tenants: dict[str, str] = {}
    refused: list[str] = []
    superuser = False
    for value in values:
        if superuser_value and value == superuser_value:
            superuser = True
            continue
        if not value.startswith(prefix):
            continue
        slug, colon, role = value[len(prefix) :].rpartition(":")
        if not colon or not slug or role not in RANK:
            refused.append(value)
            continue
        if RANK[role] > RANK.get(tenants.get(slug, ""), 0):
            tenants[slug] = role
    return ClaimedRoles(tenants=tenants, superuser=superuser, refused=tuple(refused))
