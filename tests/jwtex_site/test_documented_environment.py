"""Every environment variable the README's configuration table documents is read by the
settings (the environment is read there and only there): a documented knob that does nothing
is a trap (JWTEX_AUDIT_SPOOL_DIR and JWTEX_REQUEST_FETCH_BUDGET once were)."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def test_every_documented_variable_is_read_by_the_settings_or_make_serve():
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme[readme.index("## Configuration (environment)"):readme.index("## Layout")]
    rows = [line for line in table.splitlines() if line.startswith("| `")]  # the table's rows only
    documented = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1])}
    assert {"JWTEX_AUDIT_SPOOL_DIR", "JWTEX_REQUEST_FETCH_BUDGET", "DATABASE_URL"} <= documented
    read = (REPO_ROOT / "jwtex_site" / "settings.py").read_text() + (REPO_ROOT / "jwtex_site" / "serve.py").read_text()
    unread = sorted(name for name in documented if f'"{name}"' not in read)
    assert unread == [], f"documented but never read: {unread}"
