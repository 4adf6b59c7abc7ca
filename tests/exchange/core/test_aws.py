"""The audience of a token meant for AWS STS is written once (``exchange.core.aws.STS_AUDIENCE``):
the tenant's default, the presets, the console's snippets and the demo all take it from there."""

from __future__ import annotations

import ast

from exchange.core import aws, limits
from tests.conftest import REPO_ROOT


def test_the_sts_audience_is_one_constant():
    written = []
    for package in ("exchange", "tenants", "jwtex_site"):
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue  # migrations are history: they keep the value they were written with
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Constant) and node.value == aws.STS_AUDIENCE:
                    written.append(str(path.relative_to(REPO_ROOT)))
    assert written == ["exchange/core/aws.py"]
    assert limits.DEFAULT_AUDIENCE is aws.STS_AUDIENCE
