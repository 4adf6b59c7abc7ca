"""The Containerfile, read as a reviewer reads it (docs/deployment.md); tests/deploy/test_container.py
builds nothing but runs what .ci/container built from it."""

from __future__ import annotations

import json
import re
import tomllib

from tests.conftest import REPO_ROOT
from tests.deploy.invariants import SECRET_NAME, settings_reads

TEXT = (REPO_ROOT / "Containerfile").read_text()
# One instruction per logical line (continuations joined), comments dropped.
INSTRUCTIONS = [
    line.split(None, 1)
    for line in re.sub(r"\\\n\s*", " ", TEXT).splitlines()
    if line.strip() and not line.startswith("#")
]


def _all(name: str) -> list[str]:
    return [rest for instruction, rest in INSTRUCTIONS if instruction == name]


def _runtime() -> list[tuple[str, str]]:
    last_from = max(i for i, (instruction, _) in enumerate(INSTRUCTIONS) if instruction == "FROM")
    return [(instruction, rest) for instruction, rest in INSTRUCTIONS[last_from:]]


def test_the_base_is_an_argument_defaulting_to_the_official_python_slim_image_of_the_supported_version():
    (base,) = [rest for rest in _all("ARG") if rest.startswith("BASE_IMAGE=")]
    requires = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = requires.removeprefix(">=")
    assert re.fullmatch(rf"BASE_IMAGE=docker\.io/library/python:{re.escape(version)}-slim(-\w+)?", base), base
    assert all(rest.startswith("${BASE_IMAGE}") for rest in _all("FROM"))


def test_multi_stage_a_virtualenv_built_then_copied_into_the_runtime():
    stages = _all("FROM")
    assert len(stages) >= 2 and any(rest.endswith(" AS build") for rest in stages)
    runtime = _runtime()
    assert ("COPY", "--from=build /opt/jwtex /opt/jwtex") in runtime
    build = TEXT[TEXT.index(" AS build") : TEXT.rindex("FROM ")]
    assert "pip wheel" in build and "collectstatic" in build  # the wheel, and the assets the image serves
    assert not any(instruction == "RUN" and "pip install" in rest for instruction, rest in runtime)


def test_the_runtime_runs_as_10001_with_the_spool_volume_a_health_check_and_the_entrypoint():
    runtime = dict(_runtime()[1:])  # the last of each instruction
    assert runtime["USER"] == "10001:10001"
    assert json.loads(runtime["VOLUME"]) == ["/var/lib/jwtex"]
    assert runtime["HEALTHCHECK"].endswith('CMD ["jwtex", "healthcheck"]')
    assert json.loads(runtime["ENTRYPOINT"]) == ["jwtex"] and json.loads(runtime["CMD"]) == ["web"]


def test_the_image_environment_is_only_what_the_settings_read_and_no_secret():
    (env,) = [rest for instruction, rest in _runtime() if instruction == "ENV"]
    names = dict(item.split("=", 1) for item in env.split())
    python = {"PATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "DJANGO_SETTINGS_MODULE"}
    assert set(names) - python <= settings_reads(), sorted(set(names) - python - settings_reads())
    assert names["JWTEX_AUDIT_SPOOL_DIR"].startswith(names["JWTEX_VAR_DIR"] + "/")  # the spool is on the volume
    assert not names["JWTEX_STATIC_ROOT"].startswith(names["JWTEX_VAR_DIR"])  # the volume would hide the assets
    assert not any(SECRET_NAME.search(name) for name in names)


def test_the_build_context_is_only_what_the_wheel_is_built_from():
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    rules = [line for line in ignore if line and not line.startswith("#")]
    assert rules[0] == "*"  # everything out, then back in only these
    assert {line[1:].rstrip("/") for line in rules if line.startswith("!")} == {
        "pyproject.toml",
        "README.md",
        "jwtex_site",
        "exchange",
        "tenants",
        "templates",
    }
