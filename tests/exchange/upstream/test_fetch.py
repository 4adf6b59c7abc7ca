"""exchange.upstream.fetch: the guarded JSON GET (SSRF guards, redirects, deadline, size cap),
against a local upstream (tests/upstreams.py)."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from exchange.upstream import fetch, transport
from exchange.upstream.fetch import FetchError, json_fetch
from tests.upstreams import Route, UpstreamServer

# --------------------------------------------------------------------------- a local upstream


@pytest.fixture
def upstream_server():
    server = UpstreamServer()
    yield server
    server.close()


def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"nothing should be resolved ({host})")


def resolving_to(*addresses: str, calls: list[str] | None = None) -> Callable[[str, int], list[str]]:
    def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return list(addresses)

    return resolve


# --------------------------------------------------------------------------- scheme and addresses


def test_http_is_refused_unless_insecure_issuers_are_allowed(settings, upstream_server):
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = False
    upstream_server.json("/jwks", {"keys": []})

    with pytest.raises(FetchError, match="only https"):
        json_fetch(upstream_server.url + "/jwks")

    assert upstream_server.requests == []
    settings.JWTEX_ALLOW_INSECURE_ISSUERS = True
    assert json_fetch(upstream_server.url + "/jwks").document == {"keys": []}


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "169.254.169.254",  # cloud metadata
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "[::1]",
        "[::]",
        "[fe80::1]",
        "[fc00::1]",
        "[ff02::1]",
        "[::ffff:10.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[2002:a00:1::1]",  # 6to4 of 10.0.0.1
    ],
)
def test_non_public_address_literals_are_refused_before_anything_is_sent(host):
    with pytest.raises(FetchError, match="non-public address"):
        json_fetch(f"https://{host}/.well-known/jwks", allow_insecure=False, resolver=no_resolver)


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "100.64.0.1", "::1", "fe80::1%1", "::ffff:127.0.0.1"]
)
def test_a_name_resolving_to_a_non_public_address_is_refused(address):
    calls: list[str] = []
    with pytest.raises(FetchError, match="non-public address"):
        json_fetch("https://issuer.example/jwks", allow_insecure=False, resolver=resolving_to(address, calls=calls))
    assert calls == ["issuer.example"]


def test_one_non_public_address_among_public_ones_is_enough_to_refuse():
    with pytest.raises(FetchError, match=r"non-public address \(10\.0\.0\.1\)"):
        json_fetch(
            "https://issuer.example/jwks",
            allow_insecure=False,
            resolver=resolving_to("93.184.216.34", "10.0.0.1"),
        )


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::200e"])
def test_public_addresses_pass_the_address_guard(address):
    assert transport.address_is_public(ipaddress.ip_address(address))


def test_a_name_resolving_to_nothing_is_refused():
    with pytest.raises(FetchError, match="no address"):
        json_fetch("https://issuer.example/jwks", allow_insecure=False, resolver=resolving_to())


def test_credentials_in_the_url_are_refused():
    with pytest.raises(FetchError, match="credentials"):
        json_fetch("https://user:pw@issuer.example/jwks", resolver=no_resolver)


def test_the_connection_goes_to_the_resolved_address_with_the_hostname_in_host(upstream_server):
    upstream_server.json("/old", {}, status=302, headers={"Location": "/jwks"})
    upstream_server.json("/jwks", {"keys": []})
    calls: list[str] = []

    result = json_fetch(
        f"http://jwks.test:{upstream_server.port}/old",
        allow_insecure=True,
        resolver=resolving_to("127.0.0.1", calls=calls),
    )

    assert result.document == {"keys": []}
    assert calls == ["jwks.test"]  # resolved once; the redirect reused the vetted address
    assert [r.headers["host"] for r in upstream_server.requests] == [f"jwks.test:{upstream_server.port}"] * 2


def test_name_resolution_has_the_deadline_too():
    answer = threading.Event()

    def slow(host: str, port: int) -> list[str]:
        answer.wait(10)  # a resolver that hangs until the test is over
        return ["93.184.216.34"]

    started = time.monotonic()
    try:
        with pytest.raises(FetchError, match="resolution timed out"):
            json_fetch("https://issuer.example/jwks", timeout=0.2, resolver=slow)
    finally:
        answer.set()
    assert time.monotonic() - started < 1


def test_connection_refused_is_a_fetch_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    with pytest.raises(FetchError, match="could not connect"):
        json_fetch(f"http://127.0.0.1:{port}/jwks", allow_insecure=True)


# --------------------------------------------------------------------------- TLS


def _certificate(key, subject: str, issuer_name: x509.Name, issuer_key, *, ca: bool, names=()):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        # Python 3.13 verifies strictly (VERIFY_X509_STRICT): key identifiers are required.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_upstream(tmp_path, monkeypatch):
    """An https upstream whose certificate names jwks.test, signed by a CA the client trusts."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwtex test CA")])
    ca_cert = _certificate(ca_key, "jwtex test CA", ca_name, ca_key, ca=True)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = _certificate(leaf_key, "jwks.test", ca_name, ca_key, ca=False, names=["jwks.test"])
    (tmp_path / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "leaf.pem").write_bytes(
        leaf_cert.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "leaf.pem")
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    monkeypatch.setattr(transport, "_tls_context", lambda: client_context)
    server = UpstreamServer(tls=server_context)
    yield server
    server.close()


