"""OpenAPI for the endpoints drf-spectacular cannot see (docs/endpoints.md#tenant-issuer-endpoints,
docs/endpoints.md#raw-exchange, docs/endpoints.md#rfc-8693-token-exchange).

The JSON API is a DRF view and documents itself; the raw and RFC 8693 exchanges, discovery and
the JWKS are plain Django views (their wire formats are not DRF's), so this postprocessing hook
adds them. One schema then describes every public endpoint, and schemathesis
(tests/security/test_schemathesis.py) fuzzes them all against it.
"""

from __future__ import annotations

from typing import Any

from ..core.limits import MAX_TOKEN_BYTES
from ..protocol import TOKEN_EXCHANGE_GRANT as GRANT, TOKEN_TYPE_ID_TOKEN, TOKEN_TYPE_JWT

_SLUG = {"in": "path", "name": "slug", "required": True, "schema": {"type": "string"}, "description": "tenant slug"}
_ERROR = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


_EXCHANGE_ERRORS = {
    "400": _error("invalid_request"),
    "401": _error("invalid_token"),
    "403": _error("access_denied"),
    "404": _error("not_found (tenant or issuer)"),
    "405": _error("only POST"),
    "413": _error("token too large"),
    "429": _error("rate limited"),
    "503": _error("temporarily_unavailable"),
}
# RFC 8693 §2.2.2: every refused subject token is 400 (invalid_request, invalid_target, …).
_TOKEN_ERRORS = {key: value for key, value in _EXCHANGE_ERRORS.items() if key not in ("401", "403")}

_SCHEMAS: dict[str, Any] = {
    "TokenExchangeRequest": {
        "type": "object",
        "properties": {
            "grant_type": {"type": "string", "enum": [GRANT]},
            "subject_token": {"type": "string", "description": "the upstream OIDC token (compact JWS)"},
            "subject_token_type": {"type": "string", "enum": [TOKEN_TYPE_JWT, TOKEN_TYPE_ID_TOKEN]},
            "audience": {"type": "string", "description": "an audience the matching rule allows"},
            "requested_token_type": {"type": "string", "enum": [TOKEN_TYPE_JWT]},
        },
        "required": ["grant_type", "subject_token", "subject_token_type"],
        "additionalProperties": False,
    },
    "TokenExchangeResponse": {
        "type": "object",
        "properties": {
            "access_token": {"type": "string"},
            "issued_token_type": {"type": "string", "enum": [TOKEN_TYPE_JWT]},
            "token_type": {"type": "string", "enum": ["N_A"]},
            "expires_in": {"type": "integer"},
        },
        "required": ["access_token", "issued_token_type", "token_type", "expires_in"],
    },
    "OpenIDConfiguration": {
        "type": "object",
        "properties": {
            "issuer": {"type": "string"},
            "jwks_uri": {"type": "string"},
            "token_endpoint": {"type": "string"},
            "response_types_supported": {"type": "array", "items": {"type": "string"}},
            "subject_types_supported": {"type": "array", "items": {"type": "string"}},
            "id_token_signing_alg_values_supported": {"type": "array", "items": {"type": "string"}},
            "grant_types_supported": {"type": "array", "items": {"type": "string"}},
        },
        "required": [
            "issuer",
            "jwks_uri",
            "token_endpoint",
            "response_types_supported",
            "subject_types_supported",
            "id_token_signing_alg_values_supported",
            "grant_types_supported",
        ],
    },
    "JWKS": {
        "type": "object",
        "properties": {
            "keys": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "kty": {"type": "string"},
                        "kid": {"type": "string"},
                        "alg": {"type": "string"},
                        "use": {"type": "string", "enum": ["sig"]},
                    },
                    "required": ["kty", "kid", "alg", "use"],
                    # Public keys only: a private member here would be a leak.
                    "not": {"anyOf": [{"required": [name]} for name in ("d", "p", "q", "dp", "dq", "qi", "k")]},
                },
            }
        },
        "required": ["keys"],
    },
}


def _json(schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _document_get(operation_id: str, summary: str, schema: str) -> dict[str, Any]:
    """One of the tenant's issuer documents: a GET answered by ``schema``, or 404."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["issuer"],
            "parameters": [_SLUG],
            "responses": {
                "200": _json({"$ref": f"#/components/schemas/{schema}"}),
                "404": _error("unknown or disabled tenant"),
            },
        }
    }


def _exchange_raw() -> dict[str, Any]:
    issuer_id = {
        "in": "query",
        "name": "issuerId",
        "required": False,
        "schema": {"type": "string"},
        "description": "pin one of the tenant's issuers; default: chosen by the token's iss",
    }
    return {
        "post": {
            "operationId": "exchange_raw",
            "summary": "Exchange: the raw upstream JWT in, the new JWT out (drop-in for the original jwtex)",
            "tags": ["exchange"],
            "parameters": [_SLUG, issuer_id],
            "requestBody": {
                "required": True,
                "content": {
                    "application/jwt": {
                        "schema": {"type": "string", "maxLength": MAX_TOKEN_BYTES},
                        "example": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
                    }
                },
            },
            "responses": {
                "200": {
                    "description": "the new token, and nothing else (no newline)",
                    "content": {"application/jwt": {"schema": {"type": "string"}}},
                },
                **_EXCHANGE_ERRORS,
            },
        }
    }


def _exchange_rfc8693() -> dict[str, Any]:
    form = {"schema": {"$ref": "#/components/schemas/TokenExchangeRequest"}}
    return {
        "post": {
            "operationId": "exchange_rfc8693",
            "summary": "RFC 8693 token exchange",
            "tags": ["exchange"],
            "parameters": [_SLUG],
            "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": form}},
            "responses": {
                "200": _json({"$ref": "#/components/schemas/TokenExchangeResponse"}, "RFC 8693 §2.2.1"),
                **_TOKEN_ERRORS,
            },
        }
    }


def _paths() -> dict[str, Any]:
    return {
        "/t/{slug}/.well-known/openid-configuration": _document_get(
            "openid_configuration", "OIDC discovery for the tenant's issuer", "OpenIDConfiguration"
        ),
        "/t/{slug}/.well-known/jwks.json": _document_get("jwks", "The tenant's public signing keys", "JWKS"),
        "/t/{slug}/.well-known/jwks": _document_get(
            "jwks_legacy", "The tenant's public signing keys (the original jwtex path)", "JWKS"
        ),
        "/t/{slug}/exchange": _exchange_raw(),
        "/t/{slug}/token": _exchange_rfc8693(),
    }


def document_exchange_endpoints(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the non-DRF endpoints."""
    result.setdefault("components", {}).setdefault("schemas", {}).update(_SCHEMAS)
    result.setdefault("paths", {}).update(_paths())
    exchange = result["paths"].get("/api/v1/t/{slug}/exchange", {}).get("post")
    if exchange is not None:
        exchange.setdefault("tags", ["exchange"])
        exchange["responses"].setdefault("405", _error("only POST"))
    # The serializer refuses unknown fields; say so, so clients and fuzzers know.
    request_schema = result["components"]["schemas"].get("ExchangeRequest")
    if request_schema is not None:
        request_schema["additionalProperties"] = False
    return result
