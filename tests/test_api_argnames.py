"""Messages name arguments the way the caller can pass them (mlpipe_cli.argnames).

The same core functions serve `mlpipe <command> --flag` and ``Pipeline(...).method(arg=)``.
For one representative message of every ops module that names an argument, the error is
triggered once from Python (it must say ``data=`` and name no ``--flag``) and once through
the CLI (it must say ``--data PATH``, exactly as before). Then: the vocabulary a CLI run
switches to does not outlive the run, nor reach another thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

import mlpipe_cli as mlpipe
from mlpipe_cli import argnames
from mlpipe_cli.errors import MlpipeError

AS_OF = "2026-07-01T00:00:00Z"

# A CLI flag (--data, --as-of) anywhere in a message. A Python caller must never see one.
FLAG = re.compile(r"(?<![\w-])--[a-z]")


def _edited(config: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    document = yaml.safe_load(config.read_text())
    edit(document)
    config.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return config


def _without_training_data(config: dict[str, Any]) -> None:
    config["transforms"]["data"] = None


def _without_spine(config: dict[str, Any]) -> None:
    del config["training_set"]  # (a section with `spine: null` is a config error)


@dataclass(frozen=True)
class Where:
    config: Path
    tmp: Path
    data: Path  # the session's sample data


@dataclass(frozen=True)
class Case:
    """One message: how Python triggers it and what it must say, how the CLI does."""

    python: Callable[[Where], object]
    python_says: str
    cli: Callable[[Where], list[Any]]
    cli_says: str
    exit_code: int = 2
    prepare: Callable[[Where], None] = lambda where: None


def _no_training_data(where: Where) -> None:
    _edited(where.config, _without_training_data)


def _no_spine(where: Where) -> None:
    _edited(where.config, _without_spine)


def _pipeline(where: Where) -> mlpipe.Pipeline:
    return mlpipe.Pipeline.from_yaml(where.config)


def _init_rows(where: Where) -> object:
    from mlpipe_cli.ops.init import init

    return init(where.tmp / "new", rows=5)


def _init_not_empty(where: Where) -> object:
    from mlpipe_cli.ops.init import init

    return init(where.tmp / "full", sample_data=False)


def _occupy(where: Where) -> None:
    (where.tmp / "full").mkdir()
    (where.tmp / "full" / "notes.txt").write_text("mine\n")


def _sample_data_fault(where: Where) -> object:
    from mlpipe_cli.ops.sample_data import sample_data

    return sample_data(out=where.tmp / "rides", dataset="rides", faults=["drift"])


def _verify_in_missing_dir(where: Where) -> object:
    # ops directly (Pipeline.artifacts_verify: tests/test_cli_newcomer.py)
    from mlpipe_cli.ops.artifacts import verify_artifacts
    from mlpipe_cli.ops.project import Project

    return verify_artifacts(Project(where.config, where.tmp / "no-such-dir"))


def _pickle_file(where: Where) -> None:
    import pickle

    (where.tmp / "model.pkl").write_bytes(pickle.dumps({"not": "a model"}))


def _log_dir(where: Where) -> None:
    (where.tmp / "log").mkdir()


def _promote_nothing(where: Where) -> object:
    from mlpipe_cli.ops.promote import promote

    return promote(_pipeline(where).project)


CASES: dict[str, Case] = {
    "fit": Case(
        python=lambda w: _pipeline(w).fit(),
        python_says="no training data: pass data= or set transforms.data",
        cli=lambda w: ["fit", "-c", w.config],
        cli_says="no training data: pass --data PATH or set transforms.data",
        prepare=_no_training_data,
    ),
    "training_set": Case(
        python=lambda w: _pipeline(w).training_set(w.tmp / "ts.parquet"),
        python_says="pass spine= or set training_set.spine",
        cli=lambda w: ["training-set", "-c", w.config, "--out", w.tmp / "ts.parquet"],
        cli_says="pass --spine PATH or set training_set.spine",
        prepare=_no_spine,
    ),
    "init-rows": Case(
        python=_init_rows,
        python_says="rows must be at least 100, got 5",
        cli=lambda w: ["init", w.tmp / "new", "--rows", "5"],
        cli_says="--rows must be at least 100, got 5",
    ),
    "init-force": Case(
        python=_init_not_empty,
        python_says="or pass force=True to add the missing files",
        cli=lambda w: ["init", w.tmp / "full", "--no-data"],
        cli_says="or pass --force to add the missing files",
        prepare=_occupy,
    ),
    "export": Case(
        python=lambda w: _pipeline(w).export(w.tmp / "model.pkl"),
        python_says="out must end in .joblib, got model.pkl",
        cli=lambda w: ["export", "-c", w.config, "--out", w.tmp / "model.pkl"],
        cli_says="--out must end in .joblib, got model.pkl",
    ),
    "runs": Case(
        python=lambda w: _pipeline(w).runs(since="soon"),
        python_says="since: ",
        cli=lambda w: ["runs", "-c", w.config, "--since", "soon"],
        cli_says="--since: ",
    ),
    "schema-format": Case(
        python=lambda w: _pipeline(w).schema_export(fmt="xml"),
        python_says="fmt must be pandera or json, got 'xml'",
        cli=lambda w: ["schema", "export", "-c", w.config, "--format", "xml"],
        cli_says="--format must be pandera or json, got 'xml'",
    ),
    "schema-sources": Case(
        python=lambda w: _pipeline(w).schema_export(),
        python_says="several sources: pass source=, or out=",
        cli=lambda w: ["schema", "export", "-c", w.config],
        cli_says="several sources: pass --source NAME, or --out DIRECTORY",
    ),
    "profiles": Case(
        python=lambda w: _pipeline(w).psi_report(source="users", current=w.data / "users.parquet"),
        python_says="run `validate(sources=['users'], save_profile=True)` on an accepted batch",
        cli=lambda w: [
            "psi-report",
            "-c",
            w.config,
            "--source",
            "users",
            "--current",
            w.data / "users.parquet",
        ],
        cli_says="run `mlpipe validate --source users --save-profile` on an accepted batch",
        exit_code=3,
    ),
    "promote-rollback": Case(
        python=lambda w: _pipeline(w).promote_rollback(),
        python_says="promote one with `promote(transform=VERSION)`",
        cli=lambda w: ["promote", "-c", w.config, "--rollback"],
        cli_says="promote one with `mlpipe promote TRANSFORM_VERSION`",
    ),
    "promote-nothing": Case(
        python=_promote_nothing,
        python_says="give the transform to promote (or rollback=True)",
        cli=lambda w: ["promote", "-c", w.config],
        cli_says="give the TRANSFORM_VERSION to promote (or --rollback)",
    ),
    "sample_data": Case(
        python=_sample_data_fault,
        python_says="faults applies to dataset=churn only",
        cli=lambda w: [
            "sample-data",
            "--out",
            w.tmp / "rides",
            "--dataset",
            "rides",
            "--fault",
            "drift",
        ],
        cli_says="--fault applies to --dataset churn only",
    ),
    "psi_report": Case(
        python=lambda w: _pipeline(w).psi_report(),
        python_says="give exactly one of current= or serving_log=",
        cli=lambda w: ["psi-report", "-c", w.config],
        cli_says="give exactly one of --current PATH or --serving-log DIR",
    ),
    "artifacts": Case(
        python=_verify_in_missing_dir,
        python_says=" (artifact_dir=) does not exist; nothing was verified",
        cli=lambda w: [
            "artifacts",
            "verify",
            "-c",
            w.config,
            "--artifact-dir",
            w.tmp / "no-such-dir",
        ],
        cli_says=" (--artifact-dir or MLPIPE_ARTIFACT_DIR) does not exist; nothing was verified",
    ),
    "materialize-resume": Case(
        python=lambda w: _pipeline(w).materialize(resume=True, as_of=AS_OF),
        python_says="resume=True continues the newest abandoned run with its own as-of and "
        "features; drop as_of/features, or run without resume=True",
        cli=lambda w: ["materialize", "-c", w.config, "--resume", "--as-of", AS_OF],
        cli_says="--resume continues the newest abandoned run with its own as-of and "
        "features; drop --as-of/--features, or run without --resume",
    ),
    # modules below ops/ that Python callers reach
    "servinglog-since": Case(
        python=lambda w: _pipeline(w).psi_report(serving_log=w.tmp / "log", since="24x"),
        python_says="since='24x' is neither a duration",
        cli=lambda w: [
            "psi-report",
            "-c",
            w.config,
            "--serving-log",
            w.tmp / "log",
            "--since",
            "24x",
        ],
        cli_says="--since '24x' is neither a duration",
        prepare=_log_dir,
    ),
    "sample-data-rows": Case(
        python=lambda w: mlpipe.Pipeline.sample_data(w.tmp / "s", rows=5),
        python_says="rows must be at least 100, got 5",
        cli=lambda w: ["sample-data", "--out", w.tmp / "s", "--rows", "5"],
        cli_says="--rows must be at least 100, got 5",
    ),
    "model-trust": Case(
        python=lambda w: _pipeline(w).register_model(w.tmp / "model.pkl", trust=["x.Y"]),
        python_says="trust names skops types, but",
        cli=lambda w: [
            "model",
            "register",
            w.tmp / "model.pkl",
            "-c",
            w.config,
            "--trust",
            "x.Y",
        ],
        cli_says="--trust names skops types, but",
        prepare=_pickle_file,
    ),
    "materialize-max-age": Case(
        python=lambda w: _pipeline(w).check_freshness("soon"),
        python_says="max_age: ",
        cli=lambda w: ["materialize", "-c", w.config, "--check-freshness", "--max-age", "soon"],
        cli_says="--max-age: ",
    ),
}


@pytest.fixture
def where(project: Path, tmp_path: Path, sample_data_dir: Path) -> Where:
    return Where(config=project, tmp=tmp_path, data=sample_data_dir)


@pytest.mark.parametrize("name", sorted(CASES))
def test_python_callers_are_told_parameters(name: str, where: Where) -> None:
    case = CASES[name]
    case.prepare(where)
    with pytest.raises(MlpipeError) as raised:
        case.python(where)
    message = str(raised.value)
    assert case.python_says in message
    assert not FLAG.search(message), message
    assert "TRANSFORM_VERSION" not in message
    assert int(raised.value.exit_code) == case.exit_code


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_callers_are_told_flags(name: str, where: Where, cli: Any) -> None:
    case = CASES[name]
    case.prepare(where)
    result = cli(*case.cli(where))
    assert result.exit_code == case.exit_code, result.stderr
    assert case.cli_says in result.stderr
    assert result.stderr.count("\n") == 1  # still one line


def test_python_names_every_argument_of_a_suggested_call(where: Where) -> None:
    """A remedy naming two arguments reads as a call from Python, a command line from the
    CLI (materialize's OlderThanLive: the as-of again, plus allow_older)."""
    with argnames.cli_vocabulary():
        cli_form = argnames.joined(
            argnames.given("as_of", "2026-06-10"), argnames.given("allow_older", True)
        )
    python_form = argnames.joined(
        argnames.given("as_of", "2026-06-10"), argnames.given("allow_older", True)
    )
    assert cli_form == "--as-of 2026-06-10 --allow-older"
    assert python_form == "as_of=2026-06-10, allow_older=True"


@pytest.mark.parametrize(
    ("render", "cli_form", "python_form"),
    [
        (lambda: argnames.arg("data", "PATH"), "--data PATH", "data="),
        (lambda: argnames.arg("source"), "--source", "source="),
        (lambda: argnames.arg("sources", flag="--source"), "--source", "sources="),
        (lambda: argnames.arg("artifact_dir"), "--artifact-dir", "artifact_dir="),
        (lambda: argnames.arg_name("max_age"), "--max-age", "max_age"),
        (lambda: argnames.arg_name("fmt", flag="--format"), "--format", "fmt"),
        (
            lambda: argnames.arg_name("transform", flag="TRANSFORM_VERSION"),
            "TRANSFORM_VERSION",
            "transform",
        ),
        (lambda: argnames.given("as_of", "2026-07-01"), "--as-of 2026-07-01", "as_of=2026-07-01"),
        (lambda: argnames.given("chunk_size", 50), "--chunk-size 50", "chunk_size=50"),
        (lambda: argnames.given("resume", True), "--resume", "resume=True"),
        (
            lambda: argnames.given("sample_data", False, flag="--no-data"),
            "--no-data",
            "sample_data=False",
        ),
        (
            lambda: argnames.spelled(cli="mlpipe stream --reset", python="stream(reset=True)"),
            "mlpipe stream --reset",
            "stream(reset=True)",
        ),
    ],
)
def test_each_form_in_both_vocabularies(
    render: Callable[[], str], cli_form: str, python_form: str
) -> None:
    assert render() == python_form  # the default: a library call
    with argnames.cli_vocabulary():
        assert render() == cli_form
    assert render() == python_form  # and back after the block


def test_a_cli_run_in_this_process_leaves_python_names_behind(where: Where, capfd: Any) -> None:
    from mlpipe_cli.cli.main import main

    _no_training_data(where)
    with pytest.raises(SystemExit) as ended:
        main(["fit", "-c", str(where.config)])
    assert ended.value.code == 2
    assert "pass --data PATH" in capfd.readouterr().err
    assert argnames.current() is argnames.Vocabulary.PYTHON
    with pytest.raises(mlpipe.UsageError, match=r"pass data= or set transforms\.data"):
        _pipeline(where).fit()


def test_a_cli_run_that_raised_inside_leaves_python_names_behind(where: Where, cli: Any) -> None:
    """The reset happens when the command fails unexpectedly too (not only on success)."""
    broken = cli("fit", "-c", where.tmp / "missing.yaml")
    assert broken.exit_code == 2
    assert argnames.current() is argnames.Vocabulary.PYTHON


def test_vocabularies_do_not_cross_threads(where: Where, capfd: Any) -> None:
    """A Python caller beside a running CLI command gets Python names; a CLI run in a
    worker thread gets flags; a thread started inside a CLI run starts from Python."""
    _no_training_data(where)
    inside_cli = threading.Event()
    python_done = threading.Event()
    seen: dict[str, str] = {}

    def a_cli_run_in_progress() -> None:
        with argnames.cli_vocabulary():
            seen["cli thread"] = argnames.arg("data", "PATH")
            inside_cli.set()
            python_done.wait(timeout=60)
            seen["cli thread, after"] = argnames.arg("data", "PATH")

    worker = threading.Thread(target=a_cli_run_in_progress)
    worker.start()
    assert inside_cli.wait(timeout=60)
    try:
        with pytest.raises(mlpipe.UsageError) as raised:
            _pipeline(where).fit()  # while the other thread is inside its CLI vocabulary
    finally:
        python_done.set()
        worker.join(timeout=60)
    assert "pass data= or set transforms.data" in str(raised.value)
    assert seen == {"cli thread": "--data PATH", "cli thread, after": "--data PATH"}

    capfd.readouterr()
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(_run_cli("fit", "-c", where.config)))
    runner.start()
    runner.join(timeout=120)
    assert codes == [2]
    assert "pass --data PATH or set transforms.data" in capfd.readouterr().err
    assert argnames.current() is argnames.Vocabulary.PYTHON

    spawned: list[str] = []
    with argnames.cli_vocabulary():
        child = threading.Thread(target=lambda: spawned.append(argnames.arg("data", "PATH")))
        child.start()
        child.join(timeout=60)
    assert spawned == ["data="]


