"""Configuration as code (docs/configuration-file.md#commands): jwtex_apply / jwtex_export and the services
behind them."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError
from django.utils import timezone

from exchange.config.apply import config_apply
from exchange.config.export import config_export
from exchange.config.files import config_dump, config_load
from exchange.config.schema import ConfigError
from exchange.models import Issuer, KeyState, Rule, SigningKey
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

# docs/configuration-file.md#the-reference-example, verbatim.
SPEC_EXAMPLE = """\
tenants:
  - slug: acme
    name: Acme Corp
    default_audience: sts.amazonaws.com
    max_token_lifetime: 3600
    signing_algorithm: ES256
    issuers:
      - id: github
        issuer: https://token.actions.githubusercontent.com
        audiences: ["sts.amazonaws.com"]
        # jwks_uri: https://…          optional; default: from discovery
        # jwks: {"keys": [...]}        optional static JWKS (private clusters)
        # algorithms: [RS256, ES256]
        # leeway: 60
        # max_token_age: 86400
    rules:
      - name: octo-org main branch
        issuers: [github]
        when: claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'
        effect: allow
        lifetime: 900
        session_tags:
          repository: claims.repository
          ref: claims.ref
          actor: claims.actor
        transitive_tag_keys: []
      - name: everything else from github
        issuers: [github]
        when: "true"
        effect: deny
"""

# What jwtex_export prints after applying SPEC_EXAMPLE: defaults left out, rules in order.
SPEC_EXAMPLE_EXPORTED = """\
tenants:
- slug: acme
  name: Acme Corp
  issuers:
  - id: github
    issuer: https://token.actions.githubusercontent.com
    audiences:
    - sts.amazonaws.com
  rules:
  - name: octo-org main branch
    issuers:
    - github
    when: claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'
    effect: allow
    lifetime: 900
    session_tags:
      repository: claims.repository
      ref: claims.ref
      actor: claims.actor
  - name: everything else from github
    issuers:
    - github
    when: 'true'
    effect: deny
"""


def apply(text: str, **kwargs):
    return config_apply(document=config_load(text, source="test.yaml"), now=timezone.now(), **kwargs)


def apply_errors(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as excinfo:
        apply(text)
    return excinfo.value.errors


def export_yaml(*slugs: str) -> str:
    out, err = StringIO(), StringIO()
    args = [arg for slug in slugs for arg in ("--tenant", slug)]
    call_command("jwtex_export", *args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue()


def snapshot() -> dict:
    """Everything apply may write, row by row, to compare before/after a refused apply."""
    return {
        "tenants": list(Tenant.objects.order_by("slug").values()),
        "issuers": list(Issuer.objects.order_by("pk").values()),
        "rules": list(Rule.objects.order_by("pk").values()),
        "rule_issuers": sorted(Rule.issuers.through.objects.values_list("rule_id", "issuer_id")),
        "keys": sorted(SigningKey.objects.values_list("tenant_id", "kid", "state")),
    }


def edited(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# --------------------------------------------------------------------------- apply


def test_apply_creates_tenant_issuer_rules_and_a_signing_key():
    report = apply(SPEC_EXAMPLE)

    tenant = Tenant.objects.get(slug="acme")
    assert tenant.name == "Acme Corp"
    assert (tenant.default_audience, tenant.max_token_lifetime, tenant.signing_algorithm) == (
        "sts.amazonaws.com",
        3600,
        "ES256",
    )
    issuer = Issuer.objects.get(tenant=tenant)
    assert (issuer.issuer_id, issuer.issuer, issuer.audiences) == (
        "github",
        "https://token.actions.githubusercontent.com",
        ["sts.amazonaws.com"],
    )
    assert issuer.algorithms == ["RS256", "ES256"] and issuer.leeway == 60 and issuer.max_token_age == 86400
    assert issuer.static_jwks is None and issuer.jwks_uri == ""

    rules = list(Rule.objects.filter(tenant=tenant).order_by("position"))
    assert [(r.name, r.position, r.effect) for r in rules] == [
        ("octo-org main branch", 10, "allow"),
        ("everything else from github", 20, "deny"),
    ]
    allow = rules[0]
    assert allow.when == "claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'"
    assert allow.lifetime == 900
    assert allow.session_tags == {"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"}
    assert allow.transitive_tag_keys == []
    assert rules[1].when == "true" and rules[1].lifetime is None
    assert all([i.issuer_id for i in r.issuers.all()] == ["github"] for r in rules)

    keys = SigningKey.objects.filter(tenant=tenant)
    assert [(k.state, k.algorithm) for k in keys] == [(KeyState.ACTIVE, "ES256")]

    assert report.counts == {
        "tenant": {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0},
        "issuer": {"created": 1, "updated": 0, "deleted": 0, "unchanged": 0},
        "rule": {"created": 2, "updated": 0, "deleted": 0, "unchanged": 0},
    }


def test_applied_rules_compile_in_the_runtime():
    from exchange.runtime import tenant_runtime_get

    apply(SPEC_EXAMPLE)
    runtime = tenant_runtime_get(slug="acme")
    assert runtime.rules_error is None
    assert [r.name for r in runtime.rules] == ["octo-org main branch", "everything else from github"]
    assert runtime.rules[0].issuers == frozenset({"github"})


def test_applying_the_same_file_twice_changes_nothing_the_second_time():
    apply(SPEC_EXAMPLE)
    tenant = Tenant.objects.get(slug="acme")
    before = snapshot()

    report = apply(SPEC_EXAMPLE)

    assert not report.changed and report.changes == []
    assert report.counts == {
        "tenant": {"created": 0, "updated": 0, "deleted": 0, "unchanged": 1},
        "issuer": {"created": 0, "updated": 0, "deleted": 0, "unchanged": 1},
        "rule": {"created": 0, "updated": 0, "deleted": 0, "unchanged": 2},
    }
    assert Tenant.objects.get(pk=tenant.pk).config_version == tenant.config_version
    assert snapshot() == before  # updated_at included: not a single row was saved
    assert report.summary().endswith("no changes")


def test_export_then_apply_then_export_is_identical():
    apply(SPEC_EXAMPLE)
    first = export_yaml()
    assert first == SPEC_EXAMPLE_EXPORTED

    version = Tenant.objects.get(slug="acme").config_version
    report = apply(first)
    assert not report.changed
    assert Tenant.objects.get(slug="acme").config_version == version
    assert export_yaml() == first


def test_export_round_trips_every_field_and_omits_only_defaults():
    text = """\
