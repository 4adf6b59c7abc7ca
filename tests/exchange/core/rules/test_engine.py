"""exchange.core.rules: CEL compile/validate/decide, with and without a trace (pure: no database)."""

from __future__ import annotations

import dataclasses
import json

import cel
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from exchange.core import limits as conf
from exchange.core.aws import AWS_TAGS_CLAIM, session_tag_key_validate, session_tag_value_validate
from exchange.core.errors import AccessDenied, AudienceNotAllowed, ExchangeError, ExchangeError as _ExchangeError
from exchange.core.rules import engine as rules
from exchange.core.rules.cel_guard import check_expression
from exchange.core.rules.compiled import CompiledRule, rule_compile
from exchange.core.rules.engine import compiled_rules_decide
from exchange.core.rules.spec import RuleSpec, RuleSyntaxError, rule_spec_validate
from exchange.core.values import Decision, RuleTrace

GITHUB = "github"
GITLAB = "gitlab"
DEFAULT_AUDIENCE = "sts.amazonaws.com"

CLAIMS = {
    "sub": "repo:octo-org/app:ref:refs/heads/main",
    "iss": "https://token.actions.githubusercontent.com",
    "repository": "octo-org/app",
    "repository_owner": "octo-org",
    "ref": "refs/heads/main",
    "actor": "octocat",
    "run_number": 42,
    "groups": ["dev", "ops"],
    "nested": {"team": "platform", "level": 3},
    "private": True,
    "ratio": 0.5,
    "nothing": None,
}


def make(name: str = "rule", *, when: str = "true", effect: str = "allow", issuers=(GITHUB,), **fields) -> CompiledRule:
    return rule_compile(RuleSpec(name=name, issuers=frozenset(issuers), when=when, effect=effect, **fields))


def run(
    rule_list,
    claims=None,
    *,
    issuer_id=GITHUB,
    requested_audience=None,
    default_audience=DEFAULT_AUDIENCE,
    max_lifetime=3600,
):
    return compiled_rules_decide(
        rule_list,
        issuer_id=issuer_id,
        claims=CLAIMS if claims is None else claims,
        requested_audience=requested_audience,
        default_audience=default_audience,
        max_lifetime=max_lifetime,
    )


def denied(rule_list, claims=None, **kwargs) -> AccessDenied:
    with pytest.raises(AccessDenied) as info:
        run(rule_list, claims, **kwargs)
    exc = info.value
    assert exc.status == 403
    assert exc.code == "access_denied"
    return exc


def paths(spec: RuleSpec) -> list[str]:
    return [path for path, _ in rule_spec_validate(spec)]


def spec(**fields) -> RuleSpec:
    base = {"name": "r", "issuers": frozenset({GITHUB}), "when": "true", "effect": "allow"}
    base.update(fields)
    return RuleSpec(**base)


# ----------------------------------------------------------------------------- ordering


def test_first_matching_rule_decides():
    decision = run(
        [
            make("not me", when="claims.repository_owner == 'someone-else'", subject="'a'"),
            make("me", when="claims.repository_owner == 'octo-org'", subject="'b'", rule_id=7),
            make("me too", when="true", subject="'c'"),
        ]
    )
    assert (decision.rule_name, decision.rule_id, decision.subject) == ("me", 7, "b")


def test_deny_before_allow_denies_and_allow_before_deny_allows():
    deny = make("block forks", when="claims.repository_owner != 'trusted'", effect="deny")
    allow = make("allow all", when="true")
    exc = denied([deny, allow])
    assert "block forks" in exc.description
    assert not isinstance(exc, AudienceNotAllowed)
    assert run([allow, deny]).rule_name == "allow all"


def test_rules_of_other_issuers_are_skipped():
    rule_list = [
        make("gitlab only", when="true", effect="deny", issuers=[GITLAB]),
        make("github", when="issuer == 'github'", subject="issuer"),
    ]
    decision = run(rule_list)
    assert decision.rule_name == "github"
    assert decision.subject == "github"
    exc = denied(rule_list, issuer_id=GITLAB)
    assert "gitlab only" in exc.description


