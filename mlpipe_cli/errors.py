"""The one exception hierarchy of mlpipe, and the one place it maps to exit codes.

    MlpipeError                       exit 2  (base: anything we raise on purpose)
    ├── UsageError                    exit 2  bad flag combination, bad argument value,
    │                                         an output that is also an input
    ├── ConfigError                   exit 2  bad YAML, unknown key, wrong type, missing env var
    ├── InputError                    exit 2  missing/unreadable/corrupt input file
    ├── OutputError                   exit 2  an output cannot be written: full disk, read-only
    │                                         file system, no permission
    ├── DataCheckFailed               exit 1  the data failed a check (validation, drift, freshness, skew)
    ├── ArtifactError                 exit 3  unknown version, hash mismatch, forged or unsigned
    │   │                                     artifact, corrupt LATEST pointer, incompatible schema
    │   └── ArtifactNotFound          exit 3
    ├── ServiceUnavailable            exit 4  online store unreachable, auth rejected
    ├── InternalError                 exit 70 an invariant of mlpipe broke: a bug (sysexits'
    │                                         EX_SOFTWARE); any unexpected exception maps here too
    └── Signal                        (none)  internal control flow, never leaves its module

A run interrupted by Ctrl-C exits 130 (``ExitCode.INTERRUPTED``) whatever it ended with
(``mlpipe_cli.interrupts``).

Core code raises these; only ``mlpipe_cli.cli.main`` turns them into exit codes, through
``exit_code_for``. Messages are one line and say what to do next. Every exception class
defined in mlpipe derives from ``MlpipeError`` (tests/test_fault_suite.py walks the package
and checks it).
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    DATA_CHECK_FAILED = 1
    USAGE = 2
    ARTIFACT = 3
    SERVICE_UNAVAILABLE = 4
    INTERNAL = 70  # sysexits.h EX_SOFTWARE: a bug in mlpipe, not in the user's input
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT, as shells report it); see mlpipe_cli.interrupts


class MlpipeError(Exception):
    """Root of every error mlpipe raises on purpose."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message


class UsageError(MlpipeError):
    """A flag or argument is wrong."""


class ConfigError(MlpipeError):
    """The YAML config is unreadable or does not match the config model."""


class InputError(MlpipeError):
    """An input file is missing, unreadable, corrupt or has the wrong shape."""


class OutputError(MlpipeError):
    """An output cannot be written: full disk, read-only file system, no permission."""


class DataCheckFailed(MlpipeError):
    """The data failed a check: validation, drift, freshness or skew.

    ``report`` carries the structured result so the CLI can still print it.
    """

    exit_code = ExitCode.DATA_CHECK_FAILED

    def __init__(self, message: str, *, hint: str | None = None, report: object = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report


class ArtifactError(MlpipeError):
    """An artifact is missing, tampered with, or incompatible with the input."""

    exit_code = ExitCode.ARTIFACT


class ArtifactNotFound(ArtifactError):
    """No artifact with that kind/version exists."""


class ServiceUnavailable(MlpipeError):
    """An external service (online store) is unreachable or rejects us."""

    exit_code = ExitCode.SERVICE_UNAVAILABLE


class InternalError(MlpipeError):
    """An invariant of mlpipe itself broke (a bug, never a data problem): exit 70."""

    exit_code = ExitCode.INTERNAL


class Signal(MlpipeError):
    """Internal control flow (e.g. "key missing" inside a store adapter); callers catch it
    in the same module. Should one ever escape, it is a bug: exit 70."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str = "", *, hint: str | None = None) -> None:
        super().__init__(message or type(self).__name__, hint=hint)


def first_and_more(problems: list[str]) -> str:
    """Several problems as one line: the first, then "(and N more: ...)"."""
    rest = problems[1:]
    return problems[0] + (f" (and {len(rest)} more: {'; '.join(rest)})" if rest else "")


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map any exception to the documented exit code (the single place that does)."""
    if isinstance(exc, MlpipeError):
        return exc.exit_code
    if isinstance(exc, ConnectionError):
        # A raw socket error that no adapter translated is still a service being unavailable.
        return ExitCode.SERVICE_UNAVAILABLE
    if isinstance(exc, OSError):
        # An environment error no adapter translated (a file, a device): not a bug of ours.
        return ExitCode.USAGE
    # Unexpected exceptions are bugs: never reported as a data failure, a pass or a usage error.
    return ExitCode.INTERNAL
