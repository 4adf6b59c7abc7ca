"""Schemathesis against the OpenAPI schema (docs/endpoints.md#openapi-schema-and-docs), in process, inside
``make test``.

The schema at ``/api/schema/`` describes every public endpoint (exchange.api.openapi adds the
raw and RFC 8693 exchanges, discovery and the JWKS to the DRF-generated JSON API). Each
operation is fuzzed with schema-conforming (positive) and schema-violating (negative) requests
through the WSGI application, against a tenant with an issuer and a rule, and must answer:

- never a 5xx (``not_a_server_error``);
- only documented status codes and content types, with bodies that match the schema;
- for negative requests, a 4xx (``negative_data_rejection``).

A real upstream token is also sent through each exchange operation, so the documented 200
shapes are checked against real answers, not only the errors.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings, strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("exchangeable")]

SCHEMA_PATH = "/api/schema/?format=json"
EXAMPLES = {GenerationMode.POSITIVE: 60, GenerationMode.NEGATIVE: 40}
OPERATIONS = [
    ("POST", "/api/v1/t/{slug}/exchange"),
    ("POST", "/t/{slug}/exchange"),
    ("POST", "/t/{slug}/token"),
    ("GET", "/t/{slug}/.well-known/openid-configuration"),
    ("GET", "/t/{slug}/.well-known/jwks.json"),
    ("GET", "/t/{slug}/.well-known/jwks"),
]
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = {
    GenerationMode.POSITIVE: CONFORMANCE,
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}


# The raw endpoint's body is the token itself (RFC 7519 §10.3.1). Schemathesis counts
# application/jwt as a JSON type and would send a JSON string ("\"eyJ…\""), so its bodies are
# drawn here: arbitrary bytes, base64url-ish text, and dotted segments that look like a JWT.
_B64URL = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
schemathesis.openapi.media_type(
    "application/jwt",
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.text(_B64URL, max_size=80), min_size=1, max_size=6).map(".".join).map(str.encode),
        st.lists(st.text(_B64URL, min_size=2, max_size=40).map(lambda s: "eyJ" + s), min_size=3, max_size=3)
        .map(".".join)
        .map(str.encode),
    ),
)


# A request the schema forbids must be refused with a 4xx; 413 (token over 16 KiB) is one too.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404", "405", "413", "415", "429"]}
        }
    }
)


@pytest.fixture
def schema():
    # The WSGI handler closes "old" connections when a request ends; inside the test's
    # transaction that would close the test's own connection on PostgreSQL (SQLite's
    # in-memory database is spared). Django's test client disconnects it the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi(SCHEMA_PATH, WSGIHandler(), config=CONFIG)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def test_schema_documents_every_public_endpoint(schema):
    documented = {(method.upper(), path) for path, methods in schema.raw_schema["paths"].items() for method in methods}
    assert set(OPERATIONS) <= documented
    schema.validate()  # a valid OpenAPI document


# Results per (operation, mode), printed at the end of the session by the summary test below.
RESULTS: dict[str, Counter] = {}


# The GET documents take nothing but the slug, a free string: there is no request that
# violates their schema, so they get positive runs only.
RUNS = [(m, p, mode) for m, p in OPERATIONS for mode in GenerationMode if m == "POST" or mode.is_positive]


@pytest.mark.parametrize("method, path, mode", RUNS, ids=[f"{m} {p} {mode.value}" for m, p, mode in RUNS])
def test_schemathesis_finds_no_server_error_and_no_schema_violation(schema, method, path, mode):
    operation = schema[path][method]
    statuses: Counter = Counter()

    def fuzz(strategy, examples: int) -> None:
        @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def run(case):
            response = case.call()
            statuses[response.status_code] += 1
            case.validate_response(response, checks=CHECKS[mode])

        run()

    # The tenant that exists, so requests reach the exchange; then generated slugs (404).
    fuzz(operation.as_strategy(generation_mode=mode, path_parameters={"slug": "acme"}), EXAMPLES[mode])
    fuzz(operation.as_strategy(generation_mode=mode), 15)
    RESULTS[f"{method} {path} ({mode.value})"] = statuses
    assert statuses, "schemathesis generated no request"
    assert all(status < 500 for status in statuses), statuses


@pytest.mark.parametrize("method, path", OPERATIONS[:3], ids=[f"{m} {p}" for m, p in OPERATIONS[:3]])
def test_schemathesis_valid_token_answer_matches_the_schema(schema, upstream, method, path):
    operation = schema[path][method]
    token = upstream.mint()
    body = {
        "/api/v1/t/{slug}/exchange": {"subject_token": token, "issuer_id": "ci"},
        "/t/{slug}/exchange": token.encode(),
        "/t/{slug}/token": {
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
        },
    }[path]
    media_type = {"/t/{slug}/exchange": "application/jwt", "/t/{slug}/token": "application/x-www-form-urlencoded"}.get(
        path, "application/json"
    )
    case = operation.Case(path_parameters={"slug": "acme"}, body=body, media_type=media_type)
    response = case.call()
    assert response.status_code == 200, response.content
    if media_type == "application/jwt":
        # Schemathesis would parse an application/jwt answer as JSON; it is the bare token.
        case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance])
        assert response.content.count(b".") == 2 and not response.content.endswith(b"\n")
    else:
        case.validate_response(response, checks=CONFORMANCE)


def test_schemathesis_summary(capsys):
    """Not a check: prints what the runs above covered (pytest -s shows it)."""
    with capsys.disabled():
        for label, statuses in sorted(RESULTS.items()):
            print(
                f"\nschemathesis {label}: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}"
            )
