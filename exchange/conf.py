"""Every ``JWTEX_`` setting behind one accessor object (docs/design/layout.md#settings-in-one-place).

The environment is read once, by ``jwtex_site/environment.py``, where each variable's default is
written; ``jwtex_site/settings.py`` sets a ``JWTEX_`` setting for every one of them, so they are
read here without a second default. The few settings no variable changes default to the
contract's numbers in ``exchange.core.limits``. Each property reads the Django setting when asked,
so a test's ``settings`` override takes effect at once. Nothing else reads ``JWTEX_`` settings.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from .core import limits
from .core.issuer_allowlist import IssuerAllowlist, allowlist_parse


def _get(name: str) -> Any:
    """A setting from the environment (jwtex_site/settings.py always sets it)."""
    return getattr(settings, f"JWTEX_{name}")


def _get_or(name: str, default: Any) -> Any:
    """A setting no variable changes: a deployment's settings module may, or the contract's default."""
    return getattr(settings, f"JWTEX_{name}", default)


@functools.lru_cache(maxsize=8)
def _allowlist(value: str) -> IssuerAllowlist | None:
    return allowlist_parse(value)


@dataclass(frozen=True)
class AdminSignOn:
    """The admin's single sign-on through an OpenID Connect provider (jwtex_site/sso;
    docs/operators.md#single-sign-on)."""

    issuer: str
    client_id: str
    client_secret: str
    private_key_file: str  # private_key_jwt (RFC 7523) instead of the secret, when set
    private_key_id: str
    scopes: str
    roles_claim: str
    roles_prefix: str
    superuser_value: str
    roles_exclusive: bool
    username_claim: str
    name: str  # what the login page's button says: "Sign in with {name}"

    @property
    def configured(self) -> bool:
        return bool(self.issuer and self.client_id and (self.client_secret or self.private_key_file))


