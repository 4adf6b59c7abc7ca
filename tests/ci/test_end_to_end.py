"""A CI job's way to AWS, with no real GitHub or AWS: the fake Actions token service → jwtex-token
→ jwtex served by the live server → moto's STS (taught to check what AWS checks) → credentials."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime
from types import SimpleNamespace

import jwt
import pytest

import jwtex_token as client
from exchange.core.limits import DEFAULT_LEEWAY
from exchange.models import ExchangeRecord, Issuer, Rule
from tests.ci.conftest import CALLER, CLIENT, ROLE_ARN, aws_environment
from tests.ci.fakes import SESSION_NAME, STS_CALLS, Fault, FaultyFront, TokenRequest
from tests.ci.test_client import FakeClock
from tests.conftest import poll

pytestmark = pytest.mark.django_db(transaction=True)


def _client(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CLIENT), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _jwks_key(live_server, token: str):
    return jwt.PyJWKClient(f"{live_server.url}/t/acme/.well-known/jwks.json").get_signing_key_from_jwt(token).key


def test_credential_process_gives_the_aws_sdk_credentials_of_the_role(live_server, jwtex, actions, sts, tmp_path):
    command = shlex.join(
        [
            sys.executable,
            str(CLIENT),
            "--url",
            live_server.url,
            "--tenant",
            "acme",
            "--issuer-id",
            "github",
            "--credential-process",
            ROLE_ARN,
        ]
    )
    (tmp_path / "aws-config").write_text(f"[default]\ncredential_process = {command}\n")
    env = {**aws_environment(sts, tmp_path), **actions.runner_environment()}
    done = subprocess.run(
        [sys.executable, "-c", CALLER], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    # boto3 ran the client, took its credentials, and STS (moto) knows them as the assumed role's.
    assert json.loads(done.stdout) == "arn:aws:sts::123456789012:assumed-role/deploy/gh-9876543210-2"

    (call,) = STS_CALLS
    assert call.role_arn == ROLE_ARN and call.session_name == "gh-9876543210-2"
    assert SESSION_NAME.fullmatch(call.session_name)
    # The token STS received is the one jwtex issued (its audit record), signed by the tenant's key.
    claims = jwt.decode(
        call.token,
        _jwks_key(live_server, call.token),
        algorithms=["ES256", "RS256"],
        audience="sts.amazonaws.com",
        issuer=f"{live_server.url}/t/acme",
    )
    record = ExchangeRecord.objects.get(tenant=jwtex)
    assert record.decision == "allowed" and record.issued_jti == claims["jti"] and record.issuer_ref == "github"
    assert claims["https://aws.amazon.com/tags"]["principal_tags"] == {
        "repository": ["octo-org/app"],
        "actor": ["dependabot_bot_"],
    }
    assert claims["https://aws.amazon.com/source_identity"] == "dependabot_bot_"  # what CloudTrail will show
    # GitHub was asked once, with the right bearer, for the tenant's issuer URL as audience.
    assert actions.requests == [TokenRequest(authorized=True, audience=f"{live_server.url}/t/acme")]


def test_credential_process_prints_the_json_aws_expects_and_never_a_token(live_server, jwtex, actions, sts, tmp_path):
    env = {**aws_environment(sts, tmp_path), **actions.runner_environment()}
    done = _client(
        "--url",
        live_server.url,
        "--tenant",
        "acme",
        "--credential-process",
        ROLE_ARN,
        "--role-session-name",
        "release@acme",
        "--duration",
        "900",
        env=env,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) == {"Version", "AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration"}
    assert answer["Version"] == 1
    assert datetime.fromisoformat(answer["Expiration"].replace("Z", "+00:00")).timestamp() > time.time() + 800
    (call,) = STS_CALLS
    assert call.session_name == "release@acme"
    for secret in (call.token, *actions.minted):
        assert secret not in done.stdout and secret not in done.stderr


def test_sts_refusing_the_role_fails_with_its_reason(live_server, jwtex, actions, sts, tmp_path):
    env = {**aws_environment(sts, tmp_path), **actions.runner_environment()}
    Rule.objects.filter(name="octo-org").update(audience="not-sts")  # a token STS's provider does not accept
    Issuer.objects.get(tenant=jwtex).save()  # bump the tenant's configuration version (update() sends no signal)
    done = _client("--url", live_server.url, "--tenant", "acme", "--credential-process", ROLE_ARN, env=env)
    assert done.returncode == 1 and done.stdout == ""
    assert (
        "AssumeRoleWithWebIdentity of arn:aws:iam::123456789012:role/deploy refused: AWS STS answered 400 "
        "InvalidIdentityToken" in done.stderr
    )
    assert len(STS_CALLS) == 1


def _exchange(url: str, out, actions, clock, live_server) -> int:
    """The client at ``url`` (jwtex, or a front of it): the audience stays jwtex's tenant issuer URL."""
    return client.main(
        [
            "--url",
            url,
            "--tenant",
            "acme",
            "--issuer-id",
            "github",
            "--output",
            str(out),
            "--audience",
            f"{live_server.url}/t/acme",
        ],
        env=actions.runner_environment(),
        clock=clock,
    )


