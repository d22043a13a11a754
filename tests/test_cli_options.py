"""Every leaf command accepts the shared options the README promises: -c/--config and
--artifact-dir (walks the Typer app, so a new command cannot forget them)."""

from __future__ import annotations

from typing import Any

import typer

from mlpipe_cli.cli.main import app


def leaf_commands() -> list[tuple[str, ...]]:
    def walk(command: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return [path]
        return [
            leaf for name, sub in sorted(subcommands.items()) for leaf in walk(sub, (*path, name))
        ]

    return walk(typer.main.get_command(app), ())


def test_every_leaf_command_help_lists_config_and_artifact_dir(cli: Any) -> None:
    leaves = leaf_commands()
    assert ("schema", "export") in leaves
    assert ("model", "register") in leaves
    missing = {}
    for path in leaves:
        result = cli(*path, "--help")
        assert result.exit_code == 0, (path, result.stderr)
        absent = [o for o in ("-c,", "--config", "--artifact-dir") if o not in result.stdout]
        if absent:
            missing[path] = absent
    assert missing == {}
