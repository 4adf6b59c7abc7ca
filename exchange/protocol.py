"""Protocol vocabulary: the URNs and token types of RFC 8693, and the OIDC discovery document
each tenant issuer serves (docs/endpoints.md#tenant-issuer-endpoints). Values only; no Django."""

from __future__ import annotations

from typing import Any

from .core.aws import AWS_TAGS_CLAIM

# RFC 8693 §2.1, §3
TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
TOKEN_TYPE_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
SUBJECT_TOKEN_TYPES = (TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN)
# RFC 8693 §2.2.1: the issued token is not an OAuth access token.
ISSUED_TOKEN_TYPE_NA = "N_A"


def jwks_uri(issuer_url: str) -> str:
    return f"{issuer_url}/.well-known/jwks.json"


def discovery_document(*, issuer_url: str, algorithms: list[str], served_url: str | None = None) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 §3, with what AWS IAM and RFC 8693 clients read. ``served_url``
    is where jwtex serves the tenant when its issuer is published elsewhere: static hosting takes
    no POST, so the token endpoint stays jwtex's (docs/endpoints.md#published-issuer-url)."""
    return {
        "issuer": issuer_url,
        "jwks_uri": jwks_uri(issuer_url),
        "token_endpoint": f"{served_url or issuer_url}/token",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "grant_types_supported": [TOKEN_EXCHANGE_GRANT],
        "token_endpoint_auth_methods_supported": ["none"],
        "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", AWS_TAGS_CLAIM],
    }
