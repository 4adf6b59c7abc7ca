"""What a CI runner does with this repository's CI files, done by the tests: GitHub's runner with a
composite action (``action_run``) and GitLab with a CI/CD component included by a job
(``gitlab_job_run``). Only what the files use is understood, and anything else is an error,
so a file that starts to rely on more fails here instead of in a real pipeline.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO_ROOT

ACTION = REPO_ROOT / "action.yml"
COMPONENT = REPO_ROOT / "templates" / "jwtex-token" / "template.yml"
_GITHUB_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str
    env: dict[str, str] = field(default_factory=dict)  # what the job's later steps get (GITHUB_ENV / exports)
    outputs: dict[str, str] = field(default_factory=dict)


def _env_file(path: Path) -> dict[str, str]:
    """``GITHUB_ENV`` / ``GITHUB_OUTPUT``: ``NAME=value`` lines, or ``NAME<<DELIMITER`` … ``DELIMITER``."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().splitlines()) if path.exists() else iter(())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            values[name] = "\n".join(body)
        else:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def action_run(inputs: Mapping[str, str], *, env: Mapping[str, str], workdir: Path) -> Ran:
    """action.yml's steps as the runner runs a composite action: ``${{ }}`` expressions evaluated
    where YAML allows them (``env:``, outputs), each ``run:`` written to a file and run with
    ``bash --noprofile --norc -eo pipefail``, with ``GITHUB_ENV``, ``GITHUB_OUTPUT`` and
    ``GITHUB_ACTION_PATH``; ``env`` is the runner's environment of the job."""
    action = yaml.safe_load(ACTION.read_text())
    assert action["runs"]["using"] == "composite"
    values = {}
    for name, spec in action["inputs"].items():
        if name not in inputs and spec.get("required") and "default" not in spec:
            raise AssertionError(f"input {name} is required")
        values[name] = str(inputs.get(name, spec.get("default", "")))
    unknown = set(inputs) - set(values)
    assert not unknown, f"the action has no input {unknown}"  # the runner warns; a test should not pass them
    steps: dict[str, dict[str, str]] = {}

    def evaluate(text: str) -> str:
        def one(match: re.Match) -> str:
            parts = match.group(1).split(".")
            if parts[0] == "inputs" and len(parts) == 2:
                return values[parts[1]]
            if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
                return steps.get(parts[1], {}).get(parts[3], "")
            raise AssertionError(f"expression not understood here: {match.group(0)}")

        return _GITHUB_EXPRESSION.sub(one, text)

    github_env = workdir / "github-env"
    github_env.touch()
    result = Ran(0, "", "")
    for number, step in enumerate(action["runs"]["steps"]):
        assert step["shell"] == "bash" and "${{" not in step["run"], "inputs reach a script through env: only"
        output = workdir / f"github-output-{number}"
        output.touch()
        script = workdir / f"step-{number}.sh"
        script.write_text(step["run"])
        step_env = {
            **env,
            **_env_file(github_env),
            **{k: evaluate(str(v)) for k, v in step.get("env", {}).items()},
            "GITHUB_ENV": str(github_env),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_ACTION_PATH": str(REPO_ROOT),
        }
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
            env=step_env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=workdir,
        )
        result.stdout += done.stdout
        result.stderr += done.stderr
        if done.returncode:
            result.returncode = done.returncode
            break
        steps[step.get("id", str(number))] = _env_file(output)
    result.env = _env_file(github_env)
    if not result.returncode:
        result.outputs = {name: evaluate(spec["value"]) for name, spec in action.get("outputs", {}).items()}
    return result


# --------------------------------------------------------------------------------------- GitLab

_GITLAB_INPUT = re.compile(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]")


def component_documents() -> tuple[dict[str, Any], dict[str, Any]]:
    header, body = yaml.safe_load_all(COMPONENT.read_text())
    return header, body


def component_interpolated(inputs: Mapping[str, str], *, check: bool = True) -> dict[str, Any]:
    """GitLab's include of the component: each input checked against its ``options`` and
    ``regex`` (``check=False`` skips that, to see what the job would do if a value got through),
    defaults filled in, and ``$[[ inputs.NAME ]]`` replaced in the loaded YAML's keys and values."""
    header, body = component_documents()
    spec = header["spec"]["inputs"]
    assert not set(inputs) - set(spec), f"the component has no input {set(inputs) - set(spec)}"
    values = {}
    for name, rule in spec.items():
        if name not in inputs and "default" not in rule:
            raise ValueError(f"`{name}` input: required value has not been provided")
        value = str(inputs.get(name, rule.get("default")))
        if check and "options" in rule and value not in rule["options"]:
            raise ValueError(f"`{name}` input: `{value}` cannot be used because it is not in the list of options")
        if check and "regex" in rule and not re.search(rule["regex"], value):
            raise ValueError(f"`{name}` input: provided value does not match required RegEx pattern")
        values[name] = value

    def walk(node: Any) -> Any:
        if isinstance(node, str):
            return _GITLAB_INPUT.sub(lambda m: values[m.group(1)], node)
        if isinstance(node, list):
            return [walk(item) for item in node]
        if isinstance(node, dict):
            return {walk(key): walk(value) for key, value in node.items()}
        return node

    return walk(body)


def _extended(jobs: dict[str, Any], job: dict[str, Any]) -> dict[str, Any]:
    """``extends:``: the parent's hashes merged deeply, everything else the child's."""
    parent = job.get("extends")
    if parent is None:
        return job

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {**base, **{k: merge(base.get(k), v) for k, v in over.items()}}
        return over

    child = {k: v for k, v in job.items() if k != "extends"}
    return merge(_extended(jobs, jobs[parent]), child)


def gitlab_job_run(
    config: dict[str, Any],
    job_name: str,
    *,
    predefined: Mapping[str, str],
    id_token: Callable[[str], str],
    workdir: Path,
) -> Ran:
    """One job as the runner runs it: predefined variables, then the job's ``variables:`` (an
    ``expand: false`` value taken as written), each ``id_tokens:`` entry as a variable holding a
    token GitLab minted for its ``aud``, and ``before_script`` + ``script`` in one bash shell
    with ``set -eo pipefail``."""
    job = _extended(config, config[job_name])
    env = dict(predefined)
    for name, value in job.get("variables", {}).items():
        if isinstance(value, dict):
            assert value.get("expand") is False, f"{name}: inputs are taken as written (expand: false)"
            value = value["value"]
        assert isinstance(value, str), f"{name}: a variable's value is a string"
        env[name] = value
    for name, token in job.get("id_tokens", {}).items():
        env[name] = id_token(token["aud"])
    script = workdir / "job.sh"
    script.write_text("set -eo pipefail\n" + "\n".join([*job.get("before_script", []), *job["script"]]) + "\n")
    done = subprocess.run(
        ["bash", "--noprofile", "--norc", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=workdir,
    )
    return Ran(done.returncode, done.stdout, done.stderr)