tenants:
  - slug: zeta
    name: Zeta
    enabled: false
    default_audience: api.zeta.example
    max_token_lifetime: 7200
    signing_algorithm: RS256
    rate_limit_per_minute: 0
    key_rotation_interval: 86400
    key_prepublish_window: 7200
    audit_retention_days: 30
    aws_account_ids: ["012345678901", "111122223333"]
    aws_region: eu-central-1
    aws_role_name: zeta-deploy
    issuers:
      - id: k8s
        issuer: https://kubernetes.default.svc
        audiences: [jwtex, other]
        algorithms: [RS256]
        leeway: 5
        max_token_age: 3600
        jwks: {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
                         "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                         "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}
        enabled: false
        jwks_refresh_interval: 600
      - id: gitlab
        issuer: https://gitlab.example.com
        audiences: [jwtex]
        jwks_uri: https://gitlab.example.com/oauth/discovery/keys
    rules:
      - name: deploy
        issuers: [k8s, gitlab]
        when: |
          claims.sub.startsWith('system:serviceaccount:deploy:')
            && issuer == 'k8s'
        effect: allow
        subject: "'k8s:' + claims.sub"
        audience: api.zeta.example
        audiences: [other.zeta.example]
        lifetime: 600
        session_tags:
          "team:name": "'deploy'"
          pod: {value: "aws_tag(claims['kubernetes.io'].pod.name)", optional: true}
        transitive_tag_keys: ["team:name"]
        claims:
          namespace: "'deploy'"
        source_identity: aws_source_identity(claims.sub)
        enabled: false
        any_owner: true
