"""Shared fixtures (docs/design/layout.md#tests): tenants, an upstream issuer that mints with its own keys,
signing keys and an admin client per tenant."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import settings as hypothesis_settings

REPO_ROOT = Path(__file__).resolve().parents[1]

# Property tests check what the code answers, not how fast: on a busy two-core machine running the
# suite in parallel, Hypothesis's default 200 ms deadline per example fails sound tests at random.
# Time is measured by the benchmarks (make bench). Each test's own @settings still applies on top.
hypothesis_settings.register_profile("jwtex", deadline=None)
hypothesis_settings.load_profile("jwtex")


def tracked_files() -> list[Path]:
    """The repository's files under version control (the calling test is skipped outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO_ROOT / name for name in out.decode().split("\0") if name]


# Committed test data (tests/fixtures/README.md says where each file came from).
FIXTURES_DIR = REPO_ROOT / "tests" / "fixtures"

UPSTREAM_ISSUER = "https://ci.upstream.test"


def _jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algo = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    jwk = algo.to_jwk(private_key.public_key(), as_dict=True)
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


@dataclass
class Upstream:
    """An upstream OIDC issuer (think GitHub Actions) that mints tokens with its own keys."""

    issuer: str = UPSTREAM_ISSUER
    audience: str = "sts.amazonaws.com"
    rsa_key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_key: Any = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rsa_kid: str = "upstream-rsa-1"
    ec_kid: str = "upstream-ec-1"

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [_jwk(self.rsa_key, self.rsa_kid, "RS256"), _jwk(self.ec_key, self.ec_kid, "ES256")]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
            "repository": "octo-org/octo-repo",
            "repository_owner": "octo-org",
            "ref": "refs/heads/main",
            "actor": "octocat",
            "workflow": "deploy",
            "run_id": "1234567890",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(self, *, alg: str = "RS256", headers: dict[str, Any] | None = None, **claim_overrides: Any) -> str:
        key, kid = (self.rsa_key, self.rsa_kid) if alg.startswith(("RS", "PS")) else (self.ec_key, self.ec_kid)
        all_headers = {"kid": kid, "typ": "JWT"}
        all_headers.update(headers or {})
        return jwt.encode(self.claims(**claim_overrides), key, algorithm=alg, headers=all_headers)


@pytest.fixture(scope="session")
def _upstream_keys():
    """Key pairs made once per test run (an RSA key costs tens of milliseconds to make)."""
    return {
        name: (rsa.generate_private_key(public_exponent=65537, key_size=2048), ec.generate_private_key(ec.SECP256R1()))
        for name in ("upstream", "other")
    }


@pytest.fixture
def upstream(_upstream_keys) -> Upstream:
    """The one upstream issuer of the tests: it mints tokens with its own keys."""
    rsa_key, ec_key = _upstream_keys["upstream"]
    return Upstream(rsa_key=rsa_key, ec_key=ec_key)


@pytest.fixture
def other_upstream(_upstream_keys) -> Upstream:
    rsa_key, ec_key = _upstream_keys["other"]
    return Upstream(
        issuer="https://other.upstream.test", rsa_kid="other-rsa-1", ec_kid="other-ec-1", rsa_key=rsa_key, ec_key=ec_key
    )


def make_tenant(slug: str, **fields: Any):
    from exchange.services.tenants import tenant_create

    return tenant_create(slug=slug, name=fields.pop("name", slug.title()), **fields)


@pytest.fixture
def tenant(db):
    return make_tenant("acme", name="Acme Corp")


@pytest.fixture
def other_tenant(db):
    return make_tenant("globex", name="Globex")


@pytest.fixture
def oidc_server(settings, upstream):
    """The ``upstream`` fixture's keys, served by a loopback OIDC issuer over HTTP (allowed for
    this test only)."""
    from tests.upstreams import oidc_upstream

    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    server = oidc_upstream(lambda: upstream.jwks)
    yield server
    server.close()


@pytest.fixture
def signing_key(tenant):
    from exchange.models import KeyState, SigningKey

    return SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)


