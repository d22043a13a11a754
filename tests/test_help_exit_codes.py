"""`mlpipe --help` lists every exit code the CLI returns, 130 (interrupted) included."""

from __future__ import annotations

import re

from mlpipe_cli.errors import ExitCode


def test_top_level_help_lists_every_exit_code(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--help")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stdout.split())
    listed = {int(code) for code in re.findall(r"(?:codes: |, )(\d+) ", text)}
    assert listed == {int(code) for code in ExitCode} | {130}, text
    assert "130 interrupted (Ctrl-C)" in text