def test_rule_with_several_issuers_applies_to_each():
    rule_list = [make("both", issuers=[GITHUB, GITLAB], subject="issuer")]
    assert run(rule_list, issuer_id=GITHUB).subject == GITHUB
    assert run(rule_list, issuer_id=GITLAB).subject == GITLAB
    exc = denied(rule_list, issuer_id="circleci")
    assert exc.description == "No rule allows this exchange."


def test_no_matching_rule_is_access_denied():
    exc = denied([make(when="claims.ref == 'refs/heads/release'")])
    assert exc.description == "No rule allows this exchange."
    exc = denied([])
    assert exc.description == "No rule allows this exchange."


def test_deny_description_names_rule_but_no_claim_value():
    exc = denied([make("no octocat", when="claims.actor == 'octocat'", effect="deny")])
    assert exc.description == "Rule 'no octocat' denies this exchange."


# ----------------------------------------------------------------------------- evaluation errors


@pytest.mark.parametrize(
    "when",
    [
        "claims.missing == 'x'",  # missing claim → KeyError
        "claims.run_number + 'a' == 'x'",  # type error
        "claims.run_number == 'x' || claims.missing",  # non-bool reached
        "claims.run_number",  # non-bool result
        "'true'",
        "null",
        "claims.groups",
        "1 / 0 == 1",  # division by zero
        "claims.run_number / 0 > 0",
        "claims.groups[5] == 'x'",  # index out of range
        "int('x') == 1",  # conversion error
        "claims.actor.matches('(?z)a')",  # a pattern the regex crate refuses
        "9223372036854775807 + claims.run_number > 0",  # overflow
        "claims.actor.noSuchFunction()",  # unknown function
    ],
)
def test_evaluation_errors_never_grant_and_end_evaluation(when):
    rule_list = [make("broken", when=when, rule_id=3), make("allow everything", when="true")]
    exc = denied(rule_list)
    assert exc.description == "Rule 'broken' could not be evaluated."
    assert "'broken'" in exc.reason and "id 3" in exc.reason


def test_false_condition_is_not_an_error():
    assert run([make("no", when="false"), make("yes", when="true")]).rule_name == "yes"


def test_has_guards_missing_claims():
    guarded = make("prod", when="has(claims.environment) && claims.environment == 'prod'", subject="'prod'")
    fallback = make("fallback", subject="'other'")
    assert run([guarded, fallback]).subject == "other"
    assert run([guarded, fallback], {**CLAIMS, "environment": "prod"}).subject == "prod"
    assert run([guarded, fallback], {**CLAIMS, "environment": "dev"}).subject == "other"
    nested = make("nested", when="has(claims.nested.team) && claims.nested.team == 'platform'")
    assert run([nested]).rule_name == "nested"


def test_comprehensions_and_issuer_variable():
    rule_list = [make("ops", when="claims.groups.exists(g, g == 'ops') && issuer == 'github'")]
    assert run(rule_list).rule_name == "ops"
    denied(rule_list, {**CLAIMS, "groups": ["dev"]})


class _Panic(BaseException):
    """Stands in for pyo3's PanicException, which is not an Exception."""


class _ExplodingProgram:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc

    def execute(self, context):
        raise self.exc


def _with_when(rule: CompiledRule, program) -> CompiledRule:
    return dataclasses.replace(rule, when=program)


def test_engine_panic_denies():
    rule_list = [_with_when(make("panics"), _ExplodingProgram(_Panic("rust panicked"))), make("allow")]
    exc = denied(rule_list)
    assert "panics" in exc.description
    assert "_Panic" in exc.reason


def test_keyboard_interrupt_is_not_swallowed():
    with pytest.raises(KeyboardInterrupt):
        run([_with_when(make("interrupted"), _ExplodingProgram(KeyboardInterrupt()))])


