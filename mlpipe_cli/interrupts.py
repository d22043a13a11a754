"""Ctrl-C (SIGINT): an interrupted run stops with exit 130 and one line, and publishes nothing.

Python's own handler raises ``KeyboardInterrupt`` wherever the main thread happens to be.
Three places make that unreliable in a CLI built on Rust extensions:

- **start-up**: the console script imports Typer, pydantic and the command before any
  ``try`` of ours exists, so an interrupt there printed an import traceback. ``install()``
  runs first (from ``mlpipe_cli.__main__``, which imports nothing heavy) and only *records*
  the interrupt; ``arm()``, called once the CLI's error mapping is in place, raises it.
- **finalizers and Rust callbacks**: an exception raised in a ``__del__``, a generator closed
  by the garbage collector or a Python function that Polars/pydantic-core called from Rust
  cannot propagate. Python prints "Exception ignored" and the run went on (once it published
  a transform after Ctrl-C). The handler therefore also sets a flag that nothing can swallow:
  ``check()`` raises again at the points that matter (before anything is published, at each
  progress update, when the command returns), and the unraisable hook keeps the swallowed
  copy quiet.
- **library code called from Rust**: rust-numpy runs NumPy's version check in Python on a
  process's first ``to_numpy``, Polars calls back into its Python helpers, pydantic-core into
  validators. A ``KeyboardInterrupt`` raised there became a Rust panic (``PanicException``,
  ~150 lines printed by Rust itself). An interrupt that lands in an installed library's
  code or in an import is therefore delivered again 20 ms later, until it lands in mlpipe's
  or the standard library's code (for at most 0.5 s; then it is raised where it lands).

``mlpipe_cli.cli.main`` maps whatever an interrupted run ends with (``KeyboardInterrupt``,
a ``PanicException`` wrapping one, any error raised while unwinding) to exit 130 by asking
``received()``. Standard library only: this module is imported before everything else.
"""

from __future__ import annotations

import re
import signal
import sys
from types import FrameType

_received = False
_raising = False
_installed = False


def install() -> None:
    """Handle SIGINT from now on, recording it until ``arm()`` (main thread only; idempotent)."""
    global _installed
    if _installed:
        return
    try:
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: the embedding program handles its signals
        return
    previous_hook = sys.unraisablehook

    def quiet_swallowed_interrupt(unraisable: sys.UnraisableHookArgs) -> None:
        # the flag is set, so the run still stops at the next check(); the copy that a
        # finalizer or a Rust callback swallowed would only print a traceback
        if _received and _is_interrupt(unraisable.exc_value):
            return
        previous_hook(unraisable)

    sys.unraisablehook = quiet_swallowed_interrupt
    _installed = True


def arm() -> None:
    """Raise ``KeyboardInterrupt`` on SIGINT from now on; raise one now if it came already."""
    global _raising
    _raising = True
    check()


def disarm() -> None:
    """Only record SIGINT again: the run's outcome is decided, a late Ctrl-C must not cut the
    run-ledger record or the exit short."""
    global _raising
    _raising = False


def received() -> bool:
    """Whether SIGINT arrived since ``install()``."""
    return _received


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived, even if the first one was swallowed."""
    if _received and _raising:
        raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received, _deferrals
    _received = True
    if not _raising:
        return
    if _deferrals < _MAX_DEFERRALS and _inside_a_library(frame):
        _deferrals += 1
        _redeliver_soon()
        return
    _deferrals = 0
    raise KeyboardInterrupt


# An interrupt that lands in a library's Python code (or an import) is held back for up to
# this many redeliveries, 20 ms apart, for control to come back to mlpipe's own code; then it
# is raised wherever it is (a library blocked in a socket read must not hold Ctrl-C forever).
_REDELIVER_AFTER_SECONDS = 0.02
_MAX_DEFERRALS = 25
_deferrals = 0


def _inside_a_library(frame: FrameType | None) -> bool:
    """Whether the main thread runs an installed library's Python code or an import.

    Such code is often called *from Rust*: rust-numpy's NumPy version check on a process's
    first ``to_numpy``, a Polars plan calling back into its Python helpers, pydantic-core
    running a validator. A ``KeyboardInterrupt`` raised there becomes a Rust panic (PyO3's
    ``PanicException``, whose ~150-line message Rust prints itself) or is swallowed. Python
    cannot tell whether C or Rust sits between two frames, so every library frame is treated
    as possibly called from Rust.
    """
    if frame is None:
        return False
    filename = frame.f_code.co_filename
    # mlpipe's own code is never "a library", also when mlpipe itself is installed in
    # site-packages (not an editable checkout): there the interrupt is raised at once
    if not filename.startswith(_OWN_DIR) and _LIBRARY_DIRS.search(filename):
        return True
    depth = 0
    while frame is not None and depth < 64:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
        depth += 1
    return False


_LIBRARY_DIRS = re.compile(r"[/\\](site|dist)-packages[/\\]")
_OWN_DIR = __file__.rpartition("interrupts.py")[0]  # .../mlpipe_cli/


def _redeliver_soon() -> None:
    import threading

    main = threading.main_thread().ident

    def redeliver() -> None:
        if _raising and main is not None:
            # a real signal (not _thread.interrupt_main): it also interrupts a blocking call
            signal.pthread_kill(main, signal.SIGINT)

    timer = threading.Timer(_REDELIVER_AFTER_SECONDS, redeliver)
    timer.daemon = True  # never keeps the process alive
    timer.start()


def _is_interrupt(exc: BaseException | None) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    # PyO3 wraps a KeyboardInterrupt raised inside a Rust call in a PanicException
    return type(exc).__name__ == "PanicException" and "KeyboardInterrupt" in str(exc)
