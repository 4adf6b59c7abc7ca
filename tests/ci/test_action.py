"""The GitHub Action (action.yml), its steps run as GitHub's runner runs them (tests/ci/runners.py),
against the fake Actions token service, the served jwtex and moto's STS."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.ci.conftest import CALLER, ROLE_ARN, aws_environment
from tests.ci.fakes import STS_CALLS
from tests.ci.runners import ACTION, action_run

LIVE = pytest.mark.django_db(transaction=True)  # the live server sees the rows the test makes


@pytest.fixture
def refreshers():
    """Background refreshers the steps started (their pid from the step's log), stopped after the test."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def _runner(actions, tmp_path: Path) -> dict[str, str]:
    temp = tmp_path / "runner-temp"
    temp.mkdir(exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "RUNNER_TEMP": str(temp),
        "RUNNER_OS": "Linux",
        "GITHUB_WORKSPACE": str(tmp_path),
        **actions.runner_environment(),
    }


def _pids(stderr: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"refreshing it in the background \(process (\d+)", stderr)]


def test_the_action_declares_its_inputs_and_outputs():
    action = yaml.safe_load(ACTION.read_text())
    inputs = action["inputs"]
    assert set(inputs) == {"url", "tenant", "issuer-id", "role-arn", "role-session-name", "refresh"}
    assert {name for name, spec in inputs.items() if spec.get("required")} == {"url", "tenant", "role-arn"}
    assert inputs["refresh"]["default"] == "true" and inputs["role-session-name"]["default"] == ""
    assert all(spec["description"] for spec in inputs.values())
    assert set(action["outputs"]) == {"token-file", "role-session-name"}
    # Every input reaches the step through env:, none is spliced into its script.
    (step,) = action["runs"]["steps"]
    assert "${{" not in step["run"]
    assert {f"${{{{ inputs.{name} }}}}" for name in inputs} == set(step["env"].values())


@LIVE
def test_later_steps_assume_the_role_with_the_token_the_action_wrote(
    live_server, jwtex, actions, sts, tmp_path, refreshers
):
    runner = _runner(actions, tmp_path)
    ran = action_run(
        {"url": live_server.url, "tenant": "acme", "issuer-id": "github", "role-arn": ROLE_ARN},
        env=runner,
        workdir=tmp_path,
    )
    refreshers.extend(_pids(ran.stderr))
    assert ran.returncode == 0, ran.stderr
    assert set(ran.env) == {"AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME"}
    token_file = Path(ran.env["AWS_WEB_IDENTITY_TOKEN_FILE"])
    assert token_file.parent == Path(runner["RUNNER_TEMP"]) and stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert ran.env["AWS_ROLE_ARN"] == ROLE_ARN and ran.env["AWS_ROLE_SESSION_NAME"] == "gh-9876543210-2"
    assert ran.outputs == {"token-file": str(token_file), "role-session-name": "gh-9876543210-2"}
    assert len(refreshers) == 1  # refresh defaults to true: the token is renewed in the background
    token = token_file.read_text()
    assert token not in ran.stdout + ran.stderr

    # A later step: the AWS SDK (boto3) with the job's environment, as the runner gives it GITHUB_ENV.
    later = {**runner, **ran.env, **aws_environment(sts, tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", CALLER], env=later, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == "arn:aws:sts::123456789012:assumed-role/deploy/gh-9876543210-2"
    (call,) = STS_CALLS
    assert call.token == token and call.role_arn == ROLE_ARN and call.session_name == "gh-9876543210-2"


@LIVE
def test_refresh_false_writes_once(live_server, jwtex, actions, tmp_path, refreshers):
    ran = action_run(
        {
            "url": live_server.url,
            "tenant": "acme",
            "role-arn": ROLE_ARN,
            "refresh": "false",
            "role-session-name": "deploy-main",
        },
        env=_runner(actions, tmp_path),
        workdir=tmp_path,
    )
    refreshers.extend(_pids(ran.stderr))
    assert ran.returncode == 0, ran.stderr
    assert refreshers == [] and ran.env["AWS_ROLE_SESSION_NAME"] == "deploy-main"
    ran = action_run(
        {"url": live_server.url, "tenant": "acme", "role-arn": ROLE_ARN, "refresh": "yes"},
        env=_runner(actions, tmp_path),
        workdir=tmp_path,
    )
    assert ran.returncode == 1 and "::error title=jwtex::The refresh input must be true or false." in ran.stdout


@LIVE
@pytest.mark.parametrize(
    "inputs",
    [
        {"tenant": "acme$(touch PWNED)"},
        {"tenant": 'acme"; touch PWNED; echo "'},
        {"url": "https://jwtex.example.com/`touch PWNED`"},
        {"issuer-id": "github; touch PWNED"},
        {"role-session-name": "$(touch PWNED)"},
        {"role-arn": ROLE_ARN + "\nLD_PRELOAD=/tmp/PWNED.so"},
        {"role-arn": ROLE_ARN + "'; touch PWNED; '"},
        {"refresh": "true; touch PWNED"},
    ],
)
def test_inputs_are_text_never_code(live_server, jwtex, actions, tmp_path, inputs, refreshers):
    """Whatever an input holds, it runs nothing and exports nothing: it is refused as a value."""
    given = {"url": live_server.url, "tenant": "acme", "role-arn": ROLE_ARN, "refresh": "false", **inputs}
    ran = action_run(given, env=_runner(actions, tmp_path), workdir=tmp_path)
    refreshers.extend(_pids(ran.stderr))
    assert ran.returncode != 0
    assert not list(tmp_path.rglob("PWNED*")) and not (Path.cwd() / "PWNED").exists()
    assert ran.env == {} and actions.requests == []  # refused before asking GitHub for anything


def test_the_readme_uses_the_action_and_the_component_with_their_own_inputs():
    from tests.ci.runners import component_interpolated
    from tests.conftest import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## CI set-up") : readme.index("### The client, for other platforms")]
    github, gitlab = (yaml.safe_load(block.split("```")[0]) for block in section.split("```yaml")[1:3])
    (step,) = [step for step in github["jobs"]["deploy"]["steps"] if "uses" in step]
    inputs = yaml.safe_load(ACTION.read_text())["inputs"]
    assert set(step["with"]) <= set(inputs)
    assert {name for name, spec in inputs.items() if spec.get("required")} <= set(step["with"])
    (include,) = gitlab["include"]
    assert gitlab["deploy"]["extends"] in component_interpolated(include["inputs"])
