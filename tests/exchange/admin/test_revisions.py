"""Revisions in the admin (docs/operations.md#revisions): every effective change through the admin is
one revision, by its user; the list, the diff, restore behind a confirmation page that shows the
diff it will make, validated like an apply; roles and tenant scoping."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from exchange.models import Issuer, Revision, Rule
from tests.exchange.services.test_revisions import commit_pending, export, revisions

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(tenant, issuer, allow_rule):
    commit_pending()  # revision 1: acme with issuer 'ci' and rule 'octo-org main'
    return tenant


def rule_post(rule, issuer, **overrides) -> dict:
    """The change form's POST for the ``allow_rule`` fixture as it is stored."""
    data = {
        "name": rule.name,
        "enabled": "on",
        "issuers": [issuer.pk],
        "when": rule.when,
        "effect": "allow",
        "subject": "",
        "audience": "",
        "audiences": "",
        "lifetime": "",
        "transitive_tag_keys": "repository",
        "claims": "{}",
        "session_tags-rows": "6",
        "mapper_url": "",
        "mapper_timeout_ms": "1500",
    }
    for index, (key, value) in enumerate(rule.session_tags.items()):
        data[f"session_tags-{index}-key"], data[f"session_tags-{index}-value"] = key, value
    data.update(overrides)
    return data


def changed(client, capture, method: str, url: str, data=None):
    with capture(execute=True):
        response = getattr(client, method)(url, data or {})
    assert response.status_code == 302, response.content.decode()[-3000:]
    return response


def test_a_rule_edit_is_one_revision_by_its_user_and_an_unchanged_save_is_none(
    history, issuer, allow_rule, admin_client_for, django_capture_on_commit_callbacks
):
    client = admin_client_for(history, "operator")
    url = reverse("admin:exchange_rule_change", args=[allow_rule.pk])
    changed(client, django_capture_on_commit_callbacks, "post", url, rule_post(allow_rule, issuer))
    assert len(revisions(history)) == 1  # saved, but nothing changed
    changed(
        client,
        django_capture_on_commit_callbacks,
        "post",
        url,
        rule_post(allow_rule, issuer, when="claims.ref == 'refs/heads/release'"),
    )
    latest = revisions(history)[-1]
    assert (latest.number, latest.author, latest.source) == (2, client.user.username, "admin")
    assert latest.summary == "rule 'octo-org main' changed"
    assert latest.document == export()


def test_a_move_a_delete_a_preset_and_the_tenants_own_fields_are_revisions(
    history, issuer, allow_rule, admin_client_for, django_capture_on_commit_callbacks
):
    operator = admin_client_for(history, "operator")
    capture = django_capture_on_commit_callbacks
    second = Rule.objects.create(tenant=history, position=20, name="deny rest", when="true", effect="deny")
    commit_pending()
    changed(operator, capture, "post", reverse("admin:exchange_rule_move", args=[second.pk, "up"]))
    changed(operator, capture, "post", reverse("admin:exchange_rule_delete", args=[second.pk]), {"post": "yes"})
    response = operator.post(reverse("admin:exchange_issuer_preset"), {"tenant": history.pk, "preset": "github"})
    changed(
        operator,
        capture,
        "post",
        response["Location"],
        {
            "tenant": history.pk,
            "issuer_id": "github",
            "issuer": "https://token.actions.githubusercontent.com",
            "audiences": "sts.amazonaws.com",
            "algorithms": ["RS256"],
            "enabled": "on",
            "leeway": 60,
            "max_token_age": 600,
            "jwks_refresh_interval": 3600,
            "jwks_uri": "",
            "static_jwks": "null",
        },
    )
    owner = admin_client_for(history, "owner")
    form = owner.get(reverse("admin:tenants_tenant_change", args=[history.pk])).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None and name != "slug"}
    data.update(max_token_lifetime=1800, aws_account_ids="", enabled="on")
    changed(owner, capture, "post", reverse("admin:tenants_tenant_change", args=[history.pk]), data)
    got = [(r.number, r.author, r.summary) for r in revisions(history)]
    assert got == [
        (1, "system", "tenant created"),
        (2, "system", "rule 'deny rest' added"),
        (3, operator.user.username, "rules reordered"),
        (4, operator.user.username, "rule 'deny rest' deleted"),
        (5, operator.user.username, "issuer 'github' added"),
        (6, owner.user.username, "tenant settings changed (max_token_lifetime)"),
    ]


