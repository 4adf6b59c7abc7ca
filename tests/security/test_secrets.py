"""Secrets at rest and in logs (docs/operations.md#secrets-at-rest-and-in-logs): a database dump holds no
private key material, all keys can be re-encrypted under a new key-encryption key, and no log line —
allowed or refused exchange, any endpoint, any level — carries a raw token, a signature or a key."""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.management import CommandError, call_command
from django.db import connection

from exchange import keys as keys_module
from exchange.keys import signing_key_decrypt, signing_key_revoke
from exchange.models import ExchangeRecord, Issuer, KeyState, Rule, SigningKey
from jwtex_site.logging import JsonFormatter
from tests.conftest import make_tenant, runtime_clear

from . import jose
from .endpoints import ENDPOINTS, send

pytestmark = pytest.mark.django_db

OLD_KEK = "test-key-encryption-key-0123456789abcdef"  # tests/settings.py
NEW_KEK = "new-key-encryption-key-fedcba9876543210"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


def private_material(private_key) -> dict[str, str | bytes]:
    """Every form in which a private key could leak: PKCS#8 DER (raw, base64, base64url, hex)
    and each private number (JWK d, p, q, dp, dq, qi) raw, in hex, in decimal, and in base64 and
    base64url at each of the three byte alignments — so a PEM (PKCS#8 or traditional) or any
    other base64 container holding the number is found wherever the number starts in it."""
    der = private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    forms: dict[str, str | bytes] = {
        "DER": der,
        "DER base64": _b64(der),
        "DER base64url": jose.b64u(der),
        "DER hex": der.hex(),
    }
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        scalars = {"d": private_key.private_numbers().private_value}
    else:
        numbers = private_key.private_numbers()
        scalars = {
            "d": numbers.d,
            "p": numbers.p,
            "q": numbers.q,
            "dp": numbers.dmp1,
            "dq": numbers.dmq1,
            "qi": numbers.iqmp,
        }
    for name, value in scalars.items():
        raw = _uint(value)
        forms[f"JWK {name}"] = jose.b64u(raw)
        forms[f"{name} raw"] = raw
        forms[f"{name} hex"] = raw.hex()
        forms[f"{name} decimal"] = str(value)
        for offset in range(3):
            # Drop the edge characters, which depend on the bytes around the number.
            forms[f"{name} base64 @{offset}"] = _b64(raw[offset:])[4:-4]
            forms[f"{name} base64url @{offset}"] = jose.b64u(raw[offset:])[4:-4]
    return forms


def find_leaks(haystack: str | bytes, material: dict[str, str | bytes]) -> list[str]:
    """Names of the needles found in ``haystack``, also once line breaks (a PEM's, or their
    JSON escapes) are taken out, so base64 broken over lines is still found."""
    if isinstance(haystack, bytes):
        haystack = haystack + b"\0" + haystack.replace(b"\\n", b"").replace(b"\n", b"").replace(b"\r", b"")
    else:
        haystack = haystack + "\0" + haystack.replace("\\n", "").replace("\n", "").replace("\r", "")
    found = []
    for name, needle in material.items():
        if isinstance(haystack, bytes):
            needle_bytes = needle if isinstance(needle, bytes) else needle.encode()
            if needle_bytes in haystack:
                found.append(name)
        elif isinstance(needle, str) and needle in haystack:
            found.append(name)
    return found


@dataclass
class World:
    tenants: list
    material: dict[str, str | bytes]  # every tenant key, every form
    tokens: list[str]  # upstream tokens sent and tokens issued


@pytest.fixture
def world(client, settings, upstream) -> World:
    """Two tenants (ES256 and RS256) with issuers and rules, rotated once (so there are next,
    active, retiring and revoked keys), and exchanges allowed and refused on every endpoint."""
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    tenants = [
        make_tenant("acme", rate_limit_per_minute=0),
        make_tenant("initech", signing_algorithm="RS256", rate_limit_per_minute=0),
    ]
    from django.utils import timezone

    from exchange.keys import signing_key_rotate

    for tenant in tenants:
        issuer = Issuer.objects.create(
            tenant=tenant,
            issuer_id="ci",
            issuer=upstream.issuer,
            audiences=[upstream.audience],
            static_jwks=upstream.jwks,
        )
        rule = Rule.objects.create(
            tenant=tenant,
            name="main",
            when="claims.ref == 'refs/heads/main'",
            effect="allow",
            session_tags={"repository": "claims.repository"},
        )
        rule.issuers.add(issuer)
        signing_key_rotate(tenant_id=tenant.pk, now=timezone.now(), force=True)
    # Material of every key that still has a private part, read before anything can change it.
    material: dict[str, str | bytes] = {}
    for key in SigningKey.objects.exclude(private_key_encrypted=b""):
        for name, value in private_material(signing_key_decrypt(key.private_key_encrypted)).items():
            material[f"{key.tenant.slug}/{key.kid[:8]} {name}"] = value
    assert material
    tokens = []
    for tenant in tenants:
        for endpoint in ENDPOINTS:
            for token in (
                upstream.mint(),
                upstream.mint(ref="refs/heads/feature"),
                upstream.mint(headers={"kid": "nope"}),
            ):
                tokens.append(token)
                response = send(endpoint, client, token, slug=tenant.slug)
                if response.status_code == 200:
                    issued = (
                        response.content.decode()
                        if endpoint == "raw"
                        else (response.json().get("access_token") or response.json().get("token"))
                    )
                    tokens.append(issued)
    assert ExchangeRecord.objects.filter(decision="allowed").count() == 6
    return World(tenants=tenants, material=material, tokens=tokens)


