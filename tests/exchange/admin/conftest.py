"""Two tenants with a row of every admin model each, and clients per role."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone


@dataclass
class Rows:
    tenant: object
    issuer: object
    rule: object
    key: object
    record: object
    membership: object


def _rows(tenant, *, issuer, rule, marker: str):
    from django.contrib.auth import get_user_model

    from exchange.models import ExchangeRecord, KeyState, SigningKey
    from tenants.models import Membership

    owner = get_user_model().objects.create_user(username=f"owner-{marker}", password="pw", is_staff=True)
    membership = Membership.objects.create(user=owner, tenant=tenant, role="owner")
    record = ExchangeRecord.objects.create(
        tenant=tenant,
        created_at=timezone.now() - timedelta(minutes=5),
        endpoint="raw",
        decision="denied",
        status_code=403,
        error_code="access_denied",
        reason=f"reason-{marker}",
        issuer_ref=issuer.issuer_id,
        rule_name=rule.name,
        upstream_sub=f"subject-{marker}",
        upstream_jti=f"jti-{marker}",
    )
    key = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)
    return Rows(tenant, issuer, rule, key, record, membership)


@pytest.fixture
def a(tenant, issuer, allow_rule):
    """Tenant A (acme): issuer 'ci', rule 'octo-org main', its key, an audit row, an owner."""
    return _rows(tenant, issuer=issuer, rule=allow_rule, marker="acme")


@pytest.fixture
def b(other_tenant, other_upstream):
    """Tenant B (globex) with rows whose names appear nowhere in A."""
    from exchange.models import Issuer, Rule

    issuer = Issuer.objects.create(
        tenant=other_tenant,
        issuer_id="globex-ci",
        issuer=other_upstream.issuer,
        audiences=["globex-audience"],
        static_jwks=other_upstream.jwks,
    )
    rule = Rule.objects.create(
        tenant=other_tenant,
        position=10,
        name="globex-rule",
        when="claims.sub == 'globex'",
        effect="allow",
        session_tags={"globex_tag": "claims.sub"},
    )
    rule.issuers.add(issuer)
    return _rows(other_tenant, issuer=issuer, rule=rule, marker="globex")
