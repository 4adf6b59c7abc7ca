"""An issuer, and a rule, are each judged by one check (docs/configuration-file.md#validation): the
model's ``clean()`` — what the admin's forms show — and the file loader (``jwtex_apply``) report the
same messages for the same bad settings, each once, and neither holds a check of its own."""

from __future__ import annotations

import inspect
import json
import re

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from exchange.config import validate
from exchange.config.schema import ISSUER_KEYS, ConfigError
from exchange.config.validate import config_validate
from exchange.models import Issuer, Rule
from tests.exchange.admin.test_pages import rule_data

pytestmark = pytest.mark.django_db

GOOD = {
    "issuer": "https://token.actions.githubusercontent.com",
    "audiences": ["sts.amazonaws.com"],
    "algorithms": ["RS256"],
}
OCT = {"kty": "oct", "k": "c2VjcmV0"}
RSA_WITHOUT_N = {"kty": "RSA", "kid": "x", "e": "AQAB"}

# Bad settings, by model field (the file's key differs only for the static JWKS: ``jwks``).
BAD = {
    "http issuer": {"issuer": "http://token.example"},
    "private issuer": {"issuer": "https://10.0.0.1/oidc"},
    "issuer with a query": {"issuer": "https://issuer.example/?q=1"},
    "issuer with credentials": {"issuer": "https://user:pw@issuer.example"},
    "ftp JWKS URI": {"jwks_uri": "ftp://issuer.example/keys"},
    "loopback JWKS URI": {"jwks_uri": "https://127.0.0.1/keys"},
    "no audience": {"audiences": []},
    "an empty audience": {"audiences": ["sts.amazonaws.com", ""]},
    "no algorithm": {"algorithms": []},
    "alg none": {"algorithms": ["RS256", "none"]},
    "HMAC": {"algorithms": ["HS256"]},
    "an algorithm twice": {"algorithms": ["ES256", "ES256"]},
    "a JWKS without keys": {"static_jwks": {"nope": []}},
    "a JWKS of no usable key": {"static_jwks": {"keys": [RSA_WITHOUT_N]}},
    "a secret key": {"static_jwks": {"keys": [OCT]}},
    "leeway too long": {"leeway": 601},
    "everything at once": {
        "issuer": "http://10.0.0.1",
        "audiences": [""],
        "algorithms": ["none", "none"],
        "jwks_uri": "ftp://x",
        "static_jwks": {"keys": []},
    },
}


def model_messages(tenant, fields: dict) -> list[tuple[str, str]]:
    """(field, message) as the model's full_clean — the admin's forms — says them."""
    issuer = Issuer(tenant=tenant, issuer_id="x", **{**GOOD, **fields})
    try:
        issuer.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        return sorted((field, message) for field, messages in exc.message_dict.items() for message in messages)
    return []


def loader_messages(tenant, fields: dict) -> list[tuple[str, str]]:
    """(field, message) as ``jwtex_apply`` says them, its paths turned back into the model's
    field names and the model's way of naming an item (``algorithms[1]: …``)."""
    field_of = {key: spec.model_field for key, spec in ISSUER_KEYS.items()}
    key_of = {spec.model_field: key for key, spec in ISSUER_KEYS.items()}
    issuer = {"id": "x", **{key_of[name]: value for name, value in {**GOOD, **fields}.items()}}
    prefix = f"tenants[{tenant.slug}].issuers[x]."
    try:
        config_validate({"tenants": [{"slug": tenant.slug, "name": tenant.name, "issuers": [issuer]}]})
    except ConfigError as exc:
        found = []
        for path, message in exc.errors:
            assert path.startswith(prefix), (path, message)
            key, _, where = path.removeprefix(prefix).partition("[")
            field = field_of[key]
            found.append((field, f"{field}[{where}: {message}" if where else message))
        return sorted(found)
    return []


@pytest.mark.parametrize("fields", BAD.values(), ids=BAD.keys())
def test_the_model_and_the_loader_say_the_same_once(tenant, settings, fields):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    said_by_model, said_by_loader = model_messages(tenant, fields), loader_messages(tenant, fields)
    assert said_by_model, "a bad setting the model lets through"
    assert said_by_model == said_by_loader
    assert len({message for _, message in said_by_loader}) == len(said_by_loader), "a message said twice"


