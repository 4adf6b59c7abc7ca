"""Signatures in their JWS form (exchange.core.jwk) and the one signing step (minting.jwt_sign):
ECDSA's DER ↔ raw r||s against RFC 6979's vectors and the edge cases of DER integers, checked
with PyJWT and cryptography (independent of our code); local and remote signers alike."""

from __future__ import annotations

import base64
import json

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, strategies as st
from jwt.utils import der_to_raw_signature

from exchange.core.errors import TemporarilyUnavailable
from exchange.core.jwk import (
    ecdsa_der_to_raw,
    ecdsa_raw_to_der,
    jwk_signature_size,
    private_key_sign,
    public_jwk,
    public_jwk_from_spki,
)
from exchange.core.minting import (
    jwt_mint,
    jwt_sign,
    signature_bytes,
    token_length,
)
from exchange.core.values import Decision, SignerKey

# RFC 6979 Appendix A.2.5: ECDSA, 256 bits (prime field), SHA-256.
RFC6979_X = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721
RFC6979_UX = 0x60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6
RFC6979_UY = 0x7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299
RFC6979_VECTORS = [
    (
        b"sample",
        "EFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716",
        "F7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8",
    ),
    (
        b"test",
        "F1ABB023518351CD71D881567B1EA663ED3EFCF6C5132B354F28D3B0B7D38367",
        "019F4113742A2B14BD25926B49C649155F267E60D3814B4C0CC84250E46F0083",
    ),
]
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ES256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)


@pytest.fixture(scope="module")
def rfc_key():
    return ec.derive_private_key(RFC6979_X, ec.SECP256R1())


def _pyjwt_verifies(public_key, message: bytes, raw: bytes) -> bool:
    """PyJWT's ES256 check takes the JWS (raw r||s) form: independent of our conversion."""
    return ES256.verify(message, public_key, raw)


@pytest.mark.parametrize("message, r_hex, s_hex", RFC6979_VECTORS)
def test_rfc6979_vectors_convert_and_verify_both_ways(rfc_key, message, r_hex, s_hex):
    public = rfc_key.public_key()
    assert (public.public_numbers().x, public.public_numbers().y) == (RFC6979_UX, RFC6979_UY)
    der = encode_dss_signature(int(r_hex, 16), int(s_hex, 16))
    raw = ecdsa_der_to_raw(der)
    assert raw.hex().upper() == r_hex + s_hex  # 32 octets each, big-endian (RFC 7518 §3.4)
    assert raw == der_to_raw_signature(der, ec.SECP256R1())
    assert _pyjwt_verifies(public, message, raw)
    public.verify(ecdsa_raw_to_der(raw), message, ec.ECDSA(hashes.SHA256()))  # back to DER: cryptography agrees
    # RFC 6979 signing is deterministic: cryptography reproduces the vector, and our signer with it.
    assert rfc_key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True)) == der


def _deterministic_signature(key, wanted) -> tuple[bytes, bytes]:
    """The first message ``jwtex-N`` whose RFC 6979 signature satisfies ``wanted(r, s)``."""
    for n in range(20_000):
        message = f"jwtex-{n}".encode()
        der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
        if wanted(*decode_dss_signature(der)):
            return message, der
    raise AssertionError("no such signature in 20,000 messages")