def test_https_verifies_the_certificate_for_the_hostname_not_the_address(tls_upstream):
    tls_upstream.json("/jwks", {"keys": []})

    result = json_fetch(
        f"https://jwks.test:{tls_upstream.port}/jwks", allow_insecure=True, resolver=resolving_to("127.0.0.1")
    )

    assert result.document == {"keys": []}
    assert tls_upstream.requests[0].headers["host"] == f"jwks.test:{tls_upstream.port}"


def test_https_refuses_a_certificate_for_another_name(tls_upstream):
    tls_upstream.json("/jwks", {"keys": []})

    with pytest.raises(FetchError, match="certificate verification failed"):
        json_fetch(
            f"https://other.test:{tls_upstream.port}/jwks", allow_insecure=True, resolver=resolving_to("127.0.0.1")
        )
    assert tls_upstream.requests == []


def test_an_https_to_http_redirect_is_refused_when_insecure_is_off(tls_upstream, monkeypatch):
    # The loopback address is allowed here by letting it pass the address guard only.
    monkeypatch.setattr(transport, "address_is_public", lambda address: True)
    tls_upstream.json("/old", {}, status=301, headers={"Location": f"http://jwks.test:{tls_upstream.port}/jwks"})

    with pytest.raises(FetchError, match="only https"):
        json_fetch(
            f"https://jwks.test:{tls_upstream.port}/old", allow_insecure=False, resolver=resolving_to("127.0.0.1")
        )
    assert [r.path for r in tls_upstream.requests] == ["/old"]


def test_a_tls_handshake_that_never_completes_is_given_up_on_within_the_deadline():
    with socket.socket() as listener:  # accepts TCP (backlog) but never speaks TLS
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(FetchError, match="could not connect"):
            json_fetch(
                f"https://jwks.test:{port}/jwks", allow_insecure=True, resolver=resolving_to("127.0.0.1"), timeout=0.3
            )
        assert time.monotonic() - started < 1


# --------------------------------------------------------------------------- redirects


def test_a_same_host_redirect_is_followed(upstream_server):
    upstream_server.json("/a", {}, status=301, headers={"Location": "/b"})
    upstream_server.json("/b", {}, status=307, headers={"Location": upstream_server.url + "/jwks"})
    upstream_server.json("/jwks", {"keys": [1]})

    result = json_fetch(upstream_server.url + "/a", allow_insecure=True)

    assert result.document == {"keys": [1]}
    assert result.url == upstream_server.url + "/jwks"
    assert [r.path for r in upstream_server.requests] == ["/a", "/b", "/jwks"]


def test_a_redirect_to_another_host_is_refused(upstream_server):
    upstream_server.json("/a", {}, status=302, headers={"Location": f"http://localhost:{upstream_server.port}/jwks"})
    upstream_server.json("/jwks", {"keys": []})

    with pytest.raises(FetchError, match="another host"):
        json_fetch(upstream_server.url + "/a", allow_insecure=True)
    assert [r.path for r in upstream_server.requests] == ["/a"]


def test_at_most_three_redirects_are_followed(upstream_server):
    for i in range(5):
        upstream_server.json(f"/r{i}", {}, status=302, headers={"Location": f"/r{i + 1}"})
    upstream_server.json("/r5", {"keys": []})

    with pytest.raises(FetchError, match="more than 3 redirects"):
        json_fetch(upstream_server.url + "/r0", allow_insecure=True)
    assert len(upstream_server.requests) == 4


def test_a_redirect_without_location_is_an_error(upstream_server):
    upstream_server.json("/a", {}, status=302)
    with pytest.raises(FetchError, match="without a Location"):
        json_fetch(upstream_server.url + "/a", allow_insecure=True)


# --------------------------------------------------------------------------- size and time


@pytest.mark.parametrize("content_length", [True, False])
def test_a_body_over_the_cap_is_refused(upstream_server, content_length):
    upstream_server.routes["/big"] = Route(body=b'{"x": "' + b"a" * 5000 + b'"}', content_length=content_length)

    with pytest.raises(FetchError, match="larger than 1000 bytes"):
        json_fetch(upstream_server.url + "/big", allow_insecure=True, max_bytes=1000)


