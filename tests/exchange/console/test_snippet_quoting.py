"""Every set-up snippet escapes its own language's interpolation (exchange.console.snippet_quoting): hostile
values (rule audiences, role names, issuer ids…) go into the Terraform, CloudFormation, JSON,
GitHub Actions and GitLab CI snippets, each is parsed by a real parser — python-hcl2, PyYAML,
json, bash — and every value comes back literally, with nothing evaluated on the way."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from urllib.parse import quote, unquote

import hcl2
import pytest
import yaml
from lark import Token, Tree

from exchange.console.aws_setup import aws_setup_render
from exchange.console.ci_setup import ci_snippets_render
from exchange.core.aws import session_tag_key_validate

HOSTILE = [
    "${jsonencode(1)}",
    "%{ if true }x%{ endif }",
    "$${already}",
    "$$${a}",
    "%%%{b}",
    "&{aws:userid}",
    '"quoted" \\ back\\',
    "line\nbreak: x\n- y",
    "${{ secrets.AWS_KEY }}",
    "$(touch pwned)`id`;rm -rf ~",
    "'single'",
    "tab\there\r",
    "\u202eRTL \u2028 \x85",
    "emoji 😀",
    "$HOME ${HOME}",
    "# not a comment",
    "key: value",
    "*alias &anchor !tag",
    "\x00\x07\x1b",
    "}}{{",
    "${$}",
    "yes",
]
ISSUER = "https://jwtex.example.com/t/acme"


def iam_unescaped(value: str) -> str:
    """What IAM compares a policy value as: ``${$}`` is a literal ``$``; no other variable may be left."""
    assert not re.search(r"\$\{(?!\$\})", value), value
    return value.replace("${$}", "$")


# --------------------------------------------------------------------------------- Terraform


_HCL_ESCAPE = re.compile(r'\\(?:([\\"nrt])|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))')


def _hcl_part(text: str) -> str:
    if text.startswith(("$${", "%%{")):  # the parser's escape token: a literal "${" or "%{"
        text = text[1:]
    return _HCL_ESCAPE.sub(
        lambda m: {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]) if m[1] else chr(int(m[2] or m[3], 16)), text
    )


def hcl_strings(tree: Tree) -> list[str]:
    """Every quoted string of an HCL document, decoded; fails on any interpolation or directive."""
    found = []
    for node in tree.iter_subtrees_topdown():  # in the document's order
        assert node.data not in ("interpolation", "template_directive", "heredoc_template"), node.pretty()[:300]
        if node.data == "string":
            parts = [child for child in node.children if isinstance(child, Tree)]
            assert all(p.data == "string_part" and all(isinstance(c, Token) for c in p.children) for p in parts), node
            found.append("".join(_hcl_part(str(c)) for p in parts for c in p.children))
    return found


@pytest.mark.parametrize("value", HOSTILE)
def test_terraform_keeps_every_value_literal(value):
    aws = aws_setup_render(
        tenant_slug=value,
        issuer_url=ISSUER,
        audiences=["sts.amazonaws.com", value],
        tag_keys=["repository", value],
        account_ids=["111122223333"],
        region=value,
        role_name=value,
    )
    tree = hcl2.parses_to_tree(aws.terraform + "\n")  # a syntax error fails here
    strings = hcl_strings(tree)
    assert strings.count(value) >= 3  # the provider's region, the OIDC provider's client id, the role's name
    assert iam_unescaped(strings[strings.index("jwtex.example.com/t/acme:aud") + 2]) == value  # in the trust policy
    assert f"aws:RequestTag/{value}" in strings
    calls = [node for node in tree.iter_subtrees() if node.data == "function_call"]
    assert [str(call.children[0].children[0]) for call in calls] == ["jsonencode"]  # nothing else is called


# ---------------------------------------------------------------------------- CloudFormation


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!GetAtt …)."""


CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: {suffix: loader.construct_scalar(node)})


