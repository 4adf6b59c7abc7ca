"""The shapes of an issuer preset (exchange/console/presets.py holds the presets themselves):
its parameters, what it fills in the issuer form, and ``IssuerPreset.build``, which checks the
parameters and the issuer URL as the issuer form does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.validators import url_problem

__all__ = ["IssuerPreset", "IssuerValues", "PresetError", "PresetParameter"]


class PresetError(ValueError):
    """A preset parameter is missing or malformed; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(message)


@dataclass(frozen=True)
class PresetParameter:
    name: str
    label: str
    help: str = ""
    multiline: bool = False
    pattern: str | None = None  # full-match regular expression
    pattern_message: str = ""


@dataclass(frozen=True)
class IssuerValues:
    """What a preset fills in the issuer form."""

    issuer_id: str
    issuer: str
    audiences: list[str]
    algorithms: list[str]
    static_jwks: dict[str, Any] | None = None
    max_token_age: int | None = None  # None: the issuer form's default


@dataclass(frozen=True)
class IssuerPreset:
    key: str
    label: str
    issuer_id: str  # suggested id within the tenant
    description: str
    parameters: tuple[PresetParameter, ...] = ()
    # (claim, what it holds) — shown in the rule editor; CEL reads a claim with a dot or a
    # slash in its name as claims['name'].
    claims: tuple[tuple[str, str], ...] = ()
    # The JSON type of claims whose type matters to a rule: "string" where an id or a number is
    # sent as a string (a comparison with a number literal is never true), "number" where it is
    # a number. From each platform's documented example token.
    claim_types: Mapping[str, str] = field(default_factory=dict)
    example_when: str = "true"
    # Session tags worth emitting, as a rule's session_tags (aws_tag() where the claim can hold
    # characters AWS refuses in tags, e.g. dependabot[bot]); shown in the rule editor's help.
    example_tags: tuple[tuple[str, str, bool], ...] = ()  # (tag key, CEL, optional)
    # A rule's source_identity worth setting (docs/rules.md#source-identity): who ran the job; "" for none.
    example_source_identity: str = ""
    algorithms: tuple[str, ...] = ("RS256",)
    shared_issuer: bool = False  # every customer of the platform shares this iss
    max_token_age: int | None = None
    _build: Any = field(default=None, repr=False, compare=False)

    def build(
        self, params: Mapping[str, str] | None = None, *, allow_insecure: bool = False, tenant_issuer: str = ""
    ) -> IssuerValues:
        """The issuer form's values; ``PresetError`` naming the parameter when one is refused —
        URLs by the same rule as the issuer form and ``jwtex_apply`` (``validators.url_problem``)."""
        values = {}
        for parameter in self.parameters:
            value = str((params or {}).get(parameter.name, "")).strip()
            if not value:
                raise PresetError(parameter.name, f"{parameter.label} is required for {self.label}.")
            if parameter.pattern and not re.fullmatch(parameter.pattern, value):
                raise PresetError(parameter.name, parameter.pattern_message or f"{parameter.label} is malformed.")
            values[parameter.name] = value
        issuer, audiences, static_jwks = self._build({**values, "tenant_issuer": tenant_issuer})
        problem = url_problem(issuer, what="The issuer", allow_insecure=allow_insecure, is_issuer=True)
        if problem:
            raise PresetError("url" if any(p.name == "url" for p in self.parameters) else "", problem)
        return IssuerValues(
            issuer_id=self.issuer_id,
            issuer=issuer,
            audiences=list(audiences),
            algorithms=list(self.algorithms),
            static_jwks=static_jwks,
            max_token_age=self.max_token_age,
        )
