"""The layering of mlpipe_cli, checked on the source (an AST walk; no import-linter needed).

    cli/  ->  ops/ (and api.py)  ->  domain packages  ->  foundations

* a domain package never imports ``cli``, ``ops`` or ``api`` (it must stay usable and
  testable without them);
* ``ops`` never imports ``cli`` or ``api`` (the CLI and the public API sit on top of it);
* no ``cli`` module imports polars (commands parse, call one ops function and render);
* ``drift``, ``validation``, ``schema``, ``artifacts`` and ``config`` do not reach sideways
  into ``transforms``, ``features``, ``online`` or ``serving`` (skew and shadow checks that
  need a transform live in ``ops``).

Every import counts, including ones inside functions and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mlpipe_cli"
DOMAIN = (
    "features",
    "transforms",
    "online",
    "drift",
    "validation",
    "schema",
    "artifacts",
    "config",
    "serving",
    "streaming",
)
LEAF_DOMAIN = ("drift", "validation", "schema", "artifacts", "config")
SIBLINGS_LEAVES_MUST_NOT_IMPORT = ("transforms", "features", "online", "serving")


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in ``path`` (under ``root``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from mlpipe_cli import ops` imports the subpackage too
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def files_of(subpackage: str) -> list[Path]:
    return sorted((PACKAGE / subpackage).rglob("*.py"))


def violations(subpackages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    out = []
    for sub in subpackages:
        for path in files_of(sub):
            for line, module in imported_modules(path):
                if any(module == f or module.startswith(f + ".") for f in forbidden):
                    out.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return out


def test_every_domain_package_exists() -> None:
    # a renamed package would make the rules below pass vacuously
    for sub in (*DOMAIN, "cli", "ops"):
        assert files_of(sub), sub


@pytest.mark.parametrize("domain", DOMAIN)
def test_domain_packages_never_import_cli_ops_or_api(domain: str) -> None:
    assert violations((domain,), ("mlpipe_cli.cli", "mlpipe_cli.ops", "mlpipe_cli.api")) == []


def test_ops_never_imports_cli_or_api() -> None:
    assert violations(("ops",), ("mlpipe_cli.cli", "mlpipe_cli.api")) == []


def test_cli_never_imports_polars() -> None:
    assert violations(("cli",), ("polars", "numpy", "pyarrow")) == []


def test_leaf_domain_packages_do_not_reach_sideways() -> None:
    forbidden = tuple(f"mlpipe_cli.{s}" for s in SIBLINGS_LEAVES_MUST_NOT_IMPORT)
    assert violations(LEAF_DOMAIN, forbidden) == []


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The walker itself: absolute, relative, function-local and TYPE_CHECKING imports."""
    probe = tmp_path / "mlpipe_cli" / "cli" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "from typing import TYPE_CHECKING\n"
        "import polars as pl\n"
        "from ..ops import fit\n"
        "from . import common\n"
        "if TYPE_CHECKING:\n    from mlpipe_cli.api import Pipeline\n"
        "def f():\n    import numpy\n"
    )
    modules = {m for _, m in imported_modules(probe, root=tmp_path)}
    assert {
        "polars",
        "mlpipe_cli.ops",
        "mlpipe_cli.ops.fit",
        "mlpipe_cli.cli.common",
        "mlpipe_cli.api",
        "numpy",
    } <= modules
