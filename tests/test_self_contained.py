"""A user's clone has nothing beside it: no test, code or document may reach outside the repository."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT as ROOT
from tests.conftest import tracked_files

# Built from parts, so this file does not match itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            re.escape(".." + "/shared"),
            r"parents\[\d\]\s*/\s*[\"']" + "shared",
            re.escape("/" + "work/"),
            re.escape(str(ROOT.parent) + "/"),
        ]
    )
)


def test_no_tracked_file_refers_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.suffix in {".png", ".sqlite3"} or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not offenders, "these lines reach outside the repository:\n" + "\n".join(offenders)


def test_fixtures_are_committed():
    tracked = {path.relative_to(ROOT).as_posix() for path in tracked_files()}
    for name in ("token.jwt", "jwks.json", "README.md"):
        assert f"tests/fixtures/github-actions/{name}" in tracked
