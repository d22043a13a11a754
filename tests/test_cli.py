"""The CLI contract: exit codes, --json, plain non-TTY output, help with examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlpipe_cli import __version__
from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.errors import (
    ArtifactError,
    ArtifactNotFound,
    ConfigError,
    DataCheckFailed,
    ExitCode,
    InputError,
    InternalError,
    ServiceUnavailable,
    UsageError,
    exit_code_for,
)
from tests.conftest import run_mlpipe

ANSI = re.compile(r"\x1b\[")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (DataCheckFailed("x"), 1),
        (UsageError("x"), 2),
        (ConfigError("x"), 2),
        (InputError("x"), 2),
        (ArtifactError("x"), 3),
        (ArtifactNotFound("x"), 3),
        (ServiceUnavailable("x"), 4),
        (InternalError("x"), 70),
        (RuntimeError("x"), 70),
        (KeyError("x"), 70),
        (OSError(28, "No space left on device"), 2),
    ],
)
def test_exit_code_mapping(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code
    assert int(ExitCode(code)) == code


def test_version(cli) -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mlpipe {__version__}"


def _all_commands():  # type: ignore[no-untyped-def]
    import typer

    from mlpipe_cli.cli.main import app

    root = typer.main.get_command(app)

    def walk(group, path):  # type: ignore[no-untyped-def]
        for name, command in sorted(group.commands.items()):
            if hasattr(command, "commands"):
                yield from walk(command, (*path, name))
            else:
                yield (*path, name), command

    return list(walk(root, ()))


def test_every_command_has_help_with_an_example(cli) -> None:
    commands = _all_commands()
    assert len(commands) >= 4
    for path, _command in commands:
        result = cli(*path, "--help")
        assert result.exit_code == 0, path
        assert "Example: mlpipe " in result.stdout, f"mlpipe {' '.join(path)} --help has no example"


def test_root_help_lists_every_command(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    for path, _command in _all_commands():
        assert path[0] in result.stdout


def test_bad_flag_is_exit_2(cli) -> None:
    result = cli("artifacts", "list", "--no-such-flag")
    assert result.exit_code == 2
    assert "No such option" in result.stderr


def test_missing_config_is_exit_2_one_line(cli, tmp_path: Path) -> None:
    result = cli("artifacts", "list", "-c", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: config file")
    assert "not found" in lines[0]


def test_unknown_artifact_version_is_exit_3(cli, project: Path) -> None:
    result = cli("artifacts", "show", "0099", "-c", project)
    assert result.exit_code == 3
    assert "no artifact version '0099'" in result.stderr


def _publish_demo(project: Path) -> ArtifactStore:
    from mlpipe_cli.config import load_config

    config = load_config(project)
    store = ArtifactStore(config.artifact_dir, config.pipeline)

    def write(target: Path) -> None:
        (target / "state.json").write_text('{"a": 1}')

    store.publish("transform", write, config_hash="x")
    return store


def test_artifacts_list_show_verify_json(cli, project: Path) -> None:
    store = _publish_demo(project)
    version = store.latest("transform")
    listed = cli("artifacts", "list", "-c", project, "--json").json()
    assert [a["version"] for a in listed["artifacts"]] == [version]
    assert listed["artifacts"][0]["latest"] is True
    shown = cli("artifacts", "show", version, "-c", project, "--json").json()
    assert shown["version"] == version
    assert "state.json" in shown["files"]
    verified = cli("artifacts", "verify", "--all", "-c", project, "--json")
    assert verified.exit_code == 0
    assert verified.json()["ok"] is True


def test_artifacts_verify_detects_tampering_exit_3(cli, project: Path) -> None:
    store = _publish_demo(project)
    artifact = store.get("transform")
    target = artifact.path / "state.json"
    os.chmod(target, 0o644)
    target.write_text('{"a": 2}')
    result = cli("artifacts", "verify", "-c", project, "--json")
    assert result.exit_code == 3
    report = result.json()
    assert report["ok"] is False
    assert "state.json" in report["results"][0]["problems"][0]
    assert "state.json does not match its sha256" in result.stderr


def test_non_tty_output_is_plain_and_json_parses(project: Path) -> None:
    _publish_demo(project)
    plain = run_mlpipe("artifacts", "list", "-c", project)
    assert plain.exit_code == 0, plain.stderr
    assert not ANSI.search(plain.stdout)
    assert "─" not in plain.stdout
    assert "┃" not in plain.stdout
    assert "transform" in plain.stdout
    as_json = run_mlpipe("artifacts", "list", "-c", project, "--json")
    assert json.loads(as_json.stdout)["artifacts"][0]["kind"] == "transform"


def test_quiet_prints_nothing_on_success(cli, project: Path) -> None:
    _publish_demo(project)
    result = cli("artifacts", "list", "-c", project, "-q")
    assert result.exit_code == 0
    assert result.stdout == ""


def test_unreadable_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config_dir = tmp_path / "mlpipe.yaml"
    config_dir.mkdir()  # a directory where the config file should be
    result = run_mlpipe("artifacts", "list", "-c", config_dir)
    assert result.exit_code == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "cannot read config file" in result.stderr


def test_unexpected_exception_is_one_line_exit_2_and_debug_shows_traceback(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import typer

    from mlpipe_cli.cli import main as cli_main

    broken = typer.Typer()

    @broken.command()
    def explode() -> None:
        raise ZeroDivisionError("division by zero in a bug")

    @broken.command()
    def other() -> None:  # a second command keeps Typer in group mode
        pass

    monkeypatch.setattr(cli_main, "app", broken)
    assert cli_main.run(["explode"]) == 70
    err = capfd.readouterr().err
    assert err.startswith("error: unexpected ZeroDivisionError: division by zero in a bug")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert cli_main.run(["explode", "--debug"]) == 70
    assert "Traceback (most recent call last)" in capfd.readouterr().err


def test_help_starts_fast() -> None:
    # Heavy libraries must not be imported for --help.
    code = (
        "import sys; from mlpipe_cli.cli.main import run; run(['--help']); "
        "heavy = [m for m in ('polars', 'sklearn', 'pandas', 'pyarrow', 'scipy', 'redis', 'pandera') "
        "if m in sys.modules]; print('HEAVY', heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in proc.stdout


# -- schema infer: a `path:` the config file it is pasted into can read --------------------


def test_schema_infer_path_is_relative_to_the_config_and_works_when_pasted(
    cli, tmp_path: Path, sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import polars as pl
    import yaml

    data = tmp_path / "data" / "orders.parquet"
    data.parent.mkdir()
    shutil.copy(sample_data_dir / "orders.parquet", data)
    config = tmp_path / "conf" / "mlpipe.yaml"
    config.parent.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the working directory must not matter, only --config's
    result = cli("schema", "infer", "--data", data, "--source", "orders", "-c", config)
    assert result.exit_code == 0, result.stderr
    entry = yaml.safe_load(result.stdout)
    assert entry["orders"]["path"] == "../data/orders.parquet"
    # pasted under `sources:` the entry reads the same file, from any working directory
    config.write_text(yaml.safe_dump({"pipeline": "p", "sources": entry}))
    validated = cli("validate", "-c", config, "--no-publish", "--json")
    assert validated.exit_code == 0, validated.stderr
    assert validated.json()["sources"][0]["rows"] == pl.read_parquet(data).height


def test_schema_infer_quotes_a_glob_and_relativises_a_config_in_the_working_dir(
    cli, tmp_path: Path, sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import yaml

    (tmp_path / "parts").mkdir()
    for i in range(2):
        shutil.copy(sample_data_dir / "users.parquet", tmp_path / "parts" / f"p{i}.parquet")
    monkeypatch.chdir(tmp_path)
    absolute = cli("schema", "infer", "--data", tmp_path / "parts" / "*.parquet", "--json")
    assert absolute.exit_code == 0, absolute.stderr
    assert absolute.json()["config_path"] == "parts/*.parquet"  # default config: ./mlpipe.yaml
    text = cli("schema", "infer", "--data", "*/*.parquet", "--source", "u").stdout
    assert yaml.safe_load(text)["u"]["path"] == "*/*.parquet"  # quoted: `*` is a YAML alias


@pytest.mark.parametrize(
    ("data", "config_dir", "expected"),
    [
        ("/srv/p/data/x.parquet", "/srv/p", "data/x.parquet"),
        ("/srv/p/data/x.parquet", "/srv/p/configs", "../data/x.parquet"),
        ("/srv/p/data/*.parquet", "/srv/p/configs", "../data/*.parquet"),
        # nothing shared below the root: a relative path would break when the project moves
        ("/mnt/lake/x.parquet", "/srv/p", "/mnt/lake/x.parquet"),
    ],
)
def test_path_for_config(data: str, config_dir: str, expected: str) -> None:
    from mlpipe_cli.schema.infer import path_for_config

    assert path_for_config(data, config_dir) == expected


# -- `latest` means one thing for per-source profiles -------------------------------------


def test_artifacts_list_marks_each_sources_latest_profile_as_validate_reads_it(
    cli, project: Path, tmp_path: Path
) -> None:
    import polars as pl

    from mlpipe_cli.config import load_config

    orders = load_config(project).sources["orders"].path
    half = tmp_path / "half_orders.parquet"
    frame = pl.read_parquet(orders)
    frame.head(frame.height // 2).write_parquet(half)
    saves = [("orders", orders), ("users", None), ("orders", half)]  # orders saved twice
    for source, data in saves:
        args = ["--data", data] if data else []
        saved = cli("validate", "-c", project, "--source", source, "--save-profile", *args)
        assert saved.exit_code == 0, saved.stderr
    listed = cli("artifacts", "list", "profile", "-c", project, "--json").json()["artifacts"]
    assert [(a["source"], a["latest"]) for a in listed] == [
        ("orders", False),
        ("users", True),
        ("orders", True),
    ]
    marked = {a["source"]: a["version"] for a in listed if a["latest"]}
    for source in ("orders", "users"):
        checked = cli(
            "validate",
            "-c",
            project,
            "--source",
            source,
            "--reference",
            "latest",
            "--no-publish",
            "--json",
        )
        assert checked.json()["sources"][0]["reference_profile"] == marked[source], source
    table = cli("artifacts", "list", "profile", "-c", project).stdout.splitlines()
    assert table[0].split() == [
        "kind",
        "version",
        "source",
        "latest",
        "created_at",
        "files",
        "bytes",
    ]
    assert [line.split()[3] == "*" for line in table[1:]] == [False, True, True]
