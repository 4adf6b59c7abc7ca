"""Signing-key rotation: the pure state machine over a simulated year, and the services."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command

from exchange.core import limits as conf
from exchange.core.rotation import MAX_PUBLISHED_KEYS, KeyView, RotationPolicy, rotation_plan, tenant_rotation_errors
from exchange.keys import signing_key_load, signing_key_revoke, signing_key_rotate
from exchange.models import PUBLISHED_KEY_STATES, KeyState, SigningKey
from tests.conftest import make_tenant

START = datetime(2026, 1, 1, tzinfo=UTC)


class SimulatedTenant:
    """Applies rotation plans to in-memory keys, like exchange.keys does to rows."""

    def __init__(self, policy: RotationPolicy):
        self.policy = policy
        self.keys: dict[str, KeyView] = {}
        self.destroyed: set[str] = set()
        self.counter = 0

    def _new(self, state: str, now: datetime, activate_after: datetime | None) -> None:
        self.counter += 1
        kid = f"k{self.counter}"
        self.keys[kid] = KeyView(kid, state, now, activate_after, now if state == "active" else None)

    def step(self, now: datetime, force: bool = False):
        plan = rotation_plan(list(self.keys.values()), now=now, policy=self.policy, force=force)
        for kid in plan.retire:
            del self.keys[kid]
            self.destroyed.add(kid)
        for kid, retire_after in plan.retiring:
            k = self.keys[kid]
            self.keys[kid] = KeyView(kid, "retiring", k.created_at, k.activate_after, k.activated_at, retire_after)
        if plan.reschedule:
            kid, when = plan.reschedule
            k = self.keys[kid]
            self.keys[kid] = KeyView(kid, k.state, k.created_at, when)
        if plan.activate:
            k = self.keys[plan.activate]
            assert k.activate_after is None or k.activate_after <= now, "a key signed before its pre-publish window"
            self.keys[plan.activate] = KeyView(k.kid, "active", k.created_at, k.activate_after, now)
        if plan.create_active:
            self._new("active", now, now)
        if plan.create_next_activate_after:
            self._new("next", now, plan.create_next_activate_after)
        return plan

    @property
    def active(self) -> str:
        (kid,) = [k.kid for k in self.keys.values() if k.state == "active"]
        return kid

    @property
    def published(self) -> set[str]:
        return set(self.keys)


@pytest.mark.parametrize(
    "interval_days, prepublish_hours, lifetime",
    [(30, 24, 3600), (7, 2, 43200), (1, 1, 900)],
)
def test_a_year_of_rotation_keeps_every_unexpired_token_verifiable(interval_days, prepublish_hours, lifetime):
    policy = RotationPolicy(
        interval=timedelta(days=interval_days),
        prepublish=timedelta(hours=prepublish_hours),
        max_token_lifetime=timedelta(seconds=lifetime),
    )
    assert not tenant_rotation_errors(
        interval=int(policy.interval.total_seconds()),
        prepublish=int(policy.prepublish.total_seconds()),
        max_token_lifetime=lifetime,
    )
    sim = SimulatedTenant(policy)
    rng = random.Random(7)
    issued: list[tuple[str, datetime]] = []  # (kid, exp) of every token with the maximum lifetime
    first_seen: dict[str, datetime] = {}
    now, end = START, START + timedelta(days=365)
    activations = 0
    while now < end:
        plan = sim.step(now, force=rng.random() < 0.002)  # now and then an operator clicks "rotate now"
        activations += bool(plan.activate)
        published = sim.published
        for kid in published:
            first_seen.setdefault(kid, now)
        assert len(published) <= MAX_PUBLISHED_KEYS
        # Every token not yet expired verifies against the JWKS served now.
        issued = [(kid, exp) for kid, exp in issued if exp > now]
        for kid, _ in issued:
            assert kid in published, f"{kid} left the JWKS while its tokens were valid ({now})"
        # The signing key was published for at least the relying parties' JWKS cache lifetime
        # (or is the tenant's very first key, which nobody could have cached yet).
        signer = sim.active
        assert signer == "k1" or now - first_seen[signer] >= timedelta(seconds=conf.JWKS_MAX_AGE)
        issued.append((signer, now + policy.max_token_lifetime))
        assert not sim.destroyed & {kid for kid, _ in issued}
        now += timedelta(minutes=rng.choice([7, 13, 29, 61]))
    assert activations >= 365 // interval_days - 1  # it really rotated, all year


def test_force_never_skips_the_jwks_cache_window():
    policy = RotationPolicy(timedelta(days=30), timedelta(days=1), timedelta(hours=1))
    sim = SimulatedTenant(policy)
    sim.step(START)
    plan = sim.step(START + timedelta(minutes=5), force=True)
    assert plan.create_next_activate_after == START + timedelta(minutes=5, seconds=conf.JWKS_MAX_AGE)
    assert sim.step(START + timedelta(minutes=30), force=True).activate is None
    plan = sim.step(START + timedelta(minutes=5, seconds=conf.JWKS_MAX_AGE))
    assert plan.activate == "k2" and plan.retiring[0][0] == "k1"


def test_settings_that_would_outlive_keys_are_refused(db):
    errors = tenant_rotation_errors(interval=7200, prepublish=3600, max_token_lifetime=43200)
    assert "key_rotation_interval" in errors
    assert "key_prepublish_window" in tenant_rotation_errors(interval=10**7, prepublish=60, max_token_lifetime=60)
    tenant = make_tenant("acme")
    tenant.key_rotation_interval = 3 * 3600
    tenant.max_token_lifetime = 43200
    with pytest.raises(ValidationError) as excinfo:
        tenant.full_clean()
    assert "key_rotation_interval" in excinfo.value.message_dict


# --- the services on rows ------------------------------------------------------------------


def published(tenant):
    return list(SigningKey.objects.filter(tenant=tenant, state__in=PUBLISHED_KEY_STATES).order_by("created_at"))


def test_rotation_service_walks_next_active_retiring_retired(db, client):
    tenant = make_tenant("acme", key_rotation_interval=86400 * 2, key_prepublish_window=3600, max_token_lifetime=3600)
    first = SigningKey.objects.get(tenant=tenant)
    t0 = first.created_at
    assert not signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(hours=1)).changed  # nothing due
    result = signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2) - timedelta(minutes=59))
    (upcoming,) = result.created
    assert SigningKey.objects.get(kid=upcoming).state == KeyState.NEXT
    kids = [k["kid"] for k in client.get("/t/acme/.well-known/jwks.json").json()["keys"]]
    assert kids == [first.kid, upcoming]  # published before it signs
    assert signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2) - timedelta(minutes=30)).activated is None
    result = signing_key_rotate(tenant_id=tenant.pk, now=t0 + timedelta(days=2, minutes=1))
    assert result.activated == upcoming and result.retiring == (first.kid,)
    first.refresh_from_db()
    assert first.state == KeyState.RETIRING and first.private_key_encrypted
    assert first.retire_after >= t0 + timedelta(days=2, hours=1)
    result = signing_key_rotate(tenant_id=tenant.pk, now=first.retire_after)
    assert result.retired == (first.kid,)
    first.refresh_from_db()
    assert first.state == KeyState.RETIRED and bytes(first.private_key_encrypted) == b""
    assert [k["kid"] for k in client.get("/t/acme/.well-known/jwks.json").json()["keys"]] == [upcoming]
    # Re-running at the same moment changes nothing (idempotent).
    assert not signing_key_rotate(tenant_id=tenant.pk, now=first.retire_after).changed


def test_exchange_signs_with_the_new_key_after_rotation(db, client, upstream, settings):
    from exchange.models import Issuer, Rule

    tenant = make_tenant("acme")
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=upstream.issuer, audiences=[upstream.audience], static_jwks=upstream.jwks
    )
    rule = Rule.objects.create(tenant=tenant, name="all", when="true", effect="allow")
    rule.issuers.add(issuer)
    old = SigningKey.objects.get(tenant=tenant)
    signing_key_rotate(tenant_id=tenant.pk, now=old.created_at, force=True)
    result = signing_key_rotate(tenant_id=tenant.pk, now=old.created_at + timedelta(seconds=conf.JWKS_MAX_AGE))
    assert result.activated
    token = client.post("/t/acme/exchange", data=upstream.mint(), content_type="application/jwt").content.decode()
    assert jwt.get_unverified_header(token)["kid"] == result.activated
    jwks = client.get("/t/acme/.well-known/jwks.json").json()
    assert {k["kid"] for k in jwks["keys"]} == {old.kid, result.activated}


def test_revoke_withdraws_at_once_and_next_signs(db, client):
    tenant = make_tenant("acme")
    old = SigningKey.objects.get(tenant=tenant)
    upcoming = signing_key_rotate(tenant_id=tenant.pk, now=old.created_at, force=True).created[0]
    result = signing_key_revoke(tenant=tenant, kid=old.kid, now=old.created_at + timedelta(minutes=1))
    assert result.activated == upcoming
    old.refresh_from_db()
    assert old.state == KeyState.REVOKED and bytes(old.private_key_encrypted) == b""
    assert [k["kid"] for k in client.get("/t/acme/.well-known/jwks.json").json()["keys"]] == [upcoming]
    assert signing_key_load(SigningKey.objects.get(kid=upcoming)).kid == upcoming


def test_revoke_without_next_key_creates_one_that_signs(db):
    tenant = make_tenant("acme")
    old = SigningKey.objects.get(tenant=tenant)
    result = signing_key_revoke(tenant=tenant, kid=old.kid, now=old.created_at)
    (new,) = result.created
    assert SigningKey.objects.get(kid=new).state == KeyState.ACTIVE
    assert [k.kid for k in published(tenant)] == [new]


def test_rotate_keys_command(db):
    from io import StringIO

    tenant = make_tenant("acme")
    out = StringIO()
    call_command("jwtex_rotate_keys", stdout=out)
    assert "acme: nothing due" in out.getvalue()
    out = StringIO()
    call_command("jwtex_rotate_keys", "--tenant", "acme", "--now", stdout=out)
    assert "acme: created" in out.getvalue()
    assert SigningKey.objects.filter(tenant=tenant, state=KeyState.NEXT).count() == 1
    call_command("jwtex_rotate_keys", "--tenant", "acme", "--now", stdout=StringIO())
    assert SigningKey.objects.filter(tenant=tenant).count() == 2  # idempotent: still one next key
    active = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)
    out = StringIO()
    call_command("jwtex_rotate_keys", "--tenant", "acme", "--revoke", active.kid, stdout=out)
    assert f"revoked {active.kid}" in out.getvalue()
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no published key"):
        call_command("jwtex_rotate_keys", "--tenant", "acme", "--revoke", "nope")
    with pytest.raises(CommandError, match="exactly one --tenant"):
        call_command("jwtex_rotate_keys", "--revoke", "nope")
    with pytest.raises(CommandError, match="unknown tenant"):
        call_command("jwtex_rotate_keys", "--tenant", "nope")


def test_audit_retention_purges_only_old_records_of_that_tenant(db):
    from exchange.models import ExchangeRecord
    from exchange.services.audit import exchange_records_purge

    tenant, other = make_tenant("acme", audit_retention_days=30), make_tenant("globex", audit_retention_days=30)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    for t in (tenant, other):
        for age in (1, 29, 31, 400):
            ExchangeRecord.objects.create(
                tenant=t, created_at=now - timedelta(days=age), endpoint="raw", decision="denied", status_code=403
            )
    assert exchange_records_purge(tenant=tenant, now=now, batch_size=1) == 2
    assert ExchangeRecord.objects.filter(tenant=tenant).count() == 2
    assert ExchangeRecord.objects.filter(tenant=other).count() == 4