# --- at rest --------------------------------------------------------------------------------------


def test_database_dump_holds_no_private_key_material(world):
    out = io.StringIO()
    call_command("dumpdata", stdout=out)
    dump = out.getvalue()
    assert "exchange.signingkey" in dump and "private_key_encrypted" in dump
    assert find_leaks(dump, world.material) == []
    # The blobs in the dump are Fernet tokens (version byte 0x80 → "gAAAAA"), not key bytes.
    for entry in json.loads(dump):
        if entry["model"] == "exchange.signingkey" and entry["fields"]["private_key_encrypted"]:
            blob = base64.b64decode(entry["fields"]["private_key_encrypted"])
            assert blob.startswith(b"gAAAAA")
            assert find_leaks(blob, world.material) == []


def test_raw_tables_hold_no_private_key_material(world):
    # Every row of every table, read with raw SQL: nothing the ORM might hide or transform.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                for value in row:
                    if value is None:
                        continue
                    data = bytes(value) if isinstance(value, (bytes, memoryview, bytearray)) else str(value).encode()
                    leaks = find_leaks(data, world.material)
                    assert leaks == [], (table, leaks)


def test_private_keys_are_encrypted_under_the_key_encryption_key(world, settings):
    for key in SigningKey.objects.exclude(private_key_encrypted=b""):
        settings.JWTEX_KEY_ENCRYPTION_KEYS = ["some-other-key-encryption-key-000000"]
        with pytest.raises(keys_module.KeyDecryptionError):
            signing_key_decrypt(key.private_key_encrypted)
        settings.JWTEX_KEY_ENCRYPTION_KEYS = [OLD_KEK]
        signing_key_decrypt(key.private_key_encrypted)


def test_retired_and_revoked_keys_have_no_private_part(world):
    from django.utils import timezone

    tenant = world.tenants[0]
    active = SigningKey.objects.get(tenant=tenant, state=KeyState.ACTIVE)
    signing_key_revoke(tenant=tenant, kid=active.kid, now=timezone.now())
    revoked = SigningKey.objects.get(pk=active.pk)
    assert revoked.state == KeyState.REVOKED and bytes(revoked.private_key_encrypted) == b""


def test_published_keys_and_exported_configuration_hold_no_private_members(world, client):
    for tenant in world.tenants:
        for key in client.get(f"/t/{tenant.slug}/.well-known/jwks.json").json()["keys"]:
            assert not {"d", "p", "q", "dp", "dq", "qi", "k", "oth"} & set(key), key
    out = io.StringIO()
    call_command("jwtex_export", stdout=out)
    assert find_leaks(out.getvalue(), world.material) == []
    assert "private" not in out.getvalue().lower()


# --- re-encryption ------------------------------------------------------------------------------


def test_reencrypt_command_moves_every_key_to_the_new_key_encryption_key(world, client, settings, upstream):
    before = {key.pk: bytes(key.private_key_encrypted) for key in SigningKey.objects.exclude(private_key_encrypted=b"")}
    settings.JWTEX_KEY_ENCRYPTION_KEYS = [NEW_KEK, OLD_KEK]
    out = io.StringIO()
    call_command("jwtex_reencrypt_keys", stdout=out)
    assert f"re-encrypted {len(before)} signing key(s)" in out.getvalue()
    after = {key.pk: bytes(key.private_key_encrypted) for key in SigningKey.objects.exclude(private_key_encrypted=b"")}
    assert after.keys() == before.keys() and all(after[pk] != before[pk] for pk in before)
    # Drop the old key: everything still decrypts, to the same key, and exchanges still work.
    settings.JWTEX_KEY_ENCRYPTION_KEYS = [NEW_KEK]
    runtime_clear()
    known_d = {value for name, value in world.material.items() if name.endswith(" JWK d")}
    for key in SigningKey.objects.exclude(private_key_encrypted=b""):
        assert private_material(signing_key_decrypt(key.private_key_encrypted))["JWK d"] in known_d  # the same keys
    for tenant in world.tenants:
        assert send("raw", client, upstream.mint(), slug=tenant.slug).status_code == 200
    # The old key alone no longer opens anything: the tenant's signing key is unavailable (503).
    settings.JWTEX_KEY_ENCRYPTION_KEYS = [OLD_KEK]
    runtime_clear()
    response = send("raw", client, upstream.mint(), slug="acme")
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    # Running it again is harmless.
    settings.JWTEX_KEY_ENCRYPTION_KEYS = [NEW_KEK]
    call_command("jwtex_reencrypt_keys", stdout=io.StringIO())


