"""Fixtures for the security tests: an exchangeable set-up (tenant, issuer, allow rule) with
rate limits out of the way, so each test sees only the refusal it provokes."""

from __future__ import annotations

import pytest


@pytest.fixture
def exchangeable(request, settings):
    """A tenant whose allow rule would grant ``upstream.mint()``; rate limits off. Not made for
    a case sent to the pure verifier, which needs no database at all."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("endpoint") == "verifier":
        return None
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    tenant = request.getfixturevalue("tenant")
    request.getfixturevalue("allow_rule")
    tenant.rate_limit_per_minute = 0
    tenant.save()
    return tenant
