#!/usr/bin/env python3
"""jwtex-token: a CI job's OIDC token in, a jwtex token (or AWS credentials) out.

One file that needs nothing but Python 3.8+ and its standard library, so a job can fetch it
and run it alone (``python3 jwtex_token.py --help``); ``pip install`` of jwtex also installs it
as the ``jwtex-token`` command. The GitHub Action (``action.yml``) and the GitLab CI/CD
component (``templates/jwtex-token/template.yml``) run this file. What it does, and why:

- asks the platform for its OIDC token with the tenant's issuer URL as audience, so a token
  meant for jwtex opens no AWS role that trusts the CI platform directly;
- exchanges it at ``POST {url}/t/{tenant}/exchange[?issuerId=…]`` (the answer is the token and
  nothing else: docs/endpoints.md#raw-exchange) and writes it atomically (a new file, mode 0600, renamed over the
  old), so an AWS SDK that re-reads ``AWS_WEB_IDENTITY_TOKEN_FILE`` never reads half a token;
- retries what is transient (docs/errors.md#what-a-client-may-retry: ``429`` with
  ``Retry-After``, ``503`` while keys are fetched; a proxy's ``502``/``504``; a connection that fails or times out)
  with capped exponential back-off and jitter within one deadline, and stops at once on any other answer
  with jwtex's ``error_description`` (which names the deciding rule);
- never prints, logs or passes on a token in any form but the file it writes and the
  requests it makes; follows no redirect (a token goes to the URL given, or nowhere).
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import shlex
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from xml.etree import ElementTree

__version__ = "0.1.0"
PROG = "jwtex-token"

ATTEMPT_TIMEOUT = 10.0  # seconds one HTTP attempt may take
BACKOFF_BASE, BACKOFF_CAP = 1.0, 16.0  # seconds: 1, 2, 4, 8, 16, 16… each with jitter
RETRYABLE_STATUSES = (429, 502, 503, 504)
MAX_ANSWER_BYTES = 1 << 20
# AWS STS, AssumeRoleWithWebIdentity: RoleSessionName is 2–64 characters of [\w+=,.@-].
SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
ROLE_ARN = re.compile(r"arn:aws[a-z-]{0,12}:iam::\d{12}:role/[\w+=,.@/-]{1,512}", re.ASCII)
REGION = re.compile(r"[a-z]{2,4}(-[a-z]+)+-\d{1,2}", re.ASCII)
TENANT = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)  # jwtex's tenant slugs
ISSUER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)  # jwtex's issuer ids
BASE_URL = re.compile(r"(https?)://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)*/?", re.ASCII)
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}", re.ASCII)
# The DNS suffix of STS's regional endpoint in each AWS partition (botocore's partitions.json).
DNS_SUFFIXES = (
    ("cn-", "amazonaws.com.cn"),
    ("eusc-", "amazonaws.eu"),
    ("us-isob-", "sc2s.sgov.gov"),
    ("us-isof-", "csp.hci.ic.gov"),
    ("us-iso-", "c2s.ic.gov"),
    ("eu-isoe-", "cloud.adc-e.uk"),
)
STS_RETRYABLE = {
    "IDPCommunicationError",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "InternalFailure",
}


class Failure(Exception):
    """Retrying cannot help: a refusal, or a mistake in the set-up. The message says which."""


class Usage(Failure):
    """A command line or environment that cannot work (exit status 2)."""


class Transient(Exception):
    """Worth another try: a 429/502/503/504, a connection that failed or timed out."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Clock:
    """Wall time, sleeping and chance in one object, so a test can pass its own."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))

    def random(self) -> float:
        return random.random()


_log_times = False  # the background refresher's log lines carry the time


def log(message: str) -> None:
    """One line on stderr, whatever a server put in the message: no line of it can pass for a
    runner's workflow command (``::…``) or a line of its own."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ ") if _log_times else ""
    message = re.sub(r"[\x00-\x1f\x7f]", " ", message)
    print(f"{stamp}{PROG}: {message}", file=sys.stderr, flush=True)


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------- HTTP


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a 3xx is answered as it is: a token never follows a redirect to another place


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_request(
    method: str, url: str, *, timeout: float, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request: (status, headers with lower-case names, body). A connection that fails or
    times out is ``Transient``; a certificate that does not verify is a ``Failure``."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"User-Agent": f"{PROG}/{__version__}", **(headers or {})}
    )
    host = urllib.parse.urlsplit(url).netloc
    try:
        try:
            response = _OPENER.open(request, timeout=timeout)
        except urllib.error.HTTPError as error:  # an answer all the same
            response = error
        with response:
            answer = response.read(MAX_ANSWER_BYTES + 1)
            status = response.code if isinstance(response, urllib.error.HTTPError) else response.status
            answer_headers = {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.URLError as error:
        if isinstance(error.reason, ssl.SSLCertVerificationError):
            raise Failure(f"{host}: the TLS certificate does not verify ({error.reason.verify_message})") from None
        raise Transient(f"{host}: cannot connect ({error.reason})") from None
    except (OSError, http.client.HTTPException) as error:
        raise Transient(f"{host}: the connection failed ({type(error).__name__}: {error})") from None
    if len(answer) > MAX_ANSWER_BYTES:
        raise Failure(f"{host}: the answer is larger than {MAX_ANSWER_BYTES} bytes")
    return status, answer_headers, answer


def retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` (RFC 9110 §10.2.3): seconds, or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def backoff(attempt: int, chance: float) -> float:
    """Capped exponential back-off with jitter: a delay between half and all of
    min(cap, base × 2^(attempt−1)), so jobs that failed together do not retry together."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return ceiling / 2 + chance * ceiling / 2


class Retrier:
    """Runs an attempt again while it fails transiently and the next try starts before ``deadline``."""

    def __init__(self, clock: Clock, deadline: float) -> None:
        self.clock, self.deadline = clock, deadline

    def run(self, what: str, attempt: Callable[[float], object]) -> object:
        failures = 0
        while True:
            try:
                return attempt(min(ATTEMPT_TIMEOUT, max(1.0, self.deadline - self.clock.now())))
            except Transient as problem:
                failures += 1
                delay = backoff(failures, self.clock.random())
                if problem.retry_after is not None:
                    delay = max(delay, problem.retry_after)  # never sooner than the server asked
                if self.clock.now() + delay > self.deadline:
                    raise Failure(
                        f"{what}: {problem}; gave up after {failures} attempt(s), the next one would "
                        f"start after the deadline"
                    ) from None
                log(f"{what}: {problem}; retrying in {delay:.1f} s")
                self.clock.sleep(delay)


# ------------------------------------------------------------------------------------- tokens


def jwt_claims(text: str) -> dict[str, object]:
    """The payload of a compact JWS, unverified: read only to know when a token expires."""
    parts = text.split(".")
    if len(parts) != 3 or not all(re.fullmatch(r"[A-Za-z0-9_-]+", part) for part in parts):
        raise ValueError("not a compact JWS")
    payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
    claims = json.loads(payload)
    if not isinstance(claims, dict):
        raise ValueError("the payload is not a JSON object")
    return claims


@dataclass(frozen=True)
class Token:
    text: str
    issued_at: float  # jwtex's iat
    expires_at: float  # jwtex's exp
    received_at: float  # on this machine's clock: the refresh schedule does not depend on clock skew

    @property
    def lifetime(self) -> float:
        return self.expires_at - self.issued_at

    @classmethod
    def parse(cls, body: bytes, received_at: float) -> Token:
        try:
            text = body.decode("ascii")
            claims = jwt_claims(text)
            exp, iat = claims["exp"], claims.get("iat", received_at)
            if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)) or exp <= iat:
                raise ValueError("no usable exp")
        except (UnicodeDecodeError, ValueError, KeyError) as error:
            raise Failure(
                f"jwtex answered 200 but not with a token ({error}): is --url the base URL of jwtex?"
            ) from None
        return cls(text, float(iat), float(exp), received_at)


# ---------------------------------------------------------------------------------- platforms


class Upstream:
    """Where the job's own OIDC token comes from; ``mints``: a second call gives a fresh one."""

    name = "upstream"
    mints = False

    def token(self, retrier: Retrier) -> str:
        raise NotImplementedError

    def _checked(self, token: str) -> str:
        token = token.strip()
        try:
            jwt_claims(token)
        except ValueError:
            raise Failure(f"{self.name}: what it gave is not a JWT") from None
        return token


class GitHubActions(Upstream):
    name, mints = "GitHub Actions", True

    def __init__(self, request_url: str, bearer: str, audience: str) -> None:
        separator = "&" if "?" in request_url else "?"
        self.url = f"{request_url}{separator}audience={urllib.parse.quote(audience, safe='')}"
        self.bearer = bearer

    def token(self, retrier: Retrier) -> str:
        def attempt(timeout: float) -> str:
            status, headers, body = http_request(
                "GET",
                self.url,
                timeout=timeout,
                headers={"Authorization": f"Bearer {self.bearer}", "Accept": "application/json"},
            )
            if status == 200:
                try:
                    return self._checked(json.loads(body)["value"])
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise Failure("GitHub's token service answered without a token") from None
            if status in RETRYABLE_STATUSES or status >= 500:
                raise Transient(
                    f"GitHub's token service answered {status}",
                    retry_after(headers.get("retry-after"), retrier.clock.now()),
                )
            raise Failure(
                f"GitHub's token service refused the request ({status}); does the job have "
                "`permissions: id-token: write`?"
            )

        return str(retrier.run("asking GitHub Actions for the job's OIDC token", attempt))


class Variable(Upstream):
    """A token the platform put in an environment variable: the same for the whole job."""

    def __init__(self, name: str, variable: str, value: str | None, missing: str) -> None:
        self.name, self.variable, self.value, self.missing = f"{name} (${variable})", variable, value, missing

    def token(self, retrier: Retrier) -> str:
        if not self.value:
            raise Failure(f"${self.variable} is empty or not set: {self.missing}")
        return self._checked(self.value)


class File(Upstream):
    """A token file, read again for every exchange (a rotated file, e.g. Kubernetes' projected token)."""

    mints = True

    def __init__(self, path: str) -> None:
        self.name, self.path = f"the file {path}", path

    def token(self, retrier: Retrier) -> str:
        try:
            with open(self.path, encoding="ascii") as file:
                return self._checked(file.read(MAX_ANSWER_BYTES))
        except (OSError, UnicodeDecodeError) as error:
            raise Failure(f"cannot read {self.path}: {error}") from None


class Buildkite(Upstream):
    name, mints = "Buildkite (buildkite-agent oidc request-token)", True

    def __init__(self, audience: str) -> None:
        self.command = ["buildkite-agent", "oidc", "request-token", "--audience", audience]

    def token(self, retrier: Retrier) -> str:
        try:
            done = subprocess.run(self.command, capture_output=True, text=True, timeout=60, check=False)
        except FileNotFoundError:
            raise Failure("buildkite-agent is not on PATH") from None
        except subprocess.TimeoutExpired:
            raise Failure("buildkite-agent oidc request-token did not answer within 60 s") from None
        if done.returncode != 0:
            raise Failure(f"buildkite-agent oidc request-token failed: {done.stderr.strip()[-300:]}")
        return self._checked(done.stdout)


def upstream_from(config: Config, env: Mapping[str, str]) -> Upstream:
    """The explicit source, or the platform this job runs on (see --help: "Platforms")."""
    if config.token_file:
        return File(config.token_file)
    if config.token_env:
        return Variable("the environment", config.token_env, env.get(config.token_env), "it should hold a JWT")
    platform = config.platform
    if platform == "auto":
        detected = [
            name
            for name, variable in (
                ("github", "GITHUB_ACTIONS"),
                ("gitlab", "GITLAB_CI"),
                ("circleci", "CIRCLECI"),
                ("buildkite", "BUILDKITE"),
            )
            if env.get(variable, "").lower() == "true"
        ]
        if not detected:
            raise Usage(
                "no CI platform detected (GitHub Actions, GitLab CI, CircleCI, Buildkite): "
                "say where the token is with --token-file or --token-env"
            )
        platform = detected[0]
    if platform == "github":
        url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL"), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN")
        if not url or not bearer:
            raise Failure(
                "GitHub Actions gave this job no OIDC token request URL: add `permissions: "
                "id-token: write` to the job or the workflow"
            )
        return GitHubActions(url, bearer, config.audience)
    if platform == "gitlab":
        variable = config.gitlab_variable
        return Variable(
            "GitLab CI",
            variable,
            env.get(variable),
            f"declare it in the job: `id_tokens: {variable}: "
            f"aud: {config.audience}` (or name yours with --gitlab-token-variable)",
        )
    if platform == "circleci":
        return Variable(
            "CircleCI",
            "CIRCLE_OIDC_TOKEN_V2",
            env.get("CIRCLE_OIDC_TOKEN_V2"),
            "CircleCI sets it in jobs of projects that have OIDC tokens (a context is not needed)",
        )
    return Buildkite(config.audience)