@pytest.mark.parametrize(
    "case, wanted, der_integer_lengths",
    [
        ("r with a leading zero octet", lambda r, s: r < 1 << 248 and s >> 255 == 0, (31, 32)),
        ("s with a leading zero octet", lambda r, s: s < 1 << 248 and r >> 255 == 0, (32, 31)),
        ("r with its high bit set", lambda r, s: r >> 255 == 1 and s >> 255 == 0, (33, 32)),
        ("both high bits set", lambda r, s: r >> 255 == 1 and s >> 255 == 1, (33, 33)),
    ],
)
def test_der_integers_of_every_length_become_32_octets(rfc_key, case, wanted, der_integer_lengths):
    message, der = _deterministic_signature(rfc_key, wanted)
    # SEQUENCE { INTEGER r, INTEGER s }: a high bit takes a 0x00 before it, a small value fewer octets.
    r_length = der[3]
    assert (r_length, der[4 + r_length + 1]) == der_integer_lengths, case
    raw = ecdsa_der_to_raw(der)
    assert len(raw) == 64 and raw == der_to_raw_signature(der, ec.SECP256R1())
    if der_integer_lengths[0] == 31:
        assert raw[0] == 0
    if der_integer_lengths[1] == 31:
        assert raw[32] == 0
    assert _pyjwt_verifies(rfc_key.public_key(), message, raw)
    assert ecdsa_raw_to_der(raw) == der


@given(st.integers(1, P256_ORDER - 1), st.integers(1, P256_ORDER - 1))
def test_raw_and_der_are_inverse(r, s):
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    der = ecdsa_raw_to_der(raw)
    assert decode_dss_signature(der) == (r, s)
    assert ecdsa_der_to_raw(der) == raw


@pytest.mark.parametrize(
    "der",
    [
        b"",
        encode_dss_signature(1, 2) + b"\x00",  # trailing bytes
        encode_dss_signature(0, 2),
        encode_dss_signature(1, 0),
        encode_dss_signature(1 << 256, 2),  # 33 significant octets: not P-256
        encode_dss_signature(1, 2)[:-1],  # truncated
        b"\x30\x81\x06\x02\x01\x01\x02\x01\x02",  # a long-form length where DER wants the short one
    ],
)
def test_malformed_der_is_refused(der):
    with pytest.raises(ValueError):
        ecdsa_der_to_raw(der)


def test_a_raw_signature_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="64 octets"):
        ecdsa_raw_to_der(b"\x01" * 63)


# --- public keys from SubjectPublicKeyInfo (what KMS GetPublicKey answers) ----------------------


def _spki(key) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_a_spki_public_key_gives_the_same_jwk_and_kid_as_the_private_key(rfc_key):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert public_jwk_from_spki(_spki(rfc_key), algorithm="ES256") == public_jwk(rfc_key, algorithm="ES256")
    assert public_jwk_from_spki(_spki(rsa_key), algorithm="RS256") == public_jwk(rsa_key, algorithm="RS256")
    assert jwk_signature_size(public_jwk(rsa_key, algorithm="RS256")) == 256
    assert jwk_signature_size(public_jwk(rfc_key, algorithm="ES256")) == 64


@pytest.mark.parametrize(
    "key, algorithm",
    [
        (ec.generate_private_key(ec.SECP384R1()), "ES256"),
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RS256"),
        (ec.generate_private_key(ec.SECP256R1()), "RS256"),
    ],
)
def test_a_key_that_does_not_fit_its_algorithm_is_refused(key, algorithm):
    with pytest.raises(ValueError):
        public_jwk_from_spki(_spki(key), algorithm=algorithm)


# --- jwt_sign: the one signing step --------------------------------------------------------

PAYLOAD = {
    "iss": "https://jwtex.example.com/t/acme",
    "sub": "repo:octo-org/app",
    "aud": "sts.amazonaws.com",
    "iat": 1_700_000_000,
    "exp": 1_700_000_900,
    "name": "Zoë ☃",
}


def _segments(token: str) -> list[bytes]:
    return [base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)) for part in token.split(".")]


def test_sign_compact_is_byte_for_byte_what_pyjwt_makes():
    # RSASSA-PKCS1-v1_5 is deterministic, so the whole token can be compared.
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signer = SignerKey("kid-rs", "RS256", key)
    expected = jwt.encode(PAYLOAD, key, algorithm="RS256", headers={"kid": "kid-rs", "typ": "JWT"})
    assert jwt_sign(PAYLOAD, signer=signer) == expected


