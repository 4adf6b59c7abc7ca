"""An issuer is judged by one check (docs/configuration-file.md#validation): the model's ``clean()``
— what the admin's forms show — and the file loader (``jwtex_apply``) report the same messages
for the same bad settings, each once, and neither holds a check of its own."""

from __future__ import annotations

import inspect

import pytest
from django.core.exceptions import ValidationError

from exchange.config import validate
from exchange.config.schema import ISSUER_KEYS, ConfigError
from exchange.config.validate import config_validate
from exchange.models import Issuer

pytestmark = pytest.mark.django_db

GOOD = {"issuer": "https://token.actions.githubusercontent.com", "audiences": ["sts.amazonaws.com"], "algorithms": ["RS256"]}
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
    "everything at once": {"issuer": "http://10.0.0.1", "audiences": [""], "algorithms": ["none", "none"],
                           "jwks_uri": "ftp://x", "static_jwks": {"keys": []}},
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
