"""A rule's findings, the same in every place a rule is saved (the admin, ``jwtex_apply``, the
simulator's rule to try): what refuses it (functions the engine does not have, a cost over the
budget, tokens certain to be longer than AWS accepts) and what is only worth a warning beside a
rule that saves (tokens that may be, a number compared with a claim sent as a string)."""

from __future__ import annotations

import html
import io
import json

import jwt
import pytest
from django.core.management import call_command
from django.urls import reverse

from exchange.models import ExchangeRecord, Issuer, Rule
from tests.aws_acceptance import TAGS_CLAIM, sts_problems
from tests.exchange.admin.test_pages import rule_data

pytestmark = pytest.mark.django_db

LONG_KEYS = [f"{i:03d}" + "k" * 125 for i in range(50)]
MAY_BE_TOO_LONG = {key: "claims.actor" for key in LONG_KEYS}  # 256-character values could make 28,175
CERTAIN_TOO_LONG = {key: "'" + "v" * 256 + "'" for key in LONG_KEYS[:40]}  # literals: at least 21,349
GITHUB_ENTERPRISE = "https://token.actions.githubusercontent.com/acme"  # GitHub's claims; the enterprise's own issuer


def apply_file(tmp_path, tenant, issuer, rule: dict, *, url: str | None = None) -> tuple[str, str]:
    """jwtex_apply of a file with this one rule: (stdout, stderr); a refusal raises."""
    document = {
        "tenants": [
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "issuers": [
                    {
                        "id": "ci",
                        "issuer": url or issuer.issuer,
                        "audiences": issuer.audiences,
                        "jwks": issuer.static_jwks,
                    }
                ],
                "rules": [{"name": "r", "issuers": ["ci"], "effect": "allow", **rule}],
            }
        ]
    }
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(document))
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("jwtex_apply", str(path), stdout=out, stderr=err)
    except Exception:  # noqa: BLE001 - whatever failed, the command's own words say why
        raise AssertionError(err.getvalue()) from None
    return out.getvalue(), err.getvalue()


def admin_post(client, tenant, issuer, **fields):
    return client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, **fields), follow=True)


def messages_of(response) -> str:
    return " ".join(str(m) for m in response.context["messages"])


# --- session tags: literals count at their length --------------------------------------------------


def test_fifty_literal_tags_save_and_exchange_into_a_token_aws_accepts(client, tenant, issuer, upstream, signing_key):
    tags = {f"t{i}": f"'v{i}'" for i in range(50)}
    rule = Rule(tenant=tenant, name="fifty", effect="allow", when="true", session_tags=tags)
    rule.full_clean()  # refused before ("can be up to 20,289 characters")
    rule.save()
    rule.issuers.add(issuer)
    response = client.post("/t/acme/exchange?issuerId=ci", upstream.mint(), content_type="application/jwt")
    assert response.status_code == 200, response.content
    token = response.content.decode()
    # PyJWT verifies it as a relying party would, from the served documents only.
    discovery = client.get("/t/acme/.well-known/openid-configuration").json()
    keys = {key["kid"]: key for key in client.get("/t/acme/.well-known/jwks.json").json()["keys"]}
    key = jwt.PyJWK(keys[jwt.get_unverified_header(token)["kid"]]).key
    claims = jwt.decode(
        token,
        key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience="sts.amazonaws.com",
        issuer=discovery["issuer"],
    )
    assert claims[TAGS_CLAIM]["principal_tags"] == {f"t{i}": [f"v{i}"] for i in range(50)}
    assert sts_problems(token) == []


def test_a_rule_whose_tokens_may_be_too_long_saves_with_the_figure_everywhere(
    admin_client_for, tenant, issuer, tmp_path, upstream
):
    client = admin_client_for(tenant, "operator")
    response = admin_post(client, tenant, issuer, session_tags=json.dumps(MAY_BE_TOO_LONG))
    assert Rule.objects.filter(name="main branch").exists()
    assert "can be up to 28,175 characters long" in messages_of(response)
    out, _ = apply_file(tmp_path, tenant, issuer, {"when": "true", "session_tags": MAY_BE_TOO_LONG})
    assert 'warning: tenants[acme].rules["r"].session_tags: Tokens from this rule can be up to 28,175' in out
    assert Rule.objects.filter(name="r").exists()


def test_a_rule_whose_tokens_are_certain_to_be_too_long_is_refused(admin_client_for, tenant, issuer, tmp_path):
    client = admin_client_for(tenant, "operator")
    response = admin_post(client, tenant, issuer, session_tags=json.dumps(CERTAIN_TOO_LONG))
    assert "are at least 21,349 characters long" in response.context["adminform"].form.errors["session_tags"][0]
    with pytest.raises(AssertionError, match="are at least 21,349 characters long"):
        apply_file(tmp_path, tenant, issuer, {"when": "true", "session_tags": CERTAIN_TOO_LONG})
    assert not Rule.objects.filter(name__in=["main branch", "r"]).exists()


# --- functions, and types of claims ---------------------------------------------------------------

UNKNOWN = "claims.repository_owner_id == '1342004' && startsWith(claims.ref)"


def test_unknown_functions_are_refused_in_the_admin_and_in_jwtex_apply_alike(
    admin_client_for, tenant, issuer, tmp_path
):
    response = admin_post(admin_client_for(tenant, "operator"), tenant, issuer, when=UNKNOWN)
    [admin] = response.context["adminform"].form.errors["when"]
    with pytest.raises(AssertionError) as refused:
        apply_file(tmp_path, tenant, issuer, {"when": UNKNOWN})
    assert "line 1, column 44: startsWith is not a global function" in admin
    assert f'tenants[acme].rules["r"].when: {admin}' in str(refused.value)
    assert not Rule.objects.filter(name__in=["main branch", "r"]).exists()