# ------------------------------------------------------------------------------- the exchange


@dataclass
class Config:
    url: str
    tenant: str
    issuer_id: str = ""
    audience: str = ""
    output: str = ""
    refresh: bool = False
    margin: float = 120.0
    refresh_max: float = 6 * 3600.0
    timeout: float = 120.0
    platform: str = "auto"
    gitlab_variable: str = "JWTEX_ID_TOKEN"
    token_file: str = ""
    token_env: str = ""
    role_arn: str = ""
    session_name: str = ""
    export: str = ""
    credential_process: str = ""
    region: str = ""
    duration: int = 0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.audience = self.audience or f"{self.url}/t/{self.tenant}"

    @property
    def exchange_url(self) -> str:
        query = f"?issuerId={urllib.parse.quote(self.issuer_id, safe='')}" if self.issuer_id else ""
        return f"{self.url}/t/{urllib.parse.quote(self.tenant, safe='')}/exchange{query}"


def exchange(config: Config, upstream_token: str, retrier: Retrier) -> Token:
    """docs/endpoints.md#raw-exchange: the upstream token as the body, the new token as the answer."""

    def attempt(timeout: float) -> Token:
        status, headers, body = http_request(
            "POST",
            config.exchange_url,
            timeout=timeout,
            body=upstream_token.encode(),
            headers={"Content-Type": "application/jwt", "Accept": "application/jwt"},
        )
        if status == 200:
            return Token.parse(body, retrier.clock.now())
        problem = f"jwtex answered {status}{_described(body)}"
        if status in RETRYABLE_STATUSES:
            raise Transient(problem, retry_after(headers.get("retry-after"), retrier.clock.now()))
        if 300 <= status < 400:
            raise Failure(
                f"{problem}: a redirect to {headers.get('location', '?')!r} (none is followed: give "
                "--url the address jwtex answers at)"
            )
        raise Failure(f"jwtex refused the exchange: {problem}")

    return retrier.run(f"exchange at {config.url} (tenant {config.tenant})", attempt)  # type: ignore[return-value]