"""
    apply(text)
    first = export_yaml("zeta")
    exported = yaml.safe_load(first)["tenants"][0]
    assert exported["signing_algorithm"] == "RS256" and exported["enabled"] is False
    issuers = {i["id"]: i for i in exported["issuers"]}
    assert [i["id"] for i in exported["issuers"]] == ["gitlab", "k8s"]  # by id
    assert set(issuers["gitlab"]) == {"id", "issuer", "audiences", "jwks_uri"}  # the rest are defaults
    assert issuers["k8s"]["jwks"]["keys"][0]["kid"] == "k1"
    rule = exported["rules"][0]
    assert rule["issuers"] == ["gitlab", "k8s"]
    assert rule["when"].startswith("claims.sub.startsWith") and "\n  && issuer" in rule["when"]
    assert "when: |" in first  # multi-line CEL stays a readable block
    assert rule["session_tags"] == {
        "team:name": "'deploy'",
        "pod": {"value": "aws_tag(claims['kubernetes.io'].pod.name)", "optional": True},
    }
    assert rule["any_owner"] is True
    assert rule["source_identity"] == "aws_source_identity(claims.sub)"
    assert (
        exported["aws_account_ids"] == ["012345678901", "111122223333"] and exported["aws_role_name"] == "zeta-deploy"
    )

    assert not apply(first).changed
    assert export_yaml("zeta") == first


def test_export_never_contains_signing_keys_cached_jwks_or_health():
    apply(SPEC_EXAMPLE)
    issuer = Issuer.objects.get(issuer_id="github")
    Issuer.objects.filter(pk=issuer.pk).update(
        jwks={"keys": [{"kty": "EC", "kid": "cached"}]}, jwks_last_error="boom", jwks_consecutive_failures=3
    )
    key = SigningKey.objects.get(tenant__slug="acme")
    text = export_yaml()
    assert "cached" not in text and "boom" not in text and "consecutive" not in text
    assert key.kid not in text and "private" not in text and key.public_jwk["x"] not in text
    assert text == SPEC_EXAMPLE_EXPORTED


def test_a_file_with_an_error_in_the_last_rule_changes_nothing_at_all():
    apply(SPEC_EXAMPLE)
    before = snapshot()
    changed_acme = edited(SPEC_EXAMPLE, "name: Acme Corp", "name: Acme Renamed")
    changed_acme = edited(changed_acme, "      - name: everything else from github\n", "      - name: catch-all\n")
    document = (
        changed_acme
        + """\
  - slug: globex
    name: Globex
    issuers:
      - id: gitlab
        issuer: https://gitlab.example.com
        audiences: [jwtex]
    rules:
      - name: fine
        issuers: [gitlab]
        when: "true"
        effect: deny
      - name: broken
        issuers: [gitlab]
        when: "claims.ref == "
        effect: allow
"""
    )

    errors = apply_errors(document)

    assert errors == [
        (
            'tenants[globex].rules["broken"].when',
            "line 1, column 15: Syntax error: mismatched input '<EOF>' expecting {'[', '{', '(', '.', '-', '!', "
            "'true', 'false', 'null', NUM_FLOAT, NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}",
        )
    ]
    assert snapshot() == before
    assert Tenant.objects.get(slug="acme").name == "Acme Corp"
    assert not Tenant.objects.filter(slug="globex").exists()
    assert Rule.objects.filter(name="everything else from github").exists()


def test_a_database_error_while_writing_rolls_back_every_tenant(monkeypatch):
    import exchange.config.apply as config

    real_sync_rules = config._sync_rules

    def failing_for_globex(tenant, desired, *args, **kwargs):
        if desired.slug == "globex":
            raise IntegrityError("UNIQUE constraint failed: exchange_rule.tenant_id, exchange_rule.name")
        return real_sync_rules(tenant, desired, *args, **kwargs)

    monkeypatch.setattr(config, "_sync_rules", failing_for_globex)
    document = (
        SPEC_EXAMPLE
        + """\
  - slug: globex
    name: Globex
"""
    )
    errors = apply_errors(document)

    assert len(errors) == 1
    assert errors[0][0] == "tenants[globex]"
    assert errors[0][1].startswith("the database refused the change (UNIQUE constraint failed")
    assert errors[0][1].endswith("nothing was applied")
    assert Tenant.objects.count() == 0 and SigningKey.objects.count() == 0 and Rule.objects.count() == 0


def test_every_error_is_reported_at_once_with_its_path():
    document = """\
tenants:
  - slug: Not A Slug
    name: ""
    max_token_lifetime: 10
    signing_algorithm: HS256
    issuers:
      - id: gh
        issuer: http://token.actions.githubusercontent.com
        audiences: sts.amazonaws.com
        leeway: "60"
        algorithms: [RS256, none]
    rules:
      - name: r1
        issuers: [gh]
        when: claim.sub == 'x'
        effect: permit
        lifetime: 5
        session_tags:
          "aws:bad": claims.x
          good: claims.y
        transitive_tag_keys: [missing]
        claims:
          iss: "'me'"
