"""Fuzzing (docs/errors.md#bad-requests): the verifier and the rule engine raise nothing but the service's own
errors on arbitrary input, and the three endpoints never answer 5xx (nor a token to a refusal).

Complements the unit-level fuzz in tests/exchange (arbitrary text into ``jwt_parse``, one
changed character, arbitrary claims into ``decide``): here the inputs are *structured* near-JWTs
— random headers and claims, validly signed or not — so that every branch after the parser is
reached, and they go through the real endpoints. Bounded so the suite stays fast
(about 600 examples in all, no deadline).
"""

from __future__ import annotations

import functools
import json
import time
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings, strategies as st

from exchange.core.compact_jws import jwt_parse
from exchange.core.errors import ExchangeError
from exchange.core.jwks import KeySet
from exchange.core.rules.cel_guard import check_expression
from exchange.core.rules.compiled import rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec, RuleSyntaxError
from exchange.core.values import IssuerConfig
from exchange.core.verification import jwt_verify
from tests.conftest import UPSTREAM_ISSUER, Upstream

from . import jose
from .endpoints import FORM, GRANT, JWT_TYPE, assert_no_token

FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


@functools.cache
def _upstream() -> Upstream:
    return Upstream()


# --- strategies -----------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from([UPSTREAM_ISSUER, "sts.amazonaws.com", "upstream-rsa-1", "none", "RS256", "\u0000", ""])
)
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

_header_values = {
    "alg": st.sampled_from(["RS256", "ES256", "PS256", "HS256", "none", "None", "EdDSA", "RS512", ""]) | json_values,
    "kid": st.sampled_from(["upstream-rsa-1", "upstream-ec-1", "", "../x"]) | json_values,
    "typ": st.sampled_from(["JWT", "at+jwt"]) | json_values,
    "crit": json_values,
    "b64": st.booleans(),
    "jwk": json_values,
    "jku": st.text(max_size=20),
    "x5c": json_values,
    "cty": st.sampled_from(["JWT"]) | json_values,
}


@st.composite
def headers(draw):
    names = draw(st.lists(st.sampled_from(["alg", "kid", "typ", "cty"]), max_size=3, unique=True))
    if draw(st.integers(0, 5)) == 0:  # now and then one of the headers that must be refused
        names.append(draw(st.sampled_from(["crit", "b64", "jwk", "jku", "x5c"])))
    header = {name: draw(_header_values[name]) for name in names}
    if draw(st.integers(0, 3)) != 0:  # mostly a plausible alg/kid pair, so the signature check is reached
        header.update(
            draw(
                st.sampled_from(
                    [
                        {"alg": "RS256", "kid": "upstream-rsa-1"},
                        {"alg": "ES256", "kid": "upstream-ec-1"},
                        {"alg": "RS256"},
                    ]
                )
            )
        )
    header.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return header


# Offsets from the current time, drawn from fixed ranges (the strategy must not depend on the clock).
_timestamps = (
    st.integers(min_value=-200_000, max_value=200_000).map(lambda offset: int(time.time()) + offset)
    | st.floats(min_value=-1000, max_value=1000).map(lambda offset: time.time() + offset)
    | json_values
)


@st.composite
def claim_sets(draw):
    upstream = _upstream()
    claims = upstream.claims()
    for name, strategy in {
        "iss": st.sampled_from([UPSTREAM_ISSUER, UPSTREAM_ISSUER + "/", UPSTREAM_ISSUER.upper()]) | json_values,
        "aud": st.sampled_from(["sts.amazonaws.com", ["x", "sts.amazonaws.com"], []]) | json_values,
        "sub": json_values,
        "exp": _timestamps,
        "nbf": _timestamps,
        "iat": _timestamps,
        "repository_owner": st.sampled_from(["octo-org", "evil"]) | json_values,
        "ref": st.sampled_from(["refs/heads/main"]) | json_values,
        "repository": json_values,
        "actor": json_values,
    }.items():
        choice = draw(st.sampled_from(["keep"] * 8 + ["change", "drop"]))
        if choice == "change":
            claims[name] = draw(strategy)
        elif choice == "drop":
            claims.pop(name)
    claims.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
    return claims


