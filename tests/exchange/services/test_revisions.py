"""Revisions (docs/operations.md#revisions): one per effective change, none for a no-op; who and from
where; the summary and the diff; ``jwtex_export --revision`` byte for byte; the baseline.

The test's transaction never commits, so the revision checks (on_commit) run inside
``django_capture_on_commit_callbacks(execute=True)``; ``commit_pending()`` runs the checks the
fixtures' writes left waiting (what their commit would have done)."""

from __future__ import annotations

from io import StringIO

import pytest
import yaml
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from exchange.config.revision_documents import RevisionCheck, revisions_baseline
from exchange.keys import signing_key_rotate
from exchange.models import Issuer, Revision, Rule
from exchange.services.revisions import revision_actor, revision_diff, revision_summary

pytestmark = pytest.mark.django_db


def commit_pending() -> None:
    for _, callback, _ in list(connection.run_on_commit):
        if isinstance(callback, RevisionCheck) and not callback.done:
            callback()


def export(slug: str = "acme") -> str:
    out = StringIO()
    call_command("jwtex_export", "--tenant", slug, stdout=out)
    return out.getvalue()


def export_revision(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("jwtex_export", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def revisions(tenant) -> list[Revision]:
    return list(Revision.objects.filter(tenant=tenant).order_by("number"))


@pytest.fixture
def history(tenant, issuer, allow_rule):
    """acme with issuer 'ci' and rule 'octo-org main', committed: revision 1."""
    commit_pending()
    return tenant


def apply_file(tmp_path, document: dict, name: str = "acme.yaml", *extra: str) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    out = StringIO()
    call_command("jwtex_apply", str(path), *extra, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_tenants_creation_is_revision_1_and_is_its_export(history):
    (first,) = revisions(history)
    assert (first.number, first.source, first.author, first.summary) == (1, "created", "system", "tenant created")
    assert first.document == export()
    assert "signing" not in first.document.lower().replace("signing_algorithm", "")  # never a key


def test_jwtex_apply_records_one_revision_with_the_file_name_and_none_when_nothing_changes(
    history, tmp_path, django_capture_on_commit_callbacks
):
    document = yaml.safe_load(export())
    document["tenants"][0]["rules"][0]["when"] = "claims.ref == 'refs/heads/main'"
    document["tenants"][0]["issuers"].append({"id": "gitlab", "issuer": "https://gitlab.com", "audiences": ["x"]})
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        apply_file(tmp_path, document, "change.yaml")
    # one check for the tenant, however many rows the apply wrote
    assert sum(isinstance(c, RevisionCheck) for c in callbacks) == 1
    latest = revisions(history)[-1]
    assert (latest.number, latest.source, latest.author) == (2, "apply", "jwtex_apply (change.yaml)")
    assert latest.summary == "issuer 'gitlab' added; rule 'octo-org main' changed"
    assert latest.document == export()

    with django_capture_on_commit_callbacks(execute=True):
        assert "no changes" in apply_file(tmp_path, document, "change.yaml")  # the same file again
        apply_file(tmp_path, {"tenants": [{**document["tenants"][0], "name": "Renamed"}]}, "dry.yaml", "--dry-run")
    assert len(revisions(history)) == 2


def test_a_new_tenant_from_a_file_starts_at_revision_1(db, tmp_path, django_capture_on_commit_callbacks):
    document = {
        "tenants": [
            {
                "slug": "initech",
                "name": "Initech",
                "issuers": [{"id": "ci", "issuer": "https://ci.example", "audiences": ["a"]}],
            }
        ]
    }
    with django_capture_on_commit_callbacks(execute=True):
        apply_file(tmp_path, document, "initech.yaml")
    (first,) = Revision.objects.filter(tenant__slug="initech")
    assert (first.number, first.source, first.author) == (1, "created", "jwtex_apply (initech.yaml)")
    assert first.document == export("initech") and "https://ci.example" in first.document


def test_a_key_rotation_bumps_the_tenant_but_records_no_revision(history, django_capture_on_commit_callbacks):
    version = type(history).objects.get(pk=history.pk).config_version
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert signing_key_rotate(tenant_id=history.pk, now=timezone.now(), force=True).changed
    assert type(history).objects.get(pk=history.pk).config_version > version
    assert any(isinstance(c, RevisionCheck) for c in callbacks)  # checked, and found nothing changed
    assert len(revisions(history)) == 1


def test_changes_outside_a_request_are_the_systems_and_a_context_names_its_author(
    history, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        Rule.objects.get(tenant=history).delete()
    with django_capture_on_commit_callbacks(execute=True), revision_actor(author="ops-bot", source="promote"):
        Issuer.objects.create(tenant=history, issuer_id="gh", issuer="https://gh.example", audiences=["a"])
    second, third = revisions(history)[1:]
    assert (second.author, second.source, second.summary) == ("system", "system", "rule 'octo-org main' deleted")
    assert (third.author, third.source, third.summary) == ("ops-bot", "promote", "issuer 'gh' added")


def test_several_changes_in_one_transaction_are_one_revision(history, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        Issuer.objects.create(tenant=history, issuer_id="a", issuer="https://a.example", audiences=["a"])
        with transaction.atomic():  # a savepoint inside: still the same check
            Issuer.objects.create(tenant=history, issuer_id="b", issuer="https://b.example", audiences=["a"])
        Rule.objects.filter(tenant=history).update(when="true")  # no signal of its own, but the check exports it
        history.name = "Acme Inc."
        history.save()
    assert sum(isinstance(c, RevisionCheck) for c in callbacks) == 1
    assert revisions(history)[-1].summary == (
        "tenant settings changed (name); issuer 'a' added; issuer 'b' added; rule 'octo-org main' changed"
    )


def test_export_of_a_past_revision_is_the_export_at_that_time_byte_for_byte(
    history, tmp_path, django_capture_on_commit_callbacks
):
    exports = {1: export()}
    document = yaml.safe_load(exports[1])
    for number, when in ((2, "claims.ref == 'refs/heads/dev'"), (3, "claims.ref.startsWith('refs/tags/')")):
        document["tenants"][0]["rules"][0]["when"] = when
        with django_capture_on_commit_callbacks(execute=True):
            apply_file(tmp_path, document)
        exports[number] = export()
    assert [r.number for r in revisions(history)] == [1, 2, 3]
    for number, text in exports.items():
        printed, _ = export_revision("--tenant", "acme", "--revision", str(number))
        assert printed.encode() == text.encode()
    as_json, _ = export_revision("--tenant", "acme", "--revision", "2", "--format", "json")
    assert '"when": "claims.ref == \'refs/heads/dev\'"' in as_json


@pytest.mark.parametrize(
    "args, message",
    [
        (("--tenant", "acme", "--revision", "9"), "has no revision 9"),
        (("--tenant", "nope", "--revision", "1"), "has no revision 1"),
        (
            (
                "--revision",
                "1",
            ),
            "exactly one --tenant",
        ),
        (("--tenant", "acme", "--tenant", "globex", "--revision", "1"), "exactly one --tenant"),
    ],
)
def test_export_of_an_unknown_revision_fails_and_prints_nothing(history, other_tenant, args, message):
    out = StringIO()
    with pytest.raises(CommandError, match=message):
        call_command("jwtex_export", *args, stdout=out, stderr=StringIO())
    assert out.getvalue() == ""


def test_revisions_of_one_tenant_never_mix_with_anothers(history, other_tenant):
    commit_pending()
    assert [r.number for r in revisions(other_tenant)] == [1]
    assert "globex" in revisions(other_tenant)[0].document and "acme" not in revisions(other_tenant)[0].document
    assert "globex" not in revisions(history)[0].document


def test_tenants_from_before_revisions_get_a_baseline(tenant, issuer):
    assert not Revision.objects.exists()  # (the fixtures' checks never ran)
    assert revisions_baseline() == 1
    (first,) = revisions(tenant)
    assert (first.source, first.author, first.summary) == ("baseline", "system", "history starts here")
    assert first.document == export()
    assert revisions_baseline() == 0


# --- summary and diff --------------------------------------------------------------------------------


def doc(**tenant) -> str:
    return yaml.safe_dump({"tenants": [{"slug": "acme", "name": "Acme", **tenant}]}, sort_keys=False)


def test_the_summary_compares_issuers_by_id_and_rules_by_name():
    rules = [{"name": "main", "when": "true"}, {"name": "deny", "when": "true", "effect": "deny"}]
    before = doc(issuers=[{"id": "github"}, {"id": "old"}], rules=rules)
    after = doc(
        max_token_lifetime=60,
        issuers=[{"id": "github"}, {"id": "gitlab"}],
        rules=[{"name": "deny", "when": "true", "effect": "deny"}, {"name": "main", "when": "false"}],
        shadow_rules=[{"name": "candidate"}],
    )
    assert revision_summary(before=before, after=after) == (
        "tenant settings changed (max_token_lifetime); issuer 'gitlab' added; issuer 'old' deleted; "
        "rule 'main' changed; rules reordered; shadow rule 'candidate' added"
    )
    assert revision_summary(before=None, after=after) == "tenant created"
    assert revision_summary(before=before, after=before + "\n") == "configuration changed"


def test_the_diff_is_a_unified_diff_line_by_line():
    before, after = doc(rules=[{"name": "main", "when": "true"}]), doc(rules=[{"name": "main", "when": "false"}])
    lines = revision_diff(before=before, after=after, before_label="revision 1", after_label="revision 2")
    assert [(line.kind, line.text) for line in lines if line.kind in {"add", "remove", "file"}] == [
        ("file", "--- revision 1"),
        ("file", "+++ revision 2"),
        ("remove", "-    when: 'true'"),
        ("add", "+    when: 'false'"),
    ]
    assert lines[2].kind == "hunk" and lines[2].text.startswith("@@ ")
    assert revision_diff(before=before, after=before, before_label="a", after_label="b") == []
