"""exchange.runtime: the warm snapshot survives a database outage, and unknown slugs cost no query each."""

from __future__ import annotations

import pytest
from django.db import OperationalError

from exchange import runtime as runtime_module
from exchange.core.errors import NotFound, TemporarilyUnavailable
from exchange.runtime import tenant_runtime_get
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _database_down(monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Tenant.objects, "filter", down)


def test_a_warm_snapshot_keeps_serving_while_its_version_cannot_be_checked(tenant, monkeypatch, settings):
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 0.0  # every call re-checks
    warm = tenant_runtime_get(slug=tenant.slug)
    _database_down(monkeypatch)
    assert tenant_runtime_get(slug=tenant.slug) is warm


def test_a_cold_tenant_answers_503_while_the_database_is_down(tenant, monkeypatch):
    _database_down(monkeypatch)
    with pytest.raises(TemporarilyUnavailable):
        tenant_runtime_get(slug=tenant.slug)


def test_the_exchange_answers_503_not_500_with_the_database_down(client, tenant, monkeypatch, upstream, allow_rule):
    _database_down(monkeypatch)
    response = client.post("/t/acme/exchange", upstream.mint(), content_type="application/jwt")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"


def test_an_unknown_slug_is_looked_up_once_per_interval(db, settings, django_assert_num_queries):
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 60.0
    with django_assert_num_queries(1):
        for _ in range(100):
            with pytest.raises(NotFound):
                tenant_runtime_get(slug="no-such-tenant")


def test_a_tenant_created_after_a_miss_is_found_at_once_in_this_process(db, settings):
    from tests.conftest import make_tenant

    settings.JWTEX_CONFIG_RECHECK_SECONDS = 60.0
    with pytest.raises(NotFound):
        tenant_runtime_get(slug="late")
    make_tenant("late")
    assert tenant_runtime_get(slug="late").slug == "late"
    assert "late" not in runtime_module._missing
