"""How a message names an argument: the way the caller spelled it.

The same core function (``ops.fit.fit``) is called by ``mlpipe fit --data X`` and by
``Pipeline(...).fit(data=X)``. A message that tells the user what to pass must name the
argument they can actually pass: ``--data PATH`` on the command line, ``data=`` in Python.
Core code names arguments through the helpers below; the CLI switches the vocabulary once
per command run (``cli.main._run``, via :func:`cli_vocabulary`), and everything else —
a library call, a notebook, an orchestrator task — gets the Python spelling by default.

The vocabulary lives in a ``ContextVar``: it is set for the duration of one CLI run and
reset afterwards (a ``main([...])`` inside a Python process leaves no trace), and another
thread starts from the default (a Python caller in a thread beside a CLI run sees Python
names). A thread that core code starts does not inherit it either: raise user-facing
messages from the calling thread.

Names: ``name`` is always the Python parameter (``as_of``). Its flag defaults to
``--`` + the name with dashes (``--as-of``); pass ``flag=`` where the CLI spells it another
way (``sources=`` is ``--source``, ``fmt=`` is ``--format``, ``transform=`` is the
positional ``TRANSFORM_VERSION``). ``flag`` is used verbatim.

    arg("data", "PATH")            --data PATH          data=
    arg("source")                  --source             source=
    arg_name("max_age")            --max-age            max_age
    given("as_of", "2026-07-01")   --as-of 2026-07-01   as_of=2026-07-01
    given("resume", True)          --resume             resume=True
    given("sample_data", False, flag="--no-data")
                                   --no-data            sample_data=False
    joined(a, b)                   "a b"                "a, b"
    spelled(cli=..., python=...)   the one for the caller (a command to run vs a call)
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from contextvars import ContextVar


class Vocabulary(enum.Enum):
    """Whose names a message uses."""

    PYTHON = "python"  # keyword arguments of the Python API: data=, as_of=
    CLI = "cli"  # flags of the `mlpipe` command: --data PATH, --as-of


_VOCABULARY: ContextVar[Vocabulary] = ContextVar("mlpipe_argnames", default=Vocabulary.PYTHON)


def current() -> Vocabulary:
    """The vocabulary of the call being served (PYTHON unless inside a CLI run)."""
    return _VOCABULARY.get()


@contextlib.contextmanager
def cli_vocabulary() -> Iterator[None]:
    """Name arguments as CLI flags inside this block (the CLI's command dispatch only)."""
    token = _VOCABULARY.set(Vocabulary.CLI)
    try:
        yield
    finally:
        _VOCABULARY.reset(token)


def _flag(name: str, flag: str | None) -> str:
    return flag if flag is not None else "--" + name.replace("_", "-")


def arg(name: str, metavar: str | None = None, *, flag: str | None = None) -> str:
    """The argument as something to pass: ``--data PATH`` (``metavar`` shown on the CLI
    only) or ``data=``."""
    if current() is Vocabulary.CLI:
        spelled_flag = _flag(name, flag)
        return f"{spelled_flag} {metavar}" if metavar else spelled_flag
    return f"{name}="


def arg_name(name: str, *, flag: str | None = None) -> str:
    """The argument itself, as in ``--max-age: bad duration`` / ``max_age: bad duration``."""
    return _flag(name, flag) if current() is Vocabulary.CLI else name


def given(name: str, value: object, *, flag: str | None = None) -> str:
    """The argument with a value: ``--as-of X`` / ``as_of=X``. A bool is a switch: the flag
    alone on the CLI (``--resume``; ``flag="--no-data"`` for False), ``resume=True`` in
    Python. Other values are shown as given (``str()``), in both vocabularies."""
    if current() is Vocabulary.CLI:
        spelled_flag = _flag(name, flag)
        return spelled_flag if isinstance(value, bool) else f"{spelled_flag} {value}"
    return f"{name}={value}"


def joined(*parts: str) -> str:
    """Arguments of one suggested call: separated like a command line, or like a call."""
    return (" " if current() is Vocabulary.CLI else ", ").join(parts)


def spelled(*, cli: str, python: str) -> str:
    """The caller's form of something that is not one argument (a command to run)."""
    return cli if current() is Vocabulary.CLI else python
