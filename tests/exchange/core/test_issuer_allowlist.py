"""JWTEX_ALLOWED_UPSTREAM_ISSUERS as parsed and matched (docs/operators.md#allowed-upstream-issuers): exact
URLs, and https://HOST/PATH* patterns that match at a path boundary only — never another host."""

from __future__ import annotations

import pytest

from exchange.core.issuer_allowlist import allowlist_parse

LIST = (
    "https://token.actions.githubusercontent.com, https://gitlab.example.com/* "
    "https://ci.example.com/tenants*  https://k8s.example.com:8443/clusters/prod/*"
)


@pytest.mark.parametrize(
    "issuer, allowed",
    [
        ("https://token.actions.githubusercontent.com", True),
        ("https://token.actions.githubusercontent.com/", False),  # exact means exact, as iss is compared
        ("https://token.actions.githubusercontent.com/octo-enterprise", False),
        ("https://TOKEN.actions.githubusercontent.com", False),
        ("https://gitlab.example.com", True),
        ("https://gitlab.example.com/", True),
        ("https://gitlab.example.com/sub/group", True),
        ("https://gitlab.example.com.evil.test", False),  # no host tricks
        ("https://gitlab.example.com@evil.test", False),
        ("https://gitlab.example.com:444", False),
        ("http://gitlab.example.com", False),
        ("https://ci.example.com/tenants", True),
        ("https://ci.example.com/tenants/acme", True),
        ("https://ci.example.com/tenantsX", False),  # a path boundary, not a string prefix
        ("https://ci.example.com/tenants/../admin", False),  # what could leave the prefix never matches
        ("https://ci.example.com/tenants/./acme", False),
        ("https://ci.example.com/tenants/%2e%2e/admin", False),
        ("https://ci.example.com/tenants/a?x=1", False),
        ("https://ci.example.com/tenants/a#frag", False),
        ("https://ci.example.com/tenants\\..\\admin", False),
        ("https://k8s.example.com:8443/clusters/prod/eu", True),
        ("https://k8s.example.com/clusters/prod/eu", False),  # another port is another origin
        ("https://k8s.example.com:8443/clusters/production", False),
    ],
)
def test_entries_match_exactly_or_at_a_path_boundary(issuer, allowed):
    allowlist = allowlist_parse(LIST)
    assert allowlist.problems == ()
    assert allowlist.allows(issuer) is allowed
    assert (allowlist.problem(issuer) is None) is allowed


def test_unset_or_empty_allows_any_issuer():
    assert allowlist_parse(None) is None and allowlist_parse("") is None and allowlist_parse(" , ") is None


@pytest.mark.parametrize(
    "entry, words",
    [
        ("https://gitlab.example.com*", "follows a path"),  # would match gitlab.example.com.evil.test
        ("https://*.example.com/", "'*' may only end"),
        ("https://ci.example.com/a*b", "'*' may only end"),
        ("gitlab.example.com", "absolute URL"),
        ("https://user@ci.example.com/x", "credentials"),
        ("https://ci.example.com/x?y=1", "query"),
        ("https://ci.example.com/a/../b/*", "'..' segment"),
    ],
)
def test_a_malformed_entry_matches_nothing_and_is_named(entry, words):
    allowlist = allowlist_parse(f"https://gitlab.com {entry}")
    [problem] = allowlist.problems
    assert words in problem and entry in problem
    assert allowlist.allows("https://gitlab.com")
    assert not allowlist.allows("https://gitlab.example.com") and not allowlist.allows(
        "https://gitlab.example.com.evil.test"
    )


def test_the_refusal_names_the_setting_and_the_list():
    message = allowlist_parse(LIST).problem("https://evil.test")
    assert message.startswith("The issuer is not one this service allows")
    assert "JWTEX_ALLOWED_UPSTREAM_ISSUERS" in message and "https://gitlab.example.com/*" in message
