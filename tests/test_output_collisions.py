"""Two outputs of one command may not be one file (the same-path guard, between outputs).

Before the fix `validate --quarantine X --out X` exited 1 printing "input rows 3000 = passed
2934 + quarantined 2934": both were staged and renamed onto X, the passing rows last, so the
66 bad rows were gone; with passing data it exited 0; `--out X --junit X` left X as JUnit XML.
Now every command's outputs are checked against each other (same resolved path: `./x` and
`x`, symlinks, hard links) in the one home of the guard, ``mlpipe_cli.io.check_outputs``,
before any work: exit 2, one line naming both flags, nothing written or published.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import EXAMPLE_CONFIG, _repoint_paths

from mlpipe_cli.errors import UsageError

ROWS = 3000


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Orders with negative revenue (sample-data's out-of-range fault) plus NaN and ±inf, as a
    multi-part directory; and the clean orders, which pass."""
    from mlpipe_cli.sample_data import generate

    root = tmp_path_factory.mktemp("collisions")
    generate(root / "bad", rows=ROWS, seed=11, faults=("out-of-range",))
    generate(root / "clean", rows=ROWS, seed=11)
    orders = pl.read_parquet(root / "bad" / "orders.parquet")
    revenue = (
        pl.when(pl.col("order_id") % 97 == 0).then(float("nan"))
        .when(pl.col("order_id") % 89 == 0).then(float("inf"))
        .when(pl.col("order_id") % 83 == 0).then(float("-inf"))
        .otherwise(pl.col("revenue"))
    )  # fmt: skip
    orders = orders.with_columns(revenue.alias("revenue"))
    parts = root / "parts"
    parts.mkdir()
    orders.head(1234).write_parquet(parts / "part-0.parquet")
    orders.tail(ROWS - 1234).write_parquet(parts / "part-1.parquet")
    return {"root": root, "parts": parts, "clean": root / "clean" / "orders.parquet"}


@pytest.fixture
def project(tmp_path: Path, messy: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["artifact_dir"] = str(tmp_path / "artifacts")
    _repoint_paths(config, messy["root"] / "clean")
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "out").mkdir()
    monkeypatch.chdir(tmp_path)  # relative spellings below are relative to the project
    return path


# How the second output names the first one's file. Each returns (first, second) as given on
# the command line, after preparing the file system in the working directory.
def _same(tmp: Path) -> tuple[str, str]:
    return "out/x.parquet", "out/x.parquet"


def _dot_slash(tmp: Path) -> tuple[str, str]:
    return "out/x.parquet", "./out/../out/x.parquet"


def _absolute(tmp: Path) -> tuple[str, str]:
    return "out/x.parquet", str(tmp / "out" / "x.parquet")


def _file_symlink(tmp: Path) -> tuple[str, str]:
    (tmp / "out" / "link.parquet").symlink_to("x.parquet")  # dangling until written
    return "out/x.parquet", "out/link.parquet"


def _directory_symlink(tmp: Path) -> tuple[str, str]:
    (tmp / "alias").symlink_to(tmp / "out", target_is_directory=True)
    return "out/x.parquet", "alias/x.parquet"


def _hard_link(tmp: Path) -> tuple[str, str]:
    (tmp / "out" / "x.parquet").write_bytes(b"old content")
    os.link(tmp / "out" / "x.parquet", tmp / "out" / "y.parquet")
    return "out/x.parquet", "out/y.parquet"


SPELLINGS: dict[str, Callable[[Path], tuple[str, str]]] = {
    "same": _same,
    "dot-slash": _dot_slash,
    "absolute": _absolute,
    "file-symlink": _file_symlink,
    "directory-symlink": _directory_symlink,
    "hard-link": _hard_link,
}

# every pair of validate's output flags, in the order its options are declared
PAIRS = [("--quarantine", "--out"), ("--quarantine", "--junit"), ("--out", "--junit")]