def _described(body: bytes) -> str:
    """`` invalid_token: The token has expired.`` from jwtex's JSON error (docs/errors.md), or nothing."""
    try:
        error = json.loads(body)
        described = f" {error['error']}: {error.get('error_description', '')}".rstrip(": ")
    except (ValueError, KeyError, TypeError):
        return ""
    return re.sub(r"[\x00-\x1f\x7f]", " ", described)[:500]  # one line, whatever the server sent


def write_token(path: str, text: str) -> tuple[int, int]:
    """Atomically: a new file (mode 0600) in the same directory, synced, then renamed over
    ``path``. A reader sees the old token or the new one, never a part. Returns the file's
    (device, inode), by which the refresher knows the file is still the one it wrote."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".jwtex-token-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    status = os.stat(path)
    return status.st_dev, status.st_ino


def session_name_from_run(env: Mapping[str, str], now: float) -> str:
    """A role session name that says which run assumed the role, within STS's 2–64 [\\w+=,.@-]."""

    def present(*names: str) -> str:
        return next((env[name] for name in names if env.get(name)), "")

    if present("GITHUB_RUN_ID"):
        name = f"gh-{env['GITHUB_RUN_ID']}-{present('GITHUB_RUN_ATTEMPT') or '1'}"
    elif env.get("GITLAB_CI") and present("CI_JOB_ID"):
        name = f"gl-{env['CI_JOB_ID']}"
    elif env.get("CIRCLECI") and present("CIRCLE_WORKFLOW_JOB_ID", "CIRCLE_BUILD_NUM"):
        name = f"cci-{present('CIRCLE_WORKFLOW_JOB_ID', 'CIRCLE_BUILD_NUM')}"
    elif env.get("BUILDKITE") and present("BUILDKITE_JOB_ID"):
        name = f"bk-{env['BUILDKITE_JOB_ID']}"
    else:
        name = f"jwtex-{int(now)}"
    return re.sub(r"[^\w+=,.@-]", "_", name, flags=re.ASCII)[:64]