def test_good_settings_pass_both(tenant, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    assert model_messages(tenant, {}) == loader_messages(tenant, {}) == []
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    insecure = {"issuer": "http://127.0.0.1:9000", "jwks_uri": "http://10.0.0.1/keys"}
    assert model_messages(tenant, insecure) == loader_messages(tenant, insecure) == []


def test_the_loader_holds_no_issuer_check_of_its_own():
    # The loader asks the model (Issuer.problems); it names no algorithm list, URL rule or audience rule.
    source = inspect.getsource(validate)
    for own in ("SUPPORTED_UPSTREAM_ALGORITHMS", "url_problem", "algorithms_problems", "audiences_problems"):
        assert own not in source, own


# --- rules -----------------------------------------------------------------------------------------

GITHUB = "https://token.actions.githubusercontent.com"  # a shared CI issuer: an allow rule must pin an owner
GOOD_RULE = {"name": "r", "effect": "allow", "when": "claims.repository_owner_id == '1342004'"}
MAPPER = {"effect": "mapper", "mapper_url": "https://mapper.example"}

# Bad rules, by model field (the file says ``mapper: {url, timeout_ms}`` for the mapper's two).
BAD_RULES = {
    "a condition that does not parse": {"when": "claims.ref =="},
    "an unknown function": {"when": "claims.repository_owner_id == '1' && startsWith(claims.ref)"},
    "an unknown name": {"when": "claim.sub == 'x'"},
    "a subject that does not parse": {"subject": "("},
    "a blank name": {"name": ""},
    "a name too long": {"name": "r" * 201},
    "an unknown effect": {"effect": "permit"},
    "a lifetime under a minute": {"lifetime": 30},
    "an empty audience": {"audiences": ["urn:a", ""]},
    "an aws: tag key": {"session_tags": {"aws:x": "'v'"}},
    "tag keys that differ in case": {"session_tags": {"Repo": "'a'", "repo": "'b'"}},
    "51 session tags": {"session_tags": {f"t{i}": "'v'" for i in range(51)}},
    "a tag of bad CEL": {"session_tags": {"repo": "claims.repository +"}},
    "a tag entry with an unknown member": {"session_tags": {"repo": {"value": "'v'", "optional": True, "x": 1}}},
    "an optional that is not a boolean": {"session_tags": {"repo": {"value": "'v'", "optional": "yes"}}},
    "a transitive key that is no tag": {"transitive_tag_keys": ["missing"]},
    "a transitive key twice": {"session_tags": {"repo": "'v'"}, "transitive_tag_keys": ["repo", "repo"]},
    "a reserved claim": {"claims": {"iss": "'me'"}},
    "a claim of bad CEL": {"claims": {"team": "1 +"}},
    "a mapper without a URL": {"effect": "mapper", "mapper_url": ""},
    "an http mapper": {"effect": "mapper", "mapper_url": "http://mapper.example/decide"},
    "a private mapper": {"effect": "mapper", "mapper_url": "https://10.0.0.1/decide"},
    "a mapper with credentials": {"effect": "mapper", "mapper_url": "https://u:p@mapper.example/decide"},
    "a mapper deadline too short": {**MAPPER, "mapper_timeout_ms": 10},
    "a mapper deadline too long": {**MAPPER, "mapper_timeout_ms": 6000},
    "no owner pin for a shared issuer": {"when": "claims.ref == 'refs/heads/main'"},
    "an owner pin negated": {"when": "claims.repository_owner_id != '1342004'"},
    "an owner pin compared with a number": {"when": "claims.repository_owner_id == 1342004"},
    "everything at once": {
        "name": "",
        "effect": "permit",
        "when": "claims.ref ==",
        "subject": "(",
        "lifetime": 59,
        "session_tags": {"aws:x": "'v'", "ok": "claims."},
        "transitive_tag_keys": ["missing"],
        "claims": {"iss": "'x'", "fine": "1 +"},
    },
}


def rule_model_messages(tenant, fields: dict) -> list[tuple[str, str]]:
    """(field, message) as the model's full_clean — the admin's forms — says them, for a rule of GitHub's issuer."""
    rule = Rule(tenant=tenant, **{**GOOD_RULE, **fields})
    rule.jwtex_issuers = ((GITHUB, False),)  # as the admin's form sets them
    try:
        rule.full_clean(validate_unique=False, validate_constraints=False)
    except ValidationError as exc:
        return sorted((field, message) for field, messages in exc.message_dict.items() for message in messages)
    return []


def _file_rule(fields: dict) -> dict:
    rule = {"issuers": ["gh"], **{key: value for key, value in fields.items() if not key.startswith("mapper_")}}
    if "mapper_url" in fields:
        rule["mapper"] = {"url": fields["mapper_url"], "timeout_ms": fields.get("mapper_timeout_ms", 1500)}
    return rule


_WITHIN = re.compile(r'\.(?P<name>[^.\[]+)$|\["(?P<quoted>(?:[^"\\]|\\.)*)"\]$|(?P<index>\[\d+\])$')


def rule_loader_messages(tenant, fields: dict) -> list[tuple[str, str]]:
    """(field, message) as ``jwtex_apply`` says them, its paths turned back into the model's field
    names and the model's way of naming a part (``session_tags.aws:x: …``, ``audiences[1]: …``)."""
    rule = _file_rule({**GOOD_RULE, **fields})
    document = {
        "tenants": [
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "issuers": [{"id": "gh", "issuer": GITHUB, "audiences": ["sts.amazonaws.com"]}],
                "rules": [rule],
            }
        ]
    }
    prefix = re.compile(rf'tenants\[{tenant.slug}\]\.rules\[(?:"{re.escape(rule["name"])}"|0)\]\.')
    try:
        config_validate(document)
    except ConfigError as exc:
        found = []
        for path, message in exc.errors:
            assert prefix.match(path), (path, message)
            rest = prefix.sub("", path)
            field = {"mapper.url": "mapper_url", "mapper.timeout_ms": "mapper_timeout_ms"}.get(rest)
            if field:
                found.append((field, message))
                continue
            key = re.match(r"[A-Za-z_]+", rest).group()
            within = rest[len(key) :]
            if not within:
                found.append((key, message))
                continue
            part = _WITHIN.fullmatch(within)
            assert part, (path, message)
            name = part["name"] or (json.loads(f'"{part["quoted"]}"') if part["quoted"] is not None else None)
            found.append((key, f"{key}{part['index'] or '.' + name}: {message}"))
        return sorted(found)
    return []


