"""jwtex-token on its own: one file of the standard library, its help, its checks, and the
pieces the end-to-end tests rely on (atomic write, session names, platforms, back-off, export)."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from email.utils import formatdate

import jwt
import pytest
from hypothesis import given, strategies as st

import jwtex_token as client
from tests.ci.conftest import CLIENT
from tests.upstreams import Route, UpstreamServer

ROLE = "arn:aws:iam::123456789012:role/r"
A_JWT = jwt.encode({"sub": "x", "exp": 4102444800}, "k" * 32, algorithm="HS256")


def _config(**fields):
    return client.Config(**{"url": "https://jwtex.example.com", "tenant": "acme", **fields})


def test_the_client_is_one_file_whose_imports_are_all_the_standard_library(tmp_path):
    source = CLIENT.read_text()
    tree = ast.parse(source, feature_version=(3, 8))  # CI images' Pythons: 3.8 syntax at most
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.partition(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import needs a package beside the file"
            imported.add(node.module.partition(".")[0])
    outside = imported - set(sys.stdlib_module_names) - {"__future__"}
    assert imported and not outside, outside
    # Fetched alone and run without site-packages (-S) or the environment (-I): it still works.
    alone = tmp_path / "jwtex_token.py"
    shutil.copy(CLIENT, alone)
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(alone), "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip() == f"jwtex-token {client.__version__}", done.stderr


def test_help_explains_every_option_and_which_platforms_can_mint_a_second_token():
    done = subprocess.run(
        [sys.executable, str(CLIENT), "--help"], capture_output=True, text=True, timeout=30, check=True
    )
    text = done.stdout
    for action in client.parser()._actions:
        assert action.help and action.help != "==SUPPRESS==", action.option_strings
        assert all(option in text for option in action.option_strings)
    lines = text.splitlines()

    def platform(name: str) -> str:
        start = next(i for i, line in enumerate(lines) if line.strip().startswith(name + " "))
        return " ".join(lines[start : start + 4])

    for can in ("github", "buildkite"):
        assert "Mints a fresh token for every exchange" in platform(can)
    for cannot in ("gitlab", "circleci"):
        assert "Fixed for the job: it cannot mint a second one" in platform(cannot)
    assert "ask the rule for a lifetime as long as the job" in text


def test_installed_as_the_jwtex_token_console_script():
    (entry,) = [e for e in importlib.metadata.entry_points(group="console_scripts") if e.name == "jwtex-token"]
    assert entry.value == "jwtex_token:main"
    script = os.path.join(os.path.dirname(sys.executable), "jwtex-token")
    done = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0 and client.__version__ in done.stdout


def test_the_token_is_written_atomically_mode_0600_and_never_through_a_link(tmp_path):
    path = str(tmp_path / "token.jwt")
    old_umask = os.umask(0)
    try:
        client.write_token(path, "first.token.value")
        with open(path) as reader:  # a reader that opened the file before the next write…
            client.write_token(path, "second.token.value")
            assert reader.read() == "first.token.value"  # …reads the whole old token, never a mix
    finally:
        os.umask(old_umask)
    assert open(path).read() == "second.token.value"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["token.jwt"]  # no temporary file left behind
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    link = tmp_path / "link.jwt"
    link.symlink_to(target)
    client.write_token(str(link), "third.token.value")
    assert target.read_text() == "untouched" and not link.is_symlink() and link.read_text() == "third.token.value"


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"GITHUB_RUN_ID": "9876543210", "GITHUB_RUN_ATTEMPT": "2"}, "gh-9876543210-2"),
        ({"GITHUB_RUN_ID": "9876543210"}, "gh-9876543210-1"),
        ({"GITLAB_CI": "true", "CI_JOB_ID": "4711"}, "gl-4711"),
        ({"CIRCLECI": "true", "CIRCLE_WORKFLOW_JOB_ID": "5f1c-77"}, "cci-5f1c-77"),
        ({"BUILDKITE": "true", "BUILDKITE_JOB_ID": "0190-aa"}, "bk-0190-aa"),
        ({}, "jwtex-1700000000"),
        ({"GITHUB_RUN_ID": "1 2/3:" + "9" * 80}, "gh-1_2_3_" + "9" * 55),
    ],
)
def test_the_role_session_name_is_made_from_the_run(env, expected):
    assert client.session_name_from_run(env, 1700000000.5) == expected


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "GITHUB_RUN_ID",
                "GITHUB_RUN_ATTEMPT",
                "GITLAB_CI",
                "CI_JOB_ID",
                "CIRCLECI",
                "CIRCLE_BUILD_NUM",
                "BUILDKITE",
                "BUILDKITE_JOB_ID",
            ]
        ),
        st.text(max_size=90),
    )
)
def test_a_session_name_from_any_run_is_one_sts_accepts(env):
    assert client.SESSION_NAME.fullmatch(client.session_name_from_run(env, time.time()))


@pytest.mark.parametrize(
    "argv, env, message",
    [
        (["--url", "http://jwtex.example.com"], {}, "http only on loopback"),
        (["--url", "https://user:pw@jwtex.example.com"], {}, "with no credentials"),
        (["--url", "https://jwtex.example.com/`touch pwned`"], {}, "characters to escape"),
        (["--tenant", "acme; touch pwned"], {}, "tenant slug"),
        (["--issuer-id", "github&x=1"], {}, "not an issuer id"),
        (["--role-arn", "arn:aws:iam::123:role/x"], {}, "not an IAM role ARN"),
        (["--role-session-name", "$(touch pwned)"], {}, "role session name"),
        ([], {"JWTEX_ROLE_SESSION_NAME": "x"}, "role session name"),
        (
            ["--credential-process", "arn:aws:iam::123456789012:role/deploy"],
            {"AWS_REGION": "eu-west-1.evil.test"},
            "not an AWS region",
        ),
        (["--credential-process", "arn:aws:iam::123456789012:role/deploy", "--refresh"], {}, "neither --refresh"),
        (["--export", "github"], {}, "needs $GITHUB_ENV"),
        (["--token-env", "A-B"], {}, "variable name"),
    ],
)
def test_what_cannot_work_is_refused_before_anything_is_asked(argv, env, message, capsys):
    base = {"--url": "https://jwtex.invalid", "--tenant": "acme"}
    argv = argv + [word for option, value in base.items() if option not in argv for word in (option, value)]
    assert client.main(argv, env={"GITHUB_ACTIONS": "true", **env}) == 2
    assert message in capsys.readouterr().err


def test_platforms_are_detected_and_say_what_is_missing(tmp_path, monkeypatch):
    config = _config()
    retrier = client.Retrier(client.Clock(), time.time() + 5)
    with pytest.raises(client.Usage, match="no CI platform detected"):
        client.upstream_from(config, {})
    with pytest.raises(client.Failure, match="permissions: id-token: write"):
        client.upstream_from(config, {"GITHUB_ACTIONS": "true"})
    gitlab = client.upstream_from(config, {"GITLAB_CI": "true", "JWTEX_ID_TOKEN": A_JWT})
    assert gitlab.token(retrier) == A_JWT and not gitlab.mints
    with pytest.raises(client.Failure, match="id_tokens: JWTEX_ID_TOKEN: aud: https://jwtex.example.com/t/acme"):
        client.upstream_from(config, {"GITLAB_CI": "true"}).token(retrier)
    circle = client.upstream_from(config, {"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN_V2": A_JWT + "\n"})
    assert circle.token(retrier) == A_JWT and not circle.mints
    with pytest.raises(client.Failure, match="not a JWT"):
        client.upstream_from(config, {"CIRCLECI": "true", "CIRCLE_OIDC_TOKEN_V2": "secret-but-no-jwt"}).token(retrier)

    # Buildkite: the agent is asked for a token with the tenant's issuer URL as audience, every time.
    calls = tmp_path / "calls"
    agent = tmp_path / "buildkite-agent"
    agent.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\necho '{A_JWT}'\n")
    agent.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    buildkite = client.upstream_from(config, {"BUILDKITE": "true"})
    assert buildkite.mints and buildkite.token(retrier) == A_JWT and buildkite.token(retrier) == A_JWT
    assert calls.read_text().splitlines() == ["oidc request-token --audience https://jwtex.example.com/t/acme"] * 2

    # A token file is read again for each exchange (a rotated, e.g. Kubernetes projected, token).
    token_file = tmp_path / "token"
    token_file.write_text(A_JWT)
    source = client.upstream_from(_config(token_file=str(token_file)), {"GITHUB_ACTIONS": "true"})
    assert source.mints and source.token(retrier) == A_JWT
    other = jwt.encode({"sub": "y"}, "k" * 32, algorithm="HS256")
    token_file.write_text(other)
    assert source.token(retrier) == other


def test_back_off_is_capped_exponential_with_jitter():
    for attempt in range(1, 12):
        ceiling = min(16.0, 2.0 ** (attempt - 1))
        assert client.backoff(attempt, 0.0) == ceiling / 2 and client.backoff(attempt, 1.0) == ceiling
    assert client.retry_after("1", 0) == 1.0
    now = time.time()
    assert 9 <= client.retry_after(formatdate(now + 10, usegmt=True), now) <= 10
    assert client.retry_after("soon", now) is None and client.retry_after(None, now) is None


class FakeClock(client.Clock):
    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds

    def random(self) -> float:
        return 0.5


def test_retries_stop_at_the_deadline_and_never_before_retry_after():
    clock = FakeClock(1000.0)
    answers = iter([client.Transient("503"), client.Transient("429", retry_after=7.0), "done"])

    def attempt(timeout):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert client.Retrier(clock, 1100.0).run("x", attempt) == "done"
    assert clock.slept == [0.75, 7.0]  # 1 s ceiling with jitter; then Retry-After beats 1.5 s
    clock = FakeClock(1000.0)

    def always_busy(timeout):
        raise client.Transient("busy", retry_after=30.0)

    with pytest.raises(client.Failure, match="gave up after 1 attempt"):
        client.Retrier(clock, 1020.0).run("x", always_busy)
    assert clock.slept == []  # asked to wait past the deadline: fails at once rather than sleeping in vain


def test_exports_are_quoted_for_the_shell_and_single_lines_for_github(tmp_path, capsys):
    config = _config(role_arn="arn:aws:iam::123456789012:role/deploy", export="shell")
    path = str(tmp_path / "it's a $(dir)" / "t.jwt")
    client.export(config, path, "gh-1-1", {})
    printed = capsys.readouterr().out
    done = subprocess.run(
        ["bash", "-c", printed + 'printf "%s\\n" "$AWS_WEB_IDENTITY_TOKEN_FILE" "$AWS_ROLE_ARN"'],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert done.stdout.splitlines() == [path, "arn:aws:iam::123456789012:role/deploy"]
    env_file, output_file = tmp_path / "env", tmp_path / "output"
    github = {"GITHUB_ENV": str(env_file), "GITHUB_OUTPUT": str(output_file)}
    client.export(_config(export="github"), "/tmp/t.jwt", "gh-1-1", github)
    assert env_file.read_text() == "AWS_WEB_IDENTITY_TOKEN_FILE=/tmp/t.jwt\nAWS_ROLE_SESSION_NAME=gh-1-1\n"
    assert output_file.read_text() == "token-file=/tmp/t.jwt\nrole-session-name=gh-1-1\n"
    with pytest.raises(client.Failure, match="several lines"):
        client.export(_config(export="github"), "/tmp/t.jwt\nLD_PRELOAD=/x.so", "gh-1-1", github)
    assert env_file.read_text().count("\n") == 2  # nothing more was written


@pytest.mark.parametrize(
    "env, region, endpoint",
    [
        ({}, "eu-west-1", "https://sts.eu-west-1.amazonaws.com/"),
        ({}, "cn-north-1", "https://sts.cn-north-1.amazonaws.com.cn/"),
        ({}, "us-gov-west-1", "https://sts.us-gov-west-1.amazonaws.com/"),
        ({}, "", "https://sts.amazonaws.com/"),
        (
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:2"},
            "eu-west-1",
            "http://127.0.0.1:2/",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "eu-west-1", "http://127.0.0.1:1/"),
    ],
)
def test_the_sts_endpoint_is_regional_or_the_one_the_sdks_would_use(env, region, endpoint):
    assert client.sts_endpoint(env, region) == endpoint


def test_a_redirect_is_not_followed_with_the_token():
    elsewhere, jwtex = UpstreamServer(), UpstreamServer()
    try:
        jwtex.routes["/t/acme/exchange?issuerId=github"] = Route(status=302, headers={"Location": elsewhere.url + "/x"})
        retrier = client.Retrier(FakeClock(), time.time() + 30)
        with pytest.raises(client.Failure, match="redirect to .*none is followed"):
            client.exchange(_config(url=jwtex.url, issuer_id="github"), A_JWT, retrier)
        assert len(jwtex.requests) == 1 and jwtex.requests[0].body == A_JWT.encode()
        assert elsewhere.requests == []
    finally:
        elsewhere.close()
        jwtex.close()


def test_an_answer_that_is_not_a_token_is_a_failure_not_a_file():
    jwtex = UpstreamServer()
    try:
        jwtex.routes["/t/acme/exchange"] = Route(status=200, body=b"<html>login</html>")
        with pytest.raises(client.Failure, match="not with a token"):
            client.exchange(_config(url=jwtex.url), A_JWT, client.Retrier(FakeClock(), time.time() + 30))
    finally:
        jwtex.close()


def test_sts_errors_name_the_code_and_retry_only_what_aws_calls_transient():
    sts = UpstreamServer()
    error = (
        '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>'
        "<Code>{code}</Code><Message>{message}</Message></Error></ErrorResponse>"
    )
    try:
        sts.routes["/"] = Route(status=400, body=error.format(code="AccessDenied", message="Not authorized").encode())
        clock = FakeClock()
        with pytest.raises(client.Failure, match="AccessDenied: Not authorized"):
            client.assume_role(
                endpoint=sts.url + "/",
                role_arn=ROLE,
                session_name="gh-1-1",
                token=A_JWT,
                duration=0,
                retrier=client.Retrier(clock, clock.now() + 30),
            )
        assert clock.slept == [] and len(sts.requests) == 1
        sts.routes["/"] = Route(status=400, body=error.format(code="IDPCommunicationError", message="x").encode())
        with pytest.raises(client.Failure, match="gave up"):
            client.assume_role(
                endpoint=sts.url + "/",
                role_arn=ROLE,
                session_name="gh-1-1",
                token=A_JWT,
                duration=900,
                retrier=client.Retrier(clock, clock.now() + 30),
            )
        assert len(clock.slept) >= 3 and len(sts.requests) == 1 + len(clock.slept) + 1
        form = dict(part.split("=", 1) for part in sts.requests[-1].body.decode().split("&"))
        assert form["Action"] == "AssumeRoleWithWebIdentity" and form["DurationSeconds"] == "900"
        assert json.dumps(form).count(A_JWT) == 1
    finally:
        sts.close()


def test_a_message_from_a_server_stays_one_line_and_cannot_pass_for_a_workflow_command(capsys):
    client.log("AWS STS answered 400 X: no\n::add-mask::x\r\n::error::forged")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jwtex-token: ") and "\n::" not in err


def test_the_token_file_is_named_absolutely_for_the_steps_that_run_elsewhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = client.parser().parse_args(["--url", "https://jwtex.example.com", "--tenant", "acme", "--output", "t.jwt"])
    assert client.config_from(args, {}).output == str(tmp_path / "t.jwt")
    args = client.parser().parse_args(["--url", "https://jwtex.example.com", "--tenant", "acme"])
    assert client.config_from(args, {"AWS_WEB_IDENTITY_TOKEN_FILE": "sdk.jwt"}).output == str(tmp_path / "sdk.jwt")
