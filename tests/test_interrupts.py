"""Ctrl-C at the points where it used to escape as a traceback, a Rust panic or not at all.

Each test runs the real CLI in a real process through ``mlpipe_cli.__main__`` (the console
script's entry point). A prelude patches one function so that the process sends itself
SIGINT exactly where a user's Ctrl-C once went wrong: during start-up imports, inside the
Python code that Rust runs on Polars' first ``to_numpy``, in a generator closed while the
first interrupt unwinds, and inside a finalizer (where Python can only print "Exception
ignored"). No sleeps: the signal is sent by the code path itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_RUN = """
import os, signal, sys
def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
{prelude}
from mlpipe_cli.__main__ import main
sys.argv = ["mlpipe", *sys.argv[1:]]
main()
"""


def run_interrupted(prelude: str, *args: object, cwd: Path | None = None) -> tuple[int, str]:
    env = {**os.environ, "RUST_BACKTRACE": "1"}  # a Rust panic would print its backtrace
    proc = subprocess.run(
        [sys.executable, "-c", _RUN.format(prelude=prelude), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )
    return proc.returncode, proc.stderr


def assert_interrupted(code: int, stderr: str) -> None:
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "error: interrupted", stderr
    for noise in ("Traceback", "Exception ignored", "panicked", "PanicException"):
        assert noise not in stderr, stderr


def test_ctrl_c_during_startup_imports_exits_130_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "sample"
    # SIGINT while Typer (imported by mlpipe_cli.cli.main before any try of ours) loads
    prelude = """
import importlib.abc
class InterruptTyperImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "typer":
            sys.meta_path.remove(self)
            ctrl_c()
        return None
sys.meta_path.insert(0, InterruptTyperImport())
"""
    code, stderr = run_interrupted(prelude, "sample-data", "--rows", "200", "--out", out)
    assert_interrupted(code, stderr)
    assert stderr.strip() == "error: interrupted"
    assert not out.exists(), "the command ran although Ctrl-C came during start-up"


def _interrupt_first_to_numpy() -> str:
    # rust-numpy checks NumPy's version with NumpyVersion (Python code run from Rust) on the
    # first to_numpy of a process: a Ctrl-C there used to become a Rust panic (exit 1). The
    # patch is compiled under NumPy's file name, so the handler sees the frame a real
    # Ctrl-C lands in: library code that Rust called.
    return """
import numpy.lib._version as numpy_version
real_init = numpy_version.NumpyVersion.__init__
patch = (
    "def init(self, *args, **kwargs):\\n"
    "    numpy_version.NumpyVersion.__init__ = real_init\\n"
    "    os.kill(os.getpid(), signal.SIGINT)\\n"
    "    real_init(self, *args, **kwargs)\\n"
)
exec(compile(patch, numpy_version.__file__, "exec"), globals())
numpy_version.NumpyVersion.__init__ = init
"""


def test_ctrl_c_inside_the_first_to_numpy_of_materialize_is_130_not_a_rust_panic(
    project: Path, tmp_path: Path
) -> None:
    store = tmp_path / "artifacts" / "churn" / "online.sqlite"
    code, stderr = run_interrupted(
        _interrupt_first_to_numpy(),
        "materialize", "-c", project, "--as-of", "2026-07-01T00:00:00Z", "-q",
    )  # fmt: skip
    assert_interrupted(code, stderr)
    assert stderr.strip() == "error: interrupted"
    assert not store.exists() or _live_version(store) is None


def _live_version(store: Path) -> str | None:
    import sqlite3

    with sqlite3.connect(store) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
        if "mlpipe_pointer" not in tables:
            return None
        row = db.execute("select version from mlpipe_pointer where name = 'live'").fetchone()
    return None if row is None else row[0]


def test_ctrl_c_inside_the_first_to_numpy_of_training_set_is_130(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "ts.parquet"
    code, stderr = run_interrupted(
        _interrupt_first_to_numpy(), "training-set", "-c", project, "--out", out, "-q"
    )
    assert_interrupted(code, stderr)
    assert stderr.strip() == "error: interrupted"
    assert not out.exists()


def test_a_second_ctrl_c_while_a_progress_generator_closes_prints_no_traceback(
    project: Path, tmp_path: Path
) -> None:
    """`timeout -s INT` signals the process twice (directly and through its group); the
    second one used to land in `progress.track`'s cleanup, run by the garbage collector,
    and printed "Exception ignored in: <generator object track>" and a traceback."""
    out = tmp_path / "ts.parquet"
    prelude = """