# -------------------------------------------------------------------------------------- AWS STS


def sts_endpoint(env: Mapping[str, str], region: str) -> str:
    """``AWS_ENDPOINT_URL_STS`` / ``AWS_ENDPOINT_URL`` as the AWS SDKs read them, else the
    regional endpoint of ``region`` in its partition, else the global one."""
    override = env.get("AWS_ENDPOINT_URL_STS") or env.get("AWS_ENDPOINT_URL")
    if override:
        return override.rstrip("/") + "/"
    if not region:
        return "https://sts.amazonaws.com/"
    suffix = next((suffix for prefix, suffix in DNS_SUFFIXES if region.startswith(prefix)), "amazonaws.com")
    return f"https://sts.{region}.{suffix}/"


def assume_role(
    *, endpoint: str, role_arn: str, session_name: str, token: str, duration: int, retrier: Retrier
) -> dict[str, object]:
    """AssumeRoleWithWebIdentity, unsigned (the token is the credential): the credential_process JSON."""
    form = {
        "Action": "AssumeRoleWithWebIdentity",
        "Version": "2011-06-15",
        "RoleArn": role_arn,
        "RoleSessionName": session_name,
        "WebIdentityToken": token,
    }
    if duration:
        form["DurationSeconds"] = str(duration)
    body = urllib.parse.urlencode(form).encode()

    def attempt(timeout: float) -> dict[str, object]:
        status, headers, answer = http_request(
            "POST",
            endpoint,
            timeout=timeout,
            body=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        )
        try:
            elements = ElementTree.fromstring(answer).iter()
            fields = {element.tag.rpartition("}")[2]: (element.text or "") for element in elements}
        except ElementTree.ParseError:
            fields = {}
        if status == 200:
            names = ("AccessKeyId", "SecretAccessKey", "SessionToken", "Expiration")
            if not all(fields.get(name) for name in names):
                raise Failure(f"AWS STS answered 200 without credentials ({endpoint})")
            return {"Version": 1, **{name: fields[name] for name in names}}
        problem = f"AWS STS answered {status} {fields.get('Code', '')}: {fields.get('Message', '')}".rstrip(": ")
        if status >= 500 or status == 429 or fields.get("Code") in STS_RETRYABLE:
            raise Transient(problem, retry_after(headers.get("retry-after"), retrier.clock.now()))
        raise Failure(f"AssumeRoleWithWebIdentity of {role_arn} refused: {problem}")

    return retrier.run("AssumeRoleWithWebIdentity", attempt)  # type: ignore[return-value]


