"""AWS KMS for the tests and the bench: moto's server on loopback, reached by real boto3 calls.

moto 5 signs whatever ``MessageType`` says (its docs: DIGEST "not yet implemented") and signs with
disabled keys; real KMS refuses a RAW message over 4,096 bytes, signs a DIGEST as a digest, and
refuses disabled keys (``DisabledException``) and keys pending deletion
(``KMSInvalidStateException``). moto's ScheduleKeyDeletion and DisableKey also fail (500) on a
key ARN, which AWS accepts. ``MotoKms`` teaches its server those rules, so the tests meet KMS as
AWS documents it (API reference: Sign, ScheduleKeyDeletion), not a laxer or a stricter one.

One server per test process (each xdist worker starts its own), emptied before every test by
moto's own reset (``/moto-api/reset``: milliseconds; a server per module took half a second to
stop). Most of a KMS test's time was boto3 making clients: botocore reads and parses its JSON
models (service, endpoints, partitions) afresh for every ``Session``, ~70 ms a client, and jwtex
makes a session per client (``exchange.kms._client``), made again after every change of the
environment. The tests share one botocore loader, that cache of files, among sessions, as
boto3's default session does among its clients (``botocore_models_share``), and the server
lists moto's package once instead of at every request (``_route_without_listing_moto``); every
request is made and answered as before.
"""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import urllib.request
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account
ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def _strict_sign(original):
    from moto.core.exceptions import JsonRESTError

    def sign(self) -> str:
        params = json.loads(self.body)
        self._validate_key_id(params["KeyId"])
        key = self.kms_backend.describe_key(params["KeyId"])
        if key.key_state == "Disabled":
            raise JsonRESTError("DisabledException", f"{key.arn} is disabled.")
        if key.key_state == "PendingDeletion":
            raise JsonRESTError("KMSInvalidStateException", f"{key.arn} is pending deletion.")
        message = base64.b64decode(params["Message"])
        if params.get("MessageType", "RAW") == "RAW":
            if len(message) > 4096:
                raise JsonRESTError("ValidationException", "Message must have length less than or equal to 4096")
            return original(self)
        private = key.private_key.private_key  # the cryptography key behind moto's
        if params["SigningAlgorithm"] == "ECDSA_SHA_256":
            signature = private.sign(message, ec.ECDSA(Prehashed(hashes.SHA256())))
        else:
            signature = private.sign(message, padding.PKCS1v15(), Prehashed(hashes.SHA256()))
        return json.dumps(
            {
                "KeyId": key.arn,
                "Signature": base64.b64encode(signature).decode(),
                "SigningAlgorithm": params["SigningAlgorithm"],
            }
        )

    return sign


def _any_key_id(original):
    def method(self, key_id, *args):
        return original(self, self.any_id_to_key_id(key_id), *args)

    method.jwtex_strict = True
    return method


def _teach_moto() -> None:
    from moto.kms.models import KmsBackend
    from moto.kms.responses import KmsResponse

    if getattr(KmsResponse.sign, "jwtex_strict", False):
        return
    KmsResponse.sign = _strict_sign(KmsResponse.sign)
    KmsResponse.sign.jwtex_strict = True
    for name in ("schedule_key_deletion", "disable_key", "enable_key"):
        setattr(KmsBackend, name, _any_key_id(getattr(KmsBackend, name)))


def _route_without_listing_moto() -> None:
    """moto's server routes every request by first listing its own package directory and
    stat-ing each entry (``moto.backends.list_of_moto_modules``: ~200 system calls, about a
    quarter of the CPU of a Sign through boto3); the list is the same every time: made once."""
    import moto.backends

    if not getattr(moto.backends.list_of_moto_modules, "jwtex_listed", False):
        modules = tuple(moto.backends.list_of_moto_modules())

        def list_of_moto_modules():
            return modules

        list_of_moto_modules.jwtex_listed = True
        moto.backends.list_of_moto_modules = list_of_moto_modules


