"""The house's floors are checked, not told (docs/design/layout.md#import-contracts): import-linter's
contracts (pyproject.toml), plus the rules an import graph cannot see."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGES = ("exchange", "tenants", "jwtex_site")


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run([str(lint), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_every_import_contract_is_kept():
    result = _lint_imports(REPO_ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_django_or_console_import_in_core_breaks_the_contract(tmp_path):
    """The core decides a token; Django and the console's content (exchange.console) stay out of it."""
    for name in (*PACKAGES, "pyproject.toml"):
        source = REPO_ROOT / name
        copy = shutil.copytree if source.is_dir() else shutil.copy
        copy(source, tmp_path / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if source.is_dir() else {}))
    limits = tmp_path / "exchange" / "core" / "limits.py"
    limits.write_text(
        limits.read_text()
        + "\nfrom django.conf import settings  # noqa\nfrom exchange.console import presets  # noqa\n"
    )
    result = _lint_imports(tmp_path)
    assert result.returncode != 0
    assert "exchange.core is pure" in result.stdout and "BROKEN" in result.stdout
    assert "exchange.core is not allowed to import django" in result.stdout
    assert "exchange.core.limits -> django" in result.stdout
    assert "exchange.core is not allowed to import exchange.console" in result.stdout
    assert "exchange.core.limits -> exchange.console.presets" in result.stdout


def _modules(*roots: str) -> list[Path]:
    return [p for root in roots for p in (REPO_ROOT / root).rglob("*.py") if "migrations" not in p.parts]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_services_know_no_wire_format():
    offenders = {str(p.relative_to(REPO_ROOT)) for p in _modules("exchange/services") if "django.http" in _imports(p)}
    assert not offenders


def test_settings_are_read_in_one_place():
    """No ``getattr(settings, …)`` and no ``settings.JWTEX_…`` outside exchange/conf.py (and the
    settings module, which reads the environment)."""
    allowed = {REPO_ROOT / "exchange" / "conf.py", REPO_ROOT / "jwtex_site" / "settings.py"}
    offenders = []
    for path in _modules(*PACKAGES):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and node.args:
                if getattr(node.args[0], "id", None) == "settings":
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
            if isinstance(node, ast.Attribute) and node.attr.startswith("JWTEX_"):
                if getattr(node.value, "id", None) == "settings":
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not offenders


_WRITES = {"create", "update", "delete", "bulk_create", "bulk_update", "get_or_create", "update_or_create"}