# --------------------------------------------------------------------------------- the refresher


def refresh_loop(
    *, config: Config, upstream: Upstream, token: Token, path: str, clock: Clock, file_id: tuple[int, int]
) -> int:
    """Keep ``path`` valid: re-exchange ``margin`` seconds before the token expires (at most a
    third of its lifetime before), with a fresh upstream token where the platform mints one.
    Stops when the file is removed or replaced by someone else (the job ended, or another
    refresher took over), after ``refresh_max`` seconds, or when renewing is refused."""
    stop_at = clock.now() + config.refresh_max
    while True:
        margin = min(config.margin, token.lifetime / 3)
        due = token.received_at + token.lifetime - margin
        while clock.now() < due:
            if not _still_ours(path, file_id):
                log(f"{path} was removed or replaced: stopping")
                return 0
            if clock.now() >= stop_at:
                log(f"refreshed for {config.refresh_max:.0f} s (--refresh-max): stopping")
                return 0
            clock.sleep(min(1.0, due - clock.now()))
        retrier = Retrier(clock, max(stop_at, token.received_at + token.lifetime))
        try:
            token = exchange(config, upstream.token(retrier), retrier)
        except Failure as failure:
            valid = f"the token in {path} stays valid until {iso(token.received_at + token.lifetime)}"
            hint = (
                ""
                if upstream.mints
                else (
                    f"; {upstream.name} cannot give a second token, so for jobs longer than "
                    "its token is accepted, give the rule a lifetime as long as the job"
                )
            )
            log(f"cannot renew: {failure}; {valid}{hint}")
            return 1
        if not _still_ours(path, file_id):
            log(f"{path} was removed or replaced: stopping")
            return 0
        file_id = write_token(path, token.text)
        log(f"renewed {path}: valid until {iso(token.received_at + token.lifetime)}")


def _still_ours(path: str, file_id: tuple[int, int]) -> bool:
    try:
        status = os.stat(path)
    except OSError:
        return False
    return (status.st_dev, status.st_ino) == file_id


def refresh_in_background(
    config: Config, upstream: Upstream, token: Token, path: str, file_id: tuple[int, int]
) -> None:
    """Fork a refresher that outlives this command (the CI step ends; the job goes on). It
    holds none of the step's pipes (a runner waiting for them would hang): its output goes to
    ``PATH.log``."""
    if not hasattr(os, "fork"):
        raise Failure("--refresh needs a POSIX system (Linux, macOS): this one cannot fork")
    log_path = path + ".log"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        log(f"refreshing it in the background (process {pid}, log {log_path})")
        return
    code = 1
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        for target, source in ((0, null), (1, out), (2, out)):
            os.dup2(source, target)
        os.closerange(3, 1024)
        global _log_times
        _log_times = True
        code = refresh_loop(config=config, upstream=upstream, token=token, path=path, clock=Clock(), file_id=file_id)
    except BaseException as error:  # noqa: BLE001 - never a traceback: it could quote a value
        log(f"the refresher stopped: {type(error).__name__}")
    finally:
        os._exit(code)


# ---------------------------------------------------------------------------------------- CLI