@pytest.mark.parametrize("value", HOSTILE)
def test_cloudformation_keeps_every_value_literal(value):
    aws = aws_setup_render(
        tenant_slug="acme",
        issuer_url=ISSUER,
        audiences=["sts.amazonaws.com", value],
        tag_keys=["repository", value],
        region="eu-west-1",
        role_name=value,
    )
    assert "!Sub" not in aws.cloudformation and "Fn::Sub" not in aws.cloudformation  # no ${} is read by CloudFormation
    template = yaml.load(aws.cloudformation, Loader=CfnLoader)
    assert set(template) == {"AWSTemplateFormatVersion", "Description", "Resources", "Outputs"}
    provider = template["Resources"]["JwtexOidcProvider"]["Properties"]
    role = template["Resources"]["JwtexExampleRole"]["Properties"]
    assert provider["ClientIdList"] == ["sts.amazonaws.com", value] and role["RoleName"] == value
    condition = role["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert [iam_unescaped(a) for a in condition["StringEquals"]["jwtex.example.com/t/acme:aud"]] == [
        "sts.amazonaws.com",
        value,
    ]
    assert f"aws:RequestTag/{value}" in condition["StringLike"]


def test_the_cloudformation_deploy_command_is_shell_words_in_a_comment():
    aws = aws_setup_render(
        tenant_slug="a$(id)\nb",
        issuer_url=ISSUER,
        audiences=["a"],
        tag_keys=[],
        region="eu-west-1; rm -rf ~",
        role_name="r",
    )
    header = aws.cloudformation[: aws.cloudformation.index("AWSTemplateFormatVersion")].splitlines()
    assert all(line.startswith("#") for line in header)
    command = " ".join(line.removeprefix("#").strip().removesuffix("\\") for line in header[1:])
    words = shlex.split(command)
    assert words[words.index("--region") + 1] == "eu-west-1; rm -rf ~"
    assert words[words.index("--stack-name") + 1] == "jwtex-a$(id)\\nb"  # one word; the newline shown, not kept
    assert yaml.load(aws.cloudformation, Loader=CfnLoader)["Description"].startswith("jwtex tenant a$(id)\nb as")


# --------------------------------------------------------------------------------------- JSON


@pytest.mark.parametrize("value", HOSTILE)
def test_the_json_policies_keep_every_value_literal(value):
    aws = aws_setup_render(tenant_slug="acme", issuer_url=ISSUER, audiences=[value], tag_keys=[value, "repository"])
    statement = json.loads(aws.trust_policy)["Statement"][0]
    assert [iam_unescaped(a) for a in statement["Condition"]["StringEquals"]["jwtex.example.com/t/acme:aud"]] == [value]
    assert f"aws:RequestTag/{value}" in statement["Condition"]["StringLike"]
    permissions = json.loads(aws.permission_policy)["Statement"][0]
    # A policy variable only for a tag key AWS accepts: the hostile one cannot close it early.
    assert permissions["Resource"] == "arn:aws:s3:::amzn-s3-demo-bucket/${aws:PrincipalTag/repository}/*"
    only_hostile = json.loads(
        aws_setup_render(tenant_slug="acme", issuer_url=ISSUER, audiences=["a"], tag_keys=[value]).permission_policy
    )["Statement"][0]
    try:
        session_tag_key_validate(value)
    except ValueError:
        assert only_hostile["Resource"] == "arn:aws:s3:::amzn-s3-demo-bucket/ci/*"
    else:  # "yes", "key: value": keys AWS accepts, so the variable is theirs
        assert only_hostile["Resource"] == f"arn:aws:s3:::amzn-s3-demo-bucket/${{aws:PrincipalTag/{value}}}/*"


# ------------------------------------------------------------------------ GitHub Actions, GitLab CI


def github_literal(value: str) -> str:
    """What GitHub makes of a string: the only expression left may be ``${{ '${{' }}``."""
    escaped = "${{ '${{' }}"
    assert "${{" not in value.replace(escaped, ""), value
    return value.replace(escaped, "${{")


def gitlab_literal(value: str) -> str:
    """What GitLab makes of a variable: ``$$`` is a ``$``; no variable may be left."""
    assert "$" not in value.replace("$$", ""), value
    return value.replace("$$", "$")