def _file_state(root: Path) -> dict[str, bytes | str]:
    state: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            state[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            state[str(path.relative_to(root))] = path.read_bytes()
    return state


def _assert_refused(result, first: str, second: str) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""  # refused before any work: no report
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in result.stderr
    assert f"{first} " in line, line
    assert f" and {second} " in line, line
    assert "are the same file" in line, line
    assert line.endswith("give each output its own path"), line
    return line


@pytest.mark.parametrize("spelling", list(SPELLINGS))
@pytest.mark.parametrize(("first", "second"), PAIRS, ids=["-".join(p) for p in PAIRS])
def test_validate_refuses_two_outputs_on_one_file(
    cli, project: Path, messy: dict[str, Path], spelling: str, first: str, second: str
) -> None:
    tmp = project.parent
    path_one, path_two = SPELLINGS[spelling](tmp)
    before = _file_state(tmp / "out")
    result = cli("validate", "-c", project, "--source", "orders", "--data", messy["parts"],
                 first, path_one, second, path_two)  # fmt: skip
    _assert_refused(result, first, second)
    assert _file_state(tmp / "out") == before  # nothing written, the hard-linked file kept
    assert not (tmp / "artifacts" / "churn" / "validation").exists()  # nothing published


def test_passing_data_with_quarantine_and_out_on_one_file_is_refused_too(
    cli, project: Path, messy: dict[str, Path]
) -> None:
    # before: exit 0, "quarantine: 3000 rows" and the file held the passing rows only
    result = cli("validate", "-c", project, "--source", "orders", "--data", messy["clean"],
                 "--quarantine", "out/q.parquet", "--out", "out/q.parquet", "--no-publish")  # fmt: skip
    _assert_refused(result, "--quarantine", "--out")
    assert not (project.parent / "out" / "q.parquet").exists()


def test_distinct_outputs_still_split_the_rows_with_nothing_lost(
    cli, project: Path, messy: dict[str, Path]
) -> None:
    result = cli("validate", "-c", project, "--source", "orders", "--data", messy["parts"],
                 "--quarantine", "out/q.parquet", "--out", "out/o.parquet",
                 "--junit", "out/report.xml", "--no-publish")  # fmt: skip
    assert result.exit_code == 1, result.stderr
    quarantined = pl.read_parquet("out/q.parquet")
    passed = pl.read_parquet("out/o.parquet")
    # oracle without mlpipe: a row is bad when revenue is outside [0, 100000] or not finite
    # (the contract allows null revenue; channel `store` excuses only the row check)
    revenue = pl.read_parquet(messy["parts"])["revenue"].to_list()
    bad = sum(1 for r in revenue if r is not None and not (math.isfinite(r) and 0 <= r <= 1e5))
    assert quarantined.height == bad > 0
    assert passed.height + quarantined.height == ROWS
    assert Path("out/report.xml").read_bytes().startswith(b"<?xml")


def test_several_sources_refuse_a_file_that_is_inside_another_outputs_directory(
    cli, project: Path
) -> None:
    # --out d names a directory of <source>.parquet when several sources are validated
    result = cli("validate", "-c", project, "--out", "out/d", "--junit", "out/d/orders.parquet",
                 "--no-publish")  # fmt: skip
    line = _assert_refused(result, "--out (source orders)", "--junit")
    assert "out/d/orders.parquet" in line
    same_dir = cli("validate", "-c", project, "--out", "out/d", "--quarantine", "./out/d",
                   "--no-publish")  # fmt: skip
    _assert_refused(same_dir, "--quarantine", "--out")
    assert not (project.parent / "out" / "d").exists()


def test_the_library_refuses_too(project: Path, messy: dict[str, Path]) -> None:
    import mlpipe_cli as mlpipe
    from mlpipe_cli.config import load_config
    from mlpipe_cli.io import input_scope
    from mlpipe_cli.validation import validate_source

    pipeline = mlpipe.Pipeline.from_yaml(project)
    with pytest.raises(UsageError, match=r"^--quarantine \S+ and --out \S+ are the same file"):
        pipeline.validate(sources=["orders"], data=messy["parts"], quarantine="out/a.parquet",
                          out=Path("out") / "." / "a.parquet", publish=False)  # fmt: skip
    with input_scope(), pytest.raises(UsageError, match=r"quarantine_path .* and out_path"):
        validate_source(load_config(project), "orders", messy["parts"],
                        quarantine_path=Path("out/b.parquet"), out_path=Path("out/b.parquet"))  # fmt: skip
    assert sorted(os.listdir("out")) == []


def test_check_outputs_names_outputs_and_allows_a_lower_layer_to_declare_one_again(
    tmp_path: Path,
) -> None:
    from mlpipe_cli.io import check_outputs, input_scope

    target = tmp_path / "t.parquet"
    with input_scope():
        check_outputs({"--out": target, "--junit": None, "--quarantine": tmp_path / "q.parquet"})
        check_outputs([target])  # the same output, re-checked by the code that writes it
        with pytest.raises(UsageError, match=r"^output \S+t.parquet and output \S+t.parquet"):
            check_outputs([target, tmp_path / "sub" / ".." / "t.parquet"])
    target.write_bytes(b"x")
    os.link(target, tmp_path / "h.parquet")
    with pytest.raises(UsageError, match=r"--a \S+ and --b \S+ are the same file \(hard links"):
        check_outputs({"--a": target, "--b": tmp_path / "h.parquet"})


# -- every command with several output options is covered above ----------------------------

# the commands whose outputs this file runs into each other; a new command with two output
# options fails the test below until it gets a row here
COVERED = {"validate"}


def _leaf_commands(group, prefix: str = ""):  # type: ignore[no-untyped-def]
    for name, command in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}".strip()
        if getattr(command, "commands", None):
            yield from _leaf_commands(command, path)
        else:
            yield path, command


def test_every_command_with_several_outputs_is_covered() -> None:
    import typer

    from mlpipe_cli.cli.main import OUTPUT_OPTIONS, build_app

    root = typer.main.get_command(build_app())
    several = {
        path
        for path, command in _leaf_commands(root)
        if len([p for p in command.params if p.name in OUTPUT_OPTIONS]) >= 2
    }
    assert several == COVERED