"""
    errors = apply_errors(document)
    assert errors == [
        ('tenants["Not A Slug"].slug', "Lower-case letters, digits and inner hyphens, at most 63 characters."),
        ('tenants["Not A Slug"].name', "This field cannot be blank."),
        ('tenants["Not A Slug"].max_token_lifetime', "Ensure this value is greater than or equal to 60."),
        ('tenants["Not A Slug"].signing_algorithm', "Value 'HS256' is not a valid choice."),
        ('tenants["Not A Slug"].issuers[gh].audiences', "expected a list of strings, got a string"),
        ('tenants["Not A Slug"].issuers[gh].leeway', "expected a whole number, got a string"),
        (
            'tenants["Not A Slug"].issuers[gh].issuer',
            "The issuer must be an https URL; "
            "http:// is allowed only with JWTEX_ALLOW_INSECURE_ISSUERS (development and tests).",
        ),
        (
            'tenants["Not A Slug"].issuers[gh].algorithms[1]',
            "unsupported algorithm 'none' "
            "(supported: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)",
        ),
        ('tenants["Not A Slug"].rules["r1"].effect', "The effect must be 'allow', 'deny' or 'mapper', not 'permit'."),
        (
            'tenants["Not A Slug"].rules["r1"].when',
            "line 1, column 1: Unknown name 'claim': an expression may use only 'claims' and 'issuer'.",
        ),
        ('tenants["Not A Slug"].rules["r1"].lifetime', "The lifetime must be a whole number of seconds, at least 60."),
        (
            'tenants["Not A Slug"].rules["r1"].session_tags["aws:bad"]',
            "Session tag key 'aws:bad' starts with 'aws:', which AWS reserves.",
        ),
        (
            'tenants["Not A Slug"].rules["r1"].transitive_tag_keys[0]',
            "Transitive tag key 'missing' is not one of this rule's session tags.",
        ),
        (
            'tenants["Not A Slug"].rules["r1"].claims.iss',
            "The claim 'iss' is set by jwtex itself (use subject/audience/session_tags where they apply).",
        ),
    ]
    assert Tenant.objects.count() == 0


def test_paths_name_the_tenant_and_rule_and_cel_errors_carry_line_and_column():
    document = edited(
        SPEC_EXAMPLE,
        "          actor: claims.actor\n",
        "          actor: |\n            claims.actor +\n              (claims.x\n",
    )
    errors = apply_errors(document)
    assert errors == [
        (
            'tenants[acme].rules["octo-org main branch"].session_tags.actor',
            "line 3, column 1: Syntax error: missing ')' at '<EOF>'",
        )
    ]


def test_unknown_keys_are_errors_that_name_them():
    document = edited(SPEC_EXAMPLE, "    max_token_lifetime: 3600\n", "    max_token_lifetme: 3600\n")
    document = edited(document, "        effect: deny\n", "        effect: deny\n        colour: red\n")
    document = edited(document, "        audiences: [", "        audience: [")
    errors = apply_errors(document)
    assert errors == [
        ("tenants[acme]", "unknown key 'max_token_lifetme'; did you mean 'max_token_lifetime'?"),
        ("tenants[acme].issuers[github]", "unknown key 'audience'; did you mean 'audiences'?"),
        ("tenants[acme].issuers[github]", "missing required key 'audiences'"),
        (
            'tenants[acme].rules["everything else from github"]',
            "unknown key 'colour' (allowed: name, issuers, when, effect, subject, audience, audiences, lifetime, "
            "session_tags, transitive_tag_keys, claims, source_identity, enabled, any_owner, mapper)",
        ),
    ]
    assert Tenant.objects.count() == 0


def test_the_models_own_validation_is_reported_under_the_document_keys():
    # Tenant.clean(): a key's tokens must expire before the key after next is published.
    document = edited(
        SPEC_EXAMPLE,
        "    signing_algorithm: ES256\n",
        "    signing_algorithm: ES256\n    key_rotation_interval: 3600\n",
    )
    document = edited(
        document,
        '        audiences: ["sts.amazonaws.com"]\n',
        '        audiences: ["sts.amazonaws.com"]\n        jwks_refresh_interval: 10\n',
    )
    errors = apply_errors(document)
    assert [path for path, _ in errors] == [
        "tenants[acme].key_rotation_interval",
        "tenants[acme].issuers[github].jwks_refresh_interval",
    ]
    assert errors[0][1].startswith("At least pre-publish window + max token lifetime")
    assert errors[1][1] == "Ensure this value is greater than or equal to 300."


def test_unknown_top_level_key_and_wrong_document_shape():
    assert apply_errors("tenant: []\n") == [
        ("(document)", "unknown key 'tenant'; did you mean 'tenants'?"),
        ("(document)", "missing required key 'tenants'"),
    ]
    assert apply_errors("- slug: acme\n") == [("(document)", "expected a mapping with a 'tenants' list, got a list")]
    assert apply_errors("tenants: {acme: {}}\n") == [("tenants", "expected a list, got a mapping")]


def test_duplicate_yaml_keys_are_refused_with_their_line():
    document = edited(
        SPEC_EXAMPLE, "          ref: claims.ref\n", "          ref: claims.ref\n          repository: claims.sub\n"
    )
    with pytest.raises(ConfigError) as excinfo:
        config_load(document, source="acme.yaml")
    assert excinfo.value.errors == [
        (
            "acme.yaml",
            "line 25, column 11: found duplicate key 'repository' (first at line 23, column 11)",
        )
    ]


def test_yaml_syntax_errors_give_line_and_column():
    with pytest.raises(ConfigError) as excinfo:
        config_load("tenants:\n  - slug: acme\n   name: x\n", source="bad.yaml")
    [(source, message)] = excinfo.value.errors
    assert source == "bad.yaml"
    assert message == "line 3, column 4: expected <block end>, but found '<block mapping start>'"


def test_duplicate_and_missing_ids_in_the_file_are_errors():
    document = edited(
        SPEC_EXAMPLE,
        "    rules:\n",
        "      - id: github\n        issuer: https://other.example.com\n        audiences: [x]\n    rules:\n",
    )
    document = edited(document, "      - name: everything else from github\n", "      - name: octo-org main branch\n")
    assert apply_errors(document) == [
        ("tenants[acme].issuers[github]", "issuer id 'github' appears more than once"),
        ('tenants[acme].rules["octo-org main branch"]', "rule name 'octo-org main branch' appears more than once"),
    ]


def test_a_rule_referencing_an_unknown_issuer_is_an_error():
    document = edited(
        SPEC_EXAMPLE,
        '        issuers: [github]\n        when: "true"',
        '        issuers: [gitlab]\n        when: "true"',
    )
    assert apply_errors(document) == [
        (
            'tenants[acme].rules["everything else from github"].issuers[0]',
            "unknown issuer 'gitlab': this tenant's issuers in the file are: github",
        )
    ]


def test_an_issuer_of_another_tenant_or_only_in_the_database_is_unknown(tenant, issuer):
    # ``issuer`` (id "ci") exists in the database for acme, but the file is the truth for acme:
    # an issuer it does not list is about to be deleted, so a rule cannot lean on it.
    document = edited(
        SPEC_EXAMPLE, '        issuers: [github]\n        when: "true"', '        issuers: [ci]\n        when: "true"'
    )
    assert apply_errors(document) == [
        (
            'tenants[acme].rules["everything else from github"].issuers[0]',
            "unknown issuer 'ci': this tenant's issuers in the file are: github",
        )
    ]
    assert Issuer.objects.filter(issuer_id="ci").exists()


def test_a_static_jwks_must_be_a_key_set_with_a_usable_key():
    document = edited(
        SPEC_EXAMPLE,
        '        audiences: ["sts.amazonaws.com"]\n',
        '        audiences: ["sts.amazonaws.com"]\n        jwks: [1, 2]\n',
    )
    assert apply_errors(document) == [
        ("tenants[acme].issuers[github].jwks", 'expected a JWKS: a mapping with a "keys" list')
    ]
    document = edited(
        SPEC_EXAMPLE,
        '        audiences: ["sts.amazonaws.com"]\n',
        '        audiences: ["sts.amazonaws.com"]\n        jwks: {keys: [{kty: oct, kid: s}]}\n',
    )
    assert apply_errors(document) == [
        ("tenants[acme].issuers[github].jwks", "the JWKS has no usable public key (RSA, EC or OKP)")
    ]
    document = edited(
        SPEC_EXAMPLE,
        '        audiences: ["sts.amazonaws.com"]\n',
        '        audiences: ["sts.amazonaws.com"]\n        jwks: {keys: [{kty: oct, k: c2VjcmV0}]}\n',
    )
    assert apply_errors(document) == [
        ("tenants[acme].issuers[github].jwks", "keys[0] holds private key material (k): give the public keys only")
    ]


# --------------------------------------------------------------------------- the file is the truth


def test_removing_a_rule_from_the_file_deletes_it():
    apply(SPEC_EXAMPLE)
    catch_all = Rule.objects.get(name="everything else from github")
    shorter = SPEC_EXAMPLE[: SPEC_EXAMPLE.index("      - name: everything else from github")]

    report = apply(shorter)

    assert not Rule.objects.filter(pk=catch_all.pk).exists()
    assert list(Rule.objects.values_list("name", flat=True)) == ["octo-org main branch"]
    assert report.changes == ['deleted rule acme/"everything else from github"']
    assert report.counts["rule"] == {"created": 0, "updated": 0, "deleted": 1, "unchanged": 1}


def test_removing_an_issuer_deletes_it_and_tenants_not_named_are_untouched(other_tenant):
    from exchange.models import Issuer

    other_issuer = Issuer.objects.create(
        tenant=other_tenant, issuer_id="github", issuer="https://token.actions.githubusercontent.com", audiences=["x"]
    )
    other_before = Tenant.objects.get(pk=other_tenant.pk).config_version
    apply(SPEC_EXAMPLE)
    document = """\
