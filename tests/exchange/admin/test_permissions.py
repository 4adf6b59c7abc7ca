"""Tenant scoping of every admin model and page (docs/operators.md#roles): another tenant's rows are never
listed, never offered as a choice, and their URLs answer 404/403; auditors change nothing."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from exchange.models import ExchangeRecord, Issuer, Rule, SigningKey
from tenants.models import Membership, Tenant

pytestmark = pytest.mark.django_db

# Strings that only B's rows contain.
B_MARKERS = ("globex", "globex-ci", "globex-rule", "globex_tag", "subject-globex", "reason-globex", "owner-globex")


def b_object_urls(b) -> list[tuple[str, str]]:
    """(method, url) of every admin page about one of B's objects."""
    return [
        ("get", reverse("admin:tenants_tenant_change", args=[b.tenant.pk])),
        ("get", reverse("admin:tenants_tenant_history", args=[b.tenant.pk])),
        ("get", reverse("admin:tenants_tenant_delete", args=[b.tenant.pk])),
        ("get", reverse("admin:tenants_tenant_overview", args=[b.tenant.pk])),
        ("get", reverse("admin:tenants_membership_change", args=[b.membership.pk])),
        ("get", reverse("admin:tenants_membership_delete", args=[b.membership.pk])),
        ("get", reverse("admin:exchange_issuer_change", args=[b.issuer.pk])),
        ("get", reverse("admin:exchange_issuer_history", args=[b.issuer.pk])),
        ("get", reverse("admin:exchange_issuer_delete", args=[b.issuer.pk])),
        ("post", reverse("admin:exchange_issuer_fetch_keys", args=[b.issuer.pk])),
        ("get", reverse("admin:exchange_rule_change", args=[b.rule.pk])),
        ("get", reverse("admin:exchange_rule_history", args=[b.rule.pk])),
        ("get", reverse("admin:exchange_rule_delete", args=[b.rule.pk])),
        ("post", reverse("admin:exchange_rule_move", args=[b.rule.pk, "up"])),
        ("get", reverse("admin:exchange_signingkey_change", args=[b.key.pk])),
        ("get", reverse("admin:exchange_signingkey_revoke", args=[b.key.pk])),
        ("post", reverse("admin:exchange_signingkey_revoke", args=[b.key.pk])),
        ("get", reverse("admin:exchange_signingkey_rotate", args=[b.tenant.pk])),
        ("post", reverse("admin:exchange_signingkey_rotate", args=[b.tenant.pk])),
        ("get", reverse("admin:exchange_exchangerecord_change", args=[b.record.pk])),
        ("post", reverse("admin:exchange_exchangerecord_change", args=[b.record.pk])),
    ]


CHANGELISTS = [
    "admin:tenants_tenant_changelist",
    "admin:tenants_membership_changelist",
    "admin:exchange_issuer_changelist",
    "admin:exchange_rule_changelist",
    "admin:exchange_signingkey_changelist",
    "admin:exchange_exchangerecord_changelist",
]


def assert_no_b(content: bytes | str, b) -> None:
    text = content.decode() if isinstance(content, bytes) else content
    for marker in (*B_MARKERS, b.key.kid):
        assert marker not in text, marker


def b_state(b) -> tuple:
    """Everything a forbidden request could have changed about B."""
    return (
        list(Issuer.objects.filter(tenant=b.tenant).values()),
        list(Rule.objects.filter(tenant=b.tenant).values()),
        list(SigningKey.objects.filter(tenant=b.tenant).values("kid", "state")),
        list(Membership.objects.filter(tenant=b.tenant).values()),
        ExchangeRecord.objects.filter(tenant=b.tenant).count(),
    )


@pytest.mark.parametrize("role", ["owner", "operator", "auditor"])
def test_members_of_a_get_404_or_403_on_every_b_url(admin_client_for, a, b, role):
    client = admin_client_for(a.tenant, role)
    before = b_state(b)
    for method, url in b_object_urls(b):
        response = getattr(client, method)(url)
        assert response.status_code in (403, 404), (method, url, response.status_code)
        assert_no_b(response.content, b)
    assert b_state(b) == before