def test_claims_cel_cannot_represent_deny_instead_of_crashing():
    exc = denied([make("any")], {"sub": "\ud800"})  # a lone surrogate cannot cross into Rust
    assert exc.description == "Rule 'any' could not be evaluated."
    exc = denied([make("any")], {"sub": "x", "weird": {1, 2}})
    assert exc.description == "Rule 'any' could not be evaluated."


def test_one_cel_context_per_evaluation(monkeypatch):
    built = []
    real = cel.Context

    def counting(*args, **kwargs):
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rules.cel, "Context", counting)
    rule_list = [make(f"r{i}", when=f"claims.actor == 'n{i}'") for i in range(5)]
    rule_list.append(
        make("last", session_tags=(("a", "claims.actor"), ("b", "claims.ref")), claims=(("x", "claims.nested"),))
    )
    assert run(rule_list).rule_name == "last"
    assert len(built) == 1
    built.clear()
    denied([make("other issuer", issuers=[GITLAB])])
    assert built == []  # no rule applies: no context at all


# ----------------------------------------------------------------------------- outputs: subject


def test_subject_defaults_to_claims_sub():
    assert run([make()]).subject == CLAIMS["sub"]


def test_subject_expression():
    assert run([make(subject="claims.repository + ':' + claims.ref")]).subject == "octo-org/app:refs/heads/main"


@pytest.mark.parametrize(
    "subject, claims",
    [
        ("claims.run_number", CLAIMS),  # not a string
        ("''", CLAIMS),  # empty
        ("claims.actor", {"sub": "x"}),  # missing claim
        ("claims.sub", {"actor": "x"}),  # default subject, no sub claim
        ("'" + "s" * 256 + "'", CLAIMS),  # longer than STS's SubjectFromWebIdentityToken (255)
    ],
)
def test_bad_subject_denies(subject, claims):
    exc = denied([make("subj", subject=subject if subject != "claims.sub" else "")], claims)
    assert exc.description == "Rule 'subj' could not compute the subject."


def test_subject_of_255_characters_is_fine():
    assert len(run([make(subject="'" + "s" * 255 + "'")]).subject) == 255


# ----------------------------------------------------------------------------- outputs: session tags


def test_session_tags_in_order_with_conversion():
    decision = run(
        [
            make(
                session_tags=(
                    ("repository", "claims.repository"),
                    ("run", "claims.run_number"),
                    ("unsigned", "18446744073709551615u"),
                    ("private", "claims.private"),
                    ("public", "!claims.private"),
                    ("empty", "''"),
                ),
                transitive_tag_keys=("repository",),
            )
        ]
    )
    assert decision.session_tags == (
        ("repository", "octo-org/app"),
        ("run", "42"),
        ("unsigned", "18446744073709551615"),
        ("private", "true"),
        ("public", "false"),
        ("empty", ""),
    )
    assert decision.transitive_tag_keys == ("repository",)


@pytest.mark.parametrize(
    "expression",
    [
        "claims.groups",
        "claims.nested",
        "claims.nothing",
        "claims.ratio",
        "b'bytes'",
        "claims.missing",
        "duration('1s')",
    ],
)
def test_unconvertible_tag_value_denies_naming_the_tag(expression):
    exc = denied([make("tags", session_tags=(("team", expression),))])
    assert exc.description == "Rule 'tags': session tag 'team' has no valid value."


@pytest.mark.parametrize(
    "value, ok",
    [
        ("v" * 256, True),  # AWS: value 0–256 characters
        ("v" * 257, False),
        ("", True),
        ("a b_c.d:e/f=g+h-i@j", True),  # every allowed ASCII punctuation and the space
        ("Ünïcødé 東京 ٣", True),  # \p{L}, \p{N} beyond ASCII
        ("a#b", False),
        ("a*b", False),
        ("smile 😀", False),  # emoji are \p{So}
        ("tab\there", False),  # control characters are \p{Cc}
        ("semi;colon", False),
    ],
)
def test_tag_value_limits(value, ok):
    rule_list = [make("tags", session_tags=(("team", "claims.team"),))]
    claims = {**CLAIMS, "team": value}
    if ok:
        assert run(rule_list, claims).session_tags == (("team", value),)
        session_tag_value_validate("team", value)
    else:
        exc = denied(rule_list, claims)
        assert exc.description == "Rule 'tags': session tag 'team' has no valid value."
        if len(value) > 1:
            assert value not in exc.description
        with pytest.raises(ValueError, match="team"):
            session_tag_value_validate("team", value)


