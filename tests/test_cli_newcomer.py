"""What a new user met on a first run through the README (each test failed before its fix):

1. `artifacts verify` in a project with nothing published yet exited 3 (a bad artifact).
2. An output that cannot be created named mlpipe's hidden temp file, not the user's path.
3. `mlpipe -c x.yaml validate` (the config flag before the command) was refused.
4. `psi-report --since 24x` said "cannot parse time '24x'" and nothing about durations.
5. The `mlpipe init` project's .gitignore and `make clean` missed outputs of the README.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from mlpipe_cli.errors import InputError, OutputError, UsageError
from tests.conftest import mount_or_skip, run_mlpipe
from tests.test_init import untracked_in_new_repo

SCAFFOLD_FILES = {".gitignore", "Makefile", "mlpipe.yaml", "train_model.py"}


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def venv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPIPE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def new_project(tmp_path: Path) -> Path:
    """A project exactly as `mlpipe init` leaves it (small sample data)."""
    project = tmp_path / "churn-demo"
    result = run_mlpipe("init", project, "--rows", "200", cwd=tmp_path, env=venv_env())
    assert result.exit_code == 0, result.stderr
    return project


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# -- 1. nothing to verify is not corruption ------------------------------------------------


def test_verify_in_a_new_project_has_nothing_to_verify_and_exits_0(new_project: Path) -> None:
    for args in (("artifacts", "verify"), ("artifacts", "verify", "--all")):
        result = run_mlpipe(*args, cwd=new_project, env=venv_env())
        assert result.exit_code == 0, result.stderr
        assert result.stderr == ""
        assert result.stdout.startswith("nothing to verify: no artifacts published under ")
        assert str(new_project / "artifacts" / "churn") in result.stdout
    as_json = run_mlpipe("artifacts", "verify", "--json", cwd=new_project, env=venv_env())
    assert as_json.exit_code == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert (document["ok"], document["checked"], document["results"]) == (True, 0, [])
    assert document["artifact_dir"] == str(new_project / "artifacts" / "churn")


def test_verify_still_fails_on_a_corrupt_artifact_after_the_first_publish(
    new_project: Path,
) -> None:
    published = run_mlpipe("schema", "snapshot", cwd=new_project, env=venv_env())
    assert published.exit_code == 0, published.stderr
    [version_dir] = [
        p
        for p in (new_project / "artifacts/churn/schema").iterdir()
        if p.name[0] != "." and p.is_dir()
    ]
    data_file = version_dir / "contract.json"
    data_file.chmod(0o644)
    data_file.write_bytes(data_file.read_bytes() + b" ")
    result = run_mlpipe("artifacts", "verify", "--json", cwd=new_project, env=venv_env())
    assert result.exit_code == 3
    assert json.loads(result.stdout)["checked"] == 1
    assert "1 of 1 artifact versions failed verification" in one_error_line(result.stderr)


def test_a_mistyped_artifact_dir_fails_verify_with_exit_2_and_creates_nothing(
    new_project: Path,
) -> None:
    typo = new_project / "artifcats"
    for env in ({}, {"MLPIPE_ARTIFACT_DIR": str(typo)}):
        args = ("artifacts", "verify") if env else ("artifacts", "verify", "--artifact-dir", typo)
        result = run_mlpipe(*args, cwd=new_project, env={**venv_env(), **env})
        assert result.exit_code == 2
        line = one_error_line(result.stderr)
        assert f"artifact directory {typo}" in line
        assert "does not exist" in line
        assert not typo.exists()  # not even the run ledger's directory


def test_a_mistyped_artifact_dir_fails_the_python_apis_verify_too(new_project: Path) -> None:
    from mlpipe_cli import Pipeline

    typo = new_project / "artifcats"
    pipeline = Pipeline.from_yaml(new_project / "mlpipe.yaml", artifact_dir=typo)
    with pytest.raises(InputError, match=r"\(artifact_dir=\) does not exist"):
        pipeline.artifacts_verify()
    assert not typo.exists()


# -- 2. an output that cannot be written names the user's path -----------------------------


@pytest.fixture
def unwritable() -> list[tuple[str, tuple[str, ...]]]:
    """Directories no file can be created in, with the reasons the error may give for them:
    /proc and /sys refuse new files to root too (ENOENT and EACCES); as another user, EACCES."""
    return [
        ("/proc", ("/proc does not accept new files", "permission denied")),
        ("/sys", ("permission denied",)),
    ]


@pytest.mark.parametrize(
    ("command", "name"),
    [
        (("training-set", "--out"), "x.parquet"),  # Polars' writer: the errno only in its text
        (("validate", "--source", "users", "--no-publish", "--out"), "users.parquet"),
        (("validate", "--source", "users", "--no-publish", "--junit"), "report.xml"),
        (("schema", "export", "--source", "orders", "--out"), "orders.yaml"),
        (("slo", "--prometheus"), "slo.prom"),
    ],
)
def test_an_unwritable_output_names_the_path_given_not_the_temp(
    cli: Any, project: Path, unwritable: list, command: tuple[str, ...], name: str
) -> None:
    for directory, reasons in unwritable:
        target = f"{directory}/{name}"
        result = cli(*command, target, "-c", project)
        assert result.exit_code == 2, result.stderr
        line = one_error_line(result.stderr)
        assert line.startswith(f"error: cannot write {target}: "), line
        assert any(reason in line for reason in reasons), line
        assert ".tmp" not in line, line
        assert f"{directory}/." not in line, line


def test_an_output_directory_that_cannot_be_created_names_it(cli: Any, project: Path) -> None:
    result = cli("training-set", "--out", "/proc/no-such-dir/x.parquet", "-c", project)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith("error: cannot create the output directory /proc/no-such-dir: ")
    assert "/proc does not accept new files" in line or "permission denied" in line


def test_a_read_only_file_system_is_named_with_the_users_path(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    where = mount_or_skip(tmp_path / "ro", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
    try:
        result = cli("training-set", "--out", where / "x.parquet", "-c", project)
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: cannot write {where / 'x.parquet'}: ")
    assert "read-only" in line
    assert ".tmp" not in line


def test_every_atomic_writer_names_the_target_not_its_temp(tmp_path: Path) -> None:
    import polars as pl

    from mlpipe_cli.io import (
        atomic_target,
        atomic_write_bytes,
        atomic_write_bytes_started,
        sink_parquet_atomic,
        write_parquet_atomic,
    )

    frame = pl.DataFrame({"k": ["a", "ü"], "v": [1.0, float("nan")]})
    writers = {
        "bytes": lambda p: atomic_write_bytes(p, b"x"),
        "bytes_started": lambda p: atomic_write_bytes_started(p, b"x")(),
        "parquet": lambda p: write_parquet_atomic(frame, p),
        "sink": lambda p: sink_parquet_atomic(frame.lazy(), p),
    }
    for label, write in writers.items():
        for directory in ("/proc", "/sys"):
            target = Path(directory) / f"out-{label}.bin"
            with pytest.raises(OutputError) as caught:
                write(target)
            message = str(caught.value)
            assert message.startswith(f"cannot write {target}: "), (label, message)
            assert ".tmp" not in message, (label, message)
    # a failure to READ inside the block is the reader's, not reported as a write failure
    missing = tmp_path / "missing-input.parquet"
    with (
        pytest.raises(FileNotFoundError) as read_failure,
        atomic_target(tmp_path / "out.bin") as tmp,
    ):
        tmp.write_bytes(missing.read_bytes())
    assert read_failure.value.filename == str(missing)
    assert list(tmp_path.iterdir()) == []  # and its temp is gone


# -- 3. -c/--config (and --artifact-dir) before the command ---------------------------------


def test_config_before_the_command_is_the_commands_own(new_project: Path, tmp_path: Path) -> None:
    config = new_project / "mlpipe.yaml"
    elsewhere = tmp_path / "elsewhere"  # no mlpipe.yaml here: the default would fail
    elsewhere.mkdir()
    after = run_mlpipe("validate", "--json", "--no-publish", "-c", config, cwd=elsewhere)
    assert after.exit_code == 0, after.stderr
    expected = json.loads(after.stdout)
    for spelling in (["-c", str(config)], [f"--config={config}"], [f"-c{config}"]):
        before = run_mlpipe(*spelling, "validate", "--json", "--no-publish", cwd=elsewhere)
        assert before.exit_code == 0, (spelling, before.stderr)
        assert json.loads(before.stdout)["sources"] == expected["sources"]
    # in a group, before the group or between it and its subcommand; the env var loses
    env = {**venv_env(), "MLPIPE_CONFIG": str(tmp_path / "absent.yaml")}
    for args in (
        ["-c", str(config), "artifacts", "verify", "--json"],
        ["artifacts", "-c", str(config), "verify", "--json"],
    ):
        result = run_mlpipe(*args, cwd=elsewhere, env=env)
        assert result.exit_code == 0, (args, result.stderr)
        assert json.loads(result.stdout)["artifact_dir"] == str(new_project / "artifacts/churn")
    # the run ledger records the command, not the config path
    runs = run_mlpipe("runs", "--json", "-c", config, cwd=elsewhere)
    commands = [run["command"] for run in json.loads(runs.stdout)["runs"]]
    assert commands[-5:] == ["validate"] * 3 + ["artifacts verify"] * 2


def test_artifact_dir_before_the_command_is_the_commands_own(
    new_project: Path, tmp_path: Path
) -> None:
    config = new_project / "mlpipe.yaml"
    other = tmp_path / "other-artifacts"
    published = run_mlpipe(
        "--artifact-dir", other, "-c", config, "schema", "snapshot", cwd=tmp_path
    )
    assert published.exit_code == 0, published.stderr
    assert (other / "churn" / "schema").is_dir()
    assert not (new_project / "artifacts" / "churn" / "schema").exists()


def test_the_same_flag_before_and_after_the_command(new_project: Path, tmp_path: Path) -> None:
    config = new_project / "mlpipe.yaml"
    same = run_mlpipe(
        "-c",
        config,
        "artifacts",
        "verify",
        "-c",
        Path(os.path.relpath(config, tmp_path)),
        cwd=tmp_path,
    )
    assert same.exit_code == 0, same.stderr  # the same file, spelled two ways
    other = tmp_path / "other.yaml"
    shutil.copy(config, other)
    conflict = run_mlpipe("-c", config, "artifacts", "verify", "--config", other, cwd=tmp_path)
    assert conflict.exit_code == 2
    line = one_error_line(conflict.stderr)
    assert "--config given twice" in line
    assert str(config) in line
    assert str(other) in line


def test_root_help_shows_the_options_and_a_missing_value_is_exit_2() -> None:
    help_text = run_mlpipe("--help").stdout
    assert "-c, --config PATH" in help_text
    assert "--artifact-dir DIR" in help_text
    for args in (["-c"], ["--artifact-dir"], ["-c", "--debug", "validate"]):
        result = run_mlpipe(*args)
        assert result.exit_code == 2, args
        assert "needs a value" in one_error_line(result.stderr)


def test_moving_root_options_keeps_everything_else_in_place() -> None:
    from mlpipe_cli.cli.blas import command_name
    from mlpipe_cli.cli.main import _move_root_options

    assert _move_root_options(["-c", "x.yaml", "fit", "--data", "d.parquet"]) == [
        "fit",
        "--config",
        "x.yaml",
        "--data",
        "d.parquet",
    ]
    assert _move_root_options(["--debug", "--artifact-dir", "a", "model", "-c", "x", "list"]) == [
        "--debug",
        "model",
        "list",
        "--artifact-dir",
        "a",
        "--config",
        "x",
    ]
    # what follows `--` is never an option
    assert _move_root_options(["-c", "x", "push", "--", "-c"]) == [
        "push",
        "--config",
        "x",
        "--",
        "-c",
    ]
    # no complete command: the root takes them (its help, its usage error)
    for args in (["-c", "x", "--help"], ["-c", "x", "artifacts", "--help"], ["-c", "x"]):
        assert _move_root_options(args) == args
    # start-up picks the BLAS threads by the command word, also behind --triggered-at
    args = ["--triggered-at", "2026-07-01T00:00:00Z", "-c", "x.yaml", "psi-report"]
    assert command_name(_move_root_options(args)) == "psi-report"
    with pytest.raises(UsageError, match="given twice before the command"):
        _move_root_options(["-c", "a.yaml", "--config", "b.yaml", "validate"])


# -- 4. --since/--until: a bad value named, with the forms that work -----------------------


def test_a_bad_since_is_one_line_naming_it_and_the_accepted_forms(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    for extra in ([], ["--serving-log", tmp_path], ["--current", tmp_path / "x.parquet"]):
        result = cli("psi-report", "-c", project, "--since", "24x", *extra)
        assert result.exit_code == 2
        line = one_error_line(result.stderr)
        assert "--since '24x'" in line, line
        for form in ("30m", "24h", "7d", "2026-07-01"):
            assert form in line, (form, line)
    result = cli("psi-report", "-c", project, "--serving-log", tmp_path, "--until", "noon")
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "'noon' for --until" in line
    assert "2026-07-01T06:00:00Z" in line
    assert "or now" in line


def test_the_forms_the_message_offers_are_accepted() -> None:
    from mlpipe_cli.servinglog import parse_window

    until = "2026-07-02T00:00:00Z"
    end = datetime(2026, 7, 2, tzinfo=UTC)
    assert parse_window("24h", until, timedelta(0)) == (end - timedelta(hours=24), end)
    assert parse_window("7d", until, timedelta(0)) == (end - timedelta(days=7), end)
    assert parse_window("30m", until, timedelta(0)) == (end - timedelta(minutes=30), end)
    assert parse_window("2w", until, timedelta(0)) == (end - timedelta(days=14), end)
    assert parse_window("2026-07-01", until, timedelta(0)) == (
        datetime(2026, 7, 1, tzinfo=UTC),
        end,
    )
    assert parse_window("2026-07-01T06:00:00Z", until, timedelta(0))[0] == datetime(
        2026, 7, 1, 6, tzinfo=UTC
    )
    assert parse_window(None, until, timedelta(hours=3)) == (end - timedelta(hours=3), end)


# -- 5. the project's .gitignore and `make clean` cover what the README produces ----------


def test_readme_outputs_are_ignored_and_make_clean_restores_the_init_tree(tmp_path: Path) -> None:
    project = tmp_path / "churn-demo"
    env = venv_env()
    assert run_mlpipe("init", project, "--rows", "2000", cwd=tmp_path, env=env).exit_code == 0
    made_by_init = files_under(project)
    make = subprocess.run(
        ["make", "all"], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert make.returncode == 0, make.stdout[-3000:] + make.stderr[-3000:]
    # `make all` ran the whole pipeline with no config flag (the Makefile's own targets)
    for made in ("data/training_set.parquet", "data/features.parquet", "data/model.skops"):
        assert (project / made).is_file(), made

    def mlpipe(*args: str, expect: int = 0) -> str:
        result = run_mlpipe(*args, cwd=project, env=env)
        assert result.exit_code == expect, (args, result.stderr[-2000:])
        return result.stdout

    # the README's other commands that write files of their own
    mlpipe(
        "training-set",
        "--spine",
        "data/sample/labels.parquet",
        "--features",
        "total_orders,revenue_30d",
        "--out",
        "data/two_features.parquet",
    )
    listed = json.loads(mlpipe("model", "list", "--json"))
    assert [m["latest"] for m in listed["models"]] == [True]
    mlpipe("export", "--artifact", "latest", "--format", "sklearn", "--out", "data/prep.joblib")
    mlpipe("sample-data", "--out", "data/new", "--rows", "2000", "--fault", "out-of-range", "-q")
    mlpipe(
        "validate",
        "--source",
        "orders",
        "--data",
        "data/new/orders.parquet",
        "--quarantine",
        "data/bad_rows.parquet",
        "--out",
        "data/good_rows.parquet",
        "--junit",
        "data/validate.xml",
        expect=1,
    )
    report = mlpipe("psi-report", "--current", "data/training_set.parquet", "--json")
    (project / "data" / "served-drift.json").write_text(report)  # the README's `> file`
    api = subprocess.run(
        [
            sys.executable,
            "-c",
            "import mlpipe_cli as m; "
            "m.Pipeline.from_yaml('mlpipe.yaml').training_set('data/train.parquet')",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert api.returncode == 0, api.stderr[-2000:]
    # what a write cut short by kill -9 leaves beside its target
    (project / "data" / ".features.parquet.5bce98f7.999999.0a1b2c3d.tmp").write_bytes(b"x")
    produced = files_under(project) - made_by_init
    for name in (
        "data/two_features.parquet.manifest.json",
        "data/train.parquet",
        "data/prep.joblib",
        "data/validate.xml",
        "data/bad_rows.parquet",
        "data/good_rows.parquet",
        "artifacts/churn/online.sqlite",
    ):
        assert name in produced, name

    assert untracked_in_new_repo(project) == SCAFFOLD_FILES

    clean = subprocess.run(
        ["make", "clean"], cwd=project, env=env, capture_output=True, check=False
    )
    assert clean.returncode == 0, clean.stderr
    shutil.rmtree(project / ".git")
    sample_batch = {f for f in produced if f.startswith("data/new/")}  # source data: kept
    assert sample_batch
    assert files_under(project) == made_by_init | sample_batch
