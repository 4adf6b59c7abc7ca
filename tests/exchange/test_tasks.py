"""exchange.tasks, run eagerly (tests.settings sets CELERY_TASK_ALWAYS_EAGER): the sweeps fan
out to exactly what is due, each task has a real effect, and running anything twice changes
nothing the second time (docs/design/layout.md#tasks-are-thin-and-idempotent). The same tasks on a
real worker and broker: tests/exchange/test_celery_worker.py."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery.signals import task_prerun
from django.utils import timezone

from exchange import tasks
from exchange.models import ExchangeRecord, Issuer, KeyState, SigningKey
from tenants.models import Tenant
from tests.conftest import make_tenant


@pytest.fixture
def ran():
    """Every task that actually runs during the test, as (task name, args), in order.

    ``task_prerun`` fires for eager tasks too, so this sees what a sweep fanned out to."""
    seen: list[tuple[str, tuple]] = []

    def record(sender=None, task=None, args=None, **kwargs):
        seen.append((task.name, tuple(args or ())))

    task_prerun.connect(record, weak=False)
    yield seen
    task_prerun.disconnect(record)


def runs_of(ran: list[tuple[str, tuple]], name: str) -> list[tuple]:
    return [args for task, args in ran if task == name]


def age_active_key(tenant: Tenant, *, days: int) -> None:
    """Pretend the tenant's active key has signed for ``days``: a rotation becomes due."""
    then = timezone.now() - timedelta(days=days)
    SigningKey.objects.filter(tenant=tenant, state=KeyState.ACTIVE).update(created_at=then, activated_at=then)


def key_states(tenant: Tenant) -> list[tuple[str, str]]:
    return sorted(SigningKey.objects.filter(tenant=tenant).values_list("kid", "state"))


def issuer_row(issuer: Issuer) -> dict[str, Any]:
    return Issuer.objects.filter(pk=issuer.pk).values().get()


# ---------------------------------------------------------------------------- signing keys


@pytest.mark.django_db
def test_sweep_signing_keys_rotates_only_tenants_that_are_due(ran):
    now = timezone.now()
    never_checked = make_tenant("never-checked")
    overdue = make_tenant("overdue")
    not_due = make_tenant("not-due")
    for tenant in (never_checked, overdue, not_due):
        age_active_key(tenant, days=30)  # every one of them would create a next key if rotated
    Tenant.objects.filter(pk=never_checked.pk).update(keys_next_check_at=None)
    Tenant.objects.filter(pk=overdue.pk).update(keys_next_check_at=now - timedelta(minutes=1))
    Tenant.objects.filter(pk=not_due.pk).update(keys_next_check_at=now + timedelta(hours=1))

    assert tasks.sweep_signing_keys.delay().get() == 2

    assert sorted(runs_of(ran, "exchange.rotate_tenant_keys")) == sorted([(never_checked.pk,), (overdue.pk,)])
    for tenant in (never_checked, overdue):
        assert SigningKey.objects.filter(tenant=tenant, state=KeyState.NEXT).count() == 1
        assert Tenant.objects.get(pk=tenant.pk).keys_next_check_at > now
    assert not SigningKey.objects.filter(tenant=not_due, state=KeyState.NEXT).exists()
    assert Tenant.objects.get(pk=not_due.pk).keys_next_check_at == now + timedelta(hours=1)


@pytest.mark.django_db
def test_sweep_signing_keys_twice_changes_nothing_the_second_time(ran):
    tenant = make_tenant("acme")
    age_active_key(tenant, days=30)
    tasks.sweep_signing_keys.delay()
    keys = key_states(tenant)
    check_at = Tenant.objects.get(pk=tenant.pk).keys_next_check_at
    ran.clear()

    assert tasks.sweep_signing_keys.delay().get() == 0

    assert runs_of(ran, "exchange.rotate_tenant_keys") == []
    assert key_states(tenant) == keys
    assert Tenant.objects.get(pk=tenant.pk).keys_next_check_at == check_at


@pytest.mark.django_db
def test_forced_rotation_publishes_one_next_key_and_a_second_run_changes_nothing():
    tenant = make_tenant("acme")
    active = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)

    assert tasks.rotate_tenant_keys.delay(tenant.pk, True).get() is True
    keys = key_states(tenant)
    assert tasks.rotate_tenant_keys.delay(tenant.pk, True).get() is False

    assert key_states(tenant) == keys
    (next_kid,) = [kid for kid, state in keys if state == KeyState.NEXT]
    assert next_kid != active.kid
    assert SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE).kid == active.kid


@pytest.mark.django_db
def test_rotating_a_tenant_that_does_not_exist_is_a_no_op():
    assert tasks.rotate_tenant_keys.delay(987654, True).get() is False
    assert not SigningKey.objects.exists()


# ---------------------------------------------------------------------------- issuers


