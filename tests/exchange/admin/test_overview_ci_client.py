"""The tenant overview's CI jobs: jwtex's Action and GitLab component first, the curl recipe after
them as "without the client"."""

from __future__ import annotations

import pytest
import yaml
from django.urls import reverse
from django.utils import timezone

from exchange.models import Issuer
from exchange.services.overview import tenant_overview_get


@pytest.mark.django_db
def test_the_overview_leads_with_the_action_and_the_component(admin_client_for, tenant, settings):
    settings.JWTEX_CI_ACTION = "octo-org/jwtex@0123abcd"
    settings.JWTEX_CI_COMPONENT = "$CI_SERVER_FQDN/platform/jwtex/jwtex-token@1.2.0"
    Issuer.objects.create(
        tenant=tenant,
        issuer_id="gh",
        issuer="https://token.actions.githubusercontent.com",
        audiences=["http://127.0.0.1:8000/t/acme"],
    )
    response = admin_client_for(tenant, "auditor").get(reverse("admin:tenants_tenant_overview", args=[tenant.pk]))
    html = response.content.decode()
    overview = response.context["overview"]
    assert overview.ci_client.warnings == ()
    assert (
        html.index('id="ci-github-action"')
        < html.index('id="ci-gitlab-component"')
        < html.index("Without the client")
        < html.index('id="ci-github"')
        < html.index('id="ci-gitlab"')
    )
    step = yaml.safe_load(overview.ci_client.github_action)["jobs"]["deploy"]["steps"][0]
    assert step["with"]["issuer-id"] == "gh" and step["uses"] == "octo-org/jwtex@0123abcd"
    assert "uses: &quot;octo-org/jwtex@0123abcd&quot;" in html
    settings.JWTEX_CI_ACTION = ""
    assert "Set JWTEX_CI_ACTION" in tenant_overview_get(tenant=tenant, now=timezone.now()).ci_client.warnings[0]
