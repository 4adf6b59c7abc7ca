"""A user's clone has nothing beside it: no test, code or document may reach outside the repository."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT as ROOT, tracked_files

# A folder every machine has (a clone in /tmp/x): naming it says nothing about this machine.
_SHARED_FOLDERS = {"/", "/tmp", "/var/tmp", "/home", "/root", "/srv", "/opt", "/usr/src"}
# Built from parts, so this file does not match itself.
_OUTSIDE = re.compile(
    "|".join(
        [
            re.escape(".." + "/shared"),
            r"parents\[\d\]\s*/\s*[\"']" + "shared",
            re.escape("/" + "work/"),
            *([] if str(ROOT.parent) in _SHARED_FOLDERS else [re.escape(str(ROOT.parent) + "/")]),
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