def _run_cli(*args: Any) -> int:
    from mlpipe_cli.cli.main import run

    return run([str(a) for a in args])


def test_stream_note_names_the_reset_as_the_caller_spells_it(
    project: Path, redis_server: Any, cli: Any
) -> None:
    """A streamed state that continues an older batch version says how to rebuild it:
    `mlpipe stream --reset` from the CLI, ``Pipeline.stream(reset=True)`` from Python."""
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.stream import stream

    config = yaml.safe_load(project.read_text())
    config["sources"]["orders"]["stream"] = {"key": "orders-events", "url": redis_server.url}
    project.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    for as_of in ("2026-04-01T00:00:00Z", AS_OF):
        loaded = cli("materialize", "-c", project, "--as-of", as_of)
        assert loaded.exit_code == 0, loaded.stderr
        if as_of != AS_OF:
            bootstrapped = cli("stream", "-c", project, "--once")
            assert bootstrapped.exit_code == 0, bootstrapped.stderr
    streamed = cli("stream", "-c", project, "--once")
    assert streamed.exit_code == 0, streamed.stderr
    assert "(mlpipe stream --reset rebuilds it from the live version)" in streamed.stderr

    notes: list[str] = []
    stream(Project(project), once=True, on_note=notes.append, handle_signals=False)
    continuing = [n for n in notes if "continues batch version" in n]
    assert continuing, notes
    assert "(Pipeline.stream(reset=True) rebuilds it from the live version)" in continuing[0]
    assert not FLAG.search(" ".join(notes))
