"""Application defaults in one place (CONVENTIONS §6).

Each value may be overridden by a Django setting of the same name prefixed ``JWTEX_``;
the environment is read only in ``jwtex_site/settings.py``.
"""

from __future__ import annotations

from django.conf import settings


def _setting(name: str, default):
    return getattr(settings, f"JWTEX_{name}", default)


DEFAULT_AUDIENCE = "sts.amazonaws.com"
TENANT_RATE_LIMIT_PER_MINUTE = 6000

# SPEC §4
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_ALGORITHMS = ("RS256", "ES256")
SUPPORTED_UPSTREAM_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_LEEWAY = 60
DEFAULT_MAX_TOKEN_AGE = 86400
UNKNOWN_KID_COOLDOWN = 30

# SPEC §5
DEFAULT_LIFETIME = 900
CEL_MAX_EXPRESSION_LENGTH = 4096
# Evaluation cost (issue 5 §6; see exchange.rules): the CEL engine holds the GIL while it runs
# and its map/filter copy their result at every step, so a comprehension costs up to
# items² × result size. Comprehensions may not nest, range only over claims, at most this many
# per expression; and a rule that iterates is evaluated only over claims whose lists and maps
# hold at most CEL_MAX_ITERABLE_ITEMS items each and CEL_MAX_CLAIM_ITEMS in all (else: deny).
CEL_MAX_COMPREHENSIONS = 4
CEL_MAX_ITERABLE_ITEMS = 128
CEL_MAX_CLAIM_ITEMS = 512

# Our JWKS / discovery documents are cacheable for this long (seconds). The key
# pre-publish window must be at least this, or a relying party could miss a new key.
JWKS_MAX_AGE = 3600
DISCOVERY_MAX_AGE = 3600

# Upstream fetches (SPEC §3: every upstream fetch gives up within 10 s).
FETCH_CONNECT_TIMEOUT = 3.0
FETCH_TOTAL_TIMEOUT = 10.0
FETCH_MAX_BYTES = 512 * 1024


def max_token_bytes() -> int:
    return int(_setting("MAX_TOKEN_BYTES", MAX_TOKEN_BYTES))


def allow_insecure_issuers() -> bool:
    return bool(_setting("ALLOW_INSECURE_ISSUERS", False))


def rate_limit_per_address() -> int:
    return int(_setting("RATE_LIMIT_PER_ADDRESS", 600))


def config_recheck_seconds() -> float:
    """How long a process trusts its cached tenant runtime before re-reading its version."""
    return float(_setting("CONFIG_RECHECK_SECONDS", 2.0))


def unknown_kid_cooldown() -> float:
    return float(_setting("UNKNOWN_KID_COOLDOWN", UNKNOWN_KID_COOLDOWN))
