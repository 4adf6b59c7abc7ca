#!/usr/bin/env python3
"""Embed jwtex_token.py into this component's template.yml (``make gitlab-component``).

A GitLab job gets a component's YAML, not the other files of its project, so the client travels
inside the template: between ``<<'JWTEX_TOKEN_PY'`` and ``JWTEX_TOKEN_PY``, a quoted heredoc (the
shell expands nothing in it) in a YAML literal block (GitLab's ``$[[ … ]]`` interpolation aside,
nothing in it is read as YAML). tests/ci/test_gitlab_component.py fails while the copy differs.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template.yml"
CLIENT = HERE.parents[1] / "jwtex_token.py"
OPENING = "cat > \"$jwtex_client\" <<'JWTEX_TOKEN_PY'"
CLOSING = "JWTEX_TOKEN_PY"


def embedded(template: str, client: str) -> str:
    """``template`` with the client between the heredoc's lines, indented as they are."""
    lines = template.split("\n")
    start = next(i for i, line in enumerate(lines) if line.strip() == OPENING)
    end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == CLOSING)
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    for line in client.split("\n"):
        if line.strip() in (CLOSING, OPENING) or "$[[" in line or "\t" in line:
            raise ValueError(f"the client cannot be embedded: it has a line {line!r}")
    body = [indent + line if line else "" for line in client.rstrip("\n").split("\n")]
    return "\n".join(lines[: start + 1] + body + lines[end:])


def main() -> int:
    text = TEMPLATE.read_text(encoding="utf-8")
    new = embedded(text, CLIENT.read_text(encoding="utf-8"))
    if new != text:
        TEMPLATE.write_text(new, encoding="utf-8")
        print(f"embedded {CLIENT.name} into {TEMPLATE.relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
