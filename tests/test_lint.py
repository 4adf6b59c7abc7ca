"""ruff's lint rules and formatter are checked, not told (README, "Development"): the rule set is
``[tool.ruff]`` in pyproject.toml, run here like lint-imports in tests/test_layers.py. A ``noqa``
marker names the codes it silences and says why."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

from tests.conftest import REPO_ROOT

# The codes after "noqa:", then a dash and the reason, as jwtex_site/wsgi.py writes them.
NOQA_WITH_REASON = re.compile(r"#\s*noqa:\s*[A-Z]+[0-9]+(?:\s*,\s*[A-Z]+[0-9]+)*\s+-\s+\S")
NOQA = re.compile(r"#\s*noqa\b", re.IGNORECASE)


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = Path(sys.executable).with_name("ruff")
    return subprocess.run(
        [str(ruff), *args, "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_finds_nothing():
    result = _ruff("check")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_the_code_is_formatted_as_ruff_formats_it():
    result = _ruff("format", "--check")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def noqa_without_reason(source: str) -> list[int]:
    """Line numbers of the ``noqa`` comments (never text inside a string) that do not name their
    codes and give a reason."""
    lines = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and NOQA.search(token.string):
            if not NOQA_WITH_REASON.search(token.string):
                lines.append(token.start[0])
    return lines


def _tracked_python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return [REPO_ROOT / name for name in listed if (REPO_ROOT / name).exists()]


def test_every_noqa_names_its_codes_and_says_why():
    files = _tracked_python_files()
    assert len(files) > 100  # git listed the repository, not nothing
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{line}"
        for path in files
        for line in noqa_without_reason(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "noqa without '# noqa: CODE - reason': " + ", ".join(offenders)


def test_a_bare_or_unexplained_noqa_is_caught():
    source = (
        "import os  # noqa\n"
        "import re  # noqa: F401\n"
        "import sys  # NOQA: F401 -\n"
        "import io  # noqa: no-op, says nothing\n"
        "import json  # noqa: F401 - re-exported for the callers\n"
        "import ast  # noqa: E402, F401 - after the sys.path above\n"
        'TEXT = "# noqa"\n'
    )
    assert noqa_without_reason(source) == [1, 2, 3, 4]
