"""The identity provider the admin's single sign-on tests sign in through: django-oidc-provider
served by ``tests/idp/server.py`` in a process of its own on loopback (its own database, users,
groups and session cookie), for the whole test session."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass

import pytest

from tests.conftest import REPO_ROOT, poll

CLIENT_ID = "jwtex-admin"
CLIENT_SECRET = "idp-client-secret-for-tests"


@dataclass
class TestIdP:
    issuer: str

    def control(self, **command) -> None:
        request = urllib.request.Request(f"{self.issuer}/control/", data=json.dumps(command).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def user(self, username: str, *groups: str, password: str = "idp-password") -> None:
        self.control(user={"username": username, "password": password, "groups": list(groups)})

    def tamper(self, mode: str) -> None:
        self.control(tamper=mode)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def idp_server(live_server, tmp_path_factory):
    port = _free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "IDP_DATABASE": str(tmp_path_factory.mktemp("idp") / "idp.sqlite3"),
        "IDP_SITE_URL": issuer,
        "DJANGO_SETTINGS_MODULE": "tests.idp.settings",
    }
    callback = "/admin/sso/callback/"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.idp.server",
            str(port),
            CLIENT_ID,
            CLIENT_SECRET,
            live_server.url + callback,
            live_server.url.replace("localhost", "127.0.0.1") + callback,
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def up() -> bool:
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    try:
        if not poll(up, timeout=60, interval=0.05, stop=lambda: process.poll() is not None):
            process.kill()
            raise AssertionError("the test identity provider did not start:\n" + process.communicate()[0][-3000:])
        yield TestIdP(issuer)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def idp(idp_server, settings):
    """The identity provider, configured as the admin's single sign-on (and behaving well)."""
    settings.JWTEX_ADMIN_OIDC_ISSUER = idp_server.issuer
    settings.JWTEX_ADMIN_OIDC_CLIENT_ID = CLIENT_ID
    settings.JWTEX_ADMIN_OIDC_CLIENT_SECRET = CLIENT_SECRET
    settings.JWTEX_ADMIN_OIDC_NAME = "Test IdP"
    idp_server.tamper("")
    yield idp_server
    idp_server.tamper("")