@st.composite
def near_jwts(draw):
    """A compact JWS made of a random header and claim set: validly signed by the upstream's
    key for its alg, signed with garbage, or mangled after signing."""
    header, claims = draw(headers()), draw(claim_sets())
    try:
        data = jose.signing_input(header, claims)
    except (TypeError, ValueError):  # e.g. a float JSON cannot hold
        assume(False)
    upstream = _upstream()
    mode = draw(st.sampled_from(["valid", "valid", "garbage", "mangled"]))
    alg = header.get("alg")
    if mode != "garbage" and alg in ("RS256", "PS256", "RS512"):
        signature = jose.rs256(upstream.rsa_key, data, alg=alg)
    elif mode != "garbage" and alg == "ES256":
        signature = jose.es256(upstream.ec_key, data)
    else:
        signature = draw(st.binary(min_size=1, max_size=300))
    token = f"{data}.{jose.b64u(signature)}"
    if mode == "mangled":
        # ECDSA and PSS signatures are randomised, so the length varies: draw, then fit.
        position = draw(st.integers(min_value=0, max_value=4096)) % len(token)
        token = token[:position] + draw(st.sampled_from("A_-.=+/ \n\u00e9")) + token[position + 1 :]
    return token


raw_inputs = st.one_of(
    st.binary(max_size=400),
    st.text(max_size=400),
    st.from_regex(r"[A-Za-z0-9_\-.]{0,300}", fullmatch=True),
    st.lists(st.from_regex(r"eyJ[A-Za-z0-9_\-]{0,60}", fullmatch=True), min_size=1, max_size=6).map(".".join),
)


# --- verifier ---------------------------------------------------------------------------------

_ISSUER = IssuerConfig(issuer_id="ci", issuer=UPSTREAM_ISSUER, audiences=("sts.amazonaws.com",))


@settings(FUZZ, max_examples=150)
@given(token=near_jwts() | raw_inputs)
def test_verifier_raises_only_exchange_errors_on_near_jwts(token):
    keys = KeySet.from_jwks(_upstream().jwks)
    try:
        verified = jwt_verify(jwt_parse(token), issuer=_ISSUER, keys=keys, now=time.time())
    except ExchangeError as error:
        event(f"{error.status} {error.code}")
        assert 400 <= error.status < 500 and error.code in {"invalid_request", "invalid_token"}
        assert error.description and isinstance(error.reason, str)
    else:
        event("verified")
        # Whatever verified really is what the issuer signed, for our audience, in time.
        assert verified.claims["iss"] == UPSTREAM_ISSUER
        assert verified.alg in ("RS256", "ES256")


# --- rule engine -----------------------------------------------------------------------------

_RULES = [
    rule_compile(
        RuleSpec(
            name="deny forks", issuers=frozenset({"ci"}), when="has(claims.fork) && claims.fork == true", effect="deny"
        )
    ),
    rule_compile(
        RuleSpec(
            name="main",
            issuers=frozenset({"ci"}),
            when="claims.repository_owner == 'octo-org' && claims.ref.startsWith('refs/heads/')",
            effect="allow",
            subject="claims.sub + ':' + string(claims.actor)",
            session_tags=(("repository", "claims.repository"), ("n", "claims.run_id"), ("size", "size(claims)")),
            transitive_tag_keys=("repository",),
            claims=(
                ("ctx", "has(claims.ctx) ? claims.ctx : null"),
                ("groups", "has(claims.groups) ? claims.groups.map(g, g + '!') : []"),
                ("everything", "claims"),
            ),
        )
    ),
    rule_compile(
        RuleSpec(
            name="numbers",
            issuers=frozenset({"ci"}),
            when="claims.n * 2 > 10 || claims.n / 0 == 1 || int(claims.s) > 3 || double(claims.n) > 1.5",
            effect="allow",
        )
    ),
    rule_compile(
        RuleSpec(
            name="lists",
            issuers=frozenset({"ci"}),
            when="claims.groups.exists(g, g == 'ops') || 'x' in claims.m",
            effect="allow",
        )
    ),
]