def test_the_list_and_each_revisions_diff_to_the_one_before(
    history, issuer, allow_rule, admin_client_for, django_capture_on_commit_callbacks
):
    client = admin_client_for(history, "auditor")
    with django_capture_on_commit_callbacks(execute=True):
        allow_rule.when = "claims.ref == 'refs/heads/release'"
        allow_rule.save()
    html = client.get(reverse("admin:tenants_tenant_revisions", args=[history.pk])).content.decode()
    rows = re.findall(r'<tr class="jwtex-revision" data-number="(\d+)">', html)
    assert rows == ["2", "1"]
    assert "rule &#x27;octo-org main&#x27; changed" in html and "tenant created" in html
    assert "jwtex-restore" not in html  # an auditor reads only
    html = client.get(reverse("admin:tenants_tenant_revision", args=[history.pk, 2])).content.decode()
    assert '<span class="jwtex-diff-file">--- revision 1\n</span>' in html
    assert (
        '<span class="jwtex-diff-remove">-    when: claims.repository_owner == &#x27;octo-org&#x27; &amp;&amp; '
        "claims.ref == &#x27;refs/heads/main&#x27;\n</span>"
    ) in html
    assert '<span class="jwtex-diff-add">+    when: claims.ref == &#x27;refs/heads/release&#x27;\n</span>' in html
    assert html.count('class="jwtex-diff-add"') == 1 and html.count('class="jwtex-diff-remove"') == 1
    first = client.get(reverse("admin:tenants_tenant_revision", args=[history.pk, 1])).content.decode()
    assert "--- (nothing)" in first and '<span class="jwtex-diff-add">+- slug: acme\n</span>' in first


def test_restore_shows_the_diff_then_applies_the_revision_as_a_new_one(
    history, issuer, allow_rule, admin_client_for, django_capture_on_commit_callbacks
):
    first = export()
    with django_capture_on_commit_callbacks(execute=True):
        allow_rule.when = "true"
        allow_rule.save()
        Issuer.objects.create(tenant=history, issuer_id="gitlab", issuer="https://gitlab.com", audiences=["x"])
    client = admin_client_for(history, "operator")
    url = reverse("admin:tenants_tenant_revision_restore", args=[history.pk, 1])
    response = client.get(url)
    html = response.content.decode()
    assert response.status_code == 200 and 'id="confirm"' in html
    assert "--- current" in html and "+++ revision 1" in html
    assert '<span class="jwtex-diff-remove">-  - id: gitlab\n</span>' in html
    assert '<span class="jwtex-diff-remove">-    when: &#x27;true&#x27;\n</span>' in html
    assert "would delete issuer acme/gitlab" in html
    assert len(revisions(history)) == 2  # showing it changed nothing

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:tenants_tenant_revisions", args=[history.pk]
    )
    assert export() == first
    latest = revisions(history)[-1]
    assert (latest.number, latest.source, latest.author) == (3, "restore", client.user.username)
    assert latest.summary == "restored revision 1: issuer 'gitlab' deleted; rule 'octo-org main' changed"
    assert latest.document == revisions(history)[0].document
    # restoring what is current already: nothing to confirm, nothing recorded
    html = client.get(reverse("admin:tenants_tenant_revision_restore", args=[history.pk, 3])).content.decode()
    assert 'id="restore-nothing"' in html and 'id="confirm"' not in html