import mlpipe_cli.validation as training_set
import mlpipe_cli.progress as progress
real_validate, real_close = training_set.validate_source, progress.Task._close
def validate_source(*args, **kwargs):
    ctrl_c()  # the first Ctrl-C: raised inside the `validate inputs` loop
    return real_validate(*args, **kwargs)
def close(self):
    progress.Task._close = real_close
    ctrl_c()  # the second, while the abandoned generator is being closed
    real_close(self)
training_set.validate_source = validate_source
progress.Task._close = close
"""
    code, stderr = run_interrupted(prelude, "training-set", "-c", project, "--out", out)
    assert_interrupted(code, stderr)
    assert stderr.strip() == "error: interrupted"
    assert not out.exists()


def test_ctrl_c_swallowed_by_a_finalizer_still_stops_fit_before_it_publishes(
    project: Path, tmp_path: Path
) -> None:
    """A Ctrl-C that lands in a __del__ (as one did in pydantic's SecretStr) cannot
    propagate; fit used to run on, publish and exit 0."""
    from mlpipe_cli.cli.main import run

    ts = tmp_path / "ts.parquet"
    assert run(["training-set", "-c", str(project), "--out", str(ts), "-q"]) == 0
    transform_dir = tmp_path / "artifacts" / "churn" / "transform"
    before = _versions(transform_dir)
    prelude = """
import mlpipe_cli.transforms.fit as transforms_fit
real_write = transforms_fit.write_artifact
class Finalizer:
    def __del__(self):
        ctrl_c()
        sum(range(1000))  # the handler runs here, in the finalizer: the exception is swallowed
def write_artifact(*args, **kwargs):
    Finalizer()  # collected at once, while the artifact is staged
    return real_write(*args, **kwargs)
transforms_fit.write_artifact = write_artifact
"""
    code, stderr = run_interrupted(prelude, "fit", "-c", project, "--data", ts, "--json")
    assert_interrupted(code, stderr)
    assert _versions(transform_dir) == before, "fit published after Ctrl-C"


def _versions(kind_dir: Path) -> list[str]:
    # versions and LATEST; not the publishers' lock or the (emptied) staging directory
    if not kind_dir.exists():
        return []
    return sorted(p.name for p in kind_dir.iterdir() if not p.name.startswith("."))


def _frame_in(filename: str) -> object:
    """A real frame whose code claims to live in ``filename``."""
    namespace: dict = {}
    exec(compile("import sys\nframe = sys._getframe()", filename, "exec"), namespace)
    return namespace["frame"]


def test_mlpipe_installed_in_site_packages_is_not_a_library(monkeypatch: object) -> None:
    """An interrupt in mlpipe's own code is raised at once, also when mlpipe is a regular
    (non-editable) install under site-packages; other site-packages code is deferred."""
    from mlpipe_cli import interrupts

    installed = "/venv/lib/python3.11/site-packages/mlpipe_cli/"
    monkeypatch.setattr(interrupts, "_OWN_DIR", installed)  # type: ignore[attr-defined]
    assert not interrupts._inside_a_library(_frame_in(installed + "ops/fit.py"))  # type: ignore[arg-type]
    assert interrupts._inside_a_library(
        _frame_in("/venv/lib/python3.11/site-packages/polars/lazyframe/frame.py")  # type: ignore[arg-type]
    )