@pytest.mark.parametrize("role", ["owner", "operator", "auditor"])
def test_lists_of_a_member_never_show_b(admin_client_for, a, b, role):
    client = admin_client_for(a.tenant, role)
    for name in CHANGELISTS:
        response = client.get(reverse(name))
        if name == "admin:tenants_membership_changelist" and role == "operator":
            assert response.status_code == 403  # operators do not manage members
            continue
        assert response.status_code == 200, name
        assert_no_b(response.content, b)
    # Filtering by B's id by hand shows nothing of B either.
    response = client.get(reverse("admin:exchange_issuer_changelist") + f"?tenant__id__exact={b.tenant.pk}")
    assert_no_b(response.content, b)
    response = client.get(reverse("admin:exchange_exchangerecord_changelist") + "?q=subject-globex")
    assert b"0 results" in response.content  # the search term is echoed back; no row is
    assert b"reason-globex" not in response.content and b"globex-ci" not in response.content


def test_lists_of_a_member_show_a(admin_client_for, a, b):
    client = admin_client_for(a.tenant, "auditor")
    assert b"octo-org main" in client.get(reverse("admin:exchange_rule_changelist")).content
    assert a.issuer.issuer.encode() in client.get(reverse("admin:exchange_issuer_changelist")).content
    assert a.key.kid.encode() in client.get(reverse("admin:exchange_signingkey_changelist")).content
    assert b"subject-acme" in client.get(reverse("admin:exchange_exchangerecord_changelist")).content
    assert b"owner-acme" in client.get(reverse("admin:tenants_membership_changelist")).content


def test_superuser_sees_both_tenants(admin_client_for, a, b):
    client = admin_client_for(role="superuser")
    expectations = {
        "admin:tenants_tenant_changelist": ("acme", "globex"),
        "admin:tenants_membership_changelist": ("owner-acme", "owner-globex"),
        "admin:exchange_issuer_changelist": (a.issuer.issuer, "globex-ci"),
        "admin:exchange_rule_changelist": ("octo-org main", "globex-rule"),
        "admin:exchange_signingkey_changelist": (a.key.kid, b.key.kid),
        "admin:exchange_exchangerecord_changelist": ("subject-acme", "subject-globex"),
    }
    for name, markers in expectations.items():
        text = client.get(reverse(name)).content.decode()
        for marker in markers:
            assert marker in text, (name, marker)
    for method, url in b_object_urls(b):
        if method == "get" and "delete" not in url and "revoke" not in url and "rotate" not in url:
            assert client.get(url).status_code == 200, url


def choices(html: str, name: str) -> set[str]:
    """The option values and checkbox values offered for the form field ``name``."""
    select = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', html, re.S)
    values = set(re.findall(r'<option value="([^"]*)"', select.group(1))) if select else set()
    values |= set(re.findall(rf'<input type="(?:checkbox|radio)" name="{name}" value="([^"]*)"', html))
    return values - {""}


def test_form_choices_only_offer_own_tenant(admin_client_for, a, b):
    operator = admin_client_for(a.tenant, "operator")
    html = operator.get(reverse("admin:exchange_rule_add")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}
    assert choices(html, "issuers") == {str(a.issuer.pk)}
    html = operator.get(reverse("admin:exchange_issuer_add")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}
    html = operator.get(reverse("admin:exchange_rule_change", args=[a.rule.pk])).content.decode()
    assert choices(html, "issuers") == {str(a.issuer.pk)}
    html = operator.get(reverse("admin:exchange_rule_simulate")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}
    assert choices(html, "issuer") == {str(a.issuer.pk)}
    html = operator.get(reverse("admin:exchange_issuer_preset")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}
    assert_no_b(html, b)
    owner = admin_client_for(a.tenant, "owner")
    html = owner.get(reverse("admin:tenants_membership_add")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}


def test_a_member_in_two_tenants_gets_choices_per_role(admin_client_for, a, b):
    client = admin_client_for(a.tenant, "operator")
    Membership.objects.create(user=client.user, tenant=b.tenant, role="auditor")
    html = client.get(reverse("admin:exchange_rule_add")).content.decode()
    assert choices(html, "tenant") == {str(a.tenant.pk)}  # only where the role may add
    assert str(b.issuer.pk) not in choices(html, "issuers")
    # B's rows are now visible, read-only.
    assert b"globex-rule" in client.get(reverse("admin:exchange_rule_changelist")).content
    url = reverse("admin:exchange_rule_change", args=[b.rule.pk])
    assert client.get(url).status_code == 200
    assert client.post(url, {"name": "renamed"}).status_code == 403
    assert Rule.objects.get(pk=b.rule.pk).name == "globex-rule"


