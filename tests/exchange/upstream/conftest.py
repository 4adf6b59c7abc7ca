"""Fixtures of the upstream tests: a loopback OIDC upstream serving k1, an issuer of it without
keys yet, and clean caches (key sets parsed per process included)."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.utils import timezone

from exchange.models import Issuer
from exchange.upstream import keysets
from tenants.models import Tenant
from tests.exchange.upstream.keys import K1
from tests.upstreams import DISCOVERY, UpstreamServer


@pytest.fixture(autouse=True)
def _clean_caches():
    cache.clear()
    keysets._KEYSETS.clear()
    yield
    cache.clear()


@pytest.fixture
def server(settings):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    server = UpstreamServer()
    server.json(DISCOVERY, {"issuer": server.url, "jwks_uri": server.url + "/jwks"})
    server.json("/jwks", {"keys": [K1]})
    yield server
    server.close()


@pytest.fixture
def tenant(db):
    return Tenant.objects.create(slug="acme", name="Acme")


@pytest.fixture
def issuer(tenant, server):
    return Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=server.url, audiences=["sts.amazonaws.com"])


@pytest.fixture
def now():
    return timezone.now().replace(microsecond=0)