@pytest.mark.parametrize(
    "key, ok",
    [
        ("k" * 128, True),  # AWS: key 1–128 characters
        ("k" * 129, False),
        ("", False),
        ("Repository", True),
        ("team:name/x=y+z-w@v_u.t", True),
        ("Ünïcødé", True),
        ("東京", True),
        ("with space", True),
        ("a#b", False),
        ("a*b", False),
        ("😀", False),
        ("aws:foo", False),  # reserved by AWS
        ("AWS:foo", False),
        ("Aws:Foo", False),
        ("awsfoo", True),
        ("x-aws:foo", True),
    ],
)
def test_tag_key_limits(key, ok):
    problems = rule_spec_validate(spec(session_tags=((key, "'v'"),)))
    if ok:
        session_tag_key_validate(key)
        assert problems == []
    else:
        with pytest.raises(ValueError):
            session_tag_key_validate(key)
        assert len(problems) == 1
        assert problems[0][0].startswith("session_tags")


def test_at_most_50_session_tags():
    fifty = tuple((f"k{i}", "'v'") for i in range(50))
    assert rule_spec_validate(spec(session_tags=fifty)) == []
    assert len(run([make(session_tags=fifty)]).session_tags) == 50
    problems = rule_spec_validate(spec(session_tags=(*fifty, ("k50", "'v'"))))
    assert [path for path, _ in problems] == ["session_tags"]
    assert "50" in problems[0][1]
    with pytest.raises(RuleSyntaxError) as info:
        rule_compile(spec(session_tags=(*fifty, ("k50", "'v'"))))
    assert info.value.field == "session_tags"


def test_tag_keys_are_case_insensitively_unique():
    assert paths(spec(session_tags=(("Repo", "'a'"), ("repo", "'b'")))) == ["session_tags.repo"]
    assert paths(spec(session_tags=(("Repo", "'a'"), ("Repo", "'b'")))) == ["session_tags.Repo"]


def test_transitive_tag_keys_must_be_tag_keys():
    assert paths(spec(session_tags=(("repo", "'a'"),), transitive_tag_keys=("repo",))) == []
    assert paths(spec(session_tags=(("repo", "'a'"),), transitive_tag_keys=("ref",))) == ["transitive_tag_keys[0]"]
    assert paths(spec(transitive_tag_keys=("repo",))) == ["transitive_tag_keys[0]"]
    assert paths(spec(session_tags=(("repo", "'a'"),), transitive_tag_keys=("repo", "repo"))) == [
        "transitive_tag_keys[1]"
    ]


def test_tag_expressions_are_compiled():
    problems = rule_spec_validate(spec(session_tags=(("repo", "claims.repository +"),)))
    assert [path for path, _ in problems] == ["session_tags.repo"]
    assert "line 1, column" in problems[0][1]


# ----------------------------------------------------------------------------- outputs: claims


