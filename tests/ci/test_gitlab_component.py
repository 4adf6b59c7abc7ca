"""The GitLab CI/CD component (templates/jwtex-token/template.yml): included by a job and run as
GitLab runs it (tests/ci/runners.py), against a fake GitLab issuer, the served jwtex and moto's STS."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import stat
import sys
from pathlib import Path

import pytest

from exchange.models import Issuer, Rule
from tests.ci.conftest import CALLER, CLIENT, ROLE_ARN, aws_environment
from tests.ci.fakes import STS_CALLS, FakeActions
from tests.ci.runners import COMPONENT, component_documents, component_interpolated, gitlab_job_run

LIVE = pytest.mark.django_db(transaction=True)  # the live server sees the rows the test makes
INPUTS = {"tenant": "acme", "issuer-id": "gitlab", "role-arn": ROLE_ARN}


def _embedder():
    spec = importlib.util.spec_from_file_location("embed_client", COMPONENT.parent / "embed_client.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_component_carries_the_client_as_it_is_in_the_repository():
    template = COMPONENT.read_text()
    assert _embedder().embedded(template, CLIENT.read_text()) == template, "run `make gitlab-component`"
    _, body = component_documents()
    (script,) = body[".jwtex-token"]["before_script"]
    assert "$[[" not in script  # no input is ever part of the script's text
    assert CLIENT.read_text().rstrip("\n") in "\n".join(line for line in script.split("\n"))


def test_a_client_that_cannot_be_embedded_is_refused():
    template = COMPONENT.read_text()
    with pytest.raises(ValueError, match="cannot be embedded"):
        _embedder().embedded(template, "print('hi')\nJWTEX_TOKEN_PY\nimport os\n")
    with pytest.raises(ValueError, match="cannot be embedded"):
        _embedder().embedded(template, "x = '$[[ inputs.url ]]'\n")


@pytest.mark.parametrize(
    "name, value",
    [
        ("url", "https://jwtex.example.com/$(touch PWNED)"),
        ("url", "http://jwtex.example.com/"),
        ("tenant", "acme; touch PWNED"),
        ("issuer-id", "gitlab`touch PWNED`"),
        ("role-arn", ROLE_ARN + "\nexport X=1"),
        ("role-session-name", "$(touch PWNED)"),
        ("refresh", "yes"),
    ],
)
def test_gitlab_refuses_inputs_that_are_not_what_they_say(name, value):
    with pytest.raises(ValueError, match=f"`{name}` input"):
        component_interpolated({"url": "https://jwtex.example.com", **INPUTS, name: value})


@pytest.fixture
def gitlab(jwtex, live_server):
    """A GitLab instance as an upstream issuer of the tenant, and a rule for one of its groups."""
    fake = FakeActions(
        claims={
            "sub": "project_path:octo-group/app:ref_type:branch:ref:main",
            "namespace_id": "4242",
            "namespace_path": "octo-group",
            "project_path": "octo-group/app",
        }
    )
    issuer = Issuer.objects.create(
        tenant=jwtex, issuer_id="gitlab", issuer=fake.url, audiences=[f"{live_server.url}/t/acme"]
    )
    rule = Rule.objects.create(
        tenant=jwtex,
        position=30,
        name="octo-group",
        effect="allow",
        when="claims.namespace_id == '4242'",
        session_tags={"project": "claims.project_path"},
    )
    rule.issuers.add(issuer)
    yield fake
    fake.close()


def _job(tmp_path: Path, config: dict, gitlab: FakeActions, variables: dict[str, str]):
    config["deploy"] = {
        "extends": ".jwtex-token",
        "variables": variables,
        "script": ['"$JOB_PYTHON" -c "$CALLER"', 'cat "$AWS_WEB_IDENTITY_TOKEN_FILE" > token-seen'],
    }
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    predefined = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(temporary),
        "CI": "true",
        "GITLAB_CI": "true",
        "CI_JOB_ID": "4711",
        "CI_PIPELINE_ID": "99",
        "CI_SERVER_URL": "https://gitlab.example.com",
    }
    audiences = []

    def id_token(aud: str) -> str:
        audiences.append(aud)
        return gitlab.mint(aud)

    ran = gitlab_job_run(config, "deploy", predefined=predefined, id_token=id_token, workdir=tmp_path)
    for pid in re.findall(r"refreshing it in the background \(process (\d+)", ran.stderr):
        try:
            os.kill(int(pid), signal.SIGTERM)
        except ProcessLookupError:
            pass
    return ran, audiences, temporary


@LIVE
def test_the_job_script_assumes_the_role_with_the_token_the_component_wrote(live_server, gitlab, sts, tmp_path):
    config = component_interpolated({"url": live_server.url, **INPUTS})
    variables = {**aws_environment(sts, tmp_path), "JOB_PYTHON": sys.executable, "CALLER": CALLER}
    variables["PATH"] = "/usr/bin:/bin"
    ran, audiences, temporary = _job(tmp_path, config, gitlab, variables)
    assert ran.returncode == 0, ran.stderr
    assert audiences == [f"{live_server.url}/t/acme"]  # GitLab was asked for the tenant's issuer URL as audience
    assert json.loads(ran.stdout) == "arn:aws:sts::123456789012:assumed-role/deploy/gl-4711"
    (token_file,) = temporary.glob("jwtex-acme-*.jwt")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    (call,) = STS_CALLS
    assert call.token == token_file.read_text() == (tmp_path / "token-seen").read_text()
    assert call.session_name == "gl-4711" and call.role_arn == ROLE_ARN
    assert "refreshing it in the background" in ran.stderr  # refresh defaults to true
    assert call.token not in ran.stderr and gitlab.minted[0] not in ran.stderr


@LIVE
@pytest.mark.parametrize(
    "name, value",
    [
        ("role-session-name", "$(touch PWNED)"),
        ("tenant", "acme$(touch PWNED)"),
        ("role-arn", ROLE_ARN + "'; touch PWNED; echo '"),
    ],
)
def test_an_input_that_got_past_gitlab_is_still_never_code(live_server, gitlab, tmp_path, name, value):
    config = component_interpolated({"url": live_server.url, **INPUTS, "refresh": "false", name: value}, check=False)
    ran, _, temporary = _job(tmp_path, config, gitlab, {"JOB_PYTHON": sys.executable, "CALLER": CALLER})
    assert ran.returncode == 2 and "jwtex-token: error:" in ran.stderr
    assert not list(tmp_path.rglob("PWNED*")) and not list(temporary.glob("*.jwt"))
