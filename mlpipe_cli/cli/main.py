"""The `mlpipe` entry point: builds the Typer app and turns every error into an exit code.

This is the only place exceptions become exit codes (see ``mlpipe_cli.errors``). Command
modules import heavy libraries inside their functions so `mlpipe --help` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Annotated, Any

import typer
from typer._click import exceptions as click_exceptions  # Typer vendors click

from mlpipe_cli import __version__, interrupts
from mlpipe_cli.argnames import cli_vocabulary
from mlpipe_cli.errors import ExitCode, InternalError, MlpipeError, UsageError, exit_code_for
from mlpipe_cli.io import check_outputs, input_scope


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"mlpipe {__version__}\n")
        raise typer.Exit(0)


def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Print the version."
        ),
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for unexpected errors.")
    ] = False,
    triggered_at: Annotated[
        str | None,
        typer.Option(
            "--triggered-at",
            help="When the orchestrator triggered this run (ISO-8601), recorded in the run "
            "ledger for the freshness SLO; env MLPIPE_TRIGGERED_AT. Default: the start time.",
        ),
    ] = None,
    # Shown here for --help only: run() moves these behind the command (_move_root_options),
    # so a command never finds them on the root; they arrive here only when no command runs.
    config: Annotated[
        str | None,
        typer.Option(
            "-c",
            "--config",
            metavar="PATH",
            help="The command's -c/--config, given before it: `mlpipe -c prod.yaml validate` "
            "is `mlpipe validate -c prod.yaml`. Both, with different values: exit 2.",
        ),
    ] = None,
    artifact_dir: Annotated[
        str | None,
        typer.Option(
            "--artifact-dir",
            metavar="DIR",
            help="The command's --artifact-dir, given before it (as for -c).",
        ),
    ] = None,
) -> None:
    """mlpipe: ML data pipelines that fail loudly."""


# In pipeline order, so `mlpipe --help` reads like the workflow: (name, module under
# mlpipe_cli.cli, attribute, whether it is a command group).
COMMANDS: tuple[tuple[str, str, str, bool], ...] = (
    ("init", "init_cmd", "init", False),
    ("sample-data", "sample_data_cmd", "sample_data", False),
    ("validate", "validate_cmd", "validate", False),
    ("schema", "schema_cmd", "app", True),
    ("training-set", "training_set_cmd", "training_set", False),
    ("fit", "fit_cmd", "fit", False),
    ("transform", "transform_cmd", "transform", False),
    ("export", "export_cmd", "export", False),
    ("materialize", "materialize_cmd", "materialize", False),
    ("serve", "serve_cmd", "serve", False),
    ("push", "push_cmd", "push", False),
    ("stream", "stream_cmd", "stream", False),
    ("model", "model_cmd", "app", True),
    ("promote", "promote_cmd", "promote", False),
    ("psi-report", "psi_report_cmd", "psi_report", False),
    ("artifacts", "artifacts_cmd", "app", True),
    ("runs", "slo_cmd", "runs", False),
    ("slo", "slo_cmd", "slo", False),
)


def build_app(only: str | None = None) -> typer.Typer:
    """The Typer app with every command, or with only the command (or group) named ``only``.

    A run builds only the command it runs (#19): importing all 18 command modules and
    turning every signature into Click parameters cost ~25 ms of CPU in each process's
    start-up (0.035 s against 0.010 s for `validate` alone), for commands that then go unused. The command object is the same either way, so its
    help, parsing and errors are too (tests/test_cli_startup.py compares them); ``--help``,
    no command and an unknown command (whose error suggests names) get the full app.
    """
    from importlib import import_module

    app = typer.Typer(
        name="mlpipe",
        help="Validate, build point-in-time training sets, fit versioned preprocessing, "
        "materialize and serve features, and monitor drift.\n\n"
        "Exit codes: 0 ok, 1 data failed a check, 2 usage/config/input error, "
        "3 artifact/contract error, 4 external service unavailable, 70 internal error (a bug), "
        "130 interrupted (Ctrl-C).",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode=None,
    )
    app.callback()(_root)
    for name, module, attribute, is_group in COMMANDS:
        if only is not None and name != only:
            continue
        target = getattr(import_module(f"mlpipe_cli.cli.{module}"), attribute)
        if is_group:
            app.add_typer(target, name=name)
        else:
            app.command(name)(target)
    return app


def __getattr__(name: str) -> Any:
    # `app` (every command) is built on first use: tests and docs tooling walk it, a run
    # builds only what it needs (see build_app).
    if name == "app":
        globals()["app"] = full = build_app()
        return full
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _app_for(args: list[str]) -> typer.Typer:
    """The app to run ``args`` with: only the named command when one is named."""
    if "app" in globals():  # built or set already (tests replace it)
        return globals()["app"]
    # root options take no value here (--triggered-at was taken out before), so the first
    # word that is not an option names the command
    word = next((a for a in args if not a.startswith("-")), None)
    known = {name for name, *_ in COMMANDS}
    if word in known and not {"--help", "-h"} & set(args[: args.index(word)]):
        return build_app(only=word)
    return build_app()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exits with the documented code.

    With ``argv`` given (a caller running mlpipe inside its own process) this raises
    ``SystemExit`` as usual; only the process's own command line (``argv`` None: the
    ``mlpipe`` script, ``python -m mlpipe_cli``) takes the start-up and exit shortcuts below,
    which would otherwise end or retune the caller's process.
    """
    if argv is not None:
        sys.exit(run(argv))
    # first, in case the entry point was not mlpipe_cli.__main__ (an older install's script)
    interrupts.install()
    # pydantic looks for plugins through every installed package's entry points the first
    # time a model is built (~20 ms of each command's start-up); mlpipe uses none. Only the
    # command line does this, and a value the user set wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from mlpipe_cli.cli.blas import one_blas_thread_for

    try:  # `mlpipe -c x.yaml fit`: the command word comes after the root option's value
        command_args = _move_root_options(sys.argv[1:])
    except MlpipeError:  # reported by run()
        command_args = sys.argv[1:]
    one_blas_thread_for(command_args)  # fit, psi-report: no idle OpenBLAS workers (blas.py)
    _quiet_gc_during_startup()
    try:
        code = run(argv)
    except KeyboardInterrupt:  # outside the command: while the run ledger starts or ends
        code = _interrupted()
    interrupts.disarm()  # the outcome is decided: a late Ctrl-C must not cut the exit short
    _exit(code)


def _exit(code: int) -> None:
    """End the process with ``code``, without the interpreter's teardown when that is safe.

    Tearing down Polars, pydantic, Typer and the command's modules (their dicts cleared, a
    final collection, ~60k objects freed one by one) cost ~0.06-0.08 s of CPU at the end of
    every command (#19), for memory the OS takes back anyway. What a normal exit does that
    matters still happens: the atexit handlers run (logging, Polars' runtime, Spark's
    shutdown, weakref finalizers such as temporary directories) and stdout/stderr are
    flushed. Only when another non-daemon thread is still running (whose work a normal exit
    waits for), the atexit API is missing or a flush fails does the normal exit run.
    """
    import atexit
    import threading

    others = [t for t in threading.enumerate() if t is not threading.current_thread()]
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    if run_exitfuncs is None or any(t.is_alive() and not t.daemon for t in others):
        sys.exit(code)
    run_exitfuncs()  # prints, as at a normal exit, what a handler raises
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # e.g. a closed pipe: the normal exit reports it as it always did
        sys.exit(code)
    os._exit(code)


# Start-up (imports of Polars, pydantic, Typer and the command, the config models) creates
# ~60k long-lived objects and no garbage cycles to speak of, yet the default thresholds run
# ~120 young and ~10 middle collections and a full one over them: 0.03-0.05 s of every
# command (measured with gc.callbacks, #19). Until this many more tracked objects are alive
# than at the last collection none runs; the first collection restores the defaults, so a
# long-running or allocation-heavy command (serve, stream, a large materialize) collects as
# usual from then on, and cyclic garbage before it is bounded by this count.
_STARTUP_GC_THRESHOLD = 100_000


def _quiet_gc_during_startup() -> None:
    import gc

    defaults = gc.get_threshold()
    if defaults[0] == 0 or defaults[0] >= _STARTUP_GC_THRESHOLD:
        return  # collection disabled or already tuned by the embedding process: keep it

    def restore(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            gc.set_threshold(*defaults)
            gc.callbacks.remove(restore)

    gc.callbacks.append(restore)
    gc.set_threshold(_STARTUP_GC_THRESHOLD, *defaults[1:])


# Commands that write no ledger record: servers record their own latency snapshots, and the
# ledger's readers would otherwise record themselves.
_UNRECORDED = frozenset({"serve", "slo", "runs", "init", "sample-data"})
_GROUPS = frozenset({"schema", "model", "artifacts"})


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code; every run that loads a config is recorded in the
    run ledger (mlpipe_cli.ledger) with that exit code."""
    from datetime import UTC, datetime

    global _reported_interrupt
    _reported_interrupt = False  # a new run: its own interruption, if any, is reported once

    from mlpipe_cli import ledger

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        args, triggered = _take_triggered_at(args)
        args = _move_root_options(args)
    except MlpipeError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return int(exc.exit_code)
    words = [a for a in args if not a.startswith("-")][:2]
    name = " ".join(words[:2] if words and words[0] in _GROUPS else words[:1])
    if not words or words[0] in _UNRECORDED or "--help" in args or "-h" in args:
        return _run(args)
    with ledger.recording(name, args, triggered_at=triggered) as recorder:
        code = _run(args)
        recorder.finish(code, datetime.now(UTC))
    return code


def _take_triggered_at(args: list[str]) -> tuple[list[str], Any]:
    """Remove the global --triggered-at option wherever it stands; parse its instant."""
    from mlpipe_cli.ledger import parse_instant

    rest: list[str] = []
    value: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--triggered-at":
            if i + 1 >= len(args):
                raise UsageError("--triggered-at needs a value (ISO-8601 time)")
            value = args[i + 1]
            i += 2
            continue
        if arg.startswith("--triggered-at="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    if value is None and os.environ.get("MLPIPE_TRIGGERED_AT"):
        return rest, parse_instant(os.environ["MLPIPE_TRIGGERED_AT"], "MLPIPE_TRIGGERED_AT")
    return rest, None if value is None else parse_instant(value, "--triggered-at")


# Options every command takes that may also stand before the command, as users write them
# both ways (`mlpipe -c x.yaml validate`): flag as typed -> the command's long flag. Only
# these two: every command takes them and means the same by them (tests/test_cli_options.py
# checks every command has them); --json and -q are not on every command (serve).
_ROOT_COMMAND_OPTIONS = {
    "-c": "--config",
    "--config": "--config",
    "--artifact-dir": "--artifact-dir",
}


def _root_option_at(args: list[str], index: int) -> tuple[str, str | None, int] | None:
    """The root command option at ``args[index]``: (long flag, its value or None when it has
    none, how many words it takes); None when ``args[index]`` is not one."""
    arg = args[index]
    if arg in _ROOT_COMMAND_OPTIONS:
        value = args[index + 1] if index + 1 < len(args) else None
        return _ROOT_COMMAND_OPTIONS[arg], value, 2
    for flag in ("--config", "--artifact-dir"):
        if arg.startswith(flag + "="):
            return flag, arg.split("=", 1)[1], 1
    if arg.startswith("-c") and not arg.startswith("--"):  # -cFILE, as Click reads it
        return "--config", arg[2:], 1
    return None


def _move_root_options(args: list[str]) -> list[str]:
    """``args`` with -c/--config and --artifact-dir given before the command (or between a
    group and its subcommand) moved to just after the command, where the command reads them.

    The same option given after the command too: one value is kept when both name the same
    path; different values are a UsageError (exit 2) rather than a silent pick, since
    `mlpipe -c prod.yaml validate -c dev.yaml` is more likely a mistake than a wish. With no
    complete command (`mlpipe -c x.yaml --help`, a group without its subcommand) ``args`` is
    returned as it is: the root takes the options and shows its help or its usage error.
    """
    kept: list[str] = []
    moved: dict[str, tuple[str, str]] = {}  # long flag -> (as typed, value)
    path: list[str] = []  # the command words: `validate`, or `artifacts verify`
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            break
        option = _root_option_at(args, index)
        if option is not None:
            flag, value, width = option
            typed = arg.split("=", 1)[0] if arg.startswith("--") else arg[:2]
            if value is None or (width == 2 and value.startswith("-")) or value == "":
                raise UsageError(f"{typed} needs a value (see 'mlpipe --help')")
            if flag in moved and moved[flag][1] != value:
                raise UsageError(f"{typed} given twice before the command; give it once")
            moved[flag] = (typed, value)
            index += width
            continue
        kept.append(arg)
        index += 1
        if arg == "--triggered-at" and index < len(args):  # its value is not a command word
            kept.append(args[index])
            index += 1
        elif not arg.startswith("-"):
            path.append(arg)
            if not (arg in _GROUPS and len(path) == 1):
                break
    complete = bool(path) and not (path[0] in _GROUPS and len(path) < 2)
    if not moved or not complete:
        return args
    rest = args[index:]
    for flag, value in _command_options(rest).items():
        if flag not in moved:
            continue
        typed, before = moved[flag]
        if not _same_path(before, value):
            raise UsageError(
                f"{flag} given twice: {before!r} before the command ({typed}) and {value!r} "
                f"after it; give it once"
            )
        del moved[flag]  # the command's own, same path: keep one
    inserted = [word for flag, (_, value) in moved.items() for word in (flag, value)]
    return [*kept, *inserted, *rest]


def _command_options(args: list[str]) -> dict[str, str]:
    """The root command options among a command's own arguments (the last value of each)."""
    found: dict[str, str] = {}
    index = 0
    while index < len(args) and args[index] != "--":
        option = _root_option_at(args, index)
        if option is None:
            index += 1
            continue
        flag, value, width = option
        if value is None:  # the last word: the command reports the missing value itself
            break
        found[flag] = value
        index += width
    return found


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _run(args: list[str]) -> int:
    """Run the CLI and return the exit code; every error is one line on stderr."""
    debug = "--debug" in args or os.environ.get("MLPIPE_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(_app_for(args))
    _declare_outputs_first(command)
    try:
        # make_context + invoke rather than command.main(): main() turns Ctrl-C into a return
        # value and a closed stdout into exit 1, and we own both decisions here.
        # input_scope: what the command reads is registered, so no output can overwrite it
        interrupts.arm()  # a Ctrl-C during start-up was recorded: raise it now
        # cli_vocabulary: core messages name arguments as flags (--data PATH), for this run only
        with cli_vocabulary(), input_scope(), command.make_context("mlpipe", args) as ctx:
            command.invoke(ctx)
        interrupts.check()  # one that a finalizer or a Rust callback swallowed
    except BaseException as exc:
        if isinstance(exc, SystemExit):
            raise
        return _exit_code(exc, debug)
    finally:
        interrupts.disarm()
    return 0


def _exit_code(exc: BaseException, debug: bool) -> int:
    """Report ``exc`` as one line on stderr and return its exit code."""
    if interrupts.received() or isinstance(exc, (typer.Abort, KeyboardInterrupt, EOFError)):
        # whatever the run ended with after a Ctrl-C (a PyO3 PanicException wrapping the
        # KeyboardInterrupt, an error raised while unwinding, a typer.Exit) it was interrupted
        return _interrupted()
    if isinstance(exc, typer.Exit):
        return int(exc.exit_code)
    if isinstance(exc, click_exceptions.NoArgsIsHelpError):
        exc.show(file=sys.stderr)
        return int(ExitCode.USAGE)
    if isinstance(exc, click_exceptions.ClickException):
        sys.stderr.write(f"error: {_usage_message(exc)}\n")
        return int(ExitCode.USAGE)
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, InternalError):
        message = _one_line(str(exc)).removeprefix("internal error: ")
        sys.stderr.write(
            f"error: internal error: {message} "
            "(a bug in mlpipe: re-run with --debug for the traceback and please report it)\n"
        )
        return int(exc.exit_code)
    if isinstance(exc, MlpipeError):
        sys.stderr.write(f"error: {exc}\n")
        return int(exc.exit_code)
    if isinstance(exc, BrokenPipeError):
        # `mlpipe ... | head` closed stdout early: not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not fail either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        reason = exc.strerror or str(exc) or type(exc).__name__
        sys.stderr.write(f"error: {reason}{where}\n")
        return int(exit_code_for(exc))
    # anything else (an Exception, or a BaseException such as PyO3's PanicException) is a bug
    message = _one_line(str(exc)) or repr(exc)
    sys.stderr.write(
        f"error: unexpected {type(exc).__name__}: {message} "
        "(a bug in mlpipe: re-run with --debug for the traceback and please report it)\n"
    )
    return int(exit_code_for(exc))


_reported_interrupt = False


def _interrupted() -> int:
    # Once per process: a second KeyboardInterrupt can land after run() already reported the
    # first (the signal is delivered late, between the report and run's return), and main()
    # catches it too: the user still sees one line (a CI run saw two).
    global _reported_interrupt
    if not _reported_interrupt:
        _reported_interrupt = True
        sys.stderr.write("error: interrupted\n")
    return int(ExitCode.INTERRUPTED)


# Options naming files a command writes. Declaring them before the command body runs makes
# every reader refuse an input that is one of them the moment it is read, before any heavy
# work; the atomic writers check again when they write. New commands get this by naming
# their output options like these.
OUTPUT_OPTIONS = frozenset({"out", "quarantine", "junit", "html", "prometheus"})


def _declare_outputs_first(command: Any) -> None:
    subcommands = getattr(command, "commands", None)
    if subcommands:
        for sub in subcommands.values():
            _declare_outputs_first(sub)
        return
    # name -> its long flag, so a collision between two outputs names both flags
    flags = {p.name: max(p.opts, key=len) for p in command.params if p.name in OUTPUT_OPTIONS}
    callback = command.callback
    if not flags or callback is None:
        return

    @functools.wraps(callback)
    def declared(*args: Any, **kwargs: Any) -> Any:
        check_outputs({flag: kwargs.get(name) for name, flag in flags.items()})
        return callback(*args, **kwargs)

    command.callback = declared


def _one_line(text: str) -> str:
    """The first non-empty line: an error is one line on stderr, whatever the library said."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _usage_message(exc: click_exceptions.ClickException) -> str:
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        return f"{message} (see '{ctx.command_path} --help')"
    return message


if __name__ == "__main__":
    main()