def botocore_models_share() -> None:
    """Every botocore ``Session`` of this process reads AWS's JSON models (services, endpoints,
    partitions) through one loader, which caches what it read: a new session, so a new client,
    costs milliseconds instead of ~70 ms. The files are the same for every session; credentials,
    region, endpoint and config are still resolved per session, as before."""
    import botocore.session

    if not getattr(botocore.session.create_loader, "jwtex_shared", False):
        botocore.session.create_loader = functools.cache(botocore.session.create_loader)
        botocore.session.create_loader.jwtex_shared = True


class MotoKms:
    """moto's server in a thread of this process, on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        _teach_moto()
        self._clients: dict[tuple[str, str, str], Any] = {}
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request on stderr
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def stop(self) -> None:
        # werkzeug's serve_forever looks for a shutdown request every 0.5 s, or as soon as a
        # connection arrives: knock until it has seen it.
        address = self._server.get_host_and_port()
        stopping = threading.Thread(target=self._server.stop)
        stopping.start()
        while stopping.is_alive():
            with suppress(OSError):
                socket.create_connection(address, timeout=0.1).close()
            stopping.join(0.02)

    def environment(self, endpoint: str | None = None) -> dict[str, str]:
        return {**ENVIRONMENT, "AWS_ENDPOINT_URL_KMS": endpoint or self.endpoint, "AWS_ENDPOINT_URL": self.endpoint}

    def _post(self, path: str, data: bytes = b"") -> Any:
        request = urllib.request.Request(
            self.endpoint + path, data=data, method="POST", headers={"Content-Type": "text/plain"}
        )  # not a form: moto reads the body
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.read()

    def reset(self) -> None:
        self._post("/moto-api/reset")

    def client(self, service: str = "kms", **credentials: str) -> Any:
        """The tests' own boto3 client of ``service`` on this server (made once: its endpoint,
        region and credentials are explicit, none from the environment a test changes)."""
        import boto3

        key, secret = credentials.get("key", "testing"), credentials.get("secret", "testing")
        client = self._clients.get((service, key, secret))
        if client is None:
            client = self._clients[service, key, secret] = boto3.client(
                service,
                region_name=REGION,
                endpoint_url=self.endpoint,
                aws_access_key_id=key,
                aws_secret_access_key=secret,
            )
        return client

    @contextmanager
    def iam_enforced(self):
        """moto checks every request's signature and the caller's IAM policies while inside."""
        self._post("/moto-api/reset-auth", b"0")
        try:
            yield
        finally:
            self._post("/moto-api/reset-auth", b"inf")

    def user_without(self, *denied_actions: str) -> dict[str, str]:
        """Credentials of a new IAM user allowed every KMS action except ``denied_actions``."""
        iam = self.client("iam")
        name = f"jwtex-{len(iam.list_users()['Users'])}"
        iam.create_user(UserName=name)
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                {"Effect": "Deny", "Action": list(denied_actions), "Resource": "*"},
            ],
        }
        iam.put_user_policy(UserName=name, PolicyName="kms", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def closed_port_endpoint() -> str:
    """An http endpoint on loopback where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- pytest fixtures (imported by the test modules that use them) ---------------------------------


@pytest.fixture(scope="session")
def moto_kms():
    """moto's server, one per test process (an xdist worker is one), emptied by ``kms``."""
    botocore_models_share()
    _route_without_listing_moto()
    server = MotoKms()
    yield server
    server.stop()


@pytest.fixture
def kms(moto_kms, monkeypatch):
    """moto's KMS, empty, as the standard AWS chain finds it (environment: endpoint, credentials)."""
    from exchange.kms import kms_clients_reset

    moto_kms.reset()  # every account, region and service of the server: no key nor IAM user of an earlier test
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in moto_kms.environment().items():
        monkeypatch.setenv(name, value)
    kms_clients_reset()
    yield moto_kms
    kms_clients_reset()


def kms_unreachable(monkeypatch, endpoint: str | None = None) -> None:
    """From now on KMS is where nothing listens (or at ``endpoint``); processes forget their clients
    and runtimes, as after a restart."""
    from exchange.kms import kms_clients_reset
    from exchange.runtime import runtime_reset

    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", endpoint or closed_port_endpoint())
    kms_clients_reset()
    runtime_reset()


