"""exchange.runtime: no query per warm exchange however many tenants, changes seen within the
re-check interval by every process, the warm snapshot survives a database outage, and unknown
slugs cost no query each."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection

from exchange import runtime as runtime_module
from exchange.core.errors import NotFound, TemporarilyUnavailable
from exchange.invalidation import config_epoch_bump
from exchange.runtime import tenant_runtime_get
from tenants.models import ConfigEpoch, Tenant
from tests.conftest import make_tenant

pytestmark = pytest.mark.django_db


def _database_down(monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Tenant.objects, "filter", down)
    monkeypatch.setattr(ConfigEpoch.objects, "filter", down)


def _changed_by_another_process(sql: str, *params) -> None:
    """A change this process hears of only through the database (no signal here)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    config_epoch_bump()


def test_warm_exchanges_read_nothing_however_many_tenants(db, settings, django_assert_num_queries):
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 60.0
    slugs = [make_tenant(f"t{i}").slug for i in range(5)]
    for slug in slugs:
        tenant_runtime_get(slug=slug)
    with django_assert_num_queries(0):
        for _ in range(20):
            for slug in slugs:
                tenant_runtime_get(slug=slug)


def test_a_recheck_is_one_read_of_the_epoch_for_all_tenants(db, settings, django_assert_num_queries):
    slugs = [make_tenant(f"t{i}").slug for i in range(5)]
    for slug in slugs:
        tenant_runtime_get(slug=slug)
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 0.0  # every call re-checks
    with django_assert_num_queries(len(slugs)):
        for slug in slugs:
            tenant_runtime_get(slug=slug)


def test_a_change_committed_elsewhere_is_served_after_the_interval(tenant, settings):
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 60.0
    before = tenant_runtime_get(slug=tenant.slug)
    _changed_by_another_process(
        "UPDATE tenants_tenant SET max_token_lifetime = 123, config_version = config_version + 1 WHERE id = %s",
        tenant.pk,
    )
    assert tenant_runtime_get(slug=tenant.slug) is before  # within the interval
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 0.0
    after = tenant_runtime_get(slug=tenant.slug)
    assert after.max_token_lifetime == 123 and after.version == before.version + 1


def test_a_tenant_disabled_or_deleted_elsewhere_stops_serving_after_the_interval(db, settings):
    disabled, deleted, kept = make_tenant("off"), make_tenant("gone"), make_tenant("kept")
    warm = {t.slug: tenant_runtime_get(slug=t.slug) for t in (disabled, deleted, kept)}
    _changed_by_another_process("UPDATE tenants_tenant SET enabled = false WHERE id = %s", disabled.pk)
    Tenant.objects.filter(pk=deleted.pk).delete()
    config_epoch_bump()  # what the deletion's commit does
    runtime_module._by_slug[deleted.slug] = warm[deleted.slug]  # as another process still holds it
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 0.0
    for gone in (disabled, deleted):
        with pytest.raises(NotFound):
            tenant_runtime_get(slug=gone.slug)
    assert tenant_runtime_get(slug=kept.slug) is warm[kept.slug]  # the others are not rebuilt


def test_a_lost_epoch_bump_is_caught_by_the_periodic_comparison(tenant, settings, monkeypatch):
    before = tenant_runtime_get(slug=tenant.slug)
    with connection.cursor() as cursor:  # a process died between its commit and its epoch bump
        cursor.execute("UPDATE tenants_tenant SET config_version = config_version + 1 WHERE id = %s", [tenant.pk])
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 0.0
    assert tenant_runtime_get(slug=tenant.slug) is before
    monkeypatch.setattr(runtime_module, "_RECONCILE_SECONDS", 0.0)
    assert tenant_runtime_get(slug=tenant.slug).version == before.version + 1


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
    with pytest.raises(NotFound):
        tenant_runtime_get(slug="some-other-slug")  # the first epoch comparison
    with django_assert_num_queries(1):
        for _ in range(100):
            with pytest.raises(NotFound):
                tenant_runtime_get(slug="no-such-tenant")


def test_a_tenant_created_after_a_miss_is_found_at_once_in_this_process(db, settings):
    settings.JWTEX_CONFIG_RECHECK_SECONDS = 60.0
    with pytest.raises(NotFound):
        tenant_runtime_get(slug="late")
    make_tenant("late")
    assert tenant_runtime_get(slug="late").slug == "late"
    assert "late" not in runtime_module._missing


def test_every_committed_change_moves_the_epoch(tenant, django_capture_on_commit_callbacks):
    def epoch():
        return ConfigEpoch.objects.get(pk=1).value

    start = epoch()
    with django_capture_on_commit_callbacks(execute=True):
        tenant.name = "Renamed"
        tenant.save()
    assert epoch() > start
    start = epoch()
    with django_capture_on_commit_callbacks(execute=True):
        Tenant.objects.filter(pk=tenant.pk).delete()
    assert epoch() > start
