"""Every environment variable the README's configuration table and docs/environment.md document
is one jwtex reads (jwtex_site/environment.py, the one reader), and the other way round: a
documented knob that does nothing is a trap (JWTEX_AUDIT_SPOOL_DIR and JWTEX_REQUEST_FETCH_BUDGET
once were), and an undocumented one is a secret. Where the page states a plain number as the
default, it is the number the reader uses."""

from __future__ import annotations

import re

from jwtex_site.environment import DEFAULTS
from tests.conftest import REPO_ROOT


def _table_rows(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| `")
    ]


def _names(cell: str) -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", cell))


def test_every_variable_of_the_readme_table_is_read():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration (environment)") : readme.index("## Layout")]
    documented = {name for row in _table_rows(table) for name in _names(row[0])}
    assert {"JWTEX_AUDIT_SPOOL_DIR", "JWTEX_REQUEST_FETCH_BUDGET", "DATABASE_URL"} <= documented
    unread = sorted(documented - set(DEFAULTS))
    assert unread == [], f"documented but never read: {unread}"


def test_docs_environment_lists_every_variable_read_with_its_default():
    page = (REPO_ROOT / "docs" / "environment.md").read_text()
    table = page[page.index("## Variables") : page.index("### Settings without a variable")]
    rows = _table_rows(table)
    documented = {name for row in rows for name in _names(row[0])}
    assert sorted(documented - set(DEFAULTS)) == [], "documented but never read"
    assert sorted(set(DEFAULTS) - documented) == [], "read but not documented in docs/environment.md#variables"
    compared = 0
    for row in rows:
        (name,) = _names(row[0]) if len(_names(row[0])) == 1 else (None,)
        stated = row[-1].replace(",", "")
        if name and re.fullmatch(r"\d+(\.\d+)?", stated):
            assert float(stated) == float(DEFAULTS[name]), (name, stated, DEFAULTS[name])
            compared += 1
    assert compared >= 8  # 600, 0, 2, 1.5, 5, 900, 31,536,000, 8 …: the table still states them