def test_a_revision_that_no_longer_validates_is_refused_like_an_apply(
    history, settings, admin_client_for, django_capture_on_commit_callbacks
):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    with django_capture_on_commit_callbacks(execute=True):
        Issuer.objects.create(tenant=history, issuer_id="lab", issuer="http://127.0.0.1:8080", audiences=["a"])
    with django_capture_on_commit_callbacks(execute=True):
        Issuer.objects.get(issuer_id="lab").delete()
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False  # since then, no http:// upstreams
    current, count = export(), Revision.objects.count()
    client = admin_client_for(history, "owner")
    url = reverse("admin:tenants_tenant_revision_restore", args=[history.pk, 2])
    html = client.get(url).content.decode()
    assert 'id="restore-errors"' in html and "tenants[acme].issuers[lab].issuer" in html and 'id="confirm"' not in html
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url)
    assert response.status_code == 400 and "tenants[acme].issuers[lab].issuer" in response.content.decode()
    assert export() == current and Revision.objects.count() == count


@pytest.mark.parametrize(
    "name", ["tenants_tenant_revisions", "tenants_tenant_revision", "tenants_tenant_revision_restore"]
)
def test_another_tenants_revisions_are_404_and_an_auditor_cannot_restore(
    name, history, other_tenant, admin_client_for, django_capture_on_commit_callbacks
):
    commit_pending()
    args = [other_tenant.pk] if name == "tenants_tenant_revisions" else [other_tenant.pk, 1]
    operator_of_a = admin_client_for(history, "operator")
    assert operator_of_a.get(reverse(f"admin:{name}", args=args)).status_code == 404
    assert operator_of_a.post(reverse(f"admin:{name}", args=args)).status_code == 404
    own = [history.pk] if name == "tenants_tenant_revisions" else [history.pk, 1]
    assert operator_of_a.get(reverse(f"admin:{name}", args=own)).status_code == 200
    auditor = admin_client_for(history, "auditor")
    expected = 403 if name == "tenants_tenant_revision_restore" else 200
    assert auditor.get(reverse(f"admin:{name}", args=own)).status_code == expected
    with django_capture_on_commit_callbacks(execute=True):
        assert auditor.post(reverse("admin:tenants_tenant_revision_restore", args=[history.pk, 1])).status_code == 403
    assert [r.number for r in revisions(other_tenant)] == [1] and len(revisions(history)) == 1


def test_an_unknown_revision_is_404(history, admin_client_for):
    client = admin_client_for(history, "owner")
    assert client.get(reverse("admin:tenants_tenant_revision", args=[history.pk, 7])).status_code == 404
    assert client.get(reverse("admin:tenants_tenant_revision_restore", args=[history.pk, 7])).status_code == 404


def test_the_overview_and_the_tenant_list_link_to_the_revisions(history, admin_client_for):
    client = admin_client_for(history, "auditor")
    url = reverse("admin:tenants_tenant_revisions", args=[history.pk])
    assert url in client.get(reverse("admin:tenants_tenant_overview", args=[history.pk])).content.decode()
    assert url in client.get(reverse("admin:tenants_tenant_changelist")).content.decode()


def test_promoting_a_candidate_set_is_one_revision_saying_so(
    history, issuer, allow_rule, admin_client_for, django_capture_on_commit_callbacks
):
    client = admin_client_for(history, "operator")

    def candidate(action):
        return reverse("admin:exchange_rule_candidate_action", args=[history.pk, action])

    changed(client, django_capture_on_commit_callbacks, "post", candidate("start"))
    Rule.objects.filter(tenant=history, shadow=True).update(when="claims.actor == 'hubot'")
    before = len(revisions(history))
    changed(client, django_capture_on_commit_callbacks, "post", candidate("promote"))
    latest = revisions(history)[-1]
    assert len(revisions(history)) == before + 1
    assert (latest.author, latest.source) == (client.user.username, "promote")
    assert latest.summary.startswith("candidate rules promoted: ") and "rule 'octo-org main' changed" in latest.summary
    assert "claims.actor == 'hubot'" in latest.document and latest.document == export()