DESCRIPTION = """\
Exchange this CI job's OIDC token at jwtex and write the new token to a file for the AWS
SDKs (AWS_WEB_IDENTITY_TOKEN_FILE), or print AWS credentials for credential_process.
"""

EPILOG = """\
Platforms (--platform auto finds the first whose variable is "true"):
  github     GitHub Actions (GITHUB_ACTIONS): GETs $ACTIONS_ID_TOKEN_REQUEST_URL&audience=…
             with $ACTIONS_ID_TOKEN_REQUEST_TOKEN (the job needs `permissions: id-token: write`).
             Mints a fresh token for every exchange.
  gitlab     GitLab CI (GITLAB_CI): reads the `id_tokens:` variable named by
             --gitlab-token-variable, whose `aud:` must be the audience (below).
             Fixed for the job: it cannot mint a second one.
  circleci   CircleCI (CIRCLECI): reads $CIRCLE_OIDC_TOKEN_V2, whose audience is the organization
             id (as CircleCI issues it). Fixed for the job: it cannot mint a second one.
  buildkite  Buildkite (BUILDKITE): runs `buildkite-agent oidc request-token --audience …`.
             Mints a fresh token for every exchange.
  --token-file reads a file again for every exchange (a rotated file, e.g. a Kubernetes
  projected token, gives fresh ones); --token-env reads a variable (fixed).

--refresh stays in the background and exchanges again before the token expires, so the AWS
SDKs' next read of the file finds a valid token all job long. Where the platform cannot mint
a second token (GitLab, CircleCI, --token-env), it exchanges the same one again while jwtex
accepts it (until it expires, or is older than the issuer's max_token_age; never with
replay_protection): for longer jobs there, ask the rule for a lifetime as long as the job.
The refresher stops when the file is removed or replaced, after --refresh-max, or when jwtex
refuses; it logs to OUTPUT.log. POSIX systems only (Linux, macOS).

Retries: 429, 502, 503, 504 and connections that fail or time out, with capped exponential
back-off (1 s, 2 s, 4 s … 16 s, each with jitter), never sooner than a Retry-After, until
--timeout. Any other answer stops at once with jwtex's error_description. Redirects are not
followed. Neither the token nor the job's token is ever printed or logged.

Environment: JWTEX_URL, JWTEX_TENANT, JWTEX_ISSUER_ID, JWTEX_ROLE_ARN and
JWTEX_ROLE_SESSION_NAME stand in for the options of the same meaning; --output defaults to
$AWS_WEB_IDENTITY_TOKEN_FILE; AWS_REGION (or AWS_DEFAULT_REGION) and AWS_ENDPOINT_URL_STS (or
AWS_ENDPOINT_URL) choose STS's endpoint as the AWS SDKs do.

Exit status: 0 done, 1 refused or failed (the reason on stderr), 2 a usage error.

Examples:
  jwtex-token --url https://jwtex.example.com --tenant acme --issuer-id github \\
      --output "$RUNNER_TEMP/jwtex.jwt" --refresh
  # ~/.aws/config
  [profile deploy]
  credential_process = jwtex-token --url https://jwtex.example.com --tenant acme
      --credential-process arn:aws:iam::123456789012:role/deploy      (on one line)
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--url", help="jwtex's base URL, e.g. https://jwtex.example.com ($JWTEX_URL); https, or http on loopback only"
    )
    p.add_argument("--tenant", help="the tenant's slug, e.g. acme ($JWTEX_TENANT)")
    p.add_argument(
        "--issuer-id",
        help="the tenant's issuer that must verify the job's token, e.g. github "
        "($JWTEX_ISSUER_ID); without it jwtex chooses by the token's iss",
    )
    p.add_argument(
        "--audience",
        help="the audience to ask the platform for (default: the tenant's issuer "
        "URL, URL/t/TENANT, which the tenant's issuer lists among its audiences)",
    )
    p.add_argument(
        "--output",
        metavar="FILE",
        help="where to write the token, atomically and mode 0600 "
        "(default: $AWS_WEB_IDENTITY_TOKEN_FILE, else a new jwtex-TENANT-*.jwt in $RUNNER_TEMP "
        "or the temporary directory; its name is printed on stderr)",
    )
    p.add_argument("--refresh", action="store_true", help="keep the file valid in the background (see below)")
    p.add_argument(
        "--margin",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="with --refresh: exchange "
        "again this long before the token expires, at most a third of its lifetime (default 120)",
    )
    p.add_argument(
        "--refresh-max",
        type=float,
        default=6 * 3600.0,
        metavar="SECONDS",
        help="with --refresh: stop refreshing after this long (default 21600, 6 h)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="overall deadline for getting the token, retries included (default 120)",
    )
    p.add_argument(
        "--platform",
        choices=("auto", "github", "gitlab", "circleci", "buildkite"),
        default="auto",
        help="where the job's OIDC token comes from (default: auto, see Platforms)",
    )
    p.add_argument(
        "--gitlab-token-variable",
        default="JWTEX_ID_TOKEN",
        metavar="NAME",
        help="GitLab: the id_tokens variable to read (default JWTEX_ID_TOKEN)",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--token-file", metavar="PATH", help="read the job's token from this file instead")
    source.add_argument("--token-env", metavar="NAME", help="read the job's token from this variable instead")
    p.add_argument("--role-arn", help="the role to export as AWS_ROLE_ARN with --export ($JWTEX_ROLE_ARN)")
    p.add_argument(
        "--role-session-name",
        metavar="NAME",
        help="the role session name: 2-64 of letters, "
        "digits and +=,.@_- ($JWTEX_ROLE_SESSION_NAME; default made from the run: gh-RUN_ID-ATTEMPT "
        "on GitHub, gl-JOB_ID on GitLab, cci-JOB_ID on CircleCI, bk-JOB_ID on Buildkite)",
    )
    p.add_argument(
        "--export",
        choices=("shell", "github"),
        help="make AWS_WEB_IDENTITY_TOKEN_FILE, "
        "AWS_ROLE_SESSION_NAME and (with --role-arn) AWS_ROLE_ARN available: shell prints export "
        "lines for eval; github appends them to $GITHUB_ENV for the job's later steps, and "
        "token-file and role-session-name to $GITHUB_OUTPUT",
    )
    p.add_argument(
        "--credential-process",
        metavar="ROLE_ARN",
        help="print the JSON an AWS credential_process "
        "prints: credentials of ROLE_ARN from AssumeRoleWithWebIdentity (an unsigned call to STS: "
        "no AWS SDK needed), with their Expiration, so the SDK runs this again when they expire",
    )
    p.add_argument(
        "--region",
        help="with --credential-process: STS's region (default $AWS_REGION, else "
        "$AWS_DEFAULT_REGION, else the global endpoint)",
    )
    p.add_argument(
        "--duration",
        type=int,
        default=0,
        metavar="SECONDS",
        help="with --credential-process: DurationSeconds, 900-43200 up to the role's maximum (default: STS's, 3600)",
    )
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return p


def _url(value: str) -> str:
    """jwtex's base URL: https (http on loopback only), a host, an optional port and path; nothing
    else (no credentials, query, fragment, or characters a URL would have to escape)."""
    match = BASE_URL.fullmatch(value)
    host = match.group(2) if match else ""
    if not match or (match.group(1) == "http" and host not in ("localhost", "[::1]") and not host.startswith("127.")):
        raise Usage(
            f"--url must be jwtex's https base URL (http only on loopback), with no credentials, query, "
            f"fragment or characters to escape, not {value!r}"
        )
    return value


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    """The options, the environment's stand-ins, and every check that can be made before asking anyone."""

    def option(name: str, variable: str) -> str:
        return (getattr(args, name) or env.get(variable) or "").strip()

    url, tenant = option("url", "JWTEX_URL"), option("tenant", "JWTEX_TENANT")
    issuer_id = option("issuer_id", "JWTEX_ISSUER_ID")
    role_arn, name = option("role_arn", "JWTEX_ROLE_ARN"), option("role_session_name", "JWTEX_ROLE_SESSION_NAME")
    region = (args.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "").strip()
    output = args.output or env.get("AWS_WEB_IDENTITY_TOKEN_FILE") or ""  # absolute: later steps run elsewhere
    checks = [
        (bool(url), "--url (or $JWTEX_URL) is required"),
        (bool(TENANT.fullmatch(tenant)), f"--tenant must be a jwtex tenant slug (a-z, 0-9, -), not {tenant!r}"),
        (not issuer_id or bool(ISSUER_ID.fullmatch(issuer_id)), f"--issuer-id is not an issuer id: {issuer_id!r}"),
        (not role_arn or bool(ROLE_ARN.fullmatch(role_arn)), f"--role-arn is not an IAM role ARN: {role_arn!r}"),
        (
            not args.credential_process or bool(ROLE_ARN.fullmatch(args.credential_process)),
            f"--credential-process needs an IAM role ARN, not {args.credential_process!r}",
        ),
        (
            not name or bool(SESSION_NAME.fullmatch(name)),
            f"the role session name must be 2-64 letters, digits or +=,.@_- (AWS STS), not {name!r}",
        ),
        (not region or bool(REGION.fullmatch(region)), f"not an AWS region: {region!r}"),
        (not args.duration or 900 <= args.duration <= 43200, "--duration must be 900 to 43200 seconds"),
        (
            args.margin >= 1 and args.timeout > 0 and args.refresh_max > 0,
            "--margin, --timeout and --refresh-max must be positive",
        ),
        (
            ENV_NAME.fullmatch(args.gitlab_token_variable) is not None
            and ENV_NAME.fullmatch(args.token_env or "x") is not None,
            "a variable name is letters, digits and _",
        ),
        (
            not (args.credential_process and (args.refresh or args.export)),
            "--credential-process prints credentials: it takes neither --refresh nor --export",
        ),
        (
            args.export != "github" or bool(env.get("GITHUB_ENV") and env.get("GITHUB_OUTPUT")),
            "--export github needs $GITHUB_ENV and $GITHUB_OUTPUT (a GitHub Actions step)",
        ),
        (not args.refresh or hasattr(os, "fork"), "--refresh needs a POSIX system (Linux, macOS)"),
    ]
    for ok, problem in checks:
        if not ok:
            raise Usage(problem)
    return Config(
        url=_url(url),
        tenant=tenant,
        issuer_id=issuer_id,
        audience=(args.audience or "").strip(),
        output=os.path.abspath(output) if output else "",
        refresh=args.refresh,
        margin=args.margin,
        refresh_max=args.refresh_max,
        timeout=args.timeout,
        platform=args.platform,
        gitlab_variable=args.gitlab_token_variable,
        token_file=args.token_file or "",
        token_env=args.token_env or "",
        role_arn=role_arn,
        session_name=name,
        export=args.export or "",
        credential_process=args.credential_process or "",
        region=region,
        duration=args.duration,
    )


