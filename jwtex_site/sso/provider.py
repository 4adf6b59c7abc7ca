"""The admin's OpenID Connect provider: its discovery document, its keys, and the ID token.

Everything about the provider comes from its discovery document (OpenID Connect Discovery 1.0),
whose ``issuer`` must equal the configured one exactly (§4.3). The ID token is verified by the
same code that verifies upstream CI tokens (``exchange.core.verification``: a strict compact JWS,
the signature with the provider's published keys only, algorithms from those keys and never
``none`` or HMAC, ``iss`` exact, ``aud``, ``exp``/``nbf``/``iat``), then by OpenID Connect Core
§3.1.3.7's own rules: ``sub`` and ``iat`` present, ``azp`` when there are several audiences, and
the ``nonce`` of this sign-in (PKCE and ``state`` are the relying party's, jwtex_site/sso/views).

Documents are kept in the cache for an hour; a token whose ``kid`` is not among the cached keys
fetches the key set once more (a provider rotating its keys), at most once a minute.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import requests
from django.core.cache import cache

from exchange.conf import AdminSignOn
from exchange.core import strict_json
from exchange.core.compact_jws import jwt_parse
from exchange.core.errors import ExchangeError, UnknownKeyId
from exchange.core.jwks import SUPPORTED_ALGORITHMS, KeySet, key_fits
from exchange.core.values import IssuerConfig
from exchange.core.verification import jwt_verify

logger = logging.getLogger("jwtex.sso")

DOCUMENT_SECONDS = 3600
REFETCH_COOLDOWN = 60
HTTP_TIMEOUT = 10
# The ID token is used once, at once; providers issue them for 5 minutes (Keycloak) to an hour.
MAX_ID_TOKEN_AGE = 86400
LEEWAY = 60


class SignOnRefused(Exception):
    """The provider's answer cannot be trusted or used: the sign-in is refused. ``reason`` is
    for the log and the operator's page; it never holds a token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str
    id_token_algorithms: tuple[str, ...]
    token_auth_methods: tuple[str, ...]


def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        response = requests.get(
            url, timeout=HTTP_TIMEOUT, headers={"Accept": "application/json"}, allow_redirects=False
        )
    except requests.RequestException as exc:
        raise SignOnRefused(f"The identity provider's {what} could not be fetched ({type(exc).__name__}).") from None
    if response.status_code != 200:
        raise SignOnRefused(f"The identity provider's {what} answered HTTP {response.status_code}.")
    try:
        document = strict_json.loads(response.text)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise SignOnRefused(f"The identity provider's {what} is not a JSON object.")
    return document


def _same_scheme(url: object, issuer: str) -> bool:
    # An https issuer's endpoints are https too: its answers are only as safe as the weakest.
    schemes = ("https://",) if issuer.startswith("https://") else ("https://", "http://")
    return isinstance(url, str) and url.startswith(schemes)


def provider_metadata(*, sign_on: AdminSignOn) -> ProviderMetadata:
    key = f"jwtex:sso:discovery:{sign_on.issuer}"
    document = cache.get(key)
    if document is None:
        document = _get_json(sign_on.issuer.rstrip("/") + "/.well-known/openid-configuration", "discovery document")
        cache.set(key, document, DOCUMENT_SECONDS)
    if document.get("issuer") != sign_on.issuer:  # OpenID Connect Discovery §4.3: exactly
        cache.delete(key)
        raise SignOnRefused(
            f"The identity provider's discovery document names the issuer {str(document.get('issuer'))[:200]!r}, "
            f"not {sign_on.issuer!r} as configured (JWTEX_ADMIN_OIDC_ISSUER must match exactly)."
        )
    for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
        if not _same_scheme(document.get(name), sign_on.issuer):
            cache.delete(key)
            raise SignOnRefused(f"The identity provider's discovery document has no usable {name}.")
    end_session = document.get("end_session_endpoint")
    algorithms = document.get("id_token_signing_alg_values_supported") or ["RS256"]
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return ProviderMetadata(
        issuer=sign_on.issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks_uri=document["jwks_uri"],
        end_session_endpoint=end_session if _same_scheme(end_session, sign_on.issuer) else "",
        id_token_algorithms=tuple(a for a in algorithms if isinstance(a, str)),
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)),
    )


