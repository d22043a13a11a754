"""`mlpipe` (the console script) and `python -m mlpipe_cli`.

SIGINT handling is installed before the CLI and its libraries are imported (~0.3 s), so a
Ctrl-C during start-up ends the run with exit 130 and one line, not an import traceback
(``mlpipe_cli.interrupts``).
"""

from __future__ import annotations


def main() -> None:
    from mlpipe_cli import interrupts

    interrupts.install()
    from mlpipe_cli.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
