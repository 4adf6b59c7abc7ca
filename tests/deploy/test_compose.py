"""compose.yaml and .env.example, read as a reviewer reads them (docs/deployment.md): one beat, migrate
before everything else, health checks and restart policies, only variables the settings read,
secrets only from .env, and an example .env with no secret in it. (CI also brings the stack up
with podman-compose: tests/deploy/test_compose_stack.py.)"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.invariants import SECRET_NAME, URL_NAME, endpoint_exists, entrypoint_commands, settings_reads

JWTEX = ("migrate", "web-1", "web-2", "worker", "beat")
INTERPOLATION = re.compile(r"\$\{([A-Z][A-Z0-9_]*)(?::?([-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _example() -> dict[str, str]:
    lines = (REPO_ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_the_stack_has_its_services_and_the_jwtex_ones_run_the_image(services):
    assert set(services) == {"db", "redis", *JWTEX}
    assert {services[name]["command"][0] for name in JWTEX} <= entrypoint_commands()
    images = {services[name]["image"] for name in JWTEX}
    assert len(images) == 1 and next(iter(images)).startswith("${JWTEX_IMAGE:-")
    assert all(services[name]["build"]["dockerfile"] == "Containerfile" for name in JWTEX)
    assert (REPO_ROOT / services["migrate"]["build"]["context"] / "Containerfile").is_file()


def test_exactly_one_beat_and_two_web_replicas(services):
    beats = [name for name, service in services.items() if service.get("command", [""])[0] == "beat"]
    assert beats == ["beat"]
    assert "deploy" not in services["beat"] and "scale" not in services["beat"]
    assert [name for name in JWTEX if services[name]["command"] == ["web"]] == ["web-1", "web-2"]


def test_migrate_runs_first_and_once(services):
    migrate = services["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
    for name in JWTEX[1:]:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name


def test_health_checks_and_restart_policies(services):
    for name in ("db", "redis", "web-1", "web-2", "worker"):
        assert services[name]["healthcheck"]["test"][0] == "CMD", name
    for name in ("web-1", "web-2", "worker"):
        assert services[name]["healthcheck"]["test"] == ["CMD", "jwtex", "healthcheck"]
    assert endpoint_exists("/healthz")  # what the web containers' health check asks for
    for name in ("db", "redis", "web-1", "web-2", "worker", "beat"):
        assert services[name]["restart"] == "unless-stopped", name


def test_the_jwtex_containers_are_locked_down_with_a_spool_volume_each(services):
    spools = []
    for name in JWTEX:
        service = services[name]
        assert service["read_only"] is True and service["user"] == "10001:10001", name
        assert "/tmp" in service["tmpfs"] and service["cap_drop"] == ["ALL"], name
        if name != "migrate":
            (volume,) = service["volumes"]
            spools.append(volume.split(":")[0])
            assert volume.endswith(":/var/lib/jwtex"), name
    assert len(set(spools)) == len(spools)  # never shared: a spool's files are named per host
    assert all(services[name]["hostname"] == name for name in ("web-1", "web-2"))


def test_every_variable_is_one_the_settings_read_and_every_secret_comes_from_env(services):
    read = settings_reads()
    for name in JWTEX:
        environment = services[name]["environment"]
        assert set(environment) <= read, sorted(set(environment) - read)
        for variable, value in environment.items():
            if SECRET_NAME.search(variable):  # from .env: required, or empty by default (an optional token)
                (used,) = INTERPOLATION.findall(value)
                assert INTERPOLATION.fullmatch(value) and (used[1] == "?" or used[1:] == ("-", "")), (variable, value)
            elif URL_NAME.search(variable) and "@" in value:  # its password from .env
                password = value.split("://", 1)[1].split("@", 1)[0].partition(":")[2]
                assert INTERPOLATION.fullmatch(password) and "?" in password, (variable, value)
    assert INTERPOLATION.fullmatch(services["db"]["environment"]["POSTGRES_PASSWORD"])


def test_postgres_and_redis_images_are_variables_defaulting_to_the_official_ones(services):
    assert services["db"]["image"].startswith("${JWTEX_POSTGRES_IMAGE:-docker.io/library/postgres:")
    assert services["redis"]["image"].startswith("${JWTEX_REDIS_IMAGE:-docker.io/library/redis:")


def test_the_example_env_names_what_the_file_needs_and_holds_no_secret():
    text = (REPO_ROOT / "compose.yaml").read_text()
    example = _example()
    required = {name for name, kind, _ in INTERPOLATION.findall(text) if kind == "?"}
    assert required <= set(example), sorted(required - set(example))
    used = {name for name, _, _ in INTERPOLATION.findall(text)}
    assert set(example) <= used, sorted(set(example) - used)
    secrets = {name: value for name, value in example.items() if SECRET_NAME.search(name)}
    assert secrets and all(value == "" for value in secrets.values()), secrets
    assert ".env" in (REPO_ROOT / ".gitignore").read_text().splitlines()