def test_sign_compact_es256_verifies_with_pyjwt(rfc_key):
    token = jwt_sign(PAYLOAD, signer=SignerKey("kid-es", "ES256", rfc_key), headers={"typ": "JWT", "cty": "x"})
    header, _, signature = _segments(token)
    assert json.loads(header) == {"alg": "ES256", "cty": "x", "kid": "kid-es", "typ": "JWT"}
    assert len(signature) == 64
    assert (
        jwt.decode(
            token,
            rfc_key.public_key(),
            algorithms=["ES256"],
            audience="sts.amazonaws.com",
            options={"verify_exp": False},
        )
        == PAYLOAD
    )


@pytest.mark.parametrize("header", [{"alg": "none"}, {"alg": "RS256"}, {"kid": "another"}])
def test_sign_compact_keeps_the_signers_alg_and_kid(rfc_key, header):
    with pytest.raises(ValueError, match="signing key's own"):
        jwt_sign(PAYLOAD, signer=SignerKey("kid-es", "ES256", rfc_key), headers=header)


def _remote(key, algorithm: str, calls: list[bytes]):
    """A stand-in for KMS: signs with a private key it keeps, as KMS would (DER for ECDSA)."""

    def sign(signing_input: bytes) -> bytes:
        calls.append(signing_input)
        return private_key_sign(key, algorithm=algorithm, signing_input=signing_input)

    return sign


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_a_remote_signer_signs_exactly_the_signing_input_and_sizes_are_known(rfc_key, algorithm):
    key = rfc_key if algorithm == "ES256" else rsa.generate_private_key(public_exponent=65537, key_size=2048)
    calls: list[bytes] = []
    size = 64 if algorithm == "ES256" else 256
    signer = SignerKey(
        "kid", algorithm, remote_sign=_remote(key, algorithm, calls), signature_size=size, backend="aws-kms"
    )
    assert signer.private_key is None and signature_bytes(signer) == size
    decision = Decision(
        rule_id=1,
        rule_name="r",
        subject="s",
        audience="sts.amazonaws.com",
        lifetime=900,
        session_tags=(("repository", "octo-org/app"),),
        transitive_tag_keys=(),
        extra_claims={},
    )
    minted = jwt_mint(decision=decision, issuer=PAYLOAD["iss"], signer=signer, now=1_700_000_000)
    assert calls == [minted.token.rsplit(".", 1)[0].encode()]
    assert len(minted.token) == token_length(decision=decision, issuer=PAYLOAD["iss"], signer=signer, now=1_700_000_000)
    assert (
        jwt.decode(
            minted.token,
            key.public_key(),
            algorithms=[algorithm],
            audience="sts.amazonaws.com",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )["sub"]
        == "s"
    )
    assert "private" not in repr(signer) and "aws-kms" in repr(signer)


def test_a_remote_signature_of_the_wrong_length_is_refused(rfc_key):
    signer = SignerKey("kid", "ES256", remote_sign=lambda data: b"\x01" * 71)
    with pytest.raises(ValueError, match="71-byte signature, not 64"):
        jwt_sign(PAYLOAD, signer=signer)


def test_a_remote_rsa_key_under_2048_bits_is_refused():
    with pytest.raises(ValueError, match="at least 2048 bits"):
        jwt_sign(PAYLOAD, signer=SignerKey("kid", "RS256", remote_sign=lambda data: b"", signature_size=128))


def test_an_unavailable_remote_signer_signs_nothing():
    def down(signing_input: bytes) -> bytes:
        raise TemporarilyUnavailable(
            "The tenant's signing key is unavailable right now; retry later.", reason="KMS down"
        )

    with pytest.raises(TemporarilyUnavailable) as excinfo:
        jwt_sign(PAYLOAD, signer=SignerKey("kid", "ES256", remote_sign=down))
    assert excinfo.value.status == 503 and excinfo.value.code == "temporarily_unavailable"