@settings(FUZZ, max_examples=150)
@given(
    claims=st.builds(
        lambda base, changes: {**base, **changes},
        # From nothing, or from claims the "main" rule allows, so its outputs are computed too.
        st.just({})
        | st.just(
            {
                "repository_owner": "octo-org",
                "ref": "refs/heads/main",
                "sub": "s",
                "actor": "a",
                "repository": "r",
                "run_id": "1",
            }
        ),
        st.dictionaries(
            st.sampled_from(
                [
                    "sub",
                    "actor",
                    "repository",
                    "repository_owner",
                    "ref",
                    "fork",
                    "n",
                    "s",
                    "groups",
                    "m",
                    "ctx",
                    "run_id",
                ]
            )
            | st.text(max_size=6),
            json_values,
            max_size=6,
        ),
    ),
    audience=st.none() | st.text(max_size=10) | st.just("sts.amazonaws.com"),
)
@example(
    claims={
        "repository_owner": "octo-org",
        "ref": "refs/heads/x",
        "sub": "s",
        "actor": 2**70,
        "repository": "r",
        "run_id": 2**64,
    },
    audience=None,
)
@example(claims={"n": 2**63, "s": "9" * 40}, audience=None)
def test_rule_engine_raises_only_exchange_errors_on_arbitrary_claims(claims, audience):
    try:
        decision = compiled_rules_decide(
            _RULES,
            issuer_id="ci",
            claims=claims,
            requested_audience=audience,
            default_audience="sts.amazonaws.com",
            max_lifetime=3600,
        )
    except ExchangeError as error:
        event("denied")
        assert error.status == 403 and error.code == "access_denied"
    else:
        event(f"allowed by {decision.rule_name}")
        json.dumps(decision.extra_claims, allow_nan=False)


@settings(FUZZ, max_examples=100)
@given(source=st.text(max_size=200) | st.from_regex(r"[a-z.()\[\]{}'\"!&|=<>+*/%?:, 0-9]{0,120}", fullmatch=True))
def test_cel_compile_raises_only_rule_syntax_errors(source):
    try:
        check_expression(source)
    except RuleSyntaxError as error:
        assert str(error)


# --- the endpoints ----------------------------------------------------------------------------

_CONTENT_TYPES = [
    "application/jwt",
    "text/plain",
    FORM,
    "application/json",
    "",
    "multipart/form-data; boundary=x",
    "application/octet-stream; charset=utf-16",
]


@st.composite
def requests(draw):
    token = draw(near_jwts() | raw_inputs)
    text = token.decode("latin-1") if isinstance(token, bytes) else token
    endpoint = draw(st.sampled_from(["raw", "rfc8693", "api"]))
    if endpoint == "raw":
        query = draw(st.sampled_from(["", "?issuerId=ci", "?issuerId=", "?issuerId=ci&issuerId=x", "?issuerId=%00"]))
        body = token if isinstance(token, bytes) else token.encode("utf-8", "surrogatepass")
        return endpoint, f"/t/acme/exchange{query}", body, draw(st.sampled_from(_CONTENT_TYPES))
    if endpoint == "rfc8693":
        form = {"grant_type": GRANT, "subject_token": text, "subject_token_type": JWT_TYPE}
        form.update(
            draw(
                st.dictionaries(
                    st.sampled_from(
                        ["grant_type", "subject_token_type", "audience", "requested_token_type", "actor_token", "x"]
                    ),
                    st.text(max_size=20),
                    max_size=2,
                )
            )
        )
        body = urlencode(form, encoding="utf-8", errors="surrogatepass").encode()
        if draw(st.booleans()):
            body = draw(st.binary(max_size=200))
        return (
            endpoint,
            "/t/acme/token",
            body,
            draw(st.sampled_from([FORM, FORM, FORM + "; charset=latin-1", "text/plain"])),
        )
    document = draw(
        st.fixed_dictionaries(
            {"subject_token": st.just(text) | json_values},
            optional={"issuer_id": json_values | st.just("ci"), "audience": json_values, "x": json_values},
        )
        | json_values
    )
    body = json.dumps(document, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.integers(0, 5)) == 0:
        body = draw(st.binary(max_size=200))
    return (
        endpoint,
        "/api/v1/t/acme/exchange",
        body,
        draw(st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain"])),
    )


@pytest.mark.django_db
@pytest.mark.usefixtures("exchangeable")
@settings(FUZZ, max_examples=200)
@given(request=requests())
def test_endpoints_never_answer_5xx_on_arbitrary_requests(client, request):
    endpoint, path, body, content_type = request
    response = client.generic("POST", path, data=body, content_type=content_type)
    event(f"{endpoint} {response.status_code}")  # see --hypothesis-show-statistics
    assert response.status_code < 500, (endpoint, response.status_code, response.content[:300])
    if response.status_code != 200:
        assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
        assert_no_token(response)


@pytest.fixture
def upstream():
    """The same upstream the strategies sign with (tokens are drawn outside any fixture)."""
    return _upstream()