class JwtexSettings:
    # --- the deployment ------------------------------------------------------------------------
    @property
    def public_url(self) -> str:
        """External base URL; tenant issuers live under it (docs/environment.md#variables)."""
        return str(_get("PUBLIC_URL")).rstrip("/")

    def issuer_url(self, slug: str) -> str:
        """A tenant's issuer: ``{JWTEX_PUBLIC_URL}/t/{slug}``, no trailing slash
        (docs/endpoints.md#tenant-issuer-endpoints)."""
        return f"{self.public_url}/t/{slug}"

    def tenant_issuer_url(self, *, slug: str, published_issuer_url: str = "") -> str:
        """The ``iss`` of a tenant's tokens: its published issuer URL when it has one
        (docs/endpoints.md#published-issuer-url), else the URL jwtex serves it under."""
        return published_issuer_url or self.issuer_url(slug)

    @property
    def publish_target(self) -> str:
        """Where published issuer documents are written: ``file:///dir`` or ``s3://bucket/prefix``
        (``JWTEX_PUBLISH_TARGET``; docs/endpoints.md#published-issuer-url). Empty: none."""
        return str(_get("PUBLISH_TARGET")).strip()

    @property
    def public_url_valid(self) -> bool:
        return bool(_get("PUBLIC_URL_VALID"))

    @property
    def production(self) -> bool:
        return bool(_get("PRODUCTION"))

    @property
    def bench_requested(self) -> bool:
        """A benchmark-only variable is set (exchange/ablation.py): refused in production mode."""
        return bool(_get("BENCH_REQUESTED"))

    @property
    def bench_ablate(self) -> tuple[str, ...]:
        """The per-exchange work a benchmark switched off (exchange/ablation.py)."""
        return tuple(_get("BENCH_ABLATE"))

    @property
    def bench_timeline(self) -> bool:
        return bool(_get("BENCH_TIMELINE"))

    @property
    def var_dir(self) -> Path:
        return Path(settings.VAR_DIR)

    # --- keys at rest -------------------------------------------------------------------------
    @property
    def key_encryption_keys(self) -> tuple[str, ...]:
        return tuple(_get("KEY_ENCRYPTION_KEYS"))

    @property
    def key_encryption_keys_generated(self) -> bool:
        return bool(_get("KEY_ENCRYPTION_KEYS_GENERATED"))

    # --- upstreams ----------------------------------------------------------------------------
    @property
    def allow_insecure_issuers(self) -> bool:
        return bool(_get("ALLOW_INSECURE_ISSUERS"))

    @property
    def unknown_kid_cooldown(self) -> float:
        return float(_get_or("UNKNOWN_KID_COOLDOWN", limits.UNKNOWN_KID_COOLDOWN))

    @property
    def request_fetch_budget(self) -> float:
        """How long a request may wait for an upstream fetch made on its behalf (docs/errors.md#fetch-budgets)."""
        return float(_get("REQUEST_FETCH_BUDGET"))

    @property
    def server_threads(self) -> int:
        """Request threads per web process (``JWTEX_SERVER_THREADS``): at most half of them may
        wait on upstream fetches at once (docs/errors.md#bursts)."""
        return int(_get("SERVER_THREADS"))

    @property
    def jwks_max_staleness(self) -> float:
        return float(_get_or("JWKS_MAX_STALENESS", limits.JWKS_MAX_STALENESS))

    # --- the exchange -------------------------------------------------------------------------
    @property
    def max_token_bytes(self) -> int:
        return int(_get_or("MAX_TOKEN_BYTES", limits.MAX_TOKEN_BYTES))

    @property
    def rate_limit_per_address(self) -> int:
        return int(_get("RATE_LIMIT_PER_ADDRESS"))

    @property
    def trusted_proxy_count(self) -> int:
        return int(_get("TRUSTED_PROXY_COUNT"))

    @property
    def config_recheck_seconds(self) -> float:
        """How long a process trusts its cached tenant runtime before re-reading its version."""
        return float(_get("CONFIG_RECHECK_SECONDS"))

    # --- the audit ----------------------------------------------------------------------------
    @property
    def audit_spool_dir(self) -> Path:
        """Where audit records wait while the database cannot take them (one file per process)."""
        configured = _get("AUDIT_SPOOL_DIR")
        return Path(configured) if configured else self.var_dir / "audit-spool"

    @property
    def allowed_upstream_issuers(self) -> IssuerAllowlist | None:
        """The operators' list of upstream issuers tenants may trust; None: any
        (docs/operators.md#allowed-upstream-issuers). Parsed once per value."""
        return _allowlist(str(_get("ALLOWED_UPSTREAM_ISSUERS") or ""))

    def upstream_issuer_problem(self, issuer: str) -> str | None:
        """Why the operators' list refuses ``issuer`` (the admin, ``jwtex_apply``, the exchange and
        ``manage.py check`` say the same), or None."""
        allowlist = self.allowed_upstream_issuers
        return None if allowlist is None else allowlist.problem(issuer)

    @property
    def mapper_allowed_hosts(self) -> frozenset[str]:
        """Host names a mapper webhook may resolve to private addresses at (operator-set)."""
        return frozenset(_get("MAPPER_ALLOWED_HOSTS"))

    # --- operations -----------------------------------------------------------------------------
    @property
    def metrics_token(self) -> str:
        return str(_get("METRICS_TOKEN"))

    @property
    def metrics_dir(self) -> str:
        """prometheus-client's multiprocess directory, or "" for this process's own registry."""
        return str(_get("METRICS_DIR"))

    @property
    def shared_cache(self) -> bool:
        return bool(_get("SHARED_CACHE"))

    # --- the admin ----------------------------------------------------------------------------
    @property
    def ci_action(self) -> str:
        """Where the admin's GitHub jobs find jwtex's Action: ``OWNER/REPO@REF`` ("" unset)."""
        return str(_get("CI_ACTION"))

    @property
    def ci_component(self) -> str:
        """Where the admin's GitLab jobs find jwtex's component: ``HOST/PATH/jwtex-token@VERSION``."""
        return str(_get("CI_COMPONENT"))

    @property
    def login_max_failures(self) -> int:
        return int(_get("LOGIN_MAX_FAILURES"))

    @property
    def login_max_failures_per_address(self) -> int:
        return int(_get_or("LOGIN_MAX_FAILURES_PER_ADDRESS", 4 * self.login_max_failures))

    @property
    def login_lockout_seconds(self) -> int:
        return int(_get("LOGIN_LOCKOUT_SECONDS"))

    @property
    def admin_local_login(self) -> bool:
        """Whether the admin's login page takes passwords (off: only single sign-on)."""
        return bool(_get("ADMIN_LOCAL_LOGIN"))

    @property
    def admin_sign_on(self) -> AdminSignOn:
        return AdminSignOn(
            issuer=str(_get("ADMIN_OIDC_ISSUER")),
            client_id=str(_get("ADMIN_OIDC_CLIENT_ID")),
            client_secret=str(_get("ADMIN_OIDC_CLIENT_SECRET")),
            private_key_file=str(_get("ADMIN_OIDC_PRIVATE_KEY_FILE")),
            private_key_id=str(_get("ADMIN_OIDC_PRIVATE_KEY_ID")),
            scopes=str(_get("ADMIN_OIDC_SCOPES")),
            roles_claim=str(_get("ADMIN_OIDC_ROLES_CLAIM")),
            roles_prefix=str(_get("ADMIN_OIDC_ROLES_PREFIX")),
            superuser_value=str(_get("ADMIN_OIDC_SUPERUSER_VALUE")),
            roles_exclusive=bool(_get("ADMIN_OIDC_ROLES_EXCLUSIVE")),
            username_claim=str(_get("ADMIN_OIDC_USERNAME_CLAIM")),
            name=str(_get("ADMIN_OIDC_NAME") or "single sign-on"),
        )


jwtex_settings = JwtexSettings()
