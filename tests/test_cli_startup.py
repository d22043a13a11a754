"""Start-up cost guards (#19): a run builds only its own command, and `validate` and
`psi-report` do not import the heavy libraries they do not use.

The budget itself is measured in benchmarks/bench_startup.py (never timed here); these
tests keep its causes from coming back: the single-command app must behave exactly like
the full one, and the import lists are checked in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlpipe_cli.cli.main import COMMANDS, build_app

HEAVY = ("scipy", "sklearn", "pandera", "pandas", "skops", "joblib", "hypothesis", "jinja2")


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        return [path]
    return [
        leaf for name, sub in sorted(subcommands.items()) for leaf in _leaves(sub, (*path, name))
    ]


def _invoke(app: typer.Typer, args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, args, prog_name="mlpipe")
    return result.exit_code, result.stdout, result.stderr


def test_every_command_is_listed_once_and_the_full_app_has_them_all() -> None:
    names = [name for name, *_ in COMMANDS]
    assert len(names) == len(set(names))
    root = typer.main.get_command(build_app())
    assert sorted(root.commands) == sorted(names)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", [name for name, *_ in COMMANDS])
def test_a_single_command_app_behaves_like_the_full_app(name: str) -> None:
    """Help, option errors and missing values: same exit code and text either way."""
    full, only = build_app(), build_app(only=name)
    leaves = [p for p in _leaves(typer.main.get_command(full)) if p[0] == name]
    assert leaves
    for path in leaves:
        for extra in (["--help"], ["--no-such-option"], ["-c"]):
            args = [*path, *extra]
            assert _invoke(only, args) == _invoke(full, args), args
    if len(leaves) > 1 or leaves[0] != (name,):  # a group: its own help and a bad subcommand
        for args in ([name, "--help"], [name, "no-such-subcommand"], [name]):
            assert _invoke(only, args) == _invoke(full, args), args


def test_run_builds_only_the_named_command_and_the_full_app_otherwise() -> None:
    code = (
        "import sys, typer\n"
        "from mlpipe_cli.cli import main\n"
        "print(sorted(typer.main.get_command(main._app_for(sys.argv[1:])).commands))\n"
    )

    def commands(*args: str) -> list[str]:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        return eval(proc.stdout)  # a printed list of names

    everything = sorted(name for name, *_ in COMMANDS)
    assert commands("validate", "-c", "x.yaml") == ["validate"]
    assert commands("--debug", "schema", "infer") == ["schema"]
    assert commands("--help") == everything
    assert commands("--help", "validate") == everything  # root help lists every command
    assert commands("no-such-command") == everything  # the error suggests from all names
    assert commands() == everything


def _modules_after(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run the CLI in a fresh interpreter; its exit code and the top-level modules loaded."""
    code = (
        "import json, sys\n"
        "from mlpipe_cli.cli.main import run\n"
        f"status = run({args!r})\n"
        "print(json.dumps([status, sorted({m.split('.')[0] for m in sys.modules})]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd
    )
    status, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return status, modules


def test_validate_imports_no_heavy_library(project: Path, tmp_path: Path) -> None:
    status, modules = _modules_after(
        ["validate", "-c", str(project), "--source", "orders", "-q"], tmp_path
    )
    assert status == 0
    assert "polars" in modules  # it did validate
    loaded = [m for m in (*HEAVY, "numpy", "pyarrow", "rich") if m in modules]
    assert loaded == []


def test_data_commands_import_no_heavy_library(project: Path, tmp_path: Path) -> None:
    """training-set, fit, transform, materialize and psi-report (whose KS p-value used to
    import scipy.stats, +1.2 s CPU) load none of scipy, sklearn, pandera, pandas, ..."""
    ts = tmp_path / "ts.parquet"
    config = ["-c", str(project)]
    runs = {
        "training-set": ["training-set", *config, "--out", str(ts), "-q"],
        "fit": ["fit", *config, "--data", str(ts), "-q"],
        "transform": [
            "transform",
            *config,
            "--data",
            str(ts),
            "--out",
            str(tmp_path / "f.parquet"),
            "-q",
        ],
        "materialize": ["materialize", *config, "--as-of", "2026-07-01T00:00:00Z", "-q"],
        "psi-report": ["psi-report", *config, "--current", str(ts), "-q"],
    }
    loaded = {}
    for name, args in runs.items():
        status, modules = _modules_after(args, tmp_path)
        assert status in ((0, 1) if name == "psi-report" else (0,)), name  # drift may exit 1
        assert "polars" in modules, name
        loaded[name] = [m for m in HEAVY if m in modules]
    assert loaded == {name: [] for name in runs}


