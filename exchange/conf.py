"""Every ``JWTEX_`` setting behind one accessor object (docs/design/layout.md#settings-in-one-place).

The environment is read once, in ``jwtex_site/settings.py``; defaults are the contract's
numbers in ``exchange.core.limits``. Each property reads the Django setting when asked, so a
test's ``settings`` override takes effect at once. Nothing else reads ``JWTEX_`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings

from .core import limits


def _get(name: str, default: Any) -> Any:
    return getattr(settings, f"JWTEX_{name}", default)


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
        return str(_get("PUBLIC_URL", "http://127.0.0.1:8000")).rstrip("/")

    def issuer_url(self, slug: str) -> str:
        """A tenant's issuer: ``{JWTEX_PUBLIC_URL}/t/{slug}``, no trailing slash
        (docs/endpoints.md#tenant-issuer-endpoints)."""
        return f"{self.public_url}/t/{slug}"

    @property
    def public_url_valid(self) -> bool:
        return bool(_get("PUBLIC_URL_VALID", True))

    @property
    def production(self) -> bool:
        return bool(_get("PRODUCTION", False))

    @property
    def bench_requested(self) -> bool:
        """A benchmark-only variable is set (exchange/ablation.py): refused in production mode."""
        return bool(_get("BENCH_REQUESTED", False))

    @property
    def bench_ablate(self) -> tuple[str, ...]:
        """The per-exchange work a benchmark switched off (exchange/ablation.py)."""
        return tuple(_get("BENCH_ABLATE", ()))

    @property
    def bench_timeline(self) -> bool:
        return bool(_get("BENCH_TIMELINE", False))

    @property
    def var_dir(self) -> Path:
        return Path(settings.VAR_DIR)

    # --- keys at rest -------------------------------------------------------------------------
    @property
    def key_encryption_keys(self) -> tuple[str, ...]:
        return tuple(_get("KEY_ENCRYPTION_KEYS", ()))

    @property
    def key_encryption_keys_generated(self) -> bool:
        return bool(_get("KEY_ENCRYPTION_KEYS_GENERATED", False))

    # --- upstreams ----------------------------------------------------------------------------
    @property
    def allow_insecure_issuers(self) -> bool:
        return bool(_get("ALLOW_INSECURE_ISSUERS", False))

    @property
    def unknown_kid_cooldown(self) -> float:
        return float(_get("UNKNOWN_KID_COOLDOWN", limits.UNKNOWN_KID_COOLDOWN))

    @property
    def request_fetch_budget(self) -> float:
        """How long a request may wait for an upstream fetch made on its behalf (docs/errors.md#fetch-budgets)."""
        return float(_get("REQUEST_FETCH_BUDGET", 2.0))

    @property
    def server_threads(self) -> int:
        """Request threads per web process (``JWTEX_SERVER_THREADS``): at most half of them may
        wait on upstream fetches at once (docs/errors.md#bursts)."""
        return int(_get("SERVER_THREADS", 8))

    @property
    def jwks_max_staleness(self) -> float:
        return float(_get("JWKS_MAX_STALENESS", limits.JWKS_MAX_STALENESS))

    # --- the exchange -------------------------------------------------------------------------
    @property
    def max_token_bytes(self) -> int:
        return int(_get("MAX_TOKEN_BYTES", limits.MAX_TOKEN_BYTES))

    @property
    def rate_limit_per_address(self) -> int:
        return int(_get("RATE_LIMIT_PER_ADDRESS", limits.RATE_LIMIT_PER_ADDRESS))

    @property
    def trusted_proxy_count(self) -> int:
        return int(_get("TRUSTED_PROXY_COUNT", 0))

    @property
    def config_recheck_seconds(self) -> float:
        """How long a process trusts its cached tenant runtime before re-reading its version."""
        return float(_get("CONFIG_RECHECK_SECONDS", 1.5))

    # --- the audit ----------------------------------------------------------------------------
    @property
    def audit_spool_dir(self) -> Path:
        """Where audit records wait while the database cannot take them (one file per process)."""
        configured = _get("AUDIT_SPOOL_DIR", "")
        return Path(configured) if configured else self.var_dir / "audit-spool"

    @property
    def mapper_allowed_hosts(self) -> frozenset[str]:
        """Host names a mapper webhook may resolve to private addresses at (operator-set)."""
        return frozenset(_get("MAPPER_ALLOWED_HOSTS", ()))

    # --- operations -----------------------------------------------------------------------------
    @property
    def metrics_token(self) -> str:
        return str(_get("METRICS_TOKEN", ""))

    @property
    def metrics_dir(self) -> str:
        """prometheus-client's multiprocess directory, or "" for this process's own registry."""
        return str(_get("METRICS_DIR", ""))

    @property
    def shared_cache(self) -> bool:
        return bool(_get("SHARED_CACHE", False))

    # --- the admin ----------------------------------------------------------------------------
    @property
    def ci_action(self) -> str:
        """Where the admin's GitHub jobs find jwtex's Action: ``OWNER/REPO@REF`` ("" unset)."""
        return str(_get("CI_ACTION", ""))

    @property
    def ci_component(self) -> str:
        """Where the admin's GitLab jobs find jwtex's component: ``HOST/PATH/jwtex-token@VERSION``."""
        return str(_get("CI_COMPONENT", ""))

    @property
    def login_max_failures(self) -> int:
        return int(_get("LOGIN_MAX_FAILURES", 5))

    @property
    def login_max_failures_per_address(self) -> int:
        return int(_get("LOGIN_MAX_FAILURES_PER_ADDRESS", 4 * self.login_max_failures))

    @property
    def login_lockout_seconds(self) -> int:
        return int(_get("LOGIN_LOCKOUT_SECONDS", 900))

    @property
    def admin_local_login(self) -> bool:
        """Whether the admin's login page takes passwords (off: only single sign-on)."""
        return bool(_get("ADMIN_LOCAL_LOGIN", True))

    @property
    def admin_sign_on(self) -> AdminSignOn:
        return AdminSignOn(
            issuer=str(_get("ADMIN_OIDC_ISSUER", "")),
            client_id=str(_get("ADMIN_OIDC_CLIENT_ID", "")),
            client_secret=str(_get("ADMIN_OIDC_CLIENT_SECRET", "")),
            private_key_file=str(_get("ADMIN_OIDC_PRIVATE_KEY_FILE", "")),
            private_key_id=str(_get("ADMIN_OIDC_PRIVATE_KEY_ID", "")),
            scopes=str(_get("ADMIN_OIDC_SCOPES", "openid email profile")),
            roles_claim=str(_get("ADMIN_OIDC_ROLES_CLAIM", "groups")),
            roles_prefix=str(_get("ADMIN_OIDC_ROLES_PREFIX", "jwtex:")),
            superuser_value=str(_get("ADMIN_OIDC_SUPERUSER_VALUE", "jwtex:superuser")),
            roles_exclusive=bool(_get("ADMIN_OIDC_ROLES_EXCLUSIVE", False)),
            username_claim=str(_get("ADMIN_OIDC_USERNAME_CLAIM", "preferred_username")),
            name=str(_get("ADMIN_OIDC_NAME", "") or "single sign-on"),
        )


jwtex_settings = JwtexSettings()
