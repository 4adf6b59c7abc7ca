"""Signing keys held in AWS KMS (README, "Signing keys held in AWS KMS"): the only module that
speaks to KMS (boto3), so exchange.core stays pure and exchange.keys keeps the lifecycle.

- ``kms_key_create``: CreateKey (asymmetric, ``SIGN_VERIFY``: ``ECC_NIST_P256`` for ES256,
  ``RSA_2048`` for RS256; tagged with the tenant and jwtex), then GetPublicKey, turned into the
  JWK that the tenant's JWKS publishes (RFC 7638 kid, like a local key's).
- ``kms_signer``: the callable a ``SignerKey`` signs through — KMS ``Sign``, ECDSA's DER turned
  into JWS's raw r||s (RFC 7518 §3.4). Any failure (no connection, throttled, access denied, the
  key disabled or pending deletion, no credentials) is ``TemporarilyUnavailable``: a 503, never a
  500, and no token.
- ``kms_key_schedule_deletion``: ScheduleKeyDeletion of a retired or revoked key.

Credentials, and the endpoint (``AWS_ENDPOINT_URL_KMS``), come from the standard AWS chain
(environment, shared config, the instance or task role): jwtex stores none. Calls are bounded
(1 s to connect, 2 s to answer, one retry), so an unreachable KMS costs an exchange at most a
few seconds, not a thread for a minute.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # light; boto3 itself is imported when first used

from .core import jwk
from .core.errors import TemporarilyUnavailable

__all__ = [
    "KEY_SPECS",
    "KmsError",
    "KmsKey",
    "kms_clients_reset",
    "kms_key_create",
    "kms_key_schedule_deletion",
    "kms_signer",
]

logger = logging.getLogger("jwtex.kms")

KEY_SPECS = {"ES256": "ECC_NIST_P256", "RS256": "RSA_2048"}
SIGNING_ALGORITHMS = {"ES256": "ECDSA_SHA_256", "RS256": "RSASSA_PKCS1_V1_5_SHA_256"}
# Sign takes a message of at most 4,096 bytes with MessageType RAW; a longer signing input (a token
# with many session tags) goes as its SHA-256 digest with MessageType DIGEST: the same signature.
RAW_MESSAGE_LIMIT = 4096
# 7–30 days; AWS's default, the longest: a key retired by mistake can still be recovered.
DELETION_WINDOW_DAYS = 30
# Tags on every key jwtex makes: which tenant it signs for, and who manages it.
TENANT_TAG, MANAGED_BY_TAG = "jwtex:tenant", "managed-by"

_CONFIG = dict(
    connect_timeout=1, read_timeout=2, retries={"total_max_attempts": 2, "mode": "standard"}, max_pool_connections=16
)
_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


class KmsError(Exception):
    """KMS could not make, read or schedule a key; the message says which call and why."""


@dataclass(frozen=True)
class KmsKey:
    key_id: str  # the key's ARN: its region and account are in it
    public_jwk: dict[str, Any]


def _client(region: str) -> Any:
    # One client per region and process (boto3 clients are thread-safe; making one is not).
    client = _clients.get(region)
    if client is None:
        with _clients_lock:
            client = _clients.get(region)
            if client is None:
                # Imported here: boto3 costs every process ~0.1 s to import, and most tenants sign locally.
                import boto3
                from botocore.config import Config

                client = _clients[region] = boto3.session.Session().client(
                    "kms", region_name=region, config=Config(**_CONFIG)
                )
    return client


def kms_clients_reset() -> None:
    """Forget the clients (they keep the endpoint and credentials they were made with)."""
    with _clients_lock:
        _clients.clear()


def _why(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def arn_region(key_id: str) -> str:
    return key_id.split(":")[3]


def arn_account(key_id: str) -> str:
    return key_id.split(":")[4]


def kms_key_create(*, region: str, algorithm: str, tenant_slug: str, account_id: str = "") -> KmsKey:
    """A new KMS signing key for ``tenant_slug`` and its public JWK. ``account_id``: refuse (and
    schedule the deletion of) a key the credentials made in another account."""
    client = _client(region)
    try:
        created = client.create_key(
            KeyUsage="SIGN_VERIFY",
            KeySpec=KEY_SPECS[algorithm],
            Description=f"jwtex signing key of tenant {tenant_slug} ({algorithm})",
            Tags=[{"TagKey": TENANT_TAG, "TagValue": tenant_slug}, {"TagKey": MANAGED_BY_TAG, "TagValue": "jwtex"}],
        )
    except (BotoCoreError, ClientError) as exc:
        raise KmsError(f"AWS KMS CreateKey in {region} failed: {_why(exc)}") from exc
    key_id = created["KeyMetadata"]["Arn"]
    try:
        if account_id and arn_account(key_id) != account_id:
            raise KmsError(
                f"AWS KMS made the key in account {arn_account(key_id)}, not the tenant's {account_id}: "
                "check the credentials jwtex runs with"
            )
        public = client.get_public_key(KeyId=key_id)
        if SIGNING_ALGORITHMS[algorithm] not in public.get("SigningAlgorithms", ()):
            raise KmsError(f"AWS KMS key {key_id} cannot sign with {SIGNING_ALGORITHMS[algorithm]}")
        return KmsKey(key_id=key_id, public_jwk=jwk.public_jwk_from_spki(public["PublicKey"], algorithm=algorithm))
    except (BotoCoreError, ClientError, ValueError, KmsError) as exc:
        kms_key_schedule_deletion(key_id=key_id)  # of no use to anyone: do not leave it behind
        if isinstance(exc, KmsError):
            raise
        raise KmsError(f"AWS KMS GetPublicKey of {key_id} failed: {_why(exc)}") from exc


def kms_key_schedule_deletion(*, key_id: str) -> bool:
    """Schedule the deletion of ``key_id`` (it cannot sign from now on). True when done, or when it
    was already pending deletion or gone; False (logged) when KMS could not be asked."""
    try:
        _client(arn_region(key_id)).schedule_key_deletion(KeyId=key_id, PendingWindowInDays=DELETION_WINDOW_DAYS)
    except ClientError as exc:
        if _why(exc) in ("KMSInvalidStateException", "NotFoundException"):  # pending deletion already, or gone
            return True
        logger.warning("KMS key deletion not scheduled", extra={"jwtex": {"key": key_id, "error": _why(exc)}})
        return False
    except (BotoCoreError, IndexError) as exc:
        logger.warning("KMS key deletion not scheduled", extra={"jwtex": {"key": key_id, "error": _why(exc)}})
        return False
    return True


def kms_signer(*, key_id: str, algorithm: str, kid: str) -> Callable[[bytes], bytes]:
    """The ``SignerKey.remote_sign`` of a KMS key: signing input → JWS signature."""
    client = _client(arn_region(key_id))
    kms_algorithm = SIGNING_ALGORITHMS[algorithm]

    def sign(signing_input: bytes) -> bytes:
        if len(signing_input) <= RAW_MESSAGE_LIMIT:
            message, message_type = signing_input, "RAW"
        else:
            message, message_type = hashlib.sha256(signing_input).digest(), "DIGEST"
        try:
            answer = client.sign(
                KeyId=key_id, Message=message, MessageType=message_type, SigningAlgorithm=kms_algorithm
            )
            signature = answer["Signature"]
            # KMS writes ECDSA signatures in DER (RFC 3279); RSASSA-PKCS1-v1_5 ones are the same in JWS.
            return jwk.ecdsa_der_to_raw(signature) if algorithm == "ES256" else bytes(signature)
        except (BotoCoreError, ClientError, KeyError, ValueError) as exc:
            logger.warning("KMS Sign failed", extra={"jwtex": {"kid": kid, "key": key_id, "error": _why(exc)}})
            raise TemporarilyUnavailable(
                "The tenant's signing key is unavailable right now; retry later.", reason=f"AWS KMS Sign: {_why(exc)}"
            ) from None

    return sign
