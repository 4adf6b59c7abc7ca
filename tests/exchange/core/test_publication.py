"""The published issuer URL's pure rules: which URLs, which folder, IAM's key-count limit, the
back-off, the read-back comparison, and the rotation waiting for a confirmed publication."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from exchange.core.limits import JWKS_MAX_AGE
from exchange.core.publication import (
    IAM_MAX_KEYS_PER_TYPE,
    jwks_capped,
    publish_backoff,
    published_documents,
    published_folder,
    published_url_problem,
    readback_mismatch,
)
from exchange.core.rotation import KeyView, RotationPolicy, rotation_plan

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "url, allow_insecure, fragment",
    [
        ("http://issuers.example.com/acme", False, "https URL"),
        ("https://issuers.example.com", False, "needs a path"),
        ("https://issuers.example.com/", False, "needs a path"),
        ("https://issuers.example.com/acme/", False, "must not end with a slash"),
        ("https://issuers.example.com/acme?x=1", False, "query or fragment"),
        ("https://user:pw@issuers.example.com/acme", False, "credentials"),
        ("https://127.0.0.1/acme", False, "loopback"),
        ("https://issuers.example.com/a/../b", False, "segments"),
        ("https://issuers.example.com/a//b", False, "segments"),
        ("https://issuers.example.com/a%2Fb", False, "segments"),
        (" https://issuers.example.com/acme", False, "surrounding spaces"),
    ],
)
def test_published_urls_that_are_refused(url, allow_insecure, fragment):
    problem = published_url_problem(url, allow_insecure=allow_insecure)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "url, allow_insecure, folder",
    [
        ("https://issuers.example.com/acme", False, "acme"),
        ("https://d111111abcdef8.cloudfront.net/prod/acme-ci", False, "prod/acme-ci"),
        ("http://127.0.0.1:8080/acme", True, "acme"),
    ],
)
def test_published_urls_that_are_accepted_and_their_folder(url, allow_insecure, folder):
    assert published_url_problem(url, allow_insecure=allow_insecure) is None
    assert published_folder(url) == folder


def _jwk(kty: str, n: int) -> dict:
    return {"kty": kty, "kid": f"{kty}-{n}"}


def test_the_jwks_never_lists_more_than_iams_limit_of_a_key_type_retiring_keys_drop_first():
    # 120 EC keys (oldest first): 110 retiring, then 8 next, 1 active, 1 next; and 101 RSA next keys.
    keys = [(_jwk("EC", i), "retiring") for i in range(110)]
    keys += [(_jwk("EC", 110 + i), "next") for i in range(8)] + [(_jwk("EC", 118), "active"), (_jwk("EC", 119), "next")]
    keys += [(_jwk("RSA", i), "next") for i in range(101)]
    capped = jwks_capped(keys)
    ec = [k["kid"] for k in capped if k["kty"] == "EC"]
    rsa = [k["kid"] for k in capped if k["kty"] == "RSA"]
    assert len(ec) == IAM_MAX_KEYS_PER_TYPE == 100 and len(rsa) == 100
    # The 20 oldest retiring keys left; every key that signs or will sign stayed; order kept.
    assert ec == [f"EC-{i}" for i in range(20, 120)]
    assert rsa == [f"RSA-{i}" for i in range(1, 101)]  # no retiring RSA key: the oldest went
    small = [(_jwk("EC", 1), "retiring"), (_jwk("EC", 2), "active")]
    assert jwks_capped(small) == [_jwk("EC", 1), _jwk("EC", 2)]


def test_backoff_doubles_from_30_seconds_to_at_most_30_minutes():
    assert [publish_backoff(n).total_seconds() for n in range(0, 8)] == [0, 30, 60, 120, 240, 480, 960, 1800]
    assert publish_backoff(10_000) == timedelta(minutes=30)


def test_the_read_back_compares_json_values_and_refuses_missing_or_garbled_files():
    written = published_documents(discovery={"issuer": "https://i.example/a"}, jwks={"keys": [{"kid": "k"}]})
    assert list(written) == [".well-known/jwks.json", ".well-known/openid-configuration"]  # the JWKS first
    same = {path: body.decode().replace(",", ", ").encode() for path, body in written.items()}
    assert readback_mismatch(written, same) == []
    assert readback_mismatch(written, {**same, ".well-known/jwks.json": None}) == [".well-known/jwks.json"]
    garbled = {**same, ".well-known/openid-configuration": b"<html>"}
    assert readback_mismatch(written, garbled) == [".well-known/openid-configuration"]


POLICY = RotationPolicy(timedelta(days=7), timedelta(hours=2), timedelta(hours=1), publication_required=True)


def test_a_next_key_never_signs_before_its_publication_is_confirmed():
    active = KeyView("k1", "active", START, START, START)
    upcoming = KeyView("k2", "next", START + timedelta(days=6), START + timedelta(days=7))
    for days in (7, 8, 30, 365):
        plan = rotation_plan([active, upcoming], now=START + timedelta(days=days), policy=POLICY)
        assert plan.activate is None and plan.next_check_at <= START + timedelta(days=days, minutes=1)
        assert (
            rotation_plan([active, upcoming], now=START + timedelta(days=days), policy=POLICY, force=True).activate
            is None
        )


def test_a_confirmed_next_key_signs_a_full_max_age_after_its_confirmation():
    active = KeyView("k1", "active", START, START, START)
    confirmed = START + timedelta(days=6, hours=23)  # the publish took 22 h of the 2-hour window's slack
    upcoming = KeyView(
        "k2", "next", START + timedelta(days=6, hours=22), START + timedelta(days=7), published_at=confirmed
    )
    ready = confirmed + timedelta(seconds=JWKS_MAX_AGE)
    assert rotation_plan([active, upcoming], now=ready - timedelta(seconds=1), policy=POLICY).activate is None
    assert rotation_plan([active, upcoming], now=ready, policy=POLICY).activate == "k2"
    # Without a published issuer URL the same key signs at its own activate_after.
    unpublished = RotationPolicy(POLICY.interval, POLICY.prepublish, POLICY.max_token_lifetime)
    assert rotation_plan([active, upcoming], now=START + timedelta(days=7), policy=unpublished).activate == "k2"