def test_posting_another_tenants_ids_is_refused(admin_client_for, a, b):
    client = admin_client_for(a.tenant, "operator")
    response = client.post(
        reverse("admin:exchange_issuer_add"),
        {
            "tenant": b.tenant.pk,
            "issuer_id": "sneaky",
            "issuer": "https://sneaky.test",
            "audiences": "x",
            "algorithms": ["RS256"],
            "leeway": 60,
            "max_token_age": 3600,
            "jwks_refresh_interval": 3600,
            "enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "tenant" in response.context["adminform"].form.errors
    assert not Issuer.objects.filter(issuer_id="sneaky").exists()

    response = client.post(
        reverse("admin:exchange_rule_add"),
        {
            "tenant": a.tenant.pk,
            "name": "sneaky",
            "enabled": "on",
            "issuers": [b.issuer.pk],
            "when": "true",
            "effect": "allow",
            "session_tags": "{}",
            "claims": "{}",
        },
    )
    assert response.status_code == 200
    assert "issuers" in response.context["adminform"].form.errors
    assert not Rule.objects.filter(name="sneaky").exists()

    response = client.post(
        reverse("admin:exchange_rule_simulate"),
        {"tenant": b.tenant.pk, "issuer": b.issuer.pk, "mode": "claims", "claims": '{"sub": "x"}'},
    )
    assert response.status_code == 200
    assert response.context["result"] is None
    assert_no_b(response.content, b)


def test_actions_only_touch_rows_the_role_may_touch(admin_client_for, a, b, monkeypatch):
    client = admin_client_for(a.tenant, "operator")
    calls = []
    monkeypatch.setattr(
        "exchange.admin.issuers.issuer_keys_fetch_now",
        lambda *, issuer, now: (
            calls.append(issuer.pk)
            or __import__("exchange.upstream.issuer_keys", fromlist=["FetchOutcome"]).FetchOutcome(
                True, True, False, (), ""
            )
        ),
    )
    client.post(
        reverse("admin:exchange_issuer_changelist"),
        {"action": "fetch_keys_now", "_selected_action": [a.issuer.pk, b.issuer.pk]},
    )
    assert calls == [a.issuer.pk]
    response = client.post(
        reverse("admin:exchange_rule_changelist"),
        {"action": "delete_selected", "_selected_action": [a.rule.pk, b.rule.pk], "post": "yes"},
    )
    assert Rule.objects.filter(pk=b.rule.pk).exists()
    assert response.status_code in (200, 302)


def test_auditor_changes_nothing(admin_client_for, a, b):
    auditor = admin_client_for(a.tenant, "auditor")
    before = (
        list(Issuer.objects.values()),
        list(Rule.objects.values()),
        list(SigningKey.objects.values("kid", "state")),
        list(Membership.objects.values()),
        list(Tenant.objects.values()),
    )
    forbidden = [
        ("post", reverse("admin:tenants_tenant_change", args=[a.tenant.pk]), {"name": "x"}),
        ("post", reverse("admin:tenants_membership_add"), {"tenant": a.tenant.pk, "username": "x", "role": "owner"}),
        ("post", reverse("admin:tenants_membership_change", args=[a.membership.pk]), {"role": "auditor"}),
        ("post", reverse("admin:tenants_membership_delete", args=[a.membership.pk]), {"post": "yes"}),
        ("get", reverse("admin:exchange_issuer_add"), {}),
        ("post", reverse("admin:exchange_issuer_change", args=[a.issuer.pk]), {"issuer_id": "x"}),
        ("post", reverse("admin:exchange_issuer_delete", args=[a.issuer.pk]), {"post": "yes"}),
        ("post", reverse("admin:exchange_issuer_fetch_keys", args=[a.issuer.pk]), {}),
        ("get", reverse("admin:exchange_issuer_preset"), {}),
        ("get", reverse("admin:exchange_rule_add"), {}),
        ("post", reverse("admin:exchange_rule_change", args=[a.rule.pk]), {"name": "x"}),
        ("post", reverse("admin:exchange_rule_delete", args=[a.rule.pk]), {"post": "yes"}),
        ("post", reverse("admin:exchange_rule_move", args=[a.rule.pk, "down"]), {}),
        ("get", reverse("admin:exchange_signingkey_rotate", args=[a.tenant.pk]), {}),
        ("post", reverse("admin:exchange_signingkey_rotate", args=[a.tenant.pk]), {}),
        ("post", reverse("admin:exchange_signingkey_revoke", args=[a.key.pk]), {}),
        ("post", reverse("admin:exchange_exchangerecord_change", args=[a.record.pk]), {"reason": "x"}),
        ("post", reverse("admin:exchange_exchangerecord_delete", args=[a.record.pk]), {"post": "yes"}),
    ]
    for method, url, data in forbidden:
        response = getattr(auditor, method)(url, data)
        assert response.status_code == 403, (method, url, response.status_code)
    after = (
        list(Issuer.objects.values()),
        list(Rule.objects.values()),
        list(SigningKey.objects.values("kid", "state")),
        list(Membership.objects.values()),
        list(Tenant.objects.values()),
    )
    assert after == before
    # Read-only pages work and offer no save button.
    for url in [
        reverse("admin:exchange_rule_change", args=[a.rule.pk]),
        reverse("admin:exchange_issuer_change", args=[a.issuer.pk]),
        reverse("admin:tenants_tenant_change", args=[a.tenant.pk]),
        reverse("admin:exchange_exchangerecord_change", args=[a.record.pk]),
    ]:
        response = auditor.get(url)
        assert response.status_code == 200, url
        assert b'name="_save"' not in response.content
    assert auditor.get(reverse("admin:tenants_tenant_overview", args=[a.tenant.pk])).status_code == 200
    assert auditor.get(reverse("admin:exchange_rule_simulate")).status_code == 200
    assert b"fetch-keys-now" not in auditor.get(reverse("admin:exchange_issuer_change", args=[a.issuer.pk])).content


def test_operator_may_configure_but_not_own(admin_client_for, a):
    operator = admin_client_for(a.tenant, "operator")
    assert operator.get(reverse("admin:tenants_membership_changelist")).status_code == 403
    assert operator.post(reverse("admin:tenants_tenant_change", args=[a.tenant.pk]), {"name": "x"}).status_code == 403
    assert operator.get(reverse("admin:exchange_signingkey_revoke", args=[a.key.pk])).status_code == 403
    assert operator.get(reverse("admin:exchange_signingkey_rotate", args=[a.tenant.pk])).status_code == 200
    assert operator.get(reverse("admin:exchange_issuer_add")).status_code == 200
    assert operator.get(reverse("admin:exchange_rule_add")).status_code == 200


def test_nobody_edits_the_audit_log_not_even_a_superuser(admin_client_for, a):
    superuser = admin_client_for(role="superuser")
    url = reverse("admin:exchange_exchangerecord_change", args=[a.record.pk])
    assert superuser.get(url).status_code == 200
    assert superuser.post(url, {"reason": "rewritten"}).status_code == 403
    assert (
        superuser.post(reverse("admin:exchange_exchangerecord_delete", args=[a.record.pk]), {"post": "yes"}).status_code
        == 403
    )
    assert ExchangeRecord.objects.get(pk=a.record.pk).reason == "reason-acme"


def test_admin_index_shows_only_what_the_role_may_see(admin_client_for, a, b):
    operator = admin_client_for(a.tenant, "operator")
    html = operator.get(reverse("admin:index")).content.decode()
    for model in (
        "/admin/exchange/issuer/",
        "/admin/exchange/rule/",
        "/admin/exchange/signingkey/",
        "/admin/exchange/exchangerecord/",
        "/admin/tenants/tenant/",
    ):
        assert model in html
    assert "/admin/tenants/membership/" not in html
    assert "/admin/auth/user/" not in html
    assert reverse("admin:tenants_tenant_overview", args=[a.tenant.pk]) in html
    assert_no_b(html, b)

    stranger = admin_client_for(None, "operator")  # staff without any membership
    html = stranger.get(reverse("admin:index")).content.decode()
    assert "/admin/exchange/" not in html and "/admin/tenants/" not in html
    assert stranger.get(reverse("admin:exchange_rule_changelist")).status_code == 403
    assert stranger.get(reverse("admin:exchange_rule_simulate")).status_code == 403


def test_owner_adds_an_existing_account_to_their_tenant_only(admin_client_for, a, b, django_user_model):
    newcomer = django_user_model.objects.create_user(username="newcomer", password="pw")
    owner = admin_client_for(a.tenant, "owner")
    response = owner.post(
        reverse("admin:tenants_membership_add"), {"tenant": a.tenant.pk, "username": "newcomer", "role": "operator"}
    )
    assert response.status_code == 302
    assert Membership.objects.get(user=newcomer).tenant == a.tenant
    newcomer.refresh_from_db()
    assert newcomer.is_staff  # can sign in; sees only what the membership allows

    response = owner.post(
        reverse("admin:tenants_membership_add"), {"tenant": b.tenant.pk, "username": "newcomer", "role": "owner"}
    )
    assert response.status_code == 200 and "tenant" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(user=newcomer, tenant=b.tenant).exists()

    response = owner.post(
        reverse("admin:tenants_membership_add"),
        {"tenant": a.tenant.pk, "username": "nobody-has-this-name", "role": "operator"},
    )
    assert "username" in response.context["adminform"].form.errors


def test_a_tenant_keeps_its_last_owner(admin_client_for, a):
    owner = admin_client_for(a.tenant, "owner")
    own = Membership.objects.get(user=owner.user)
    a.membership.delete()  # now the client's user is the only owner
    response = owner.post(reverse("admin:tenants_membership_change", args=[own.pk]), {"role": "auditor"})
    assert response.status_code == 200
    assert "role" in response.context["adminform"].form.errors
    assert owner.post(reverse("admin:tenants_membership_delete", args=[own.pk]), {"post": "yes"}).status_code == 403
    assert Membership.objects.get(pk=own.pk).role == "owner"


def test_autocomplete_only_offers_own_rows(admin_client_for, a, b):
    client = admin_client_for(a.tenant, "operator")
    response = client.get(
        "/admin/autocomplete/", {"app_label": "exchange", "model_name": "rule", "field_name": "issuers", "term": ""}
    )
    if response.status_code == 200:
        assert "globex" not in response.content.decode()
    else:
        assert response.status_code in (403, 404)


def test_a_superuser_adds_a_rule_for_one_tenant_and_sees_only_its_issuers(admin_client_for, a, b):
    """The rule form never offers another tenant's issuers, and a mismatch is a sentence
    (docs/design/layout.md#the-tenant-is-explicit)."""
    client = admin_client_for(role="superuser")
    response = client.get(reverse("admin:exchange_rule_add"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "for which tenant?" in html
    assert f"?tenant={a.tenant.pk}" in html and f"?tenant={b.tenant.pk}" in html

    html = client.get(reverse("admin:exchange_rule_add") + f"?tenant={a.tenant.pk}").content.decode()
    assert choices(html, "issuers") == {str(a.issuer.pk)}
    assert choices(html, "tenant") == {str(a.tenant.pk)}
    # The list's tenant filter carries over to "Add rule" too.
    filters = f"?_changelist_filters=tenant__id__exact%3D{b.tenant.pk}"
    html = client.get(reverse("admin:exchange_rule_add") + filters).content.decode()
    assert choices(html, "issuers") == {str(b.issuer.pk)}

    response = client.post(
        reverse("admin:exchange_rule_add") + f"?tenant={a.tenant.pk}",
        {
            "tenant": a.tenant.pk,
            "name": "mixed",
            "enabled": "on",
            "issuers": [b.issuer.pk],
            "when": "true",
            "effect": "allow",
            "session_tags": "{}",
            "claims": "{}",
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["issuers"]
    assert errors == [
        "Pick issuers of this rule's tenant: one of the issuers chosen belongs to another tenant or no longer exists."
    ]
    assert "is not one of the available choices" not in response.content.decode()
    assert not Rule.objects.filter(name="mixed").exists()
