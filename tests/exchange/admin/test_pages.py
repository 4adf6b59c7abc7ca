"""The operator pages (docs/operators.md#the-admin-today): overview, presets, fetch keys, rule editor, keys,
audit log."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml
from django.urls import reverse
from django.utils import timezone

from exchange.conf import jwtex_settings
from exchange.console.presets import PRESETS, PresetError, preset_for_issuer, preset_get
from exchange.models import ExchangeRecord, Issuer, KeyState, Rule, SigningKey
from exchange.upstream.fetch import FetchError, FetchResult

pytestmark = pytest.mark.django_db


def record(tenant, *, decision="allowed", minutes_ago=5, **fields):
    return ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
        endpoint="raw",
        decision=decision,
        status_code=200 if decision == "allowed" else 403,
        error_code="" if decision == "allowed" else "access_denied",
        **fields,
    )


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!GetAtt …)."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: {suffix: loader.construct_scalar(node)})


# --- overview ----------------------------------------------------------------------------------


def test_overview_shows_issuer_keys_health_counts_and_setup(admin_client_for, tenant, issuer, allow_rule, other_tenant):
    allow_rule.audiences = ["vault.example"]
    allow_rule.save()
    record(tenant)
    record(tenant)
    record(tenant, decision="denied")
    record(tenant, minutes_ago=25 * 60)  # older than 24 h
    record(other_tenant)  # another tenant's
    Issuer.objects.create(
        tenant=tenant,
        issuer_id="github",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["sts.amazonaws.com"],
        jwks_consecutive_failures=2,
        jwks_last_error="connection refused",
    )
    client = admin_client_for(tenant, "auditor")
    response = client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
    assert response.status_code == 200
    overview = response.context["overview"]
    assert (overview.allowed_24h, overview.denied_24h) == (2, 1)
    html = response.content.decode()
    issuer_url = "http://127.0.0.1:8000/t/acme"
    assert f"{issuer_url}/.well-known/openid-configuration" in html
    assert f"{issuer_url}/.well-known/jwks.json" in html
    active = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)
    assert active.kid in html
    health = {h.issuer.issuer_id: h for h in overview.issuers}
    assert health["ci"].status == "static" and health["ci"].kids == ("upstream-rsa-1", "upstream-ec-1")
    assert health["github"].status == "failing" and "connection refused" in health["github"].detail
    assert health["github"].preset_label == "GitHub Actions"

    # AWS: the provider's client ids are the tenant's audiences; the role requires every tag.
    assert overview.audiences == ["sts.amazonaws.com", "vault.example"]
    assert overview.tag_keys == ["repository", "ref", "actor"]
    cfn = yaml.load(overview.aws.cloudformation, Loader=CfnLoader)
    provider = cfn["Resources"]["JwtexOidcProvider"]["Properties"]
    assert provider == {"Url": issuer_url, "ClientIdList": ["sts.amazonaws.com", "vault.example"]}
    statement = cfn["Resources"]["JwtexExampleRole"]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert statement["Action"] == ["sts:AssumeRoleWithWebIdentity", "sts:TagSession"]
    assert statement["Condition"]["StringEquals"] == {
        "127.0.0.1:8000/t/acme:aud": ["sts.amazonaws.com", "vault.example"]
    }
    assert set(statement["Condition"]["StringLike"]) == {
        "aws:RequestTag/repository",
        "aws:RequestTag/ref",
        "aws:RequestTag/actor",
    }
    trust = json.loads(overview.aws.trust_policy)
    assert trust["Statement"][0]["Principal"]["Federated"].endswith(":oidc-provider/127.0.0.1:8000/t/acme")
    tf = overview.aws.terraform
    assert 'resource "aws_iam_openid_connect_provider" "jwtex_acme"' in tf
    assert f'url            = "{issuer_url}"' in tf
    assert 'client_id_list = ["sts.amazonaws.com", "vault.example"]' in tf
    assert '"aws:RequestTag/actor"' in tf and '"sts:TagSession"' in tf
    assert tf.count("{") == tf.count("}")
    assert "only trusts https issuers" in html  # the dev URL is not one AWS accepts

    # CI: both jobs are complete, valid files that exchange at this tenant
    # (docs/operators.md#aws-and-ci-set-up-snippets).
    github = yaml.safe_load(overview.ci.github_actions)
    assert_valid_github_workflow(github)
    job = github["jobs"]["deploy"]
    assert job["permissions"]["id-token"] == "write"
    script = job["steps"][0]["run"]
    assert f"{issuer_url}/exchange?issuerId=github" in script
    # The job asks GitHub for this tenant's issuer URL as audience, not sts.amazonaws.com
    # (docs/operators.md#aws-and-ci-set-up-snippets).
    assert "audience=http%3A%2F%2F127.0.0.1%3A8000%2Ft%2Facme" in script and "audience=sts.amazonaws.com" not in script
    assert "Content-Type: application/jwt" in script and "AWS_WEB_IDENTITY_TOKEN_FILE=" in script
    assert_valid_gitlab_ci(yaml.safe_load(overview.ci.gitlab_ci))
    gitlab = yaml.safe_load(overview.ci.gitlab_ci)["deploy"]
    assert gitlab["id_tokens"]["JWTEX_UPSTREAM_TOKEN"]["aud"] == issuer_url
    exchange = " ".join(gitlab["script"])
    assert f"{issuer_url}/exchange?issuerId=gitlab" in exchange and "AWS_WEB_IDENTITY_TOKEN_FILE" in exchange
    assert "Content-Type: application/jwt" in exchange
    assert "No GitLab issuer in this tenant yet" in overview.ci.gitlab_ci


def assert_valid_github_workflow(workflow) -> None:
    """What GitHub requires of a workflow file: an ``on`` trigger and ``jobs``, each job with
    ``runs-on`` and ``steps``, each step one of ``run`` or ``uses`` (PyYAML reads a bare
    ``on`` key as True, as YAML 1.1 says; GitHub reads it as the string)."""
    assert isinstance(workflow, dict)
    triggers = workflow.get("on", workflow.get(True))
    assert triggers, "a workflow needs an `on:` trigger"
    assert set(triggers) <= {"push", "pull_request", "workflow_dispatch", "schedule", "workflow_call", "release"}
    assert isinstance(workflow["jobs"], dict) and workflow["jobs"]
    for job in workflow["jobs"].values():
        assert job["runs-on"] and isinstance(job["steps"], list) and job["steps"]
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), step


def assert_valid_gitlab_ci(document) -> None:
    """A .gitlab-ci.yml whose job asks for an ID token (``id_tokens:`` with ``aud``) and has a script."""
    jobs = {name: job for name, job in document.items() if isinstance(job, dict) and "script" in job}
    assert jobs
    for job in jobs.values():
        assert isinstance(job["script"], list) and all(isinstance(line, str) for line in job["script"])
        assert job["id_tokens"] and all("aud" in token for token in job["id_tokens"].values())


@pytest.mark.parametrize("with_issuers", [False, True])
def test_ci_snippets_are_complete_files(tenant, upstream, with_issuers):
    from exchange.services.overview import tenant_overview_get

    if with_issuers:
        Issuer.objects.create(
            tenant=tenant,
            issuer_id="gh",
            issuer="https://token.actions.githubusercontent.com",
            audiences=["sts.amazonaws.com"],
        )
        Issuer.objects.create(
            tenant=tenant, issuer_id="gl", issuer="https://gitlab.com", audiences=["https://gitlab.com"]
        )
    overview = tenant_overview_get(tenant=tenant, now=timezone.now())
    assert_valid_github_workflow(yaml.safe_load(overview.ci.github_actions))
    assert_valid_gitlab_ci(yaml.safe_load(overview.ci.gitlab_ci))
    assert overview.ci.github_actions.startswith("# .github/workflows/")


def test_ci_snippet_exchanges_for_real(client, tenant, issuer, allow_rule, upstream):
    """The curl line of the snippets (raw endpoint, application/jwt) is what the endpoint accepts."""
    response = client.post(
        f"/t/{tenant.slug}/exchange?issuerId={issuer.issuer_id}", upstream.mint(), content_type="application/jwt"
    )
    assert response.status_code == 200 and response["Content-Type"] == "application/jwt"


# --- presets -----------------------------------------------------------------------------------

PARAMS = {
    "github-enterprise": {"enterprise": "octo-corp"},
    "gitlab-self-managed": {"url": "https://gitlab.example.com/"},
    "circleci": {"org_id": "0b2d3c4e-1111-2222-3333-444455556666"},
    "buildkite": {"organization": "acme-inc"},
    "bitbucket": {"workspace": "acme", "workspace_uuid": "{84C08C46-2A05-4D9B-8D10-EA4A2BB84D49}"},
    "kubernetes": {"url": "https://oidc.eks.eu-west-1.amazonaws.com/id/ABC", "jwks": None},
}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.key)
def test_every_preset_builds_a_valid_issuer(preset, tenant, upstream):
    params = dict(PARAMS.get(preset.key, {}))
    if "jwks" in params:
        params["jwks"] = json.dumps(upstream.jwks)
    values = preset.build(params)
    issuer = Issuer(
        tenant=tenant,
        issuer_id=values.issuer_id,
        issuer=values.issuer,
        audiences=values.audiences,
        algorithms=values.algorithms,
        static_jwks=values.static_jwks,
    )
    issuer.full_clean()
    assert values.issuer.startswith("https://") and not values.issuer.endswith("/")
    assert preset_for_issuer(values.issuer, has_static_jwks=values.static_jwks is not None) is not None
    assert preset.claims and preset.claims[0][0] == "sub"
    for parameter in preset.parameters:
        with pytest.raises(PresetError):
            preset.build({**params, parameter.name: ""})


def test_preset_values():
    assert preset_get("github").build().issuer == "https://token.actions.githubusercontent.com"
    assert preset_get("github").build().audiences == ["sts.amazonaws.com"]
    assert preset_get("github-enterprise").build({"enterprise": "octo-corp"}).issuer == (
        "https://token.actions.githubusercontent.com/octo-corp"
    )
    assert (
        preset_get("gitlab-self-managed").build({"url": "https://git.example.com/"}).issuer == "https://git.example.com"
    )
    circle = preset_get("circleci").build({"org_id": "0B2D3C4E-1111-2222-3333-444455556666"})
    assert circle.issuer == "https://oidc.circleci.com/org/0b2d3c4e-1111-2222-3333-444455556666"
    assert circle.audiences == ["0b2d3c4e-1111-2222-3333-444455556666"]
    assert preset_get("buildkite").build({"organization": "acme"}).issuer == "https://agent.buildkite.com"
    assert preset_get("terraform-cloud").build().issuer == "https://app.terraform.io"
    bitbucket = preset_get("bitbucket").build(PARAMS["bitbucket"])
    assert bitbucket.issuer == "https://api.bitbucket.org/2.0/workspaces/acme/pipelines-config/identity/oidc"
    assert bitbucket.audiences == ["ari:cloud:bitbucket::workspace/84c08c46-2a05-4d9b-8d10-ea4a2bb84d49"]
    with pytest.raises(PresetError, match="private key"):
        preset_get("kubernetes").build({"url": "https://k8s.example", "jwks": '{"keys": [{"kty": "RSA", "d": "x"}]}'})
    with pytest.raises(PresetError):
        preset_get("gitlab-self-managed").build({"url": "http://gitlab.example.com"})


def test_add_issuer_from_the_github_preset(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_issuer_preset"), {"tenant": tenant.pk, "preset": "github"})
    assert response.status_code == 302
    add_url = response["Location"]
    assert add_url.startswith(reverse("admin:exchange_issuer_add") + "?preset=")
    response = client.get(add_url)
    form = response.context["adminform"].form
    assert form.initial["issuer"] == "https://token.actions.githubusercontent.com"
    # github.com's issuer is every customer's: its jobs ask for this tenant's own issuer URL.
    assert form.initial["audiences"] == [jwtex_settings.issuer_url(tenant.slug)]
    assert form.initial["max_token_age"] == 600  # GitHub's tokens live 5 minutes
    assert form.initial["algorithms"] == ["RS256"]
    assert form.initial["tenant"] == tenant.pk
    html = response.content.decode()
    assert "https://token.actions.githubusercontent.com" in html and "shared by every customer" in html
    response = client.post(
        add_url,
        {
            "tenant": tenant.pk,
            "issuer_id": "github",
            "issuer": "https://token.actions.githubusercontent.com",
            "audiences": "sts.amazonaws.com",
            "algorithms": ["RS256"],
            "enabled": "on",
            "leeway": 60,
            "max_token_age": 86400,
            "jwks_refresh_interval": 3600,
            "jwks_uri": "",
            "static_jwks": "null",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    issuer = Issuer.objects.get(tenant=tenant, issuer_id="github")
    assert issuer.audiences == ["sts.amazonaws.com"] and issuer.algorithms == ["RS256"] and issuer.static_jwks is None


def test_preset_parameter_errors_are_shown(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    response = client.post(
        reverse("admin:exchange_issuer_preset"),
        {"tenant": tenant.pk, "preset": "circleci", "circleci__org_id": "not-a-uuid"},
    )
    assert response.status_code == 200
    assert "The organization id is a UUID." in response.content.decode()


def test_issuer_ids_are_unique_within_a_tenant_on_change(admin_client_for, tenant, issuer):
    other = Issuer.objects.create(tenant=tenant, issuer_id="other", issuer="https://o.test", audiences=["a"])
    client = admin_client_for(tenant, "operator")
    response = client.post(
        reverse("admin:exchange_issuer_change", args=[other.pk]),
        {
            "issuer_id": "ci",
            "issuer": "https://o.test",
            "audiences": "a",
            "algorithms": ["RS256"],
            "leeway": 60,
            "max_token_age": 60,
            "jwks_refresh_interval": 3600,
            "static_jwks": "null",
        },
    )
    assert response.status_code == 200
    assert "issuer_id" in response.context["adminform"].form.errors


# --- fetch keys now ------------------------------------------------------------------------------


@pytest.fixture
def fetched_issuer(tenant):
    return Issuer.objects.create(
        tenant=tenant,
        issuer_id="gh",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["sts.amazonaws.com"],
    )


def test_fetch_keys_now_shows_the_fetched_kids(admin_client_for, tenant, fetched_issuer, upstream, monkeypatch):
    def fake_fetch(url, **kwargs):
        if url.endswith("/.well-known/openid-configuration"):
            return FetchResult(
                200, {"issuer": fetched_issuer.issuer, "jwks_uri": "https://keys.test/jwks"}, "", 3600, url
            )
        return FetchResult(200, upstream.jwks, "", 3600, url)

    monkeypatch.setattr("exchange.upstream.refresh.json_fetch", fake_fetch)
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_issuer_fetch_keys", args=[fetched_issuer.pk]), follow=True)
    text = " ".join(str(m) for m in response.context["messages"])
    assert "fetched (changed); key ids: upstream-rsa-1, upstream-ec-1" in text
    fetched_issuer.refresh_from_db()
    assert fetched_issuer.jwks == upstream.jwks
    assert client.get(reverse("admin:exchange_issuer_fetch_keys", args=[fetched_issuer.pk])).status_code == 405


def test_fetch_keys_now_shows_the_error(admin_client_for, tenant, fetched_issuer, monkeypatch):
    def failing(url, **kwargs):
        raise FetchError(f"{url}: connection refused")

    monkeypatch.setattr("exchange.upstream.refresh.json_fetch", failing)
    client = admin_client_for(tenant, "operator")
    response = client.post(
        reverse("admin:exchange_issuer_changelist"),
        {"action": "fetch_keys_now", "_selected_action": [fetched_issuer.pk]},
        follow=True,
    )
    text = " ".join(str(m) for m in response.context["messages"])
    assert "the fetch failed" in text and "connection refused" in text


def test_fetch_keys_now_on_a_static_jwks(admin_client_for, tenant, issuer):
    client = admin_client_for(tenant, "owner")
    response = client.post(reverse("admin:exchange_issuer_fetch_keys", args=[issuer.pk]), follow=True)
    assert "static JWKS, nothing to fetch; key ids: upstream-rsa-1, upstream-ec-1" in " ".join(
        str(m) for m in response.context["messages"]
    )


# --- rule editor -------------------------------------------------------------------------------


def rule_data(tenant, issuer, **overrides):
    data = {
        "tenant": tenant.pk,
        "name": "main branch",
        "enabled": "on",
        "issuers": [issuer.pk],
        "when": "claims.ref == 'refs/heads/main'",
        "effect": "allow",
        "subject": "",
        "audience": "",
        "audiences": "",
        "lifetime": "",
        "session_tags": '{"repository": "claims.repository"}',
        "transitive_tag_keys": "",
        "claims": "{}",
    }
    data.update(overrides)
    return data


def test_cel_error_is_shown_on_the_condition_with_line_and_column(admin_client_for, tenant, issuer):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, when="claims.ref ==\n  ("))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "when" in errors and "line 2, column" in errors["when"][0]
    assert not Rule.objects.exists()


@pytest.mark.parametrize(
    "tags, message",
    [
        ('{"aws:owner": "claims.sub"}', "aws:"),
        ('{"bad key!": "claims.sub"}', "AWS allows only"),
        (json.dumps({"k" * 129: "claims.sub"}), "1 to 128"),
        (json.dumps({f"t{i}": "claims.sub" for i in range(51)}), "at most 50"),
        ('{"Repo": "claims.sub", "repo": "claims.sub"}', "ignore case"),
        ('{"repo": "claims.("}', "line 1, column"),
    ],
)
def test_session_tags_are_checked_against_aws_limits(admin_client_for, tenant, issuer, tags, message):
    client = admin_client_for(tenant, "operator")
    response = client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, session_tags=tags))
    errors = response.context["adminform"].form.errors
    assert "session_tags" in errors and message in " ".join(errors["session_tags"])


def test_rule_editor_lists_claims_of_preset_issuers(admin_client_for, tenant, issuer):
    Issuer.objects.create(
        tenant=tenant,
        issuer_id="github",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["sts.amazonaws.com"],
    )
    client = admin_client_for(tenant, "operator")
    html = client.get(reverse("admin:exchange_rule_add")).content.decode()
    assert "Claims each platform sends" in html
    assert "repository_owner" in html and "namespace_path" in html and "terraform_organization_name" in html
    assert "GitHub Actions</strong> — shared issuer — used by this tenant" in html


def test_new_rules_go_last_and_move_up_and_down(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "operator")
    for name in ("second", "third"):
        response = client.post(reverse("admin:exchange_rule_add"), rule_data(tenant, issuer, name=name))
        assert response.status_code == 302

    def order():
        return list(Rule.objects.filter(tenant=tenant).order_by("position", "id").values_list("name", flat=True))

    assert order() == ["octo-org main", "second", "third"]
    third = Rule.objects.get(name="third")
    assert client.post(reverse("admin:exchange_rule_move", args=[third.pk, "up"])).status_code == 302
    assert order() == ["octo-org main", "third", "second"]
    client.post(reverse("admin:exchange_rule_move", args=[allow_rule.pk, "down"]))
    assert order() == ["third", "octo-org main", "second"]
    response = client.post(reverse("admin:exchange_rule_move", args=[third.pk, "up"]), follow=True)
    assert "already first" in " ".join(str(m) for m in response.context["messages"])
    assert client.get(reverse("admin:exchange_rule_move", args=[third.pk, "up"])).status_code == 405
    # The changelist renders the buttons inside its own (CSRF-carrying) form.
    html = client.get(reverse("admin:exchange_rule_changelist")).content.decode()
    assert reverse("admin:exchange_rule_move", args=[third.pk, "down"]) in html


def test_the_new_order_decides(tenant, issuer, allow_rule, upstream, admin_client_for):
    from exchange.core.errors import AccessDenied
    from exchange.services.exchange import token_exchange

    deny = Rule.objects.create(tenant=tenant, position=20, name="deny all", when="true", effect="deny")
    deny.issuers.add(issuer)
    assert token_exchange(tenant_slug=tenant.slug, subject_token=upstream.mint()).claims["sub"]
    client = admin_client_for(tenant, "operator")
    client.post(reverse("admin:exchange_rule_move", args=[deny.pk, "up"]))
    with pytest.raises(AccessDenied):
        token_exchange(tenant_slug=tenant.slug, subject_token=upstream.mint())


# --- keys ----------------------------------------------------------------------------------------


def test_rotate_now_behind_a_confirmation_page(admin_client_for, tenant, signing_key):
    client = admin_client_for(tenant, "operator")
    url = reverse("admin:exchange_signingkey_rotate", args=[tenant.pk])
    response = client.get(url)
    assert response.status_code == 200 and b"Yes, rotate now" in response.content
    assert SigningKey.objects.filter(tenant=tenant).count() == 1  # a GET changes nothing
    response = client.post(url, follow=True)
    assert "published new key" in " ".join(str(m) for m in response.context["messages"])
    assert SigningKey.objects.filter(tenant=tenant, state=KeyState.NEXT).count() == 1
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.ACTIVE  # signs until the new one may


def test_revoke_behind_a_confirmation_page(admin_client_for, tenant, signing_key):
    client = admin_client_for(tenant, "owner")
    url = reverse("admin:exchange_signingkey_revoke", args=[signing_key.pk])
    response = client.get(url)
    assert response.status_code == 200 and b"Yes, revoke this key" in response.content
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.ACTIVE
    client.post(url)
    assert SigningKey.objects.get(pk=signing_key.pk).state == KeyState.REVOKED
    assert SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).exists()


def test_no_private_material_on_any_key_page(admin_client_for, tenant, signing_key):
    client = admin_client_for(role="superuser")
    blob = bytes(signing_key.private_key_encrypted)
    pages = [
        reverse("admin:exchange_signingkey_changelist"),
        reverse("admin:exchange_signingkey_change", args=[signing_key.pk]),
        reverse("admin:exchange_signingkey_rotate", args=[tenant.pk]),
        reverse("admin:exchange_signingkey_revoke", args=[signing_key.pk]),
        reverse("admin:tenants_tenant_overview", args=[tenant.pk]),
    ]
    for url in pages:
        html = client.get(url).content
        assert blob not in html and blob[:40] not in html
        assert b"private_key_encrypted" not in html
        assert b'"d":' not in html and b"PRIVATE KEY" not in html
    html = client.get(reverse("admin:exchange_signingkey_change", args=[signing_key.pk])).content.decode()
    assert signing_key.kid in html and "never shown" in html
    assert client.get(reverse("admin:exchange_signingkey_add")).status_code == 403


# --- audit log ---------------------------------------------------------------------------------


@pytest.fixture
def records(tenant, issuer, allow_rule):
    allowed = record(
        tenant,
        issuer_ref="ci",
        rule_name=allow_rule.name,
        upstream_sub="repo:octo-org/app",
        upstream_jti="up-1",
        issued_jti="issued-1",
        issued_claims={
            "sub": "repo:octo-org/app",
            "https://aws.amazon.com/tags": {"principal_tags": {"ref": ["main"]}},
        },
    )
    denied = record(
        tenant,
        decision="denied",
        issuer_ref="ci",
        reason="rule 'deny' (deny) matched",
        upstream_sub="repo:evil/app",
        upstream_jti="up-2",
    )
    old = record(tenant, minutes_ago=60 * 24 * 40, upstream_sub="repo:octo-org/old")
    return allowed, denied, old


def changelist_rows(response) -> set[int]:
    return {r.pk for r in response.context["cl"].result_list}


def test_audit_log_filters_and_search(admin_client_for, tenant, records):
    allowed, denied, old = records
    client = admin_client_for(tenant, "auditor")
    url = reverse("admin:exchange_exchangerecord_changelist")
    assert changelist_rows(client.get(url)) == {allowed.pk, denied.pk, old.pk}
    assert changelist_rows(client.get(url, {"decision__exact": "denied"})) == {denied.pk}
    assert changelist_rows(client.get(url, {"issuer_ref": "ci"})) == {allowed.pk, denied.pk}
    assert changelist_rows(client.get(url, {"rule_name": allowed.rule_name})) == {allowed.pk}
    since = (timezone.now() - timedelta(days=7)).isoformat()  # what the overview's links send
    assert changelist_rows(client.get(url, {"created_at__gte": since})) == {allowed.pk, denied.pk}
    assert changelist_rows(client.get(url, {"since": "7d"})) == {allowed.pk, denied.pk}
    assert changelist_rows(client.get(url, {"q": "repo:evil*"})) == {denied.pk}  # a prefix
    assert changelist_rows(client.get(url, {"q": "repo:evil/app"})) == {denied.pk}  # exactly
    assert changelist_rows(client.get(url, {"q": "repo:evil"})) == set()  # neither
    assert changelist_rows(client.get(url, {"q": "issued-1"})) == {allowed.pk}
    assert changelist_rows(client.get(url, {"q": "up-2"})) == {denied.pk}


def test_audit_detail_shows_reason_and_emitted_claims(admin_client_for, tenant, records):
    allowed, denied, _ = records
    client = admin_client_for(tenant, "auditor")
    html = client.get(reverse("admin:exchange_exchangerecord_change", args=[denied.pk])).content.decode()
    assert "rule &#x27;deny&#x27; (deny) matched" in html
    html = client.get(reverse("admin:exchange_exchangerecord_change", args=[allowed.pk])).content.decode()
    assert "principal_tags" in html and "issued-1" in html
    assert 'name="_save"' not in html


# --- no N+1 on list pages ------------------------------------------------------------------------


def _many(tenant, issuer, n, prefix="x"):
    for i in (f"{prefix}{j}" for j in range(n)):
        extra = Issuer.objects.create(tenant=tenant, issuer_id=f"i{i}", issuer=f"https://i{i}.test", audiences=["a"])
        rule = Rule.objects.create(
            tenant=tenant,
            position=100 + len(i),
            name=f"r{i}",
            when="true",
            effect="allow",
            session_tags={"t": "claims.sub"},
        )
        rule.issuers.add(issuer, extra)
        record(tenant, issuer_ref=issuer.issuer_id, rule_name=rule.name, upstream_sub=f"s{i}")


@pytest.mark.parametrize(
    "name",
    [
        "admin:exchange_issuer_changelist",
        "admin:exchange_rule_changelist",
        "admin:exchange_signingkey_changelist",
        "admin:exchange_exchangerecord_changelist",
        "admin:tenants_membership_changelist",
        "admin:tenants_tenant_changelist",
    ],
)
def test_list_pages_do_a_constant_number_of_queries(
    admin_client_for, tenant, issuer, name, django_assert_max_num_queries
):
    client = admin_client_for(tenant, "owner")
    url = reverse(name)
    _many(tenant, issuer, 3)
    client.get(url)  # warm caches (content types, sessions)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    _many(tenant, issuer, 30, prefix="y")
    with django_assert_max_num_queries(len(few.captured_queries)):
        assert client.get(url).status_code == 200
    with django_assert_max_num_queries(20):
        client.get(url)


def test_overview_and_simulator_do_a_bounded_number_of_queries(
    admin_client_for, tenant, issuer, allow_rule, upstream, django_assert_max_num_queries
):
    client = admin_client_for(tenant, "owner")
    _many(tenant, issuer, 20)
    with django_assert_max_num_queries(20):
        assert client.get(reverse("admin:tenants_tenant_overview", args=[tenant.pk])).status_code == 200
    with django_assert_max_num_queries(25):
        client.post(
            reverse("admin:exchange_rule_simulate"), {"tenant": tenant.pk, "mode": "token", "token": upstream.mint()}
        )


def test_changing_an_issuers_key_source_forgets_its_cached_keys(db, client, tenant, upstream):
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from exchange.models import Issuer

    issuer = Issuer.objects.create(
        tenant=tenant,
        issuer_id="gh",
        issuer="https://old.example",
        audiences=["sts.amazonaws.com"],
        jwks=upstream.jwks,
        jwks_fetched_at=timezone.now(),
        jwks_etag='"v1"',
    )
    admin = get_user_model().objects.create_superuser("root", "root@example.test", "pw")
    client.force_login(admin)
    form = {
        "tenant": tenant.pk,
        "issuer_id": "gh",
        "issuer": "https://new.example",
        "enabled": "on",
        "audiences": "sts.amazonaws.com",
        "algorithms": ["RS256", "ES256"],
        "leeway": 60,
        "max_token_age": 86400,
        "jwks_uri": "",
        "static_jwks": "",
        "jwks_refresh_interval": 3600,
    }
    response = client.post(f"/admin/exchange/issuer/{issuer.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:3000]
    issuer.refresh_from_db()
    assert issuer.issuer == "https://new.example"
    assert issuer.jwks is None and issuer.jwks_fetched_at is None and issuer.jwks_etag == ""