def test_reencrypt_command_changes_nothing_if_one_key_cannot_be_decrypted(world, settings):
    before = {key.pk: bytes(key.private_key_encrypted) for key in SigningKey.objects.exclude(private_key_encrypted=b"")}
    # A key encrypted under a KEK that is no longer configured.
    stray = SigningKey.objects.exclude(private_key_encrypted=b"").order_by("pk").last()
    settings.JWTEX_KEY_ENCRYPTION_KEYS = ["a-forgotten-key-encryption-key-000000"]
    blob = keys_module.signing_key_encrypt(decrypt_private_key_with(OLD_KEK, before[stray.pk]))
    SigningKey.objects.filter(pk=stray.pk).update(private_key_encrypted=blob)
    before[stray.pk] = blob
    settings.JWTEX_KEY_ENCRYPTION_KEYS = [NEW_KEK, OLD_KEK]
    with pytest.raises(CommandError, match="nothing was changed"):
        call_command("jwtex_reencrypt_keys", stdout=io.StringIO())
    after = {key.pk: bytes(key.private_key_encrypted) for key in SigningKey.objects.exclude(private_key_encrypted=b"")}
    assert after == before


def decrypt_private_key_with(kek: str, blob: bytes):
    return serialization.load_der_private_key(keys_module.jwk.key_encryption((kek,)).decrypt(blob), password=None)


# --- logs -----------------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.formatter_json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        # Both what the JSON stream would print and every attribute a handler could reach.
        self.lines.append(self.formatter_json.format(record))
        self.lines.append(json.dumps({k: v for k, v in record.__dict__.items() if k != "exc_info"}, default=repr))


def _all_loggers() -> list[logging.Logger]:
    names = {"", "jwtex", "django", "django.request", "django.server", "exchange", "celery"}
    names |= {name for name in logging.root.manager.loggerDict if name.startswith(("jwtex", "exchange", "django"))}
    return [logging.getLogger(name) for name in sorted(names)]


def test_logs_hold_no_token_signature_or_key(client, settings, caplog, upstream):
    settings.JWTEX_RATE_LIMIT_PER_ADDRESS = 0
    caplog.set_level(logging.DEBUG)
    collect = _Collect()
    loggers = _all_loggers()
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    for logger in loggers:
        logger.addHandler(collect)
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
    try:
        tenant = make_tenant("acme", rate_limit_per_minute=2)  # the last attempts are rate limited
        issuer = Issuer.objects.create(
            tenant=tenant,
            issuer_id="ci",
            issuer=upstream.issuer,
            audiences=[upstream.audience],
            static_jwks=upstream.jwks,
            replay_protection=True,
        )
        rule = Rule.objects.create(tenant=tenant, name="main", when="claims.ref == 'refs/heads/main'", effect="allow")
        rule.issuers.add(issuer)
        material = {}
        for key in SigningKey.objects.exclude(private_key_encrypted=b""):
            material.update(private_material(signing_key_decrypt(key.private_key_encrypted)))
        material.update({"KEK": OLD_KEK, "SECRET_KEY": settings.SECRET_KEY})

        secrets: list[str] = []
        for endpoint in ENDPOINTS:
            tenant.rate_limit_per_minute = 0
            tenant.save()
            good = upstream.mint()
            attempts = [
                good,  # allowed
                good,  # replayed
                upstream.mint(ref="refs/heads/feature"),  # denied by the rules
                upstream.mint(aud="elsewhere"),  # invalid
                upstream.mint(headers={"kid": "unknown"}),  # unknown kid
                upstream.mint()[:-6] + "AAAAAA",  # bad signature
                upstream.mint() + ".extra",  # malformed
            ]
            for token in attempts:
                response = send(endpoint, client, token, slug="acme")
                assert response.status_code < 500
                secrets.append(token)
                if response.status_code == 200:
                    body = response.content.decode() if endpoint == "raw" else json.dumps(response.json())
                    issued = (
                        body if endpoint == "raw" else (response.json().get("access_token") or response.json()["token"])
                    )
                    secrets.append(issued)
            tenant.rate_limit_per_minute = 1
            tenant.save()
            for _ in range(2):
                token = upstream.mint()
                secrets.append(token)
                send(endpoint, client, token, slug="acme")  # the second is 429
        assert any("exchange allowed" in line for line in collect.lines)
        assert any("exchange denied" in line for line in collect.lines)
        assert any("Too Many Requests" in line or "too_many_requests" in line for line in collect.lines)
    finally:
        for logger, level, disabled in saved:
            logger.removeHandler(collect)
            logger.setLevel(level)
            logger.disabled = disabled

    everything = "\n".join([*collect.lines, caplog.text, *(r.getMessage() for r in caplog.records)])
    assert everything.strip()
    needles: dict[str, str | bytes] = dict(material)
    for index, token in enumerate(secrets):
        needles[f"token {index}"] = token
        parts = token.split(".")
        if len(parts) >= 3:
            needles[f"token {index} signature"] = parts[2][:40]
            needles[f"token {index} payload"] = parts[1][:40]
    leaks = find_leaks(everything, needles)
    assert leaks == [], leaks