def test_a_body_at_the_cap_is_accepted(upstream_server):
    body = b'{"x": "' + b"a" * 991 + b'"}'
    assert len(body) == 1000
    upstream_server.routes["/ok"] = Route(body=body, content_length=False)

    assert json_fetch(upstream_server.url + "/ok", allow_insecure=True, max_bytes=1000).document == {"x": "a" * 991}


def test_a_server_that_does_not_answer_is_given_up_on_within_the_deadline(upstream_server):
    upstream_server.json("/slow", {"keys": []}, delay=3)

    started = time.monotonic()
    with pytest.raises(FetchError, match="time limit"):
        json_fetch(upstream_server.url + "/slow", allow_insecure=True, timeout=0.3)
    assert time.monotonic() - started < 1


@pytest.mark.parametrize("size", [10, 4000], ids=["headers", "body"])
def test_a_trickling_server_is_given_up_on_within_the_deadline(upstream_server, size):
    # One byte every 20 ms: each read succeeds quickly, the whole never arrives in time.
    upstream_server.json("/trickle", {"x": "a" * size}, trickle=0.02)

    started = time.monotonic()
    with pytest.raises(FetchError, match="time limit"):
        json_fetch(upstream_server.url + "/trickle", allow_insecure=True, timeout=0.3)
    assert time.monotonic() - started < 1


# --------------------------------------------------------------------------- answers


def test_a_json_object_is_returned_with_its_cache_headers(upstream_server):
    upstream_server.json("/jwks", {"keys": []}, headers={"Cache-Control": "public, max-age=600", "ETag": '"v1"'})

    result = json_fetch(upstream_server.url + "/jwks", allow_insecure=True)

    assert result == fetch.FetchResult(
        status=200, document={"keys": []}, etag='"v1"', max_age=600, url=upstream_server.url + "/jwks"
    )
    seen = upstream_server.requests[0].headers
    assert seen["accept"] == "application/json"
    assert seen["user-agent"] == "jwtex"
    assert "if-none-match" not in seen


def test_text_plain_json_is_accepted(upstream_server):
    upstream_server.routes["/jwks"] = Route(body=b'{"keys": []}', headers={"Content-Type": "text/plain"})
    assert json_fetch(upstream_server.url + "/jwks", allow_insecure=True).document == {"keys": []}


@pytest.mark.parametrize(
    ("cache_control", "expected"),
    [
        (None, None),
        ("max-age=0", 0),
        ("public, max-age=86400, must-revalidate", 86400),
        ("no-store", None),
        ("max-age=600, no-cache", None),
        ("max-age=soon", None),
        ('max-age="120"', 120),
    ],
)
def test_max_age_from_cache_control(upstream_server, cache_control, expected):
    headers = {"Cache-Control": cache_control} if cache_control else {}
    upstream_server.json("/jwks", {"keys": []}, headers=headers)

    assert json_fetch(upstream_server.url + "/jwks", allow_insecure=True).max_age == expected


def test_if_none_match_is_sent_and_304_returns_no_document(upstream_server):
    upstream_server.json("/jwks", {"keys": []}, etag='"v1"', headers={"Cache-Control": "max-age=900"})

    result = json_fetch(upstream_server.url + "/jwks", etag='"v1"', allow_insecure=True)

    assert upstream_server.requests[0].headers["if-none-match"] == '"v1"'
    assert (result.status, result.document, result.etag, result.max_age) == (304, None, '"v1"', 900)


def test_a_304_without_a_conditional_request_is_an_error(upstream_server):
    upstream_server.routes["/jwks"] = Route(status=304, body=b"")
    with pytest.raises(FetchError, match="HTTP 304"):
        json_fetch(upstream_server.url + "/jwks", allow_insecure=True)


@pytest.mark.parametrize("status", [404, 500, 503])
def test_a_non_200_status_is_an_error_without_the_body(upstream_server, status):
    upstream_server.routes["/jwks"] = Route(status=status, body=b"secret internal detail")

    with pytest.raises(FetchError, match=f"HTTP {status}") as caught:
        json_fetch(upstream_server.url + "/jwks", allow_insecure=True)
    assert "secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [(b"<html>not json</html>", "not JSON"), (b"[1, 2]", "not a JSON object"), (b'"keys"', "not a JSON object")],
)
def test_a_body_that_is_not_a_json_object_is_an_error(upstream_server, body, message):
    upstream_server.routes["/jwks"] = Route(body=body)

    with pytest.raises(FetchError, match=message) as caught:
        json_fetch(upstream_server.url + "/jwks", allow_insecure=True)
    assert "html" not in str(caught.value)