_JOSE_VERIFY = r"""
import { createLocalJWKSet, jwtVerify } from "jose";
let text = "";
for await (const chunk of process.stdin) text += chunk;
const input = JSON.parse(text);
const keys = createLocalJWKSet(input.jwks);
const out = [];
for (const item of input.tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(item.token, keys, {
      issuer: input.issuer, audience: input.audience, algorithms: input.algorithms,
      currentDate: new Date(item.at * 1000),
    });
    out.push({ ok: true, payload, header: protectedHeader });
  } catch (error) {
    out.push({ ok: false, error: String(error.code || error) });
  }
}
process.stdout.write(JSON.stringify(out));
"""


# A relying party that is given only an issuer URL: it reads the discovery document there, the JWKS
# at its jwks_uri (jose's remote key set), and verifies each token with that issuer.
_JOSE_VERIFY_REMOTE = r"""
import { createRemoteJWKSet, jwtVerify } from "jose";
let text = "";
for await (const chunk of process.stdin) text += chunk;
const input = JSON.parse(text);
const answer = await fetch(`${input.issuer}/.well-known/openid-configuration`);
const discovery = await answer.json();
const keys = createRemoteJWKSet(new URL(discovery.jwks_uri), { cacheMaxAge: 0, cooldownDuration: 0 });
const out = [];
for (const item of input.tokens) {
  try {
    const { payload, protectedHeader } = await jwtVerify(item.token, keys, {
      issuer: discovery.issuer === input.issuer ? input.issuer : "(the discovery document names another issuer)",
      audience: input.audience, algorithms: ["ES256", "RS256"], currentDate: new Date(item.at * 1000),
    });
    out.push({ ok: true, payload, header: protectedHeader });
  } catch (error) {
    out.push({ ok: false, error: String(error.code || error) });
  }
}
process.stdout.write(JSON.stringify({ discovery, results: out }));
"""


class Jose:
    """The npm ``jose`` library (panva/jose), run by node: a JWT verifier that is not ours nor Python's."""

    def __init__(self, root, node: str) -> None:
        self.root, self.node = root, node

    def verify(self, *, jwks: dict, tokens: list[tuple[str, int]], issuer: str, audience: str) -> list[dict]:
        """Each (token, at) verified against ``jwks`` at time ``at``: ``{"ok", "payload"|"error"}``."""
        document = {
            "jwks": jwks,
            "issuer": issuer,
            "audience": audience,
            "algorithms": ["ES256", "RS256"],
            "tokens": [{"token": t, "at": at} for t, at in tokens],
        }
        done = subprocess.run(
            [self.node, "verify.mjs"],
            check=False,
            cwd=self.root,
            input=json.dumps(document),
            text=True,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def verify_remote(self, *, issuer: str, tokens: list[tuple[str, int]], audience: str) -> dict:
        """Each (token, at) verified as a relying party given only ``issuer`` does: discovery and
        JWKS fetched from there. ``{"discovery", "results": [{"ok", "payload"|"error"}]}``."""
        document = {"issuer": issuer, "audience": audience, "tokens": [{"token": t, "at": at} for t, at in tokens]}
        done = subprocess.run(
            [self.node, "verify_remote.mjs"],
            check=False,
            cwd=self.root,
            input=json.dumps(document),
            text=True,
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="session")
def jose(tmp_path_factory) -> Jose:
    """``npm install jose`` into a temporary directory, once per test run (shared by xdist workers)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        pytest.skip(
            "npm and node are not installed: the jose cross-check of KMS-signed tokens needs them "
            "(apt-get install nodejs npm)"
        )
    root = tmp_path_factory.getbasetemp().parent / "jwtex-jose"
    root.mkdir(exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "node_modules" / "jose").is_dir():
            done = subprocess.run(
                [npm, "install", "--prefix", str(root), "--no-audit", "--no-fund", "--silent", "jose"],
                check=False,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"npm install jose failed: {done.stderr[-2000:]}"
        (root / "verify.mjs").write_text(_JOSE_VERIFY)
        (root / "verify_remote.mjs").write_text(_JOSE_VERIFY_REMOTE)
    return Jose(root, node)