def test_a_number_compared_with_a_string_claim_is_warned_about_and_saved(admin_client_for, tenant, upstream, tmp_path):
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer=GITHUB_ENTERPRISE, audiences=["aud"], static_jwks=upstream.jwks
    )
    when = "claims.repository_owner_id == 1342004 && claims.ref == 'refs/heads/main'"
    response = admin_post(admin_client_for(tenant, "operator"), tenant, issuer, when=when)
    assert Rule.objects.filter(name="main branch").exists()
    assert (
        "claims.repository_owner_id is a string in GitHub Enterprise Cloud (enterprise issuer) tokens ('1342004')"
        in messages_of(response)
    )
    out, _ = apply_file(tmp_path, tenant, issuer, {"when": when}, url=GITHUB_ENTERPRISE)
    assert 'warning: tenants[acme].rules["r"].when: line 1, column 31: claims.repository_owner_id is a string' in out


# --- rules over the budget saved before it --------------------------------------------------------


def test_a_stored_rule_over_budget_is_reported_by_the_database_check_and_left_as_it_is(tenant, issuer):
    when = "claims.list.map(x, claims.list.map(y, x + y)).size() > 0"
    rule = Rule.objects.create(tenant=tenant, name="old", effect="deny", when=when)
    out = io.StringIO()
    call_command("check", "--database", "default", stdout=out, stderr=out)
    assert "jwtex.W004" in out.getvalue() and "Rule 'old' of tenant 'acme' is over its cost budget" in out.getvalue()
    rule.refresh_from_db()
    assert rule.when == when


# --- the simulator ------------------------------------------------------------------------------


def simulate(client, tenant, issuer, **fields):
    data = {
        "tenant": tenant.pk,
        "issuer": issuer.pk,
        "mode": "claims",
        "token": "",
        "audience": "",
        "claims": json.dumps({"sub": "s", "repository": "octo-org/app", "ref": "refs/heads/main", "actor": "a"}),
        "rule": "",
    }
    data.update(fields)
    return client.post(reverse("admin:exchange_rule_simulate"), data)


def test_typed_in_claims_are_held_to_what_a_token_can_carry(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "auditor")
    response = simulate(client, tenant, issuer, claims=json.dumps({"sub": "s", "pad": "x" * 100_000}))
    assert response.context["result"] is None
    errors = str(response.context["form"].errors)
    assert "bytes of JSON; a token, and so the simulator, carries at most 16,384" in errors


def test_the_simulator_evaluates_within_the_exchange_budget(admin_client_for, tenant, issuer, allow_rule):
    Rule.objects.create(
        tenant=tenant,
        name="costly",
        position=1,
        effect="deny",
        when="claims.g.map(x, claims.g.map(y, x + y)).size() > 0",
    ).issuers.add(issuer)
    response = simulate(admin_client_for(tenant, "auditor"), tenant, issuer)
    result = response.context["result"]
    assert not result.allowed and "over its cost budget" in result.error.reason


def test_a_rule_to_try_is_refused_as_jwtex_apply_refuses_it(admin_client_for, tenant, issuer, allow_rule, tmp_path):
    costly = "claims.g.map(x, " + " + ".join(["claims.b"] * 50) + ").size() == 0"
    response = simulate(
        admin_client_for(tenant, "operator"), tenant, issuer, rule=f'name: try\nissuers: [ci]\nwhen: "{costly}"\n'
    )
    assert response.context["result"] is None
    [tried] = response.context["form"].errors["rule"]
    with pytest.raises(AssertionError) as refused:
        apply_file(tmp_path, tenant, issuer, {"when": costly})
    message = tried.split(": ", 1)[1]
    assert "cost units" in message and message in str(refused.value)


def test_a_rule_to_try_runs_first_and_is_not_saved(admin_client_for, tenant, issuer, allow_rule):
    draft = json.dumps({"name": "try", "issuers": ["ci"], "when": "claims.actor == 'a'", "effect": "deny"})
    response = simulate(admin_client_for(tenant, "auditor"), tenant, issuer, rule=draft)
    result = response.context["result"]
    assert [t.rule_name for t in result.trace][:2] == ["try (trying, not saved)", "octo-org main"]
    assert not result.allowed and result.decision is None and "try" in result.error.description
    assert not Rule.objects.filter(name__startswith="try").exists() and not ExchangeRecord.objects.exists()


def test_the_simulator_shows_a_rules_warnings(admin_client_for, tenant, issuer, upstream):
    rule = Rule.objects.create(tenant=tenant, name="wide", effect="allow", when="true", session_tags=MAY_BE_TOO_LONG)
    rule.issuers.add(issuer)
    response = simulate(admin_client_for(tenant, "auditor"), tenant, issuer)
    page = html.unescape(response.content.decode())
    assert "Rule 'wide', session_tags: Tokens from this rule can be up to 28,175" in page


def test_a_rule_to_try_comes_with_its_warnings(admin_client_for, tenant, upstream):
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer=GITHUB_ENTERPRISE, audiences=["aud"], static_jwks=upstream.jwks
    )
    draft = json.dumps({"name": "try", "issuers": ["gh"], "when": "claims.repository_owner_id == 1342004"})
    response = simulate(admin_client_for(tenant, "auditor"), tenant, issuer, rule=draft)
    assert any(
        "try (trying, not saved)" in note and "is a string in GitHub Enterprise" in note
        for note in response.context["result"].notes
    )
