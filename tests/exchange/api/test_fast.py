"""The lean WSGI route answers exactly as Django's full request cycle does.

Each request goes once through ``MachineRoutes`` (what ``make serve`` runs) and once through
Django's own WSGI handler; status, headers and body must match (a minted token's signature and
ids differ by nature, so its claims are compared without them). Requests the lean route does
not take must reach Django unchanged.
"""

from __future__ import annotations

import io

import jwt
import pytest
from django.core.wsgi import get_wsgi_application

from exchange.api.fast import MachineRoutes

# Both handlers end each request by closing the connection when Django would (no test
# transaction can span that), so these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)

VOLATILE_CLAIMS = {"jti", "iat", "nbf", "exp"}


def call(app, method: str, path: str, body: bytes = b"", *, host: str = "testserver", **headers: str):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": host,
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
    for name, value in headers.items():
        key = name.upper().replace("-", "_")
        environ[key if key in {"CONTENT_TYPE", "CONTENT_LENGTH"} else f"HTTP_{key}"] = value
    seen = {}

    def start_response(status, response_headers, exc_info=None):
        seen["status"], seen["headers"] = status, dict(response_headers)

    chunks = app(environ, start_response)
    body_out = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return seen["status"], seen["headers"], body_out


@pytest.fixture
def apps():
    django_app = get_wsgi_application()
    taken = []

    class Spy(MachineRoutes):
        def _route(self, environ):
            route = super()._route(environ)
            taken.append(route is not None)
            return route

    return Spy(django_app), django_app, taken


def comparable(status, headers, body):
    if headers.get("Content-Type", "").startswith("application/jwt"):  # the raw endpoint's token
        assert headers.pop("Content-Length") == str(len(body))
        claims = jwt.decode(body, options={"verify_signature": False})
        return status, headers, {k: v for k, v in claims.items() if k not in VOLATILE_CLAIMS}
    return status, headers, body


def test_the_documents_match_byte_for_byte(apps, tenant):
    fast, django_app, taken = apps
    for path in (
        "/t/acme/.well-known/jwks.json",
        "/t/acme/.well-known/jwks",
        "/t/acme/.well-known/openid-configuration",
        "/t/nobody/.well-known/jwks.json",
    ):
        assert call(fast, "GET", path) == call(django_app, "GET", path), path
    assert all(taken)


@pytest.mark.parametrize("case", ["allowed", "denied", "garbage", "unknown tenant", "wrong content type"])
def test_the_raw_exchange_answers_the_same(apps, tenant, upstream, allow_rule, case):
    fast, django_app, taken = apps
    path, content_type = "/t/acme/exchange", "application/jwt"

    def body():
        if case == "denied":
            return upstream.mint(ref="refs/heads/feature").encode()
        if case == "garbage":
            return b"not-a-jwt"
        return upstream.mint().encode()

    if case == "unknown tenant":
        path = "/t/nobody/exchange"
    if case == "wrong content type":
        content_type = "text/plain"
    answers = [comparable(*call(app, "POST", path, body(), content_type=content_type)) for app in (fast, django_app)]
    assert answers[0] == answers[1]
    assert taken == [True]
    if case == "allowed":
        assert answers[0][0].startswith("200")


@pytest.mark.parametrize(
    "method, path, extra",
    [
        ("HEAD", "/t/acme/.well-known/jwks.json", {}),
        ("GET", "/t/acme/exchange", {}),
        ("POST", "/t/acme/.well-known/jwks.json", {"body": b"x"}),
        ("GET", "/t/acme/.well-known/jwks.json", {"host": "evil.example"}),
        ("GET", "/admin/login/", {}),
    ],
)
def test_everything_else_reaches_django_unchanged(apps, tenant, method, path, extra):
    fast, django_app, taken = apps
    body, host = extra.get("body", b""), extra.get("host", "testserver")
    fast_answer = call(fast, method, path, body, host=host)
    django_answer = call(django_app, method, path, body, host=host)
    assert fast_answer[0] == django_answer[0]
    if "host" in extra:
        assert fast_answer[0].startswith("400")
    assert taken in ([False], [True])  # a bad host is recognised as ours, then handed to Django


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics"])
def test_probes_answer_as_django_does_and_for_any_host(apps, path):
    fast, django_app, taken = apps
    fast_answer, django_answer = call(fast, "GET", path), call(django_app, "GET", path)
    assert fast_answer[0] == django_answer[0] == "200 OK"
    if path == "/metrics":  # counters and ages move between two scrapes, and so does the length
        fast_answer[1].pop("Content-Length"), django_answer[1].pop("Content-Length")
    else:
        assert fast_answer[2] == django_answer[2]
    assert fast_answer[1] == django_answer[1]
    # Kubernetes probes and scrapes name the pod's address, a container's health check 127.0.0.1:
    # never in ALLOWED_HOSTS, and Django alone refuses them.
    assert call(django_app, "GET", path, host="10.1.2.3:8000")[0].startswith("400")
    for host in ("10.1.2.3:8000", "127.0.0.1:8000"):
        assert call(fast, "GET", path, host=host)[0] == "200 OK"
    assert call(fast, "POST", path, b"x", host="10.1.2.3:8000")[0].startswith("400")  # not a probe: Django's
    assert taken == [True, True, True, False]