@pytest.fixture
def issuer(tenant, upstream):
    """The upstream registered with a static JWKS: nothing is fetched."""
    from exchange.models import Issuer

    return Issuer.objects.create(
        tenant=tenant, issuer_id="ci", issuer=upstream.issuer, audiences=[upstream.audience], static_jwks=upstream.jwks
    )


@pytest.fixture
def allow_rule(tenant, issuer):
    from exchange.models import Rule

    rule = Rule.objects.create(
        tenant=tenant,
        position=10,
        name="octo-org main",
        when="claims.repository_owner == 'octo-org' && claims.ref == 'refs/heads/main'",
        effect="allow",
        session_tags={"repository": "claims.repository", "ref": "claims.ref", "actor": "claims.actor"},
        transitive_tag_keys=["repository"],
    )
    rule.issuers.add(issuer)
    return rule


@pytest.fixture
def admin_client_for(db):
    """``admin_client_for(tenant, role="operator")`` → a fresh test client logged in as a member of
    ``tenant`` with ``role`` (``role="superuser"``: a superuser, no tenant needed)."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tenants.models import Membership

    def make(tenant=None, role: str = "operator") -> Client:
        User = get_user_model()
        name = f"{role}-{uuid.uuid4().hex[:8]}"
        if role == "superuser":
            user = User.objects.create_superuser(username=name, password="pw", email="")
        else:
            user = User.objects.create_user(username=name, password="pw", is_staff=True)
            if tenant is not None:
                Membership.objects.create(user=user, tenant=tenant, role=role)
        client = Client()
        client.force_login(user)
        client.user = user
        return client

    return make


def poll(check, *, timeout: float, interval: float = 0.1, stop=None):
    """``check()``'s first truthy value within ``timeout`` (None if none): for what only polling
    can see, such as another process becoming ready. ``stop()`` true ends the wait early."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = check()
        if value or (stop is not None and stop()) or time.monotonic() > deadline:
            return value or None
        pause.wait(interval)


# Tests that no database, cache or broker can change: the pure core and the console's content (pure by
# the import contracts in pyproject.toml), the CI client and the fetcher (the standard library against
# servers the tests start), and checks of the repository's files (lint, layers, references, manifests).
# CI's second pass runs the suite again on PostgreSQL and Redis (.ci/run sets JWTEX_TEST_BACKENDS_ONLY=1
# there); these would repeat the first pass unchanged, so that pass leaves them out. One of them that
# uses the database still runs.
BACKEND_FREE_TESTS = (
    "tests/exchange/core/",
    "tests/exchange/console/",
    "tests/exchange/upstream/test_fetch.py",
    "tests/ci/test_client.py",
    "tests/ci/test_action.py",
    "tests/ci/test_gitlab_component.py",
    "tests/deploy/test_compose.py",
    "tests/deploy/test_containerfile.py",
    "tests/deploy/test_kubernetes.py",
    "tests/test_layers.py",
    "tests/test_lint.py",
    "tests/test_references.py",
    "tests/test_self_contained.py",
)


def _uses_the_database(item: pytest.Item) -> bool:
    fixtures = set(getattr(item, "fixturenames", ()))
    return item.get_closest_marker("django_db") is not None or bool({"db", "transactional_db"} & fixtures)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("JWTEX_TEST_BACKENDS_ONLY") != "1":
        return
    left_out = [i for i in items if i.nodeid.startswith(BACKEND_FREE_TESTS) and not _uses_the_database(i)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        out = set(map(id, left_out))
        items[:] = [i for i in items if id(i) not in out]


def runtime_clear() -> None:
    """Forget every tenant runtime this process holds (what a restart does)."""
    from exchange.runtime import runtime_reset

    runtime_reset()


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Rate-limit counters, refetch cool-downs and runtimes never leak between tests."""
    from django.core.cache import cache

    from exchange.services.mapper import mapper_state_reset

    cache.clear()
    runtime_clear()
    mapper_state_reset()
    yield
    runtime_clear()