def test_the_admin_writes_through_services_only():
    """Beyond Django's own ModelAdmin save of a form (``super().save_model``), the admin's
    screens never write rows themselves: every button calls a service."""
    offenders = []
    for path in _modules("exchange/admin"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver, name = node.func.value, node.func.attr
            via_manager = isinstance(receiver, ast.Attribute) and receiver.attr == "objects" and name in _WRITES
            via_queryset = (
                isinstance(receiver, ast.Call)
                and getattr(receiver.func, "attr", "") in {"filter", "all"}
                and name in _WRITES
            )
            via_row = name in {"save", "delete"} and not (
                isinstance(receiver, ast.Call) and getattr(receiver.func, "id", "") == "super"
            )
            if via_manager or via_queryset or via_row:
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: .{name}()")
    assert not offenders


# A guard, not a target: a module that nears it holds two concerns, and is split by concern (the
# guarded request and the JSON fetch; the tenant scoping and the admin lists' lookups).
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small():
    """No module over 400 lines, no function over 60 lines, none excepted."""
    long_modules, long_functions = [], []
    for path in _modules(*PACKAGES):
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(str(path.relative_to(REPO_ROOT)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(REPO_ROOT)}:{node.name}")
    assert not long_modules and not long_functions


@pytest.mark.django_db
def test_the_models_match_their_migrations():
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("makemigrations", "exchange", "tenants", "--check", "--dry-run", stdout=out, stderr=out)
    assert "No changes detected" in out.getvalue()


# Django's migration loader takes every module of a migrations/ folder for a migration unless its
# name starts with an underscore: the helpers the migrations share must be named so, and what tests
# or benchmarks them imports them there.
_PRIVATE_MODULES_SHARED = ("exchange.migrations.",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path, source: str) -> list[str]:
    """``from x import _y`` (and ``x._y`` in a module path) where ``x`` is another module: what
    another module needs is public, or lives where both reach it. A private module (``_m.py``)
    may be imported by the modules of its own package."""
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    offences = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            dotted = [(f"{module}.{alias.name}", False) for alias in node.names]
        elif isinstance(node, ast.Import):
            dotted = [(alias.name, True) for alias in node.names]
        else:
            continue
        for name, all_modules in dotted:
            parts = name.split(".")
            for index, part in enumerate(parts):
                if not part.startswith("_") or part.startswith("__"):
                    continue
                owner = ".".join(parts[:index])
                where = REPO_ROOT / Path(*parts[: index + 1])
                is_module = all_modules or index < len(parts) - 1 or where.with_suffix(".py").exists() or where.is_dir()
                if is_module and (owner == package or f"{owner}.".startswith(_PRIVATE_MODULES_SHARED)):
                    continue
                offences.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}: {name}")
                break
    return offences


def _tracked_python() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return [REPO_ROOT / line for line in listed.stdout.splitlines() if (REPO_ROOT / line).exists()]


def test_no_module_imports_another_modules_private_names():
    offences = [o for path in _tracked_python() for o in _private_imports(path, path.read_text())]
    assert not offences


@pytest.mark.parametrize(
    "source, offends",
    [
        ("from .engine import _denied", True),
        ("from exchange.core.rules.engine import CompiledRule, _audience", True),
        ("from ..upstream import fetch\nfrom ..upstream.fetch import _Target", True),
        ("import exchange.upstream.fetch._helpers", True),
        ("from .engine import rule_denial, __all__", False),
        ("from exchange.migrations._audit_sql import RECORDS", False),  # Django's underscore, see above
        ("from ._private_sibling import helper", False),  # a private module of the same package
        ("from exchange.core._private import helper", True),  # … but not of another package
    ],
)
def test_the_private_import_scan_sees_each_form(source, offends):
    path = REPO_ROOT / "exchange" / "core" / "rules" / "mapper.py"
    assert bool(_private_imports(path, source)) is offends


# Django's conventional names, which each package may have; exchange/admin/ names each module after
# what it administers (the model, or the service of the same name: admin/rules.py and
# services/rules.py), so a reader always knows which of the two is meant by its folder.
_CONVENTIONAL_NAMES = frozenset({"__init__.py", "apps.py", "models.py", "urls.py", "views.py"})
_NAMED_AFTER_WHAT_THEY_ADMINISTER = Path("exchange", "admin")


def _shared_names(paths: list[Path]) -> dict[str, list[str]]:
    by_name: dict[str, list[str]] = {}
    for path in paths:
        if path.name in _CONVENTIONAL_NAMES or path.parent == _NAMED_AFTER_WHAT_THEY_ADMINISTER:
            continue
        by_name.setdefault(path.name, []).append(str(path))
    return {name: where for name, where in by_name.items() if len(where) > 1}


def test_no_two_modules_under_exchange_share_a_name():
    """One name, one module (docs/design/layout.md#naming): ``limits`` or ``revisions`` must not
    mean two things depending on the folder."""
    paths = [p.relative_to(REPO_ROOT) for p in (REPO_ROOT / "exchange").rglob("*.py")]
    assert not _shared_names(paths)


def test_the_name_check_sees_a_shared_name():
    paths = [
        Path("exchange/core/limits.py"),
        Path("exchange/services/limits.py"),
        Path("exchange/admin/rules.py"),
        Path("exchange/services/rules.py"),
        Path("exchange/api/views.py"),
        Path("exchange/admin/views.py"),
    ]
    assert _shared_names(paths) == {"limits.py": ["exchange/core/limits.py", "exchange/services/limits.py"]}