def export(config: Config, path: str, session_name: str, env: Mapping[str, str]) -> None:
    """The variables later commands and steps need; values are checked to be one line each."""
    variables = {"AWS_WEB_IDENTITY_TOKEN_FILE": path, "AWS_ROLE_SESSION_NAME": session_name}
    if config.role_arn:
        variables["AWS_ROLE_ARN"] = config.role_arn
    if any(re.search(r"[\r\n\x00]", value) for value in variables.values()):
        raise Failure("a value to export spans several lines")
    if config.export == "shell":
        print("".join(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items()), end="")
        return
    outputs = {"token-file": path, "role-session-name": session_name}
    for target, lines in ((env["GITHUB_ENV"], variables), (env["GITHUB_OUTPUT"], outputs)):
        with open(target, "a", encoding="utf-8") as file:
            file.write("".join(f"{name}={value}\n" for name, value in lines.items()))


def run(config: Config, env: Mapping[str, str], clock: Clock) -> int:
    upstream = upstream_from(config, env)
    retrier = Retrier(clock, clock.now() + config.timeout)
    token = exchange(config, upstream.token(retrier), retrier)
    log(
        f"jwtex issued a token for tenant {config.tenant} from {upstream.name}, valid for {token.lifetime:.0f} s "
        f"(until {iso(token.expires_at)})"
    )
    session_name = config.session_name or session_name_from_run(env, clock.now())
    if config.credential_process:
        credentials = assume_role(
            endpoint=sts_endpoint(env, config.region),
            role_arn=config.credential_process,
            session_name=session_name,
            token=token.text,
            duration=config.duration,
            retrier=retrier,
        )
        if config.output:
            write_token(config.output, token.text)
        print(json.dumps(credentials))
        return 0
    path = config.output
    if not path:
        descriptor, path = tempfile.mkstemp(
            prefix=f"jwtex-{config.tenant}-", suffix=".jwt", dir=env.get("RUNNER_TEMP") or None
        )
        os.close(descriptor)
    file_id = write_token(path, token.text)
    log(f"wrote it to {path} (mode 0600)")
    if config.export:
        export(config, path, session_name, env)
    if config.refresh:
        refresh_in_background(config, upstream, token, path, file_id)
    return 0


def main(argv: list | None = None, *, env: Mapping[str, str] | None = None, clock: Clock | None = None) -> int:
    env = os.environ if env is None else env
    try:
        return run(config_from(parser().parse_args(argv), env), env, clock or Clock())
    except Usage as problem:
        log(f"error: {problem}")
        return 2
    except Failure as problem:
        log(str(problem))
        return 1
    except OSError as error:  # the token file: a directory that cannot be written, a full disk…
        log(f"{type(error).__name__}: {error}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
