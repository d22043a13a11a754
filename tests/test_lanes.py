"""The test lanes of tests/conftest.py: the slow list names real tests, markers land where meant."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import SLOW_TESTS, _starts_a_server

ROOT = Path(__file__).resolve().parents[1]


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def test_every_slow_entry_names_an_existing_test() -> None:
    # a renamed or deleted test would otherwise leave a stale entry and a slow test unmarked
    missing = []
    for entry in sorted(SLOW_TESTS):
        file, _, name = entry.partition("::")
        path = ROOT / file
        if not path.is_file() or name not in _test_functions(path):
            missing.append(entry)
    assert missing == []


def test_markers_are_applied_from_what_a_test_uses(request: pytest.FixtureRequest) -> None:
    own = {m.name for m in request.node.iter_markers()}
    assert not own & {"slow", "server", "redis", "spark"}


def test_redis_fixture_users_get_the_redis_marker(
    redis_server: object, request: pytest.FixtureRequest
) -> None:
    assert request.node.get_closest_marker("redis") is not None


def _spawns_serve() -> None:
    import subprocess
    import sys

    subprocess.Popen([sys.executable, "-m", "mlpipe_cli", "serve"])  # never called


def _runs_serve_in_process(cli) -> None:  # type: ignore[no-untyped-def]
    cli("serve", "--help")  # never called


class _Item:
    def __init__(self, function: object, fixtures: tuple[str, ...] = ()) -> None:
        self.function = function
        self.fixturenames = fixtures


def test_server_detection() -> None:
    assert _starts_a_server(_Item(_spawns_serve))  # type: ignore[arg-type]
    assert _starts_a_server(_Item(_runs_serve_in_process, ("servers",)))  # type: ignore[arg-type]
    assert not _starts_a_server(_Item(_runs_serve_in_process))  # type: ignore[arg-type]
