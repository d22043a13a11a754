"""One OpenBLAS thread for the commands that make no BLAS call (#19).

numpy's bundled OpenBLAS starts one worker thread per core when numpy is imported, and each
worker busy-waits for work (OpenBLAS' THREAD_TIMEOUT, 2^28 cycles: ~0.1 s of a core) before
it sleeps. `fit` and `psi-report` import numpy but never hand OpenBLAS work that it would
split across threads, so the workers only spin: ~0.05 s of CPU in each process, taken from
Polars' own threads (and, on a busy machine, from the main thread: the numpy import then
took 0.05-0.2 s of wall time instead of 0.05). With ``OPENBLAS_NUM_THREADS=1`` while numpy
loads, OpenBLAS starts no worker.

Why it changes no result and no speed: with a breakpoint on every OpenBLAS function numpy
calls (``benchmarks/bench_startup.py --blas-audit``, gdb), a `fit` of every step type with
``--out`` and a `psi-report` with ``--html`` make one BLAS call, numpy's import-time sanity
check (a 2-element ``sdot``). The one BLAS user in them, the KS p-value's Durbin matrix
(drift/kstest.py, ``@``, used for n·d small and n <= 10,000), multiplies matrices of at most
53×53 (k = ceil(n·d) <= 27), below OpenBLAS' threading threshold (m·n·k <= 65536·4: one
thread at any setting; its values were compared bit for bit with 1 and 2 threads over that
region); psi-report's sums of squares use ``einsum``, not ``dot``. tests/test_cli_startup.py
checks that the artifacts and reports are byte-identical with the pin and with two threads.
A 2M-row `fit` took 4.56 s (5.25 s CPU) pinned and 4.65 s (5.46 s CPU) with two threads.

Only the command line's own process does this (cli/main.py::main without arguments); a
caller running mlpipe in its process keeps its BLAS as it is. A thread count the user set
(``OPENBLAS_NUM_THREADS``, ``GOTO_NUM_THREADS``, ``OMP_NUM_THREADS``) wins, numpy already
loaded is left alone, and the variable is removed again once numpy has loaded, so no child
process (Spark's JVM and workers) inherits it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

# Commands whose process makes no BLAS call worth a thread (see the module docstring).
BLAS_FREE_COMMANDS = frozenset({"fit", "psi-report"})
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def command_name(args: Sequence[str]) -> str | None:
    """The command an argument list runs: its first word that is no root option or value."""
    words = iter(args)
    for word in words:
        if word == "--triggered-at":
            next(words, None)  # its value
        elif not word.startswith("-"):
            return word
    return None


def one_blas_thread_for(args: Sequence[str]) -> bool:
    """Have numpy load with one OpenBLAS thread if ``args`` run a BLAS-free command; whether
    it will."""
    if command_name(args) not in BLAS_FREE_COMMANDS or "numpy" in sys.modules:
        return False
    if any(os.environ.get(name) for name in _THREAD_VARIABLES):
        return False
    sys.meta_path.insert(0, _OneThreadWhileNumpyLoads())
    return True


class _OneThreadWhileNumpyLoads:
    """A meta-path finder that finds nothing itself: for numpy it returns the spec the other
    finders give, with a loader that runs numpy's with the variable set.

    It stays in place until numpy is actually loaded: Polars asks ``find_spec("numpy")`` at
    its own import just to learn whether numpy is installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "numpy":
            return None
        for finder in sys.meta_path:
            find_spec = getattr(finder, "find_spec", None)
            if finder is self or find_spec is None:
                continue
            spec = find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None  # not installed: the import fails as it would have
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_with_one_thread(module: Any) -> None:
            if self in sys.meta_path:
                sys.meta_path.remove(self)  # numpy is loading: nothing left to do
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            try:
                exec_module(module)  # loads numpy._core, which loads OpenBLAS
            finally:
                os.environ.pop("OPENBLAS_NUM_THREADS", None)
                del loader.exec_module  # the loader's own method again (a reload)

        loader.exec_module = exec_with_one_thread
        return spec
