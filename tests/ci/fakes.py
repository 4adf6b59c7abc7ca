"""Stand-ins for what a CI job talks to, on loopback: GitHub Actions' OIDC token service
(``FakeActions``), a front that answers for jwtex before passing requests on (``FaultyFront``:
a 503, a 429 with ``Retry-After``, a dropped connection), and moto's STS taught what AWS checks in
``AssumeRoleWithWebIdentity`` (``sts_taught``): moto accepts any token and any session name.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.aws_acceptance import sts_problems

OWNER_ID = "1342004"  # the repository owner's id the tests' rules pin (owner pinning, README)


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@dataclass
class TokenRequest:
    authorized: bool
    audience: str | None  # None: no audience parameter


@dataclass
class FakeActions:
    """GitHub Actions' OIDC side: ``GET $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…`` with ``Authorization:
    Bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN`` answers ``{"value": JWT}`` whose ``aud`` is the audience
    asked for (GitHub's default, the owner's URL, without one), and a wrong bearer ``401``, as
    GitHub's service does; its discovery document and JWKS make it an issuer jwtex can trust."""

    clock: Callable[[], float] = time.time
    lifetime: int = 300  # GitHub's tokens live 5 minutes
    claims: dict[str, Any] = field(default_factory=dict)  # overrides
    run_id: str = "9876543210"
    run_attempt: str = "2"
    key: Any = field(default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    bearer: str = field(default_factory=lambda: uuid.uuid4().hex)
    requests: list[TokenRequest] = field(default_factory=list)
    minted: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        fake = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path == "/.well-known/openid-configuration":
                    return self.answer(
                        200,
                        json.dumps({"issuer": fake.url, "jwks_uri": fake.url + "/jwks"}).encode(),
                        {"Content-Type": "application/json"},
                    )
                if path == "/jwks":
                    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(fake.key.public_key(), as_dict=True)
                    body = json.dumps({"keys": [{**jwk, "kid": "actions-1", "alg": "RS256", "use": "sig"}]}).encode()
                    return self.answer(200, body, {"Content-Type": "application/json"})
                if path != "/_apis/pipelines/idtoken":
                    return self.answer(404, b"{}")
                parameters = urllib.parse.parse_qs(query)
                scheme, _, credential = (self.headers.get("Authorization") or "").partition(" ")
                authorized = scheme.lower() == "bearer" and credential == fake.bearer
                audience = parameters["audience"][0] if "audience" in parameters else None
                fake.requests.append(TokenRequest(authorized, audience))
                if not authorized or parameters.get("api-version") != ["2.0"]:
                    return self.answer(401, b'{"message": "Unauthorized"}', {"Content-Type": "application/json"})
                token = fake.mint(audience or "https://github.com/octo-org")
                body = json.dumps({"count": 1, "value": token}).encode()
                self.answer(200, body, {"Content-Type": "application/json"})

        self._server, self.url = _serve(Handler)

    def mint(self, audience: str) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.url,
            "aud": audience,
            "sub": "repo:octo-org/app:ref:refs/heads/main",
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
            "repository": "octo-org/app",
            "repository_owner": "octo-org",
            "repository_owner_id": OWNER_ID,
            "ref": "refs/heads/main",
            "actor": "dependabot[bot]",
            "workflow": "deploy",
            "run_id": self.run_id,
            "run_attempt": self.run_attempt,
            **self.claims,
        }
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": "actions-1"})
        self.minted.append(token)
        return token

    def runner_environment(self) -> dict[str, str]:
        """What the runner gives a job with ``permissions: id-token: write``."""
        return {
            "GITHUB_ACTIONS": "true",
            "CI": "true",
            "GITHUB_RUN_ID": self.run_id,
            "GITHUB_RUN_ATTEMPT": self.run_attempt,
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{self.url}/_apis/pipelines/idtoken?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": self.bearer,
        }

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Fault:
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"error": "temporarily_unavailable", "error_description": "Try again later."}'
    drop: bool = False  # close the connection without an answer


class FaultyFront:
    """In front of jwtex: answers each request with the next of ``faults`` while there is one,
    then passes requests on. ``seen`` counts every request that arrived."""

    def __init__(self, target: str) -> None:
        self.faults: list[Fault] = []
        self.seen = 0
        front = self

        class Handler(_Quiet):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                front.seen += 1
                if front.faults:
                    fault = front.faults.pop(0)
                    if fault.drop:
                        self.close_connection = True
                        return
                    return self.answer(fault.status, fault.body, {"Content-Type": "application/json", **fault.headers})
                request = urllib.request.Request(
                    target + self.path,
                    data=body,
                    method="POST",
                    headers={"Content-Type": self.headers.get("Content-Type", "")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, headers, answer = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, headers, answer = error.code, error.headers, error.read()
                self.answer(status, answer, {"Content-Type": headers.get("Content-Type", "")})

        self._server, self.url = _serve(Handler)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ------------------------------------------------------------------------------ moto's STS, taught

# AWS STS API reference, AssumeRoleWithWebIdentity: RoleSessionName, 2–64 of [\w+=,.@-]*.
SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
STS_AUDIENCE = "sts.amazonaws.com"


@dataclass
class StsCall:
    role_arn: str
    session_name: str
    token: str


STS_CALLS: list[StsCall] = []


def _verify_like_sts(token: str) -> dict[str, Any]:
    """What STS does with a web identity token: the issuer's discovery document, its JWKS, the
    signature, the audience (the IAM provider's client id) and the expiry."""
    issuer = jwt.decode(token, options={"verify_signature": False})["iss"]
    with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=5) as response:
        discovery = json.load(response)
    key = jwt.PyJWKClient(discovery["jwks_uri"], cache_keys=False).get_signing_key_from_jwt(token)
    return jwt.decode(
        token,
        key.key,
        algorithms=discovery["id_token_signing_alg_values_supported"],
        audience=STS_AUDIENCE,
        issuer=discovery["issuer"],
    )


def sts_taught() -> None:
    """moto's STS refuses what AWS refuses in AssumeRoleWithWebIdentity, and records every call."""
    from moto.sts.exceptions import STSClientError, STSValidationError
    from moto.sts.responses import TokenResponse

    original = TokenResponse.assume_role_with_web_identity
    if getattr(original, "jwtex_taught", False):
        return

    def assume_role_with_web_identity(self):  # type: ignore[no-untyped-def]
        call = StsCall(
            self._get_param("RoleArn"),
            self._get_param("RoleSessionName") or "",
            self._get_param("WebIdentityToken") or "",
        )
        STS_CALLS.append(call)
        if not SESSION_NAME.fullmatch(call.session_name):
            raise STSValidationError(f"Value '{call.session_name}' at 'roleSessionName' failed to satisfy constraint")
        problems = sts_problems(call.token)  # the token's own limits: length, sub, tags, source identity
        if problems:
            raise STSClientError("InvalidIdentityToken", "; ".join(problems))
        try:
            _verify_like_sts(call.token)
        except jwt.ExpiredSignatureError:
            raise STSClientError("ExpiredTokenException", "Token expired") from None
        except (jwt.PyJWTError, OSError, KeyError, ValueError) as error:
            raise STSClientError("InvalidIdentityToken", f"{type(error).__name__}") from None
        return original(self)

    assume_role_with_web_identity.jwtex_taught = True  # type: ignore[attr-defined]
    TokenResponse.assume_role_with_web_identity = assume_role_with_web_identity
