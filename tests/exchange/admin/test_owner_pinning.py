"""An allow rule for a CI issuer every customer of the platform shares must pin the owner claim —
a condition of its top-level ``&&`` comparing it with string literals — or say ``any_owner``
(docs/rules.md#owner-pinning); the admin and jwtex_apply judge it alike, on the parsed condition
(not on the claim's name in it)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from exchange.config.apply import config_apply
from exchange.config.schema import ConfigError
from exchange.console.presets import PRESETS
from exchange.core.shared_issuers import SHARED_ISSUERS, owner_pinning_problem
from exchange.models import Issuer, Rule
from tests.exchange.admin.test_pages import rule_data

pytestmark = pytest.mark.django_db

SHARED = sorted(SHARED_ISSUERS)


def cases(url: str) -> list[tuple[str, str, bool, bool]]:
    """(label, when, any_owner, accepted)"""
    stable, name = SHARED_ISSUERS[url].owner_claims
    return [
        ("no owner claim", "claims.ref == 'refs/heads/main'", False, False),
        ("the owner claim only inside a string", f"claims.ref == 'claims.{stable}'", False, False),
        ("the immutable owner id", f"claims.{stable} == '1234' && claims.ref == 'refs/heads/main'", False, True),
        ("the owner name", f"claims.{name} == 'octo-org'", False, True),
        ("the owner name, bracket form", f"claims['{name}'] == 'octo-org'", False, True),
        ("the literal first", f"'1234' == claims.{stable} && claims.ref == 'refs/heads/main'", False, True),
        ("a list of owners", f"claims.{stable} in ['1234', '5678']", False, True),
        ("in parentheses", f"(claims.ref == 'refs/heads/main' && claims.{name} == 'octo-org') && true", False, True),
        ("any_owner said explicitly", "true", True, True),
        # Mention the claim, pin nothing:
        ("only present", f"has(claims.{stable}) && claims.ref == 'refs/heads/main'", False, False),
        ("a pin inside ||", f"claims.{stable} == '65' || claims.ref == 'refs/heads/main'", False, False),
        ("a negation", f"!(claims.{stable} == '65') && claims.ref == 'refs/heads/main'", False, False),
        ("not equal", f"claims.{stable} != '65'", False, False),
        ("a number", f"claims.{stable} == 1342004 && claims.ref == 'refs/heads/main'", False, False),
        ("another claim", f"claims.{stable} == claims.actor", False, False),
        ("a list from the claims", f"claims.{name} in claims.allowed", False, False),
        ("an empty list", f"claims.{name} in []", False, False),
        ("a ternary", f"claims.ref == 'refs/heads/main' ? claims.{name} == 'octo-org' : true", False, False),
        ("a prefix", f"claims.{name}.startsWith('octo')", False, False),
    ]


def admin_verdict(client, tenant, issuer, when: str, any_owner: bool) -> str | None:
    data = rule_data(tenant, issuer, when=when, name="pinned?")
    if any_owner:
        data["any_owner"] = "on"
    response = client.post(reverse("admin:exchange_rule_add"), data)
    if response.status_code == 302:
        Rule.objects.filter(tenant=tenant, name="pinned?").delete()
        return None
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["when"], errors
    return errors["when"][0]


def apply_verdict(tenant, url: str, when: str, any_owner: bool) -> str | None:
    rule = {
        "name": "pinned?",
        "issuers": ["ci"],
        "when": when,
        "effect": "allow",
        "session_tags": {"repository": "claims.repository"},
    }
    if any_owner:
        rule["any_owner"] = True
    document = {
        "tenants": [
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "issuers": [{"id": "ci", "issuer": url, "audiences": ["aud"]}],
                "rules": [rule],
            }
        ]
    }
    try:
        config_apply(document=document, now=None, dry_run=True)
    except ConfigError as exc:
        assert [path for path, _ in exc.errors] == [f'tenants[{tenant.slug}].rules["pinned?"].when'], exc.errors
        return exc.errors[0][1]
    return None


@pytest.mark.parametrize("url", SHARED)
def test_admin_and_apply_agree_on_owner_pinning(admin_client_for, tenant, upstream, url):
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=url, audiences=["aud"], static_jwks=upstream.jwks
    )
    client = admin_client_for(tenant, "operator")
    for label, when, any_owner, accepted in cases(url):
        admin = admin_verdict(client, tenant, issuer, when, any_owner)
        assert admin == apply_verdict(tenant, url, when, any_owner), label
        assert (admin is None) == accepted, (label, admin)
        if admin:
            assert SHARED_ISSUERS[url].platform in admin and "any owner" in admin


def test_deny_rules_and_issuers_of_ones_own_need_no_owner_claim():
    shared = "https://token.actions.githubusercontent.com"
    assert owner_pinning_problem(effect="deny", when="true", any_owner=False, issuer_urls=[shared]) is None
    for own in (
        "https://oidc.circleci.com/org/0d4b9c6e-3c5f-4a8f-9e2b-1a2b3c4d5e6f",
        "https://gitlab.example.com",
        "https://token.actions.githubusercontent.com/acme-enterprise",
    ):
        assert owner_pinning_problem(effect="allow", when="true", any_owner=False, issuer_urls=[own]) is None


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.shared_issuer], ids=lambda p: p.key)
def test_each_shared_preset_is_known_as_shared_and_its_example_pins_the_owner(preset):
    params = {p.name: "acme" for p in preset.parameters}
    values = preset.build(params, tenant_issuer="https://jwtex.example.com/t/acme")
    assert values.issuer in SHARED_ISSUERS
    assert values.audiences == ["https://jwtex.example.com/t/acme"]  # the tenant's own, not sts.amazonaws.com
    assert (
        owner_pinning_problem(effect="allow", when=preset.example_when, any_owner=False, issuer_urls=[values.issuer])
        is None
    )
    assert owner_pinning_problem(effect="allow", when="true", any_owner=False, issuer_urls=[values.issuer])


def test_no_other_preset_builds_a_shared_issuer():
    for preset in PRESETS:
        if preset.shared_issuer:
            continue
        params = {p.name: "https://gitlab.example.com" if p.name == "url" else "acme" for p in preset.parameters}
        if preset.key == "kubernetes":
            params["jwks"] = '{"keys": [{"kty": "RSA", "n": "xyz", "e": "AQAB"}]}'
        if preset.key == "circleci":
            params["org_id"] = "0d4b9c6e-3c5f-4a8f-9e2b-1a2b3c4d5e6f"
        if preset.key == "bitbucket":
            params["workspace_uuid"] = "{0d4b9c6e-3c5f-4a8f-9e2b-1a2b3c4d5e6f}"
        assert preset.build(params).issuer not in SHARED_ISSUERS, preset.key


GITHUB = "https://token.actions.githubusercontent.com"


@pytest.mark.parametrize(
    "when, accepted",
    [
        # GitHub's immutable subject (repositories created or renamed from 15 July 2026 on) and the older form.
        ("claims.sub.startsWith('repo:octo-org@1342004/')", True),
        ("claims.sub == 'repo:octo-org@1342004/app@987:ref:refs/heads/main'", True),
        (
            "claims.sub in ['repo:octo-org/app:ref:refs/heads/main', "
            "'repo:octo-org@1342004/app@987:ref:refs/heads/main']",
            True,
        ),
        ("claims.sub.startsWith('repo:octo-org/') && claims.ref == 'refs/heads/main'", True),
        ("claims.sub.startsWith('repo:octo')", False),  # repo:octo-evil/… too
        (
            "claims.sub.startsWith('repo:octo-org@')",
            False,
        ),  # the owner's id is not pinned yet: octo-org@1/ and octo-org@2/
        ("claims.sub.endsWith(':ref:refs/heads/main')", False),
        ("claims.sub == 'repo:octo-org/app:ref:refs/heads/main' || claims.ref == 'x'", False),
        ("claims.sub in ['repo:octo-org/app', 'repo:x']", False),  # the second names no owner whole
    ],
)
def test_githubs_subject_pins_the_owner_in_both_forms(when, accepted):
    problem = owner_pinning_problem(effect="allow", when=when, any_owner=False, issuer_urls=[GITHUB])
    assert (problem is None) == accepted, problem
    if problem:
        assert "claims.sub.startsWith('repo:OWNER@OWNER_ID/')" in problem


def test_the_subject_pins_only_on_github():
    when = "claims.sub.startsWith('repo:octo-org/')"
    assert owner_pinning_problem(effect="allow", when=when, any_owner=False, issuer_urls=["https://gitlab.com"])
