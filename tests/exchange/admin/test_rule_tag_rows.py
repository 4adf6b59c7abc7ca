"""The rule editor's session tags as rows (docs/rules.md#optional-session-tags): key, CEL expression and "optional"
per row, in token order, each problem shown on its own row."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from exchange.admin.forms import RuleForm
from exchange.admin.tag_rows import TagRow, split_tag_errors
from exchange.models import Rule
from tests.exchange.admin.test_browser import PASSWORD, page, shot  # noqa: F401 - page: the browser fixture

pytestmark = pytest.mark.django_db

STORED = {
    "repository": "claims.repository",
    "actor": {"value": "aws_tag(claims.actor)", "optional": True},
    "environment": {"value": "claims.environment", "optional": False},
}


def rule_data(tenant, issuer, rows=(), **overrides) -> dict:
    """A rule form's POST with ``rows`` = (key, CEL, optional) as the browser sends them, three
    empty rows after them."""
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
        "transitive_tag_keys": "",
        "claims": "{}",
        "session_tags-rows": str(len(rows) + 3),
    }
    for index, (key, value, optional) in enumerate(rows):
        data[f"session_tags-{index}-key"] = key
        data[f"session_tags-{index}-value"] = value
        if optional:
            data[f"session_tags-{index}-optional"] = "on"
    data.update(overrides)
    return data


def shown_rows(form) -> list[tuple[str, str, bool, tuple[str, ...]]]:
    return [(row.key, row.value, row.optional, row.errors) for row in form["session_tags"].value()]


def test_both_stored_forms_come_back_as_rows_and_save_as_before(tenant, issuer, allow_rule):
    allow_rule.session_tags = STORED
    allow_rule.save()
    form = RuleForm(instance=allow_rule)
    assert shown_rows(form) == [
        ("repository", "claims.repository", False, ()),
        ("actor", "aws_tag(claims.actor)", True, ()),
        ("environment", "claims.environment", False, ()),
    ]
    html = str(form["session_tags"])
    assert 'name="session_tags-1-key" id="id_session_tags-1-key" value="actor"' in html
    assert re.search(r'name="session_tags-1-optional" id="id_session_tags-1-optional" checked', html)
    assert not re.search(r'name="session_tags-0-optional"[^>]*checked', html)
    assert 'name="session_tags-rows" value="6"' in html  # three tags, three empty rows (JavaScript off)

    rows = [(row.key, row.value, row.optional) for row in form["session_tags"].value()]
    posted = RuleForm(rule_data(tenant, issuer, rows, name=allow_rule.name, when=allow_rule.when), instance=allow_rule)
    assert posted.is_valid(), posted.errors
    posted.save()
    allow_rule.refresh_from_db()
    # Optional: the object; not optional: the plain string (the false "optional" is dropped).
    assert allow_rule.session_tags == {
        "repository": "claims.repository",
        "actor": {"value": "aws_tag(claims.actor)", "optional": True},
        "environment": "claims.environment",
    }


def test_unchanged_rows_are_no_change_and_a_new_order_is_one(tenant, issuer, allow_rule):
    rows = [("repository", "claims.repository", False), ("ref", "claims.ref", False), ("actor", "claims.actor", False)]
    same = RuleForm(rule_data(tenant, issuer, rows), instance=allow_rule)
    assert not same["session_tags"]._has_changed()
    moved = RuleForm(rule_data(tenant, issuer, rows[::-1]), instance=allow_rule)
    assert moved["session_tags"]._has_changed()


def test_the_optional_flag_saves_the_object_and_the_rows_keep_their_order(tenant, issuer):
    rows = [("zeta", "claims.sub", False), ("alpha", "claims.repository", True), ("mid", "issuer", False)]
    form = RuleForm(rule_data(tenant, issuer, rows))
    assert form.is_valid(), form.errors
    rule = form.save()
    rule.refresh_from_db()
    assert list(rule.session_tags.items()) == [
        ("zeta", "claims.sub"),
        ("alpha", {"value": "claims.repository", "optional": True}),
        ("mid", "issuer"),
    ]
    assert rule.spec().optional_tags == {"alpha"}


def test_empty_rows_are_ignored_wherever_they_are(tenant, issuer):
    rows = [
        ("", "", True),
        ("repository", "claims.repository", False),
        ("  ", " ", False),
        ("ref", "claims.ref", False),
    ]
    form = RuleForm(rule_data(tenant, issuer, rows))
    assert form.is_valid(), form.errors
    assert list(form.save().session_tags) == ["repository", "ref"]


def test_each_problem_is_shown_on_its_row_and_nothing_is_saved(tenant, issuer):
    rows = [
        ("repository", "claims.repository", False),
        ("bad key!", "claims.sub", False),
        ("ref", "claims.ref ==\n (", False),
        ("Repository", "claims.repository", True),
    ]
    form = RuleForm(rule_data(tenant, issuer, rows))
    assert not form.is_valid()
    shown = shown_rows(form)
    assert (shown[0][0], shown[0][3]) == ("repository", ())
    assert len(shown[1][3]) == 1 and "AWS allows only" in shown[1][3][0] and "'!'" in shown[1][3][0]
    assert len(shown[2][3]) == 1 and shown[2][3][0].startswith("line 2, column")
    assert shown[3][:3] == ("Repository", "claims.repository", True)  # what was typed stays
    assert len(shown[3][3]) == 1 and "ignore case" in shown[3][3][0]
    # form.errors keeps every message; the field itself only points at the rows.
    assert len(form.errors["session_tags"]) == 3
    assert list(form["session_tags"].errors) == [
        "Some session tags have problems, shown on their rows below: 'bad key!', 'ref', 'Repository'."
    ]
    html = str(form["session_tags"])
    row = re.search(r'<div class="jwtex-tag-row jwtex-tag-row-errors"[^>]*>(.*?)</div>', html, re.DOTALL)[1]
    assert 'value="bad key!"' in row and 'id="id_session_tags-1-errors"' in row and "AWS allows only" in row
    assert html.count('class="jwtex-tag-row jwtex-tag-row-errors"') == 3
    assert not Rule.objects.exists()


def test_what_only_rows_get_wrong_is_shown_on_those_rows(tenant, issuer):
    rows = [
        ("repository", "claims.repository", False),
        ("", "claims.ref", False),
        ("actor", "", False),
        ("repository", "claims.sub", False),
    ]
    form = RuleForm(rule_data(tenant, issuer, rows))
    assert not form.is_valid()
    errors = [row[3] for row in shown_rows(form)]
    assert errors[0] == ()
    assert errors[1] == ("A session tag needs a key (clear the expression to drop the row).",)
    assert "needs a CEL expression" in errors[2][0] and "aws_tag(claims.actor)" in errors[2][0]
    assert errors[3] == ("Tag key 'repository' is already set in row 1.",)
    assert "row 2" in form["session_tags"].errors[0]
    assert not Rule.objects.exists()


def test_keys_with_separators_find_their_rows_longest_first():
    keys = ["a", "a: b", "team:name/x.y=+-@ 1", "a.b"]
    messages = [
        "session_tags.a: b: line 1, column 2: oops",
        "session_tags.a: line 1, column 3: other",
        "session_tags.team:name/x.y=+-@ 1: line 1, column 4: third",
        "session_tags.a.b: fourth",
        "A rule may set at most 50 session tags (AWS limit); it sets 51.",
        "Row 9: no such row",
    ]
    on_rows, rest = split_tag_errors(messages, keys)
    assert on_rows == {
        1: ["line 1, column 2: oops"],
        0: ["line 1, column 3: other"],
        2: ["line 1, column 4: third"],
        3: ["fourth"],
    }
    assert rest == ["A rule may set at most 50 session tags (AWS limit); it sets 51.", "Row 9: no such row"]


def test_a_problem_of_no_single_row_stays_at_the_field(tenant, issuer):
    rows = [(f"t{i}", "claims.sub", False) for i in range(51)]
    form = RuleForm(rule_data(tenant, issuer, rows))
    assert not form.is_valid()
    assert all(not row[3] for row in shown_rows(form))
    assert list(form["session_tags"].errors) == ["A rule may set at most 50 session tags (AWS limit); it sets 51."]


def test_the_stored_json_posted_as_one_value_is_still_read(tenant, issuer):
    data = rule_data(tenant, issuer, session_tags=json.dumps(STORED))
    del data["session_tags-rows"]
    form = RuleForm(data)
    assert form.is_valid(), form.errors
    assert form.cleaned_data["session_tags"]["actor"] == {"value": "aws_tag(claims.actor)", "optional": True}
    bad = RuleForm({**data, "session_tags": '{"repo": "claims.(", "ok": "claims.sub"}'})
    assert not bad.is_valid() and shown_rows(bad)[0][3][0].startswith("line 1, column")
    duplicate = RuleForm({**data, "session_tags": '{"repo": "claims.a", "repo": "claims.b"}'})
    assert not duplicate.is_valid() and "duplicate" in duplicate.errors["session_tags"][0].lower()


def test_the_admin_shows_the_rows_and_a_cel_error_on_its_row(admin_client_for, tenant, issuer, allow_rule):
    client = admin_client_for(tenant, "operator")
    url = reverse("admin:exchange_rule_change", args=[allow_rule.pk])
    html = client.get(url).content.decode()
    assert [m for m in re.findall(r'name="session_tags-\d+-key"[^>]*value="([^"]*)"', html) if m] == [
        "repository",
        "ref",
        "actor",
    ]
    assert 'id="id_session_tags-0-key_helptext"' in html and "aws_tag(claims.actor)" in html
    assert 'aria-describedby="id_session_tags-0-key_helptext"' in html

    rows = [("repository", "claims.repository", False), ("ref", "claims.ref", False), ("actor", "claims.actor +", True)]
    response = client.post(
        url,
        rule_data(tenant, issuer, rows, name=allow_rule.name, when=allow_rule.when, transitive_tag_keys="repository"),
    )
    assert response.status_code == 200
    html = response.content.decode()
    row = re.search(r'<div class="jwtex-tag-row jwtex-tag-row-errors"[^>]*>(.*?)</div>', html, re.DOTALL)[1]
    assert 'value="actor"' in row and "line 1, column" in row
    assert "shown on their rows below: &#x27;actor&#x27;" in html
    allow_rule.refresh_from_db()
    assert allow_rule.session_tags["actor"] == "claims.actor"  # unchanged


def test_the_rows_render_as_typed_after_an_error(tenant, issuer):
    form = RuleForm(rule_data(tenant, issuer, [("k", 'claims["a"] + "<b>"', True), ("", "", False)], when="nope ("))
    assert not form.is_valid()
    assert form["session_tags"].value() == [TagRow("k", 'claims["a"] + "<b>"', True)]
    assert 'value="claims[&quot;a&quot;] + &quot;&lt;b&gt;&quot;"' in str(form["session_tags"])


def test_a_multi_line_expression_gets_a_box_that_keeps_its_newlines(tenant, issuer, allow_rule):
    allow_rule.session_tags = {"ref": "claims.ref\n  + ''", "actor": "claims.actor"}
    allow_rule.save()
    html = str(RuleForm(instance=allow_rule)["session_tags"])
    assert '<textarea name="session_tags-0-value"' in html and ">\nclaims.ref\n  + &#x27;&#x27;</textarea>" in html
    assert '<input type="text" name="session_tags-1-value" id="id_session_tags-1-value" value="claims.actor"' in html


# --- in a real browser (Debian's Chromium, as in test_browser.py) ------------------------------


def log_in(browser_page, base: str, username: str) -> None:
    browser_page.goto(f"{base}/admin/")
    browser_page.fill("#id_username", username)
    browser_page.fill("#id_password", PASSWORD)
    browser_page.click("input[type=submit]")
    browser_page.wait_for_selector("#jwtex-tenants")


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_operator_edits_session_tags_as_rows(page, live_server, tenant, issuer, allow_rule, django_user_model):
    from tenants.models import Membership

    user = django_user_model.objects.create_user(username="tara", password=PASSWORD, is_staff=True)
    Membership.objects.create(user=user, tenant=tenant, role="operator")
    base = live_server.url
    log_in(page, base, "tara")

    # The stored tags are rows, in order; three empty rows follow.
    page.goto(f"{base}/admin/exchange/rule/{allow_rule.pk}/change/")
    keys = page.locator(".jwtex-tag-row input.jwtex-tag-key")
    assert keys.evaluate_all("inputs => inputs.map(i => i.value)") == ["repository", "ref", "actor", "", "", ""]
    assert "aws_tag(claims.actor)" in page.inner_text(".field-session_tags .help")
    shot(page, "30-rule-tag-rows")

    # Fill an empty row, add one with the button, and give it a CEL error.
    page.fill("#id_session_tags-3-key", "workflow")
    page.fill("#id_session_tags-3-value", "aws_tag(claims.workflow)")
    page.click("button[data-jwtex-add-tag]")
    assert keys.count() == 7
    assert page.evaluate("document.activeElement.id") == "id_session_tags-6-key"
    page.fill("#id_session_tags-6-key", "environment")
    page.fill("#id_session_tags-6-value", "claims.environment ==")
    page.check("#id_session_tags-6-optional")
    page.click("input[name=_save]")

    # The error is on the environment row, next to its inputs; the field only points there.
    bad = page.locator(".jwtex-tag-row-errors")
    bad.wait_for()
    assert bad.count() == 1
    assert bad.locator("input.jwtex-tag-key").input_value() == "environment"
    assert "line 1, column" in bad.locator(".errorlist").inner_text()
    assert bad.locator("input[type=checkbox]").is_checked()
    assert "shown on their rows below: 'environment'" in page.inner_text(".field-session_tags > ul.errorlist")
    shot(page, "31-rule-tag-row-cel-error")
    allow_rule.refresh_from_db()
    assert list(allow_rule.session_tags) == ["repository", "ref", "actor"]

    bad.locator("input.jwtex-tag-value").fill("aws_tag(claims.environment)")
    page.click("input[name=_save]")
    page.wait_for_selector("#result_list")
    allow_rule.refresh_from_db()
    assert list(allow_rule.session_tags.items()) == [
        ("repository", "claims.repository"),
        ("ref", "claims.ref"),
        ("actor", "claims.actor"),
        ("workflow", "aws_tag(claims.workflow)"),
        ("environment", {"value": "aws_tag(claims.environment)", "optional": True}),
    ]

    # With JavaScript off there is no button, and an empty row adds a tag all the same.
    context = page.context.browser.new_context(java_script_enabled=False)
    try:
        context.add_cookies(page.context.cookies())
        plain = context.new_page()
        plain.goto(f"{base}/admin/exchange/rule/{allow_rule.pk}/change/")
        assert not plain.is_visible("button[data-jwtex-add-tag]")
        plain.fill("#id_session_tags-5-key", "run")
        plain.fill("#id_session_tags-5-value", "claims.run_id")
        plain.click("input[name=_save]")
        plain.wait_for_selector("#result_list")
    finally:
        context.close()
    allow_rule.refresh_from_db()
    assert list(allow_rule.session_tags)[-1] == "run"
