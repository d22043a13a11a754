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
- **imports run from Rust**: rust-numpy imports NumPy's C API on first use; an interrupt
  inside that import became a Rust panic (``PanicException``, 150 lines of backtrace printed
  by Rust itself). An interrupt that lands in the import machinery is recorded, not raised,
  and delivered again a moment later, once the import is done (a half-run import is worth
  avoiding anyway).

``mlpipe_cli.cli.main`` maps whatever an interrupted run ends with (``KeyboardInterrupt``,
a ``PanicException`` wrapping one, any error raised while unwinding) to exit 130 by asking
``received()``. Standard library only: this module is imported before everything else.
"""

from __future__ import annotations

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


def installed() -> bool:
    return _installed


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
    """Whether SIGINT arrived since ``install()`` (or the last ``reset()``)."""
    return _received


def check() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived, even if the first one was swallowed."""
    if _received and _raising:
        raise KeyboardInterrupt


class deferred:
    """Inside the block SIGINT is only recorded; it is raised when the block ends."""

    def __enter__(self) -> None:
        global _raising
        self._was_raising = _raising
        _raising = False

    def __exit__(self, *exc_info: object) -> None:
        global _raising
        _raising = self._was_raising
        check()


_numpy_bridge_ready = False


def ready_numpy_bridge() -> None:
    """Load the NumPy C API that Polars' ``to_numpy`` uses, with Ctrl-C deferred.

    rust-numpy loads it on a process's first ``to_numpy`` and runs NumPy's Python code
    (``NumpyVersion``) from Rust to do so; a ``KeyboardInterrupt`` raised there became a
    Rust panic whose ~150-line message Rust prints itself. Call this before the first
    ``to_numpy`` of a command (cheap after the first call).
    """
    global _numpy_bridge_ready
    if _numpy_bridge_ready:
        return
    import polars as pl

    with deferred():
        pl.Series([True]).to_numpy()
        _numpy_bridge_ready = True


def reset() -> None:
    """Forget an interrupt (a new in-process run starts)."""
    global _received
    _received = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _received
    _received = True
    if not _raising:
        return
    if _in_import(frame):
        _redeliver_soon()
        return
    raise KeyboardInterrupt


_REDELIVER_AFTER_SECONDS = 0.02


def _redeliver_soon() -> None:
    import _thread
    import threading

    def redeliver() -> None:
        if _raising:
            _thread.interrupt_main(signal.SIGINT)  # runs _on_sigint again in the main thread

    timer = threading.Timer(_REDELIVER_AFTER_SECONDS, redeliver)
    timer.daemon = True  # never keeps the process alive
    timer.start()


def _in_import(frame: FrameType | None) -> bool:
    """Whether the main thread is inside the import machinery (Python's or one Rust runs)."""
    depth = 0
    while frame is not None and depth < 64:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
        depth += 1
    return False


def _is_interrupt(exc: BaseException | None) -> bool:
    if isinstance(exc, KeyboardInterrupt):
        return True
    # PyO3 wraps a KeyboardInterrupt raised inside a Rust call in a PanicException
    return type(exc).__name__ == "PanicException" and "KeyboardInterrupt" in str(exc)