@pytest.mark.parametrize("fields", BAD_RULES.values(), ids=BAD_RULES.keys())
def test_a_rule_gets_the_same_messages_from_the_model_and_the_loader_each_once(tenant, settings, fields):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    said_by_model, said_by_loader = rule_model_messages(tenant, fields), rule_loader_messages(tenant, fields)
    assert said_by_model, "a bad rule the model lets through"
    assert said_by_model == said_by_loader
    assert len({message for _, message in said_by_model}) == len(said_by_model), "a message said twice"


def test_a_good_rule_passes_both(tenant, settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    assert rule_model_messages(tenant, {}) == rule_loader_messages(tenant, {}) == []
    mapper = {"effect": "mapper", "mapper_url": "https://mapper.example/decide", "mapper_timeout_ms": 50}
    assert rule_model_messages(tenant, mapper) == rule_loader_messages(tenant, mapper) == []
    pinned_anyway = {"when": "claims.ref == 'refs/heads/main'", "any_owner": True, "lifetime": 60}
    assert rule_model_messages(tenant, pinned_anyway) == rule_loader_messages(tenant, pinned_anyway) == []


# The admin's form, for what it shows through fields of its own (lines, a number box, a select).
ADMIN_RULES = {
    "a lifetime under a minute": {"lifetime": "30"},
    "a blank name": {"name": ""},
    "a mapper deadline too short": {**MAPPER, "mapper_timeout_ms": "10"},
    "no owner pin for a shared issuer": {"when": "claims.ref == 'refs/heads/main'"},
    "a transitive key that is no tag": {"transitive_tag_keys": "missing"},
}


@pytest.mark.parametrize("name", ADMIN_RULES)
def test_the_admins_rule_form_says_what_the_model_says(admin_client_for, tenant, settings, name):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="gh", issuer=GITHUB, audiences=["sts.amazonaws.com"], static_jwks={"keys": []}
    )
    data = rule_data(
        tenant,
        issuer,
        **{
            "session_tags": "{}",
            "when": GOOD_RULE["when"],
            "mapper_url": "",
            "mapper_timeout_ms": "",
            **ADMIN_RULES[name],
        },
    )
    response = admin_client_for(tenant, "operator").post(reverse("admin:exchange_rule_add"), data)
    assert response.status_code == 200
    shown = sorted(
        (field, message)
        for field, messages in response.context["adminform"].form.errors.items()
        for message in messages
    )
    assert shown == rule_model_messages(tenant, BAD_RULES[name])


def test_the_loader_holds_no_rule_check_of_its_own():
    # The loader asks the model (Rule.findings); it runs no rule check and drops no message it said.
    source = inspect.getsource(validate)
    for own in ("rule_findings", "owner_pinning_problem", "url_problem", "reported=", "own_messages", "spec_bad"):
        assert own not in source, own
