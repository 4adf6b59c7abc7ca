"""Fixtures for the security tests: an exchangeable set-up (tenant, issuer, allow rule) with
rate limits out of the way, so each test sees only the refusal it provokes."""

from __future__ import annotations

import pytest


@pytest.fixture
def exchangeable(settings, tenant, issuer, allow_rule):
    """A tenant whose allow rule would grant ``upstream.mint()``; rate limits off."""
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    tenant.rate_limit_per_minute = 0
    tenant.save()
    return tenant


@pytest.fixture(scope="session")
def _upstream_keys():
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def upstream(_upstream_keys):
    """The shared ``upstream`` with its keys made once per session (hundreds of tests here)."""
    from tests.conftest import Upstream

    rsa_key, ec_key = _upstream_keys
    return Upstream(rsa_key=rsa_key, ec_key=ec_key)