def test_a_503_is_retried_and_the_second_answer_is_written(live_server, jwtex, actions, tmp_path, capsys):
    front = FaultyFront(live_server.url)
    front.faults = [Fault(503)]
    clock, out = FakeClock(), tmp_path / "token.jwt"
    try:
        assert _exchange(front.url, out, actions, clock, live_server) == 0
    finally:
        front.close()
    assert front.seen == 2 and len(clock.slept) == 1  # one retry, after one back-off
    assert "jwtex answered 503 temporarily_unavailable: Try again later.; retrying in" in capsys.readouterr().err
    token = out.read_text()
    jwt.decode(token, _jwks_key(live_server, token), algorithms=["ES256"], audience="sts.amazonaws.com")
    assert ExchangeRecord.objects.filter(tenant=jwtex, decision="allowed").count() == 1


def test_a_429_waits_at_least_its_retry_after(live_server, jwtex, actions, tmp_path):
    front = FaultyFront(live_server.url)
    busy = b'{"error": "too_many_requests", "error_description": "Slow down."}'
    front.faults = [Fault(429, {"Retry-After": "1"}, busy)]
    clock, out = FakeClock(), tmp_path / "token.jwt"
    try:
        assert _exchange(front.url, out, actions, clock, live_server) == 0
    finally:
        front.close()
    assert front.seen == 2
    assert clock.slept == [1.0]  # its own back-off would have been 0.75 s: Retry-After wins
    assert out.read_text().count(".") == 2


def test_a_dropped_connection_is_retried(live_server, jwtex, actions, tmp_path):
    front = FaultyFront(live_server.url)
    front.faults = [Fault(drop=True)]
    clock, out = FakeClock(), tmp_path / "token.jwt"
    try:
        assert _exchange(front.url, out, actions, clock, live_server) == 0
    finally:
        front.close()
    assert front.seen == 2 and len(clock.slept) == 1 and out.exists()


def test_a_403_fails_at_once_with_the_deciding_rule(live_server, jwtex, actions, tmp_path, capsys):
    actions.claims["ref"] = "refs/heads/feature"
    clock, out = FakeClock(), tmp_path / "token.jwt"
    assert _exchange(live_server.url, out, actions, clock, live_server) == 1
    err = capsys.readouterr().err
    assert "jwtex refused the exchange: jwtex answered 403 access_denied: Rule 'main only' denies this exchange." in err
    assert clock.slept == [] and not out.exists() and len(actions.requests) == 1
    assert ExchangeRecord.objects.get(tenant=jwtex).decision == "denied"
    assert actions.minted[0] not in err


