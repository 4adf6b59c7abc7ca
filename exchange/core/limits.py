"""The numbers of the contract (docs/errors.md, docs/verification.md, docs/rules.md) and the defaults
every layer starts from.

Deployment-specific overrides (``JWTEX_…`` Django settings) are read by ``exchange.conf``;
these are the values when nothing overrides them. The defaults of what an environment variable
sets (the per-address rate limit, the fetch budget, …) are jwtex_site/environment.py's.
"""

from __future__ import annotations

from .aws import STS_AUDIENCE

DEFAULT_AUDIENCE = STS_AUDIENCE
TENANT_RATE_LIMIT_PER_MINUTE = 6000

# docs/verification.md#structure, docs/verification.md#issuer-settings
MAX_TOKEN_BYTES = 16 * 1024
DEFAULT_ALGORITHMS = ("RS256", "ES256")
SUPPORTED_UPSTREAM_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
DEFAULT_LEEWAY = 60
DEFAULT_MAX_TOKEN_AGE = 86400
UNKNOWN_KID_COOLDOWN = 30

# docs/rules.md#lifetime, docs/rules.md#evaluation-limits
DEFAULT_LIFETIME = 900
CEL_MAX_EXPRESSION_LENGTH = 4096
# Evaluation cost (docs/rules.md#evaluation-limits, docs/rules.md#rule-cost-budget; see
# exchange.core.rules.cel_cost and budget): the CEL engine holds the GIL while it runs and has no
# cost hook, so every rule's worst case is computed from its expression when it is saved, in cost
# units (at most about 0.3 ns of CPU each on the reference machine, as bench/rule_cost.py measures
# them). A rule may cost at most RULE_COST_BUDGET over claims whose lists and maps hold at most
# CEL_MAX_ITERABLE_ITEMS items each and CEL_MAX_CLAIM_ITEMS in all (checked per exchange for the
# rules whose cost depends on it: larger claims deny them); the rules one exchange evaluates may
# cost EXCHANGE_COST_BUDGET together (the candidate set has a budget of its own). Figures: README,
# "What a tenant can and cannot do to the service".
CEL_MAX_ITERABLE_ITEMS = 128
CEL_MAX_CLAIM_ITEMS = 512
RULE_COST_BUDGET = 50_000_000
EXCHANGE_COST_BUDGET = 50_000_000
# Claims typed into the simulator: no more than a token's payload can hold.
MAX_CLAIMS_JSON_BYTES = MAX_TOKEN_BYTES

# Our JWKS / discovery documents are cacheable for this long (seconds). The key
# pre-publish window must be at least this, or a relying party could miss a new key.
JWKS_MAX_AGE = 3600
DISCOVERY_MAX_AGE = 3600

# Upstream fetches (docs/errors.md#fetch-budgets: every upstream fetch gives up within 10 s).
FETCH_CONNECT_TIMEOUT = 3.0
FETCH_TOTAL_TIMEOUT = 10.0
FETCH_MAX_BYTES = 512 * 1024
# How long the last good upstream key set may be used after it was fetched (or confirmed).
JWKS_MAX_STALENESS = 86400
