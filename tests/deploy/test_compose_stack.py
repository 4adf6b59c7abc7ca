"""compose.yaml brought up with podman-compose (PyPI) on the image CI builds, PostgreSQL and Redis
images built from Debian's packages (.ci/compose/), then the README's "Try it" steps against it.

podman 4.3 (Debian 12's) cannot wait for a health condition (podman-compose ignores
``service_healthy`` before podman 4.6) and fails to start a container whose ``--requires``
dependencies have dependencies of their own; and without systemd nothing runs podman's health
checks on a timer. So this test starts the services one by one in the order the file's
``depends_on`` gives (``up --no-deps``), waiting for each condition as docker compose would: a
health check run until it passes, a one-shot's exit code 0. Everything else — images, commands,
environment, volumes, read-only root, the network and its service names — is the file's own.

.ci/container runs it with ``JWTEX_TEST_CONTAINER=1``, ``JWTEX_TEST_PODMAN_COMPOSE`` (the
podman-compose to use) and the two images in ``JWTEX_TEST_POSTGRES_IMAGE`` and ``JWTEX_TEST_REDIS_IMAGE``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request

import jwt
import pytest
import yaml

from tests.conftest import REPO_ROOT, poll
from tests.deploy.podman import IMAGE, MUST_RUN, cannot_run, podman
from tests.servers import free_port

pytestmark = pytest.mark.container
NEEDS = ("JWTEX_TEST_PODMAN_COMPOSE", "JWTEX_TEST_POSTGRES_IMAGE", "JWTEX_TEST_REDIS_IMAGE")


def _order(services: dict) -> list[str]:
    """The services, each after everything it depends on."""
    done: list[str] = []

    def visit(name: str) -> None:
        for dependency in services[name].get("depends_on", {}):
            visit(dependency)
        if name not in done:
            done.append(name)

    for name in services:
        visit(name)
    return done


class Stack:
    def __init__(self, tmp_path) -> None:
        self.project = f"jwtexct{os.getpid()}"
        self.ports = (free_port(), free_port())
        self.public_url = f"http://127.0.0.1:{self.ports[0]}"
        env = tmp_path / "compose.env"
        env.write_text("".join(f"{k}={v}\n" for k, v in {
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(40), "JWTEX_KEY_ENCRYPTION_KEYS": secrets.token_urlsafe(32),
            "POSTGRES_PASSWORD": secrets.token_urlsafe(20), "JWTEX_PUBLIC_URL": self.public_url,
            "JWTEX_WEB1_PORT": self.ports[0], "JWTEX_WEB2_PORT": self.ports[1], "JWTEX_IMAGE": IMAGE,
            "JWTEX_POSTGRES_IMAGE": os.environ["JWTEX_TEST_POSTGRES_IMAGE"],
            "JWTEX_REDIS_IMAGE": os.environ["JWTEX_TEST_REDIS_IMAGE"],
        }.items()))  # fmt: skip
        self.command = [
            os.environ["JWTEX_TEST_PODMAN_COMPOSE"],
            "--env-file",
            str(env),
            "-p",
            self.project,
            "-f",
            str(REPO_ROOT / "compose.yaml"),
        ]

    def run(self, *args: str, input: str | None = None, timeout: float = 180) -> str:
        result = subprocess.run([*self.command, *args], capture_output=True, text=True, input=input, timeout=timeout)
        assert result.returncode == 0, f"podman-compose {' '.join(args)}: {result.returncode}\n{result.stderr[-3000:]}"
        return result.stdout

    def container(self, service: str) -> str:
        names = podman(
            "ps",
            "-a",
            "--filter",
            f"label=com.docker.compose.project={self.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.Names}}",
        ).stdout.split()
        assert len(names) == 1, (service, names)
        return names[0]

    def wait(self, service: str, condition: str) -> None:
        name = self.container(service)
        if condition == "service_healthy":
            healthy = poll(
                lambda: podman("healthcheck", "run", name, check=False).returncode == 0, timeout=120, interval=1
            )
            assert healthy, podman("logs", name, check=False).stderr[-3000:]
        elif condition == "service_completed_successfully":

            def exit_code() -> str | None:
                state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout
                status, code = state.split()
                return code if status == "exited" else None

            code = poll(exit_code, timeout=180, interval=0.5)
            assert code == "0", (code, podman("logs", name, check=False).stderr[-3000:])
        else:
            raise AssertionError(f"depends_on condition {condition!r}: not one this test knows")


@pytest.fixture
def stack(tmp_path):
    if not MUST_RUN:
        pytest.skip("compose stack test: .ci/container runs it with JWTEX_TEST_CONTAINER=1 and podman-compose")
    missing = [name for name in NEEDS if not os.environ.get(name)]
    reason = cannot_run() or (f"it needs {', '.join(missing)} (.ci/container sets them)" if missing else None)
    if reason:
        pytest.fail(f"JWTEX_TEST_CONTAINER=1 but {reason}", pytrace=False)
    running = Stack(tmp_path)
    started = time.monotonic()
    try:
        yield running
    finally:
        stopping = time.monotonic()
        stopped = {}
        services = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
        for service in reversed(_order(services)):  # as docker compose stops them: dependents first
            names = podman(
                "ps",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={running.project}",
                "--filter",
                f"label=com.docker.compose.service={service}",
            ).stdout.split()
            begun = time.monotonic()
            podman("stop", "--time", "30", *names, check=False, timeout=60)
            stopped[service] = round(time.monotonic() - begun, 1)
        running.run("down", "--volumes", timeout=300)
        print(
            f"\ncompose stack: {stopping - started:.1f} s up and tried, {time.monotonic() - stopping:.1f} s down "
            f"(stopping each, in s: {stopped})"
        )


def test_the_stack_comes_up_in_order_and_the_try_it_steps_work_against_it(stack: Stack):
    services = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
    for service in _order(services):
        for dependency, condition in services[service].get("depends_on", {}).items():
            stack.wait(dependency, condition["condition"])
        stack.run("up", "-d", "--no-deps", service)
    for port in stack.ports:
        url = f"http://127.0.0.1:{port}/readyz"
        assert poll(lambda url=url: _status(url) == 200, timeout=120, interval=0.5), url
    for service in ("web-1", "web-2", "worker"):
        stack.wait(service, "service_healthy")

    # The README's "Try it", with `docker compose exec -T web-1 jwtex manage …` for manage.py.
    manage = ("exec", "-T", "web-1", "jwtex", "manage")
    config = stack.run(*manage, "jwtex_demo_upstream", "config")
    assert "created tenant acme" in stack.run(*manage, "jwtex_apply", "-", input=config)
    token = stack.run(
        *manage, "jwtex_demo_upstream", "token", "--repository", "octo-org/app", "--ref", "refs/heads/main"
    ).strip()
    request = urllib.request.Request(
        f"http://127.0.0.1:{stack.ports[1]}/t/acme/exchange?issuerId=github", data=token.encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # through web-2
        issued = response.read().decode()
    issuer = f"{stack.public_url}/t/acme"  # verified from web-1's documents, as AWS would
    with urllib.request.urlopen(issuer + "/.well-known/openid-configuration", timeout=10) as response:
        conf = json.load(response)
    key = jwt.PyJWKClient(conf["jwks_uri"]).get_signing_key_from_jwt(issued)
    claims = jwt.decode(
        issued,
        key.key,
        algorithms=conf["id_token_signing_alg_values_supported"],
        audience="sts.amazonaws.com",
        issuer=conf["issuer"],
    )
    assert claims["iss"] == issuer and "octo-org/app" in claims["sub"]


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status
    except OSError:
        return None
