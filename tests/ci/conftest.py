"""The CI side end to end: a fake GitHub Actions token service → jwtex-token → a served jwtex
(pytest-django's live server, in this process) → moto's STS (tests/kms.py starts it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ci.fakes import OWNER_ID, STS_CALLS, FakeActions, sts_taught
from tests.conftest import REPO_ROOT, make_tenant, runtime_clear
from tests.kms import REGION, moto_kms  # noqa: F401 - moto_kms: the session's moto server, a fixture

CLIENT = REPO_ROOT / "jwtex_token.py"
ROLE_ARN = "arn:aws:iam::123456789012:role/deploy"


@pytest.fixture
def actions():
    fake = FakeActions()
    yield fake
    fake.close()


@pytest.fixture
def jwtex(settings, live_server, actions):
    """Tenant ``acme`` served at ``live_server``: issuer ``github`` trusts the fake Actions service
    (its discovery and JWKS, fetched over HTTP) for the tenant's issuer URL as audience; a deny
    rule for other refs, then an allow rule pinned to the owner with two session tags."""
    from exchange.models import Issuer, Rule

    settings.JWTEX_PUBLIC_URL = live_server.url
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True  # the fake is plain http on loopback
    runtime_clear()
    tenant = make_tenant("acme", name="Acme Corp")
    issuer = Issuer.objects.create(
        tenant=tenant, issuer_id="github", issuer=actions.url, audiences=[f"{live_server.url}/t/acme"]
    )
    deny = Rule.objects.create(
        tenant=tenant, position=10, name="main only", when="claims.ref != 'refs/heads/main'", effect="deny"
    )
    allow = Rule.objects.create(
        tenant=tenant,
        position=20,
        name="octo-org",
        effect="allow",
        when=f"claims.repository_owner_id == '{OWNER_ID}'",
        session_tags={"repository": "claims.repository", "actor": "aws_tag(claims.actor)"},
        source_identity="aws_source_identity(claims.actor)",  # CloudTrail's who (docs/rules.md#source-identity)
    )
    for rule in (deny, allow):
        rule.issuers.add(issuer)
    yield tenant
    runtime_clear()


@pytest.fixture
def sts(moto_kms):
    """moto's STS, emptied, refusing what AWS refuses (tests/ci/fakes.py); ``STS_CALLS`` lists the calls."""
    sts_taught()
    moto_kms.reset()
    STS_CALLS.clear()
    yield moto_kms.endpoint
    STS_CALLS.clear()


def aws_environment(endpoint: str, home: Path) -> dict[str, str]:
    """An AWS SDK's environment with nothing of the machine's: moto's endpoint for STS only."""
    return {
        "AWS_ENDPOINT_URL_STS": endpoint,
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
    }


CALLER = "import boto3, json; sts = boto3.client('sts'); print(json.dumps(sts.get_caller_identity()['Arn']))"