@pytest.mark.parametrize("name", ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", AWS_TAGS_CLAIM])
def test_reserved_claim_names_are_refused(name):
    assert paths(spec(claims=((name, "'x'"),))) == [f"claims.{name}"]
    with pytest.raises(RuleSyntaxError) as info:
        rule_compile(spec(claims=((name, "'x'"),)))
    assert info.value.field == f"claims.{name}"


def test_extra_claims_become_plain_json():
    decision = run(
        [
            make(
                claims=(
                    ("repo", "claims.repository"),
                    ("groups", "claims.groups"),
                    ("nested", "claims.nested"),
                    ("n", "claims.run_number"),
                    ("u", "1u"),
                    ("ratio", "claims.ratio"),
                    ("flag", "claims.private"),
                    ("none", "claims.nothing"),
                    ("built", "{'a': [1, 'b', null], 'c': {'d': true}}"),
                    ("ISS", "'case matters: not reserved'"),
                )
            )
        ]
    )
    assert decision.extra_claims == {
        "repo": "octo-org/app",
        "groups": ["dev", "ops"],
        "nested": {"team": "platform", "level": 3},
        "n": 42,
        "u": 1,
        "ratio": 0.5,
        "flag": True,
        "none": None,
        "built": {"a": [1, "b", None], "c": {"d": True}},
        "ISS": "case matters: not reserved",
    }
    assert list(decision.extra_claims) == [
        "repo",
        "groups",
        "nested",
        "n",
        "u",
        "ratio",
        "flag",
        "none",
        "built",
        "ISS",
    ]
    json.dumps(decision.extra_claims, allow_nan=False)


@pytest.mark.parametrize(
    "expression",
    [
        "b'x'",
        "duration('1s')",
        "timestamp('2020-01-01T00:00:00Z')",
        "double('nan')",
        "1.0 / 0.0",
        "{1: 'a'}",
        "[b'x']",
        "claims.missing",
    ],
)
def test_unrepresentable_extra_claim_denies_naming_it(expression):
    exc = denied([make("extra", claims=(("custom", expression),))])
    assert exc.description == "Rule 'extra': claim 'custom' could not be computed."


def test_duplicate_claim_names_are_refused():
    assert paths(spec(claims=(("x", "1"), ("x", "2")))) == ["claims.x"]


# ----------------------------------------------------------------------------- audience and lifetime


def test_audience_defaults_to_tenant_default():
    assert run([make()], default_audience="urn:tenant").audience == "urn:tenant"


def test_rule_audience_overrides_default():
    assert run([make(audience="urn:rule")]).audience == "urn:rule"


def test_requested_audience_allowed():
    rule_list = [make(audience="urn:rule", audiences=("urn:other", "urn:third"))]
    assert run(rule_list, requested_audience="urn:rule").audience == "urn:rule"
    assert run(rule_list, requested_audience="urn:third").audience == "urn:third"
    assert run([make(audiences=("urn:x",))], requested_audience=DEFAULT_AUDIENCE).audience == DEFAULT_AUDIENCE
    assert run(rule_list, requested_audience="").audience == "urn:rule"  # empty means not given


@pytest.mark.parametrize("requested", ["urn:nope", DEFAULT_AUDIENCE, "URN:RULE", "urn:rule "])
def test_requested_audience_refused(requested):
    rule_list = [make("aud", audience="urn:rule", audiences=("urn:other",))]
    with pytest.raises(AudienceNotAllowed) as info:
        run(rule_list, requested_audience=requested)
    assert info.value.status == 403
    assert info.value.code == "access_denied"
    assert isinstance(info.value, AccessDenied)
    assert "aud" in info.value.description
    assert requested not in info.value.description


def test_refused_audience_is_not_tried_on_later_rules():
    rule_list = [make("first", audience="urn:a"), make("second", audience="urn:b")]
    with pytest.raises(AudienceNotAllowed):
        run(rule_list, requested_audience="urn:b")


@pytest.mark.parametrize(
    "lifetime, max_lifetime, expected",
    [
        (None, 3600, conf.DEFAULT_LIFETIME),
        (None, 600, 600),
        (1800, 3600, 1800),
        (7200, 3600, 3600),
        (60, 3600, 60),
    ],
)
def test_lifetime_is_capped_by_tenant_maximum(lifetime, max_lifetime, expected):
    assert run([make(lifetime=lifetime)], max_lifetime=max_lifetime).lifetime == expected


# ----------------------------------------------------------------------------- syntax and limits


def test_syntax_error_has_line_and_column():
    source = "claims.repository_owner == 'octo-org' &&\n  claims.ref = 'refs/heads/main'"
    with pytest.raises(RuleSyntaxError) as info:
        check_expression(source)
    exc = info.value
    assert (exc.line, exc.column) == (2, 14)
    assert str(exc).startswith("line 2, column 14: Syntax error")
    assert "Syntax error" in exc.message
    assert isinstance(exc, ValueError)


def test_syntax_error_at_end_of_multi_line_expression():
    with pytest.raises(RuleSyntaxError) as info:
        check_expression("claims.sub ==\n  'x' &&")
    assert (info.value.line, info.value.column) == (2, 9)


def test_compile_rule_names_the_field():
    with pytest.raises(RuleSyntaxError) as info:
        rule_compile(spec(when="true", subject="claims.sub +\n+"))
    assert info.value.field == "subject"
    assert info.value.line == 2
    assert str(info.value).startswith("subject: line 2, column")


def test_expression_length_limit():
    limit = conf.CEL_MAX_EXPRESSION_LENGTH
    at_limit = "'" + "a" * (limit - 2) + "'"
    check_expression(at_limit)
    with pytest.raises(RuleSyntaxError, match=str(limit)) as info:
        check_expression("'" + "a" * (limit - 1) + "'")
    assert info.value.line is None
    with pytest.raises(RuleSyntaxError):
        check_expression("'abcd'", max_length=5)
    check_expression("'abc'", max_length=5)


@pytest.mark.parametrize("source", ["", "   ", "\n"])
def test_empty_expression_is_refused(source):
    with pytest.raises(RuleSyntaxError, match="empty"):
        check_expression(source)


@pytest.mark.parametrize("opening, closing", [("(", ")"), ("[", "]")])
def test_nesting_limit(opening, closing):
    check_expression(opening * 32 + "1" + closing * 32)
    with pytest.raises(RuleSyntaxError, match="32") as info:
        check_expression(opening * 33 + "1" + closing * 33)
    assert (info.value.line, info.value.column) == (1, 33)


def test_nesting_counts_braces_and_ignores_strings_and_comments():
    with pytest.raises(RuleSyntaxError, match="32"):
        check_expression("{'a': " * 33 + "1" + "}" * 33)
    check_expression("claims.sub == '" + "(" * 40 + "' // " + "[" * 40)
    check_expression('claims.sub == """' + "(" * 40 + '"""')
    check_expression("claims.sub == r'\\' + '" + "(" * 40 + "'")


@pytest.mark.parametrize("source", ["claim.sub == 'x'", "sub == 'x'", "claims.sub == x", "math.greatest(1, 2) == 2"])
def test_unknown_names_are_refused(source):
    with pytest.raises(RuleSyntaxError, match="Unknown name"):
        check_expression(source)


@pytest.mark.parametrize(
    "source",
    [
        "claims.groups.exists(g, g == 'ops')",
        "claims.groups.all(g, g != '') && claims.teams.exists(h, h == 'ops')",  # nesting is refused (tests/security)
        "claims.groups.map(x, x + '!')[0] == 'dev!'",
        "claims.groups.filter(x, x != 'dev').size() == 1",
        "claims.groups.exists_one(x, x == 'ops')",
        "claims.groups.exists( // the group\n  g, g == 'ops')",
        "type(claims.run_number) == int",
        "issuer == 'github'",
    ],
)
def test_known_names_and_comprehension_variables_are_accepted(source):
    check_expression(source)


def test_validate_rule_spec_reports_every_problem():
    bad = RuleSpec(
        name="",
        issuers=frozenset({GITHUB}),
        when="claims.x ==",
        effect="maybe",
        subject="(",
        lifetime=59,
        audiences=("",),
        session_tags=(("aws:x", "'v'"), ("ok", "claims.")),
        transitive_tag_keys=("missing",),
        claims=(("iss", "'x'"), ("fine", "1 +")),
    )
    assert paths(bad) == [
        "name",
        "effect",
        "when",
        "subject",
        "audiences[0]",
        "lifetime",
        "session_tags.aws:x",
        "session_tags.ok",
        "transitive_tag_keys[0]",
        "claims.iss",
        "claims.fine",
    ]
    assert all(message for _, message in rule_spec_validate(bad))


def test_valid_spec_has_no_problems_and_compiles():
    good = spec(
        when="claims.repository_owner == 'octo-org'",
        subject="claims.sub",
        audience="urn:x",
        audiences=("urn:y",),
        lifetime=60,
        session_tags=(("repository", "claims.repository"),),
        transitive_tag_keys=("repository",),
        claims=(("repo", "claims.repository"),),
    )
    assert rule_spec_validate(good) == []
    compiled = rule_compile(good)
    assert compiled.spec is good
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.when = None  # type: ignore[misc]


@pytest.mark.parametrize("lifetime", [0, 59, -1, True])
def test_lifetime_below_minimum_is_refused(lifetime):
    assert paths(spec(lifetime=lifetime)) == ["lifetime"]


def test_deny_effect_and_unknown_effect():
    assert paths(spec(effect="deny")) == []
    assert paths(spec(effect="Allow")) == ["effect"]


# ----------------------------------------------------------------------------- decide with a trace


def explain(rule_list, **kwargs):
    """``decide`` with a trace, as the simulator calls it: (trace, decision, error)."""
    trace: list = []
    try:
        return trace, compiled_rules_decide(rule_list, trace=trace, **kwargs), None
    except _ExchangeError as error:
        return trace, None, error


def _explain_rules() -> list[CompiledRule]:
    return [
        make("gitlab", issuers=[GITLAB], when="true", effect="deny"),
        make("forks", when="has(claims.fork) && claims.fork == true", effect="deny"),
        make("broken", when="claims.environment == 'oops'"),
        make(
            "main",
            when="claims.ref == 'refs/heads/main'",
            audience="urn:main",
            session_tags=(("actor", "claims.actor"),),
        ),
        make("tags", when="claims.ref.startsWith('refs/tags/')", session_tags=(("team", "claims.team"),)),
        make("rest", when="claims.actor == 'bot'", effect="deny"),
    ]


_EXPLAIN_CASES = [
    (GITHUB, {**CLAIMS, "environment": "x"}, None),  # main matches
    (GITHUB, {**CLAIMS, "environment": "x", "fork": True}, None),  # deny
    (GITHUB, CLAIMS, None),  # broken: missing claim
    (GITHUB, {**CLAIMS, "environment": "x"}, "urn:main"),
    (GITHUB, {**CLAIMS, "environment": "x"}, "urn:other"),  # audience refused
    (GITHUB, {**CLAIMS, "environment": "x", "ref": "refs/tags/v1", "team": "a#b"}, None),  # bad tag value
    (GITHUB, {**CLAIMS, "environment": "x", "ref": "refs/tags/v1", "team": "core"}, None),
    (GITHUB, {**CLAIMS, "environment": "x", "ref": "refs/heads/dev"}, None),  # no match
    (GITHUB, {**CLAIMS, "environment": "x", "ref": "refs/heads/dev", "actor": "bot"}, None),
    (GITLAB, CLAIMS, None),
    ("circleci", CLAIMS, None),
    (GITHUB, {"sub": "\ud800"}, None),
]


@pytest.mark.parametrize("issuer_id, claims, requested", _EXPLAIN_CASES)
def test_explain_agrees_with_decide(issuer_id, claims, requested):
    rule_list = _explain_rules()
    kwargs = dict(
        issuer_id=issuer_id,
        claims=claims,
        requested_audience=requested,
        default_audience=DEFAULT_AUDIENCE,
        max_lifetime=3600,
    )
    trace, decision, error = explain(rule_list, **kwargs)
    assert len(trace) == len(rule_list)
    assert [t.rule_name for t in trace] == [r.name for r in rule_list]
    assert all(isinstance(t, RuleTrace) for t in trace)
    assert [t.applies for t in trace] == [issuer_id in r.issuers for r in rule_list]
    assert (decision is None) != (error is None)
    try:
        expected = compiled_rules_decide(rule_list, **kwargs)
    except ExchangeError as exc:
        assert decision is None
        assert type(error) is type(exc)
        assert (error.status, error.code, error.description, error.reason) == (
            exc.status,
            exc.code,
            exc.description,
            exc.reason,
        )
    else:
        assert error is None
        assert decision == expected
    # At most one rule decides; nothing after it is evaluated.
    deciding = [i for i, t in enumerate(trace) if t.result in ("matched", "error")]
    assert len(deciding) <= 1
    if deciding:
        assert all(t.result in ("not evaluated", "skipped (other issuer)") for t in trace[deciding[0] + 1 :])


def test_explain_trace_results():
    trace, decision, error = explain(
        _explain_rules(),
        issuer_id=GITHUB,
        claims={**CLAIMS, "environment": "x"},
        requested_audience=None,
        default_audience=DEFAULT_AUDIENCE,
        max_lifetime=3600,
    )
    assert error is None and decision is not None and decision.rule_name == "main"
    assert [(t.result, t.error) for t in trace] == [
        ("skipped (other issuer)", None),
        ("not matched", None),
        ("not matched", None),
        ("matched", None),
        ("not evaluated", None),
        ("not evaluated", None),
    ]
    trace, decision, error = explain(
        _explain_rules(),
        issuer_id=GITHUB,
        claims=CLAIMS,
        requested_audience=None,
        default_audience=DEFAULT_AUDIENCE,
        max_lifetime=3600,
    )
    assert decision is None and isinstance(error, AccessDenied)
    assert trace[2].result == "error" and "KeyError" in trace[2].error
    assert trace[3].result == "not evaluated"


def test_explain_reports_output_error_on_matched_rule():
    trace, decision, error = explain(
        _explain_rules(),
        issuer_id=GITHUB,
        claims={**CLAIMS, "environment": "x", "ref": "refs/tags/v1", "team": "a#b"},
        requested_audience=None,
        default_audience=DEFAULT_AUDIENCE,
        max_lifetime=3600,
    )
    assert decision is None
    assert error.code == "access_denied" and error.status == 403
    assert trace[4].result == "matched" and "team" in trace[4].error


# ----------------------------------------------------------------------------- property


_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
_claim_names = st.sampled_from(["sub", "repository_owner", "ref", "groups", "team", "n", "nested", "fork"]) | st.text(
    max_size=8
)
_claims = st.dictionaries(_claim_names, _json, max_size=8)

_PROPERTY_RULES = [
    make("fork", when="has(claims.fork) && claims.fork == true", effect="deny"),
    make("other", issuers=[GITLAB], when="true"),
    make(
        "owner",
        when="claims.repository_owner == 'octo-org'",
        subject="claims.sub",
        session_tags=(("team", "claims.team"), ("n", "claims.n")),
        claims=(("nested", "claims.nested"),),
    ),
    make("groups", when="claims.groups.exists(g, g == 'ops')", subject="string(claims.n)"),
    make("size", when="size(claims) > 3 && claims.ref.startsWith('refs/')", audiences=("urn:x",)),
    make("any", when="has(claims.sub)", claims=(("everything", "claims"),)),
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(claims=_claims, requested=st.none() | st.sampled_from(["urn:x", DEFAULT_AUDIENCE, "urn:y"]))
def test_decide_raises_only_access_denied_on_arbitrary_claims(claims, requested):
    try:
        decision = run(_PROPERTY_RULES, claims, requested_audience=requested)
    except AccessDenied as exc:
        assert exc.status == 403 and exc.code == "access_denied"
        assert exc.description
    else:
        assert isinstance(decision, Decision)
        assert isinstance(decision.subject, str) and 0 < len(decision.subject) <= 255
        for key, value in decision.session_tags:
            session_tag_value_validate(key, value)
        json.dumps(decision.extra_claims, allow_nan=False)
    trace, decision2, error = explain(
        _PROPERTY_RULES,
        issuer_id=GITHUB,
        claims=claims,
        requested_audience=requested,
        default_audience=DEFAULT_AUDIENCE,
        max_lifetime=3600,
    )
    assert len(trace) == len(_PROPERTY_RULES)
    assert (decision2 is None) != (error is None)