def curl_calls(script: str, tmp_path, env: dict[str, str]) -> list[list[str]]:
    """``bash -n``, then the script itself with curl and jq replaced by functions that note
    their arguments: what a job would send, with nothing sent. One list of arguments per call."""
    assert subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True).returncode == 0, script
    stubs = (
        'curl() { printf "%s\\0" "$@" >> "$CURL_ARGS"; printf "\\1\\0" >> "$CURL_ARGS"; printf "{}"; }\n'
        'jq() { cat >/dev/null; printf "upstream-token"; }\n'
    )
    args = tmp_path / "curl-args"
    subprocess.run(
        ["bash", "-euc", stubs + script],
        check=True,
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CURL_ARGS": str(args), **env},
    )
    calls, current = [], []
    for arg in args.read_text().split("\0")[:-1]:
        if arg == "\1":
            calls.append(current)
            current = []
        else:
            current.append(arg)
    return calls


def ci(value: str, *, issuer_url: str):
    return ci_snippets_render(
        issuer_url=issuer_url,
        region=value,
        github_issuer_id=value,
        github_audiences=[],
        role_arns=[f"arn:aws:iam::111122223333:role/{value}", f"arn:aws:iam::0444:role/{value}"],
        gitlab_issuer_id=value,
        gitlab_audiences=[],
    )


def same_url(sent: str, url: str) -> bool:
    return unquote(sent) == unquote(url)


@pytest.mark.parametrize("value", HOSTILE)
def test_the_github_workflow_keeps_every_value_literal(value, tmp_path):
    hostile_url = f"https://jwtex.example.com/t/{value}"
    workflow = ci(value, issuer_url=hostile_url).github_actions
    job = yaml.safe_load(workflow)["jobs"]["deploy"]
    # The one expression on purpose, fixed text: the run names the role session (no value of the tenant's in it).
    assert job["env"].pop("AWS_ROLE_SESSION_NAME") == "gh-${{ github.run_id }}-${{ github.run_attempt }}"
    assert {k: github_literal(v) for k, v in job["env"].items()} == {
        "AWS_ROLE_ARN": f"arn:aws:iam::111122223333:role/{value}",
        "AWS_REGION": value,
    }
    script = job["steps"][0]["run"]
    for line in script.splitlines():
        github_literal(line)  # no expression of the value's in the script, its comments included
    token_request, exchange = curl_calls(
        script,
        tmp_path,
        {
            "RUNNER_TEMP": str(tmp_path),
            "GITHUB_ENV": str(tmp_path / "env"),
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
            "ACTIONS_ID_TOKEN_REQUEST_URL": "https://gh.invalid/token?x=1",
        },
    )
    assert token_request[-1] == f"https://gh.invalid/token?x=1&audience={quote(hostile_url, safe='')}"
    assert same_url(exchange[-1], f"{hostile_url}/exchange?issuerId={quote(value, safe='')}")
    assert exchange[exchange.index("--data-binary") + 1] == "upstream-token"
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_the_gitlab_job_keeps_every_value_literal(value, tmp_path):
    hostile_url = f"https://jwtex.example.com/t/{value}"
    job = yaml.safe_load(ci(value, issuer_url=hostile_url).gitlab_ci)["deploy"]
    assert job["variables"].pop("AWS_ROLE_SESSION_NAME") == "gl-${CI_JOB_ID}"  # the job names the session, on purpose
    assert {k: gitlab_literal(v) for k, v in job["variables"].items()} == {
        "AWS_ROLE_ARN": f"arn:aws:iam::111122223333:role/{value}",
        "AWS_DEFAULT_REGION": value,
    }
    assert gitlab_literal(job["id_tokens"]["JWTEX_UPSTREAM_TOKEN"]["aud"]) == hostile_url
    [exchange] = curl_calls("\n".join(job["script"][:-1]), tmp_path, {"JWTEX_UPSTREAM_TOKEN": "upstream-token"})
    assert same_url(exchange[-1], f"{hostile_url}/exchange?issuerId={quote(value, safe='')}")
    assert exchange[exchange.index("--data-binary") + 1] == "upstream-token"
    assert not (tmp_path / "pwned").exists()