tenants:
  - slug: acme
    name: Acme Corp
"""
    report = apply(document)

    assert report.counts["issuer"]["deleted"] == 1 and report.counts["rule"]["deleted"] == 2
    assert not Issuer.objects.filter(tenant__slug="acme").exists()
    assert not Rule.objects.filter(tenant__slug="acme").exists()
    assert Issuer.objects.filter(pk=other_issuer.pk).exists()
    assert Tenant.objects.get(pk=other_tenant.pk).config_version == other_before


def test_reordering_rules_changes_their_positions():
    apply(SPEC_EXAMPLE)
    start = SPEC_EXAMPLE.index("      - name: octo-org main branch")
    middle = SPEC_EXAMPLE.index("      - name: everything else from github")
    reordered = SPEC_EXAMPLE[:start] + SPEC_EXAMPLE[middle:] + SPEC_EXAMPLE[start:middle]

    report = apply(reordered)

    assert list(Rule.objects.order_by("position").values_list("name", "position")) == [
        ("everything else from github", 10),
        ("octo-org main branch", 20),
    ]
    assert report.counts["rule"] == {"created": 0, "updated": 2, "deleted": 0, "unchanged": 0}
    assert yaml.safe_load(export_yaml())["tenants"][0]["rules"][0]["name"] == "everything else from github"


def test_changing_a_field_updates_only_that_row_and_bumps_the_version():
    apply(SPEC_EXAMPLE)
    tenant = Tenant.objects.get(slug="acme")
    allow = Rule.objects.get(name="octo-org main branch")
    deny = Rule.objects.get(name="everything else from github")

    report = apply(edited(SPEC_EXAMPLE, "        lifetime: 900\n", "        lifetime: 1200\n"))

    assert report.changes == ['updated rule acme/"octo-org main branch" (lifetime)']
    assert Rule.objects.get(pk=allow.pk).lifetime == 1200
    assert Rule.objects.get(pk=deny.pk).updated_at == deny.updated_at
    assert Tenant.objects.get(pk=tenant.pk).config_version > tenant.config_version


def test_changing_an_issuer_url_forgets_the_keys_cached_from_the_old_one():
    apply(SPEC_EXAMPLE)
    Issuer.objects.filter(issuer_id="github").update(
        jwks={"keys": []}, jwks_fetched_at=timezone.now(), jwks_resolved_uri="https://old.example/jwks", jwks_etag='"1"'
    )
    apply(
        edited(SPEC_EXAMPLE, "https://token.actions.githubusercontent.com", "https://ghe.example.com/_services/token")
    )
    issuer = Issuer.objects.get(issuer_id="github")
    assert issuer.issuer == "https://ghe.example.com/_services/token"
    assert (issuer.jwks, issuer.jwks_fetched_at, issuer.jwks_resolved_uri, issuer.jwks_etag) == (None, None, "", "")


def test_apply_never_changes_signing_keys(tenant, signing_key):
    kids_before = sorted(SigningKey.objects.values_list("kid", "state", "algorithm"))

    report = apply(SPEC_EXAMPLE)  # acme exists already (the fixture): no new key
    assert report.counts["tenant"] == {"created": 0, "updated": 0, "deleted": 0, "unchanged": 1}
    apply(edited(SPEC_EXAMPLE, "signing_algorithm: ES256", "signing_algorithm: RS256"))

    assert Tenant.objects.get(pk=tenant.pk).signing_algorithm == "RS256"  # for the next rotation
    assert sorted(SigningKey.objects.values_list("kid", "state", "algorithm")) == kids_before
    assert SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE).kid == signing_key.kid


# --------------------------------------------------------------------------- commands


def run_apply(*args, stdin: str | None = None) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    kwargs = {"stdin": StringIO(stdin)} if stdin is not None else {}
    call_command("jwtex_apply", *args, stdout=out, stderr=err, **kwargs)
    return out.getvalue(), err.getvalue()


def test_command_applies_a_yaml_file_and_prints_a_summary(tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")

    out, err = run_apply(str(path))

    assert err == ""
    assert out.splitlines() == [
        "created tenant acme",
        "created issuer acme/github",
        'created rule acme/"octo-org main branch"',
        'created rule acme/"everything else from github"',
        "tenants: 1 created, 0 updated, 0 deleted, 0 unchanged",
        "issuers: 1 created, 0 updated, 0 deleted, 0 unchanged",
        "rules: 2 created, 0 updated, 0 deleted, 0 unchanged",
    ]
    out, _ = run_apply(str(path))
    assert out.splitlines()[-1] == "no changes"


def test_dry_run_writes_nothing(tmp_path):
    path = tmp_path / "acme.yaml"
    path.write_text(SPEC_EXAMPLE, encoding="utf-8")

    out, _ = run_apply(str(path), "--dry-run")

    assert "would create tenant acme" in out.splitlines()
    assert 'would create rule acme/"octo-org main branch"' in out.splitlines()
    assert out.splitlines()[-1] == "dry run: nothing was written"
    assert Tenant.objects.count() == 0 and SigningKey.objects.count() == 0 and Issuer.objects.count() == 0

    run_apply(str(path))
    before = snapshot()
    path.write_text(edited(SPEC_EXAMPLE, "name: Acme Corp", "name: Acme Inc"), encoding="utf-8")
    out, _ = run_apply(str(path), "--dry-run")
    assert out.splitlines()[:2] == [
        "would update tenant acme (name)",
        "tenants: 0 created, 1 updated, 0 deleted, 0 unchanged",
    ]
    assert snapshot() == before


def test_json_input_from_a_file_and_from_stdin(tmp_path):
    document = yaml.safe_load(SPEC_EXAMPLE)
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(document, indent=2), encoding="utf-8")

    run_apply(str(path))
    assert Rule.objects.filter(tenant__slug="acme").count() == 2

    out, _ = run_apply("-", stdin=json.dumps(document))
    assert out.splitlines()[-1] == "no changes"

    export_json = StringIO()
    call_command("jwtex_export", "--format", "json", stdout=export_json)
    assert json.loads(export_json.getvalue()) == yaml.safe_load(SPEC_EXAMPLE_EXPORTED)


def test_json_errors_give_line_and_column(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"tenants": [\n  {"slug": "acme",}\n]}\n', encoding="utf-8")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("jwtex_apply", str(path), stdout=StringIO(), stderr=err)
    # The wording and column of the decoder's message changed in Python 3.13; the place did not.
    assert re.fullmatch(rf"{re.escape(str(path))}: line 2, column 1[89]: [^\n]+\n", err.getvalue())

    path.write_text('{"tenants": [], "tenants": []}', encoding="utf-8")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("jwtex_apply", str(path), stdout=StringIO(), stderr=err)
    assert err.getvalue() == f"{path}: duplicate key 'tenants' in a JSON object\n"


def test_command_errors_go_to_stderr_one_per_line_and_fail(tmp_path):
    path = tmp_path / "acme.yaml"
    document = edited(
        SPEC_EXAMPLE,
        '        issuers: [github]\n        when: "true"',
        '        issuers: [gitlab]\n        when: "true"',
    )
    document = edited(document, "    max_token_lifetime: 3600", "    max_token_lifetime: 99999")
    path.write_text(document, encoding="utf-8")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError) as excinfo:
        call_command("jwtex_apply", str(path), stdout=out, stderr=err)

    assert str(excinfo.value) == "2 errors; nothing was changed."
    assert out.getvalue() == ""
    assert err.getvalue().splitlines() == [
        "tenants[acme].max_token_lifetime: Ensure this value is less than or equal to 43200.",
        'tenants[acme].rules["everything else from github"].issuers[0]: '
        "unknown issuer 'gitlab': this tenant's issuers in the file are: github",
    ]
    assert Tenant.objects.count() == 0


def test_command_reports_duplicate_yaml_keys(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("tenants:\n  - slug: acme\n    name: A\n    slug: acme2\n", encoding="utf-8")
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("jwtex_apply", str(path), stdout=StringIO(), stderr=err)
    assert err.getvalue() == f"{path}: line 4, column 5: found duplicate key 'slug' (first at line 2, column 5)\n"


def test_command_reports_an_unreadable_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    err = StringIO()
    with pytest.raises(CommandError):
        call_command("jwtex_apply", str(missing), stdout=StringIO(), stderr=err)
    assert err.getvalue().startswith(f"{missing}: cannot read the file: [Errno 2] No such file or directory")


def test_export_prints_only_yaml_and_filters_by_tenant():
    apply(SPEC_EXAMPLE)
    apply("tenants:\n  - slug: globex\n    name: Globex\n")

    everything = export_yaml()
    assert [t["slug"] for t in yaml.safe_load(everything)["tenants"]] == ["acme", "globex"]
    assert yaml.safe_load(everything) == config_export()
    assert everything == config_dump(config_export())

    only_globex = export_yaml("globex")
    assert only_globex == "tenants:\n- slug: globex\n  name: Globex\n  issuers: []\n  rules: []\n"
    assert export_yaml("acme") == SPEC_EXAMPLE_EXPORTED


def test_export_of_an_unknown_tenant_fails_with_nothing_on_stdout():
    apply(SPEC_EXAMPLE)
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("jwtex_export", "--tenant", "acme", "--tenant", "nope", stdout=out, stderr=err)
    assert str(excinfo.value) == "unknown tenant; nothing was exported."
    assert out.getvalue() == ""
    assert err.getvalue() == "tenants[nope]: no such tenant\n"


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{value: 1}", 'A session tag is a CEL expression, or {"value": "CEL", "optional": true}.'),
        ("{value: claims.actor, optional: maybe}", "A session tag's optional is true or false."),
        ("{value: claims.actor, required: true}", "A session tag has value and optional only, not 'required'."),
        ("[claims.actor]", 'A session tag is a CEL expression, or {"value": "CEL", "optional": true}.'),
    ],
)
def test_a_malformed_session_tag_is_named_and_nothing_changes(entry, message):
    document = edited(SPEC_EXAMPLE, "          actor: claims.actor\n", f"          actor: {entry}\n")
    assert apply_errors(document) == [('tenants[acme].rules["octo-org main branch"].session_tags.actor', message)]
    assert Tenant.objects.count() == 0


@pytest.mark.parametrize(
    "line, path",
    [
        ("    aws_account_ids: [123456789012]\n", "tenants[acme].aws_account_ids[0]"),
        ("    aws_account_ids: ['12345']\n", "tenants[acme].aws_account_ids"),
        ("    aws_region: moon-1\n", "tenants[acme].aws_region"),
        ("    aws_role_name: 'no spaces'\n", "tenants[acme].aws_role_name"),
    ],
)
def test_bad_aws_set_up_values_are_refused_by_apply(line, path):
    document = edited(SPEC_EXAMPLE, "    signing_algorithm: ES256\n", "    signing_algorithm: ES256\n" + line)
    assert [p for p, _ in apply_errors(document)] == [path]
    assert Tenant.objects.count() == 0


@pytest.mark.parametrize(
    "line, path, words",
    [
        ("source_identity: 'claims.actor +'", "source_identity", "line 1, column"),
        (
            "claims: {'https://aws.amazon.com/source_identity': claims.actor}",
            'claims["https://aws.amazon.com/source_identity"]',
            "only from source_identity",
        ),
        (
            "claims: {'https://aws.amazon.com/tags': claims.actor}",
            'claims["https://aws.amazon.com/tags"]',
            "only from session_tags",
        ),
    ],
)
def test_apply_refuses_what_the_admin_refuses_of_a_source_identity(line, path, words):
    text = f"""\
tenants:
  - slug: acme
    name: Acme
    issuers:
      - {{id: k8s, issuer: https://kubernetes.default.svc, audiences: [jwtex]}}
    rules:
      - name: who
        issuers: [k8s]
        when: "true"
        effect: allow
        {line}
"""
    with pytest.raises(ConfigError) as info:
        apply(text)
    [(where, message)] = info.value.errors
    assert where == f'tenants[acme].rules["who"].{path}' and words in message


def test_the_example_file_applies_and_its_github_rule_sets_a_source_identity():
    from tests.conftest import REPO_ROOT

    document = config_load((REPO_ROOT / "examples" / "acme.yaml").read_text(), source="acme.yaml")
    assert config_apply(document=document, now=None).changed
    rule = Rule.objects.get(tenant__slug="acme", name="octo-org main branch")
    assert rule.source_identity == "aws_source_identity(claims.actor)"