def provider_keys(*, metadata: ProviderMetadata, refresh: bool = False) -> KeySet:
    key = f"jwtex:sso:jwks:{metadata.jwks_uri}"
    document = None if refresh else cache.get(key)
    if document is None:
        document = _get_json(metadata.jwks_uri, "key set")
        cache.set(key, document, DOCUMENT_SECONDS)
    try:
        return KeySet.from_jwks(document)
    except ValueError as exc:
        raise SignOnRefused(f"The identity provider's key set is malformed: {exc}.") from None


def _accepted_algorithms(metadata: ProviderMetadata, keys: KeySet) -> tuple[str, ...]:
    """The provider's ID token algorithms that one of its published keys can verify; never
    ``none`` or HMAC (RFC 8725 §3.1), whatever the discovery document says."""
    listed = [a for a in SUPPORTED_ALGORITHMS if a in metadata.id_token_algorithms]
    return tuple(sorted(a for a in listed if any(key_fits(k, a) for k in keys.keys)))


def _verify_with(token: str, sign_on: AdminSignOn, metadata: ProviderMetadata, keys: KeySet, now: float) -> dict:
    config = IssuerConfig(
        issuer_id="admin-sign-on",
        issuer=sign_on.issuer,
        audiences=(sign_on.client_id,),
        algorithms=_accepted_algorithms(metadata, keys),
        leeway=LEEWAY,
        max_token_age=MAX_ID_TOKEN_AGE,
    )
    return dict(jwt_verify(jwt_parse(token), issuer=config, keys=keys, now=now).claims)


def id_token_verify(*, token: str, nonce: str | None, sign_on: AdminSignOn, now: float) -> dict[str, Any]:
    """The ID token's claims once verified (see the module's docstring), or ``SignOnRefused``."""
    if not isinstance(token, str) or not token:
        raise SignOnRefused("The identity provider's token answer has no ID token.")
    metadata = provider_metadata(sign_on=sign_on)
    try:
        try:
            claims = _verify_with(token, sign_on, metadata, provider_keys(metadata=metadata), now)
        except UnknownKeyId:
            if not cache.add(f"jwtex:sso:jwks-refetch:{metadata.jwks_uri}", 1, REFETCH_COOLDOWN):
                raise
            claims = _verify_with(token, sign_on, metadata, provider_keys(metadata=metadata, refresh=True), now)
    except ExchangeError as exc:
        raise SignOnRefused(f"The ID token was refused: {exc.reason}") from None
    # OpenID Connect Core §3.1.3.7 and §2, beyond what every JWT must satisfy.
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise SignOnRefused("The ID token was refused: it has no sub (subject) claim.")
    if "iat" not in claims:
        raise SignOnRefused("The ID token was refused: it has no iat (issued at) claim.")
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if ("azp" in claims or len(audiences) > 1) and claims.get("azp") != sign_on.client_id:
        raise SignOnRefused("The ID token was refused: it was issued to another party (azp).")
    token_nonce = claims.get("nonce")
    if not nonce or not isinstance(token_nonce, str) or not hmac.compare_digest(token_nonce.encode(), nonce.encode()):
        raise SignOnRefused("The ID token was refused: its nonce is not the one this sign-in sent.")
    return claims


def client_assertion(*, sign_on: AdminSignOn, token_endpoint: str, now: float) -> str:
    """A ``private_key_jwt`` client assertion (OpenID Connect Core §9, RFC 7523 §3): signed by
    the key in ``JWTEX_ADMIN_OIDC_PRIVATE_KEY_FILE`` (RSA: RS256, EC P-256: ES256), for the
    token endpoint only, living a minute."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    private_key = load_pem_private_key(Path(sign_on.private_key_file).read_bytes(), password=None)
    algorithm = "ES256" if isinstance(private_key, ec.EllipticCurvePrivateKey) else "RS256"
    issued = int(now)
    payload = {
        "iss": sign_on.client_id,
        "sub": sign_on.client_id,
        "aud": token_endpoint,
        "jti": secrets.token_urlsafe(16),
        "iat": issued,
        "exp": issued + 60,
    }
    headers = {"kid": sign_on.private_key_id} if sign_on.private_key_id else None
    return jwt.encode(payload, private_key, algorithm=algorithm, headers=headers)