class LongJob(FakeClock):
    """The job's clock, shared by jwtex, the Actions service and the client: every simulated
    second (the refresher sleeps in slices of at most one) an AWS SDK reads the token file, and
    finds a token jwtex signed that has not expired."""

    def __init__(self, path, key) -> None:
        super().__init__()
        self.path, self.key, self.tokens, self.reads = path, key, set(), 0

    def sleep(self, seconds: float) -> None:
        assert 0 < seconds <= 1.0
        super().sleep(seconds)
        text = self.path.read_text()
        claims = jwt.decode(
            text,
            self.key,
            algorithms=["ES256"],
            audience="sts.amazonaws.com",
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
        assert claims["exp"] > self.t, f"the token file expired {self.t - claims['exp']:.0f} s ago"
        self.tokens.add(text)
        self.reads += 1


def _long_job(live_server, jwtex, actions, tmp_path, monkeypatch, *, lifetime: int, minutes: int):
    Rule.objects.filter(name="octo-org").update(lifetime=lifetime)
    Issuer.objects.get(tenant=jwtex).save()  # bump the tenant's configuration version
    out = tmp_path / "token.jwt"
    clock = LongJob(out, None)
    monkeypatch.setattr("exchange.services.exchange.time", SimpleNamespace(time=clock.now))  # jwtex's clock
    actions.clock = clock.now
    config = client.Config(
        url=live_server.url, tenant="acme", issuer_id="github", output=str(out), refresh=True, refresh_max=minutes * 60
    )
    retrier = client.Retrier(clock, clock.now() + 30)
    return clock, config, retrier, out


def test_a_job_longer_than_the_token_reads_a_valid_token_all_along(live_server, jwtex, actions, tmp_path, monkeypatch):
    clock, config, retrier, out = _long_job(live_server, jwtex, actions, tmp_path, monkeypatch, lifetime=60, minutes=20)
    upstream = client.upstream_from(config, actions.runner_environment())
    token = client.exchange(config, upstream.token(retrier), retrier)
    clock.key = _jwks_key(live_server, token.text)
    file_id = client.write_token(str(out), token.text)
    start = clock.now()
    assert (
        client.refresh_loop(config=config, upstream=upstream, token=token, path=str(out), clock=clock, file_id=file_id)
        == 0
    )
    assert clock.now() - start >= 20 * 60 and clock.reads >= 20 * 60
    # Renewed every 40 s (a third of 60 s before expiry), each time with a fresh GitHub token.
    assert len(clock.tokens) == 30 and len(actions.minted) == 31
    assert all(r == TokenRequest(True, f"{live_server.url}/t/acme") for r in actions.requests)
    assert ExchangeRecord.objects.filter(tenant=jwtex, decision="allowed").count() == 31


def test_a_fixed_upstream_token_is_exchanged_again_while_jwtex_accepts_it(
    live_server, jwtex, actions, tmp_path, monkeypatch, capsys
):
    clock, config, retrier, out = _long_job(live_server, jwtex, actions, tmp_path, monkeypatch, lifetime=60, minutes=20)
    actions.lifetime = 150  # GitLab's ID token: one per job
    upstream = client.Variable("GitLab CI", "JWTEX_ID_TOKEN", actions.mint(f"{live_server.url}/t/acme"), "")
    token = client.exchange(config, upstream.token(retrier), retrier)
    clock.key = _jwks_key(live_server, token.text)
    start = clock.now()
    code = client.refresh_loop(
        config=config,
        upstream=upstream,
        token=token,
        path=str(out),
        clock=clock,
        file_id=client.write_token(str(out), token.text),
    )
    assert code == 1
    # Renewed every 40 s while jwtex accepts the job's token (150 s, and the leeway of
    # docs/verification.md#times): at 200 s still, at 240 s no more. The last token stays valid until 260 s; the log
    # says what to do.
    assert DEFAULT_LEEWAY == 60
    assert 240 <= clock.now() - start < 241 and len(clock.tokens) == 6
    err = capsys.readouterr().err
    assert "cannot renew: jwtex refused the exchange: jwtex answered 401 invalid_token" in err
    assert "cannot give a second token, so for jobs longer than its token is accepted, give the rule a lifetime" in err


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_refresh_goes_to_the_background_holding_no_pipe_and_stops_when_the_file_goes(
    live_server, jwtex, actions, tmp_path
):
    out = tmp_path / "token.jwt"
    done = _client(
        "--url",
        live_server.url,
        "--tenant",
        "acme",
        "--output",
        str(out),
        "--refresh",
        env=actions.runner_environment(),
        timeout=30,
    )  # a runner waiting on the step's pipes would hang
    assert done.returncode == 0, done.stderr
    pid = int(re.search(r"refreshing it in the background \(process (\d+), log (.+)\)", done.stderr).group(1))
    try:
        assert _state(pid) in ("S", "R")
        out.unlink()  # the job is over: its temporary directory is emptied
        assert poll(lambda: _state(pid) in ("gone", "Z"), timeout=10, interval=0.1)
    finally:
        if _state(pid) not in ("gone", "Z"):
            os.kill(pid, signal.SIGTERM)
    log = (tmp_path / "token.jwt.log").read_text()
    assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ jwtex-token: \S+ was removed or replaced: stopping$", log, re.M)
    for secret in actions.minted:
        assert secret not in done.stderr and secret not in log