def test_fit_and_psi_report_skip_the_modules_they_do_not_use(project: Path, tmp_path: Path) -> None:
    """fit and psi-report load transforms only for load_transform, not transforms.report
    (imported on first use, transforms/__init__.py); psi-report's numpy calls do not pull
    in numpy.ma (np.unique and np.isin do: drift/compare.py replaces them)."""
    ts = tmp_path / "ts.parquet"
    config = ["-c", str(project)]
    runs = {
        "training-set": ["training-set", *config, "--out", str(ts), "-q"],
        "fit": ["fit", *config, "--data", str(ts), "-q"],
        "psi-report": ["psi-report", *config, "--current", str(ts), "-q"],
    }
    loaded = {}
    for name, args in runs.items():
        status, modules = _submodules_after(args, tmp_path)
        assert status in ((0, 1) if name == "psi-report" else (0,)), name
        loaded[name] = modules
    for name in ("fit", "psi-report"):
        assert "numpy" in loaded[name], name  # they did fit and compare numeric columns
        assert "mlpipe_cli.transforms.fit" in loaded[name], name
        assert "mlpipe_cli.transforms.report" not in loaded[name], name
    assert "numpy.ma" not in loaded["psi-report"]


def _submodules_after(args: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Like _modules_after, with every module name (numpy.ma, mlpipe_cli.x.y)."""
    code = (
        "import json, sys\n"
        "from mlpipe_cli.cli.main import run\n"
        f"status = run({args!r})\n"
        "print(json.dumps([status, sorted(sys.modules)]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=cwd
    )
    status, modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return status, modules


def test_startup_gc_thresholds_are_restored_by_the_first_collection() -> None:
    """The CLI raises the young-generation threshold for start-up only (cli/main.py); the
    first collection (here an explicit one, as `serve` makes) puts the defaults back."""
    code = (
        "import gc, json\n"
        "from mlpipe_cli.cli import main\n"
        "defaults = gc.get_threshold()\n"
        "main._quiet_gc_during_startup()\n"
        "raised = gc.get_threshold()\n"
        "hooks = len(gc.callbacks)\n"
        "gc.collect()\n"
        "after = gc.get_threshold()\n"
        "gc.set_threshold(0)\n"
        "main._quiet_gc_during_startup()  # collection disabled by the embedder: left alone\n"
        "print(json.dumps([defaults, raised, hooks, after, gc.get_threshold(), len(gc.callbacks)]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    defaults, raised, hooks, after, disabled, hooks_left = json.loads(proc.stdout)
    assert raised == [100_000, *defaults[1:]]
    assert hooks == 1
    assert after == defaults
    assert disabled[0] == 0
    assert hooks_left == 0


def _console(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)


def test_the_quick_exit_keeps_exit_codes_output_and_atexit_handlers(tmp_path: Path) -> None:
    """main() ends without the interpreter's teardown (cli/main.py::_exit): the exit code,
    everything written to stdout/stderr and the atexit handlers are as a normal exit's."""
    ok = _console(
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stdout.write('atexit ran\\n'))\n"
        "from mlpipe_cli.cli.main import main\n"
        "sys.argv = ['mlpipe', '--help']\n"
        "main()\n"
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("Usage: mlpipe")
    assert ok.stdout.endswith("atexit ran\n")
    assert "validate" in ok.stdout
    bad = _console(
        "import sys\n"
        "from mlpipe_cli.cli.main import main\n"
        f"sys.argv = ['mlpipe', 'validate', '-c', {str(tmp_path / 'missing.yaml')!r}]\n"
        "main()\n"
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: config file ")
    assert bad.stdout == ""


def test_a_running_non_daemon_thread_gets_the_normal_exit(tmp_path: Path) -> None:
    """A normal exit waits for non-daemon threads; the quick exit would cut them off, so it
    is not taken while one runs."""
    marker = tmp_path / "thread-finished"
    proc = _console(
        "import threading, time\n"
        "from pathlib import Path\n"
        "from mlpipe_cli.cli.main import main\n"
        f"def work():\n    time.sleep(0.5)\n    Path({str(marker)!r}).write_text('done')\n"
        "threading.Thread(target=work).start()\n"
        "import sys\n"
        "sys.argv = ['mlpipe', '--version']\n"
        "main()\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("mlpipe ")
    assert marker.read_text() == "done"


def test_main_with_arguments_raises_system_exit_in_the_callers_process(tmp_path: Path) -> None:
    """A caller running mlpipe in its own process (main(argv)) gets a catchable SystemExit,
    not the quick exit that would end its process, and its GC settings are left alone."""
    proc = _console(
        "import gc\n"
        "from mlpipe_cli.cli.main import main\n"
        "before = gc.get_threshold()\n"
        "try:\n"
        f"    main(['validate', '-c', {str(tmp_path / 'missing.yaml')!r}])\n"
        "except SystemExit as exc:\n"
        "    print('caught', exc.code, gc.get_threshold() == before)\n"
        "print('still running')\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "caught 2 True\nstill running\n"


# -- one OpenBLAS thread for fit and psi-report (cli/blas.py) ---------------------------------

# Runs the console-script entry point (main() without arguments: the process is mlpipe's
# own) and reports, from an atexit handler (the quick exit runs them), numpy's OpenBLAS
# thread count and whether the variable set for numpy's import is still in the environment.
_OWN_PROCESS = (
    "import atexit, json, os, sys\n"
    "def report():\n"
    "    import threadpoolctl\n"
    "    blas = [i['num_threads'] for i in threadpoolctl.threadpool_info()\n"
    "            if i['internal_api'] == 'openblas']\n"
    "    print(json.dumps({'numpy': 'numpy' in sys.modules, 'threads': blas,\n"
    "                      'env': os.environ.get('OPENBLAS_NUM_THREADS')}))\n"
    "atexit.register(report)\n"
    "from mlpipe_cli.cli.main import main\n"
    "sys.argv = ['mlpipe', *sys.argv[1:]]\n"
    "main()\n"
)


def _blas_after(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    import os

    environ = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    }
    proc = subprocess.run(
        [sys.executable, "-c", _OWN_PROCESS, *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**environ, **(env or {})},
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _default_blas_threads() -> int:
    import os

    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import numpy, threadpoolctl; print([i['num_threads'] for i in "
            "threadpoolctl.threadpool_info() if i['internal_api'] == 'openblas'][0])",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return int(proc.stdout)


def test_fit_and_psi_report_load_numpy_with_one_blas_thread(project: Path, tmp_path: Path) -> None:
    """Only in mlpipe's own process, only for the BLAS-free commands, never over the user's
    own setting, and the variable does not outlive numpy's import (children never see it)."""
    ts = tmp_path / "ts.parquet"
    config = ["-c", str(project)]
    assert run_ok(["training-set", *config, "--out", str(ts), "-q"], tmp_path) == 0
    fit = ["fit", *config, "--data", str(ts), "-q"]
    psi = ["psi-report", *config, "--current", str(ts), "-q"]
    pinned = {"numpy": True, "threads": [1], "env": None}
    assert _blas_after(fit, tmp_path) == pinned
    assert _blas_after(psi, tmp_path) == pinned
    # a root option's value before the command does not hide it
    assert _blas_after(["--triggered-at", "2026-07-01T00:00:00Z", *fit], tmp_path) == pinned
    # the user's setting wins
    assert _blas_after(fit, tmp_path, {"OPENBLAS_NUM_THREADS": "2"}) == {
        "numpy": True,
        "threads": [min(2, _default_blas_threads())],  # OpenBLAS caps it at the cores
        "env": "2",
    }
    # a caller running mlpipe in its own process keeps its BLAS as it is
    code = (
        "import json, threadpoolctl\n"
        "from mlpipe_cli.cli.main import main\n"
        "try:\n"
        f"    main({fit!r})\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(json.dumps([i['num_threads'] for i in threadpoolctl.threadpool_info()\n"
        "                  if i['internal_api'] == 'openblas']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [_default_blas_threads()]


def run_ok(args: list[str], cwd: Path) -> int:
    status, _ = _modules_after(args, cwd)
    return status


def test_the_blas_pin_changes_no_artifact_and_no_report(project: Path, tmp_path: Path) -> None:
    """The same transform version (content hash included) and the same drift report with
    one OpenBLAS thread (the pin) and with two (the user's setting): blas.py's claim that
    these commands hand OpenBLAS no work it would split."""
    from mlpipe_cli.artifacts import ArtifactStore

    ts = tmp_path / "ts.parquet"
    config = ["-c", str(project)]
    assert run_ok(["training-set", *config, "--out", str(ts), "-q"], tmp_path) == 0
    results = []
    for name, env in (("pinned", {}), ("two", {"OPENBLAS_NUM_THREADS": "2"})):
        store = tmp_path / name
        fit = _console_json(
            ["fit", *config, "--data", str(ts), "--artifact-dir", str(store), "--json"],
            tmp_path,
            env,
        )
        version = fit["version"]
        report = _console_json(
            ["psi-report", *config, "--current", str(ts), "--artifact-dir", str(store), "--json"],
            tmp_path,
            env,
        )
        for volatile in ("generated_at", "seconds"):
            report.pop(volatile)
        report["profile"].pop("path")  # under each store
        content = ArtifactStore(store, "churn").get("transform", version).content_hash
        results.append((version, content, report))
    assert results[0] == results[1]


def _console_json(args: list[str], cwd: Path, env: dict[str, str]) -> Any:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run(
        [sys.executable, "-m", "mlpipe_cli", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        env={**environ, **env},
    )
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["fit", "-c", "x.yaml"], "fit"),
        (["--debug", "psi-report"], "psi-report"),
        (["--triggered-at", "2026-01-01T00:00:00Z", "fit"], "fit"),
        (["--triggered-at=2026-01-01T00:00:00Z", "fit"], "fit"),
        (["--version"], None),
        ([], None),
        (["model", "fit"], "model"),
    ],
)
def test_blas_command_name(args: list[str], command: str | None) -> None:
    from mlpipe_cli.cli.blas import command_name

    assert command_name(args) == command


# -- exact replacements made for start-up -----------------------------------------------------

_finite = st.floats(allow_nan=False, width=64)


@settings(max_examples=200, deadline=None)
@given(st.lists(_finite | st.sampled_from([0.0, -0.0, 1.0, -1.0]), max_size=40))
def test_distinct_sorted_and_in_sorted_agree_with_numpy(values: list[float]) -> None:
    """drift/compare.py's np.unique and np.isin without numpy.ma: the same points (0.0 and
    -0.0 compare equal, as the fine points are only compared) and the same membership."""
    import numpy as np

    from mlpipe_cli.drift.compare import _distinct_sorted, _in_sorted

    array = np.asarray(values, dtype=np.float64)
    ours, theirs = _distinct_sorted(array), np.unique(array)
    assert ours.dtype == np.float64
    assert ours.tolist() == theirs.tolist()  # == : a zero of either sign matches
    probes = np.asarray([*values[:10], 0.5, -0.0, np.inf, -np.inf], dtype=np.float64)
    assert _in_sorted(probes, theirs).tolist() == np.isin(probes, theirs).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=64) | st.sampled_from([0.0, -0.0]), max_size=30))
def test_profile_float_cleaning_is_bit_identical_to_the_per_value_path(
    values: list[float],
) -> None:
    """_json_floats and interpolate's one-pass -0.0 cleaning give the very bits the
    per-value _json_float / _clean give (NaN and ±inf included)."""
    import struct

    import numpy as np

    from mlpipe_cli.drift.profile import _clean, _json_float, _json_floats, interpolate

    def bits(items: list[Any]) -> list[Any]:
        return [struct.pack("<d", v) if isinstance(v, float) else v for v in items]

    assert bits(_json_floats(values)) == bits([_json_float(v) for v in values])
    a = np.asarray(values, dtype=np.float64)
    b = a[::-1].copy()
    frac = np.linspace(0.0, 1.0, len(a))
    with np.errstate(invalid="ignore", over="ignore"):
        raw = np.where(a == b, a, a + (b - a) * frac)
    assert bits(interpolate(a, b, frac)) == bits([_clean(v) for v in raw.tolist()])
