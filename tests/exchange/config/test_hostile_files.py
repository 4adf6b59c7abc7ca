"""Configuration that would make the service do unbounded work (docs/configuration-file.md#file-formats): YAML anchors
and aliases are refused before anything is built, with the line; a static JWKS keeps only the members a JWK
defines, within a size bound — in files, in restored revisions and in the admin's JSON fields."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from exchange.config.apply import config_apply
from exchange.config.export import config_export
from exchange.config.files import config_dump, config_load
from exchange.config.schema import ConfigError
from exchange.core.jwks import STATIC_JWKS_MAX_BYTES, static_jwks_clean
from exchange.models import Issuer, Revision
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

EC_KEY = {
    "kty": "EC",
    "crv": "P-256",
    "kid": "k1",
    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
}


def bomb_file() -> str:
    """The shape of the file that passed ``jwtex_apply --dry-run`` after 8–14 s at 1.6 GB: a
    "billion laughs" of nested aliases in an extra member of a static JWKS key (9⁹ strings)."""
    laughs = ["                a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        laughs.append(f"                {name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
    key = "\n".join(f"              {name}: {value}" for name, value in EC_KEY.items())
    return (
        f"""tenants:
  - slug: acme
    name: Acme Corp
    issuers:
      - id: k8s
        issuer: https://kubernetes.default.svc
        audiences: [jwtex]
        jwks:
          keys:
            - {key.strip()}
              laughs:
"""
        + "\n".join(laughs)
        + "\n    rules: []\n"
    )


def test_a_yaml_alias_bomb_is_refused_before_any_work_naming_the_line():
    text = bomb_file()
    assert len(text.encode()) < 1300  # a small file
    with pytest.raises(ConfigError) as refused:
        config_load(text, source="bomb.yaml")
    [(where, message)] = refused.value.errors
    anchor_line = next(n for n, line in enumerate(text.splitlines(), 1) if "&a" in line)
    assert (where, message) == (
        "bomb.yaml",
        f"line {anchor_line}, column 20: YAML anchors and aliases are not accepted in a configuration file (anchor &a)",
    )


def test_jwtex_apply_dry_run_refuses_the_bomb_and_changes_nothing(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb_file())
    with pytest.raises(ConfigError):
        config_load(path.read_text())  # (without the refusal, the command below would take seconds and gigabytes)
    err = StringIO()
    with pytest.raises(CommandError, match="1 error; nothing was changed"):
        call_command("jwtex_apply", str(path), "--dry-run", stdout=StringIO(), stderr=err)
    assert "line 16, column 20: YAML anchors and aliases are not accepted" in err.getvalue()
    assert not Tenant.objects.exists()


@pytest.mark.parametrize(
    "text, what",
    [
        ("a: &x 1\nb: 2\n", "anchor &x"),  # an anchor alone is refused too: the file has no use for it
        ("base: {a: 1}\nother:\n  <<: *base\n", "alias *base"),
        ("a: !!str &q v\n", "anchor &q"),
    ],
)
def test_every_anchor_and_alias_is_refused(text, what):
    with pytest.raises(ConfigError) as refused:
        config_load(text)
    assert what in refused.value.errors[0][1] and refused.value.errors[0][1].startswith("line ")


def test_what_jwtex_writes_never_holds_an_anchor_so_it_loads_again():
    shared = ["sts.amazonaws.com"]
    document = {"tenants": [{"slug": "a", "audiences": shared, "again": shared}]}
    text = config_dump(document)
    assert "&" not in text and "*" not in text
    assert config_load(text, fmt="yaml") == document


# --------------------------------------------------------------------------- static JWKS


def key_set(**extra) -> dict:
    return {"keys": [{**EC_KEY, **extra}], "extra": {"anything": list(range(50))}}


def test_a_static_jwks_keeps_only_the_members_a_jwk_defines():
    kept = static_jwks_clean(
        key_set(
            use="sig", alg="ES256", key_ops=["verify"], x5t="abc", n="not-ec", laughs=[["lol"] * 9] * 9, note="hello"
        )
    )
    assert kept == {"keys": [{**EC_KEY, "use": "sig", "alg": "ES256", "key_ops": ["verify"], "x5t": "abc"}]}
    rsa = static_jwks_clean({"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "crv": "P-256", "x": "a"}]})
    assert rsa == {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}  # RFC 7518 §6.3.1: n and e only
    okp = static_jwks_clean({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "a", "y": "b"}]})
    assert okp == {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "a"}]}  # RFC 8037 §2


@pytest.mark.parametrize(
    "document, message",
    [
        ({"keys": [{**EC_KEY, "d": "secret"}]}, "keys[0] holds private key material (d)"),
        (
            {"keys": [{"kty": "RSA", "n": "a", "e": "b", "p": "c", "q": "d"}]},
            "keys[0] holds private key material (p, q)",
        ),
        ({"keys": [{**EC_KEY, "kid": {"nested": "object"}}]}, "keys[0].kid must be a string"),
        ({"keys": [{**EC_KEY, "x5c": ["a", 1]}]}, "keys[0].x5c must be an array of strings"),
        ({"keys": [EC_KEY] * 101}, "the JWKS lists 101 keys; at most 100"),
        (
            {"keys": [{**EC_KEY, "x5c": ["A" * STATIC_JWKS_MAX_BYTES]}]},
            "bytes (its keys' members as JSON); at most 65,536",
        ),
        ({"keys": "no"}, 'a JWKS must be a JSON object with a "keys" array'),
    ],
)
def test_a_static_jwks_is_refused_with_the_place(document, message):
    with pytest.raises(ValueError) as refused:
        static_jwks_clean(document)
    assert message in str(refused.value)


def yaml_with_jwks(jwks: dict) -> str:
    issuer = {"id": "k8s", "issuer": "https://kubernetes.default.svc", "audiences": ["jwtex"], "jwks": jwks}
    return config_dump({"tenants": [{"slug": "acme", "name": "Acme", "issuers": [issuer], "rules": []}]})


def test_apply_stores_only_the_defined_members_and_a_second_apply_changes_nothing():
    text = yaml_with_jwks(key_set(comment="x" * 10_000, nested={"deep": [1, 2, 3]}))
    config_apply(document=config_load(text), now=timezone.now())
    assert Issuer.objects.get().static_jwks == {"keys": [EC_KEY]}
    assert config_export()["tenants"][0]["issuers"][0]["jwks"] == {"keys": [EC_KEY]}
    again = config_apply(document=config_load(text), now=timezone.now())
    assert not again.changed


def test_apply_refuses_an_oversized_static_jwks_with_the_figure_and_changes_nothing():
    text = yaml_with_jwks({"keys": [{**EC_KEY, "x5c": ["A" * STATIC_JWKS_MAX_BYTES]}]})
    with pytest.raises(ConfigError) as refused:
        config_apply(document=config_load(text), now=timezone.now(), dry_run=True)
    [(where, message)] = refused.value.errors
    assert where == "tenants[acme].issuers[k8s].jwks" and "at most 65,536 are accepted" in message
    assert not Tenant.objects.exists()


def test_a_restored_revision_is_read_as_strictly_as_a_file(django_capture_on_commit_callbacks):
    from exchange.config.revision_documents import revision_restore, revision_restore_preview

    with django_capture_on_commit_callbacks(execute=True):
        config_apply(document=config_load(yaml_with_jwks({"keys": [EC_KEY]})), now=timezone.now())
    tenant = Tenant.objects.get(slug="acme")
    revision = Revision.objects.get(tenant=tenant, number=1)
    Revision.objects.filter(pk=revision.pk).update(  # a row tampered with in the database
        document=revision.document.replace("tenants:\n", "x: &x [1, 2]\ny: [*x, *x]\ntenants:\n", 1)
    )
    for attempt in (revision_restore_preview, revision_restore):
        with pytest.raises(ConfigError) as refused:
            attempt(
                tenant=tenant, number=1, **({"author": "t"} if attempt is revision_restore else {}), now=timezone.now()
            )
        assert "YAML anchors and aliases are not accepted" in refused.value.errors[0][1]
    with pytest.raises(CommandError, match="YAML anchors and aliases are not accepted"):
        call_command(
            "jwtex_export",
            "--tenant",
            "acme",
            "--revision",
            "1",
            "--format",
            "json",
            stdout=StringIO(),
            stderr=StringIO(),
        )


# --------------------------------------------------------------------------- the admin's JSON fields


def issuer_form(tenant, static_jwks: str) -> dict:
    return {
        "tenant": tenant.pk,
        "issuer_id": "k8s",
        "issuer": "https://kubernetes.default.svc",
        "audiences": "jwtex",
        "algorithms": ["ES256"],
        "leeway": 60,
        "max_token_age": 86400,
        "jwks_uri": "",
        "jwks_refresh_interval": 3600,
        "static_jwks": static_jwks,
        "enabled": "on",
    }


def test_the_admin_keeps_only_the_defined_members_of_a_static_jwks(admin_client_for, tenant):
    client = admin_client_for(tenant, "operator")
    saved = client.post(
        reverse("admin:exchange_issuer_add"),
        issuer_form(tenant, json.dumps(key_set(note="x" * 5000, laughs=[["lol"] * 9] * 9))),
    )
    assert saved.status_code == 302, saved.context["adminform"].form.errors if saved.context else saved
    assert Issuer.objects.get(tenant=tenant, issuer_id="k8s").static_jwks == {"keys": [EC_KEY]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
        ('{"keys": [], "keys": []}', "the member 'keys' appears twice"),
        ('{"keys": [{"kty": "EC", "d": "secret"}]}', "holds private key material (d)"),
    ],
)
def test_the_admin_refuses_a_hostile_static_jwks_with_a_form_error(admin_client_for, tenant, text, message):
    client = admin_client_for(tenant, "operator")
    refused = client.post(reverse("admin:exchange_issuer_add"), issuer_form(tenant, text))
    assert refused.status_code == 200
    assert message in " ".join(refused.context["adminform"].form.errors["static_jwks"])
    assert not Issuer.objects.filter(issuer_id="k8s").exists()


def test_every_admin_json_field_reads_with_the_strict_decoder(admin_client_for, tenant):
    """Django's own JSON form field lets the decoder's RecursionError through (a 500)."""
    from django import forms
    from django.contrib import admin
    from django.test import RequestFactory

    from tenants.admin_mixins import StrictJSONFormField

    request = RequestFactory().get("/admin/")
    request.user = admin_client_for(role="superuser").user
    json_fields = {}
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label in ("exchange", "tenants", "auth"):
            form = model_admin.get_form(request)
            json_fields.update(
                {
                    f"{model.__name__}.{name}": type(field)
                    for name, field in form.base_fields.items()
                    if isinstance(field, forms.JSONField)
                }
            )
    assert "Issuer.static_jwks" in json_fields
    assert all(issubclass(kind, StrictJSONFormField) for kind in json_fields.values()), json_fields