@pytest.mark.django_db
def test_sweep_issuers_refreshes_only_enabled_fetched_issuers_that_are_due(ran, oidc_server, upstream):
    now = timezone.now()
    tenant = make_tenant("acme")
    disabled_tenant = make_tenant("dormant", enabled=False)

    def issuer(issuer_id: str, owner: Tenant = tenant, **fields: Any) -> Issuer:
        return Issuer.objects.create(
            tenant=owner, issuer_id=issuer_id, issuer=oidc_server.url, audiences=[upstream.audience], **fields
        )

    never_fetched = issuer("never-fetched")
    expired = issuer("expired", jwks_expires_at=now - timedelta(seconds=1))
    fresh = issuer("fresh", jwks_expires_at=now + timedelta(hours=1))
    static = issuer("static", static_jwks=upstream.jwks)
    disabled = issuer("disabled", enabled=False)
    of_disabled_tenant = issuer("elsewhere", owner=disabled_tenant)

    assert tasks.sweep_issuers.delay().get() == 2

    assert sorted(runs_of(ran, "exchange.refresh_issuer_jwks")) == sorted([(never_fetched.pk,), (expired.pk,)])
    for due in (never_fetched, expired):
        row = Issuer.objects.get(pk=due.pk)
        assert row.jwks == upstream.jwks
        assert row.jwks_fetched_at >= now
        assert row.jwks_expires_at > now
        assert row.jwks_resolved_uri == oidc_server.url + "/jwks"
        assert (row.jwks_consecutive_failures, row.jwks_last_error) == (0, "")
    for skipped in (fresh, static, disabled, of_disabled_tenant):
        row = Issuer.objects.get(pk=skipped.pk)
        assert (row.jwks, row.jwks_fetched_at) == (None, None)
    assert oidc_server.count("/jwks") == 2


@pytest.mark.django_db
def test_sweep_issuers_twice_fetches_nothing_the_second_time(ran, oidc_server, upstream):
    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=oidc_server.url, audiences=["x"])
    tasks.sweep_issuers.delay()
    row = issuer_row(issuer)
    requests = list(oidc_server.paths)
    ran.clear()

    assert tasks.sweep_issuers.delay().get() == 0
    # Not forced, the task itself also finds nothing due.
    assert tasks.refresh_issuer_jwks.delay(issuer.pk).get() is False

    assert runs_of(ran, "exchange.refresh_issuer_jwks") == [(issuer.pk,)]  # only the direct call
    assert oidc_server.paths == requests
    assert issuer_row(issuer) == row
    assert row["jwks"] == upstream.jwks


@pytest.mark.django_db
def test_a_forced_refresh_refetches_and_reports_a_change_only_when_the_keys_changed(oidc_server, upstream):
    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(tenant=tenant, issuer_id="ci", issuer=oidc_server.url, audiences=["x"])

    assert tasks.refresh_issuer_jwks.delay(issuer.pk).get() is True
    changed_at = Issuer.objects.get(pk=issuer.pk).jwks_changed_at
    assert tasks.refresh_issuer_jwks.delay(issuer.pk, True).get() is False  # same keys again

    assert oidc_server.count("/jwks") == 2
    row = Issuer.objects.get(pk=issuer.pk)
    assert (row.jwks, row.jwks_changed_at) == (upstream.jwks, changed_at)


@pytest.mark.django_db
def test_refreshing_a_disabled_or_missing_issuer_is_a_no_op(oidc_server):
    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=oidc_server.url, audiences=["x"], enabled=False
    )

    assert tasks.refresh_issuer_jwks.delay(issuer.pk, True).get() is False
    assert tasks.refresh_issuer_jwks.delay(987654, True).get() is False

    assert oidc_server.paths == []
    assert Issuer.objects.get(pk=issuer.pk).jwks is None


# ---------------------------------------------------------------------------- audit retention


def record(tenant: Tenant, *, age: timedelta) -> ExchangeRecord:
    return ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now() - age,
        endpoint="raw",
        decision="denied",
        error_code="access_denied",
        status_code=403,
    )


@pytest.mark.django_db
def test_sweep_exchange_records_purges_each_tenant_by_its_own_retention(ran):
    short = make_tenant("short", audit_retention_days=30)
    long = make_tenant("long", audit_retention_days=90)
    expired = record(short, age=timedelta(days=31))
    kept_short = record(short, age=timedelta(days=29))
    kept_long = record(long, age=timedelta(days=31))
    expired_long = record(long, age=timedelta(days=91))

    assert tasks.sweep_exchange_records.delay().get() == 2

    assert sorted(runs_of(ran, "exchange.purge_exchange_records")) == sorted([(short.pk,), (long.pk,)])
    remaining = set(ExchangeRecord.objects.values_list("pk", flat=True))
    assert remaining == {kept_short.pk, kept_long.pk}
    assert expired.pk not in remaining and expired_long.pk not in remaining


@pytest.mark.django_db
def test_purge_twice_deletes_nothing_the_second_time():
    tenant = make_tenant("acme", audit_retention_days=30)
    record(tenant, age=timedelta(days=31))
    kept = record(tenant, age=timedelta(days=1))

    assert tasks.purge_exchange_records.delay(tenant.pk).get() == 1
    assert tasks.purge_exchange_records.delay(tenant.pk).get() == 0
    assert tasks.purge_exchange_records.delay(987654).get() == 0

    assert list(ExchangeRecord.objects.values_list("pk", flat=True)) == [kept.pk]
