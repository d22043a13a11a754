"""`mlpipe init`: a project every command runs in, with no -c, and nothing ever overwritten."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from mlpipe_cli.sample_data import TABLES
from tests.conftest import EXAMPLE_CONFIG, REPO_ROOT, run_mlpipe

SCAFFOLD_FILES = {".gitignore", "Makefile", "mlpipe.yaml", "train_model.py"}
SAMPLE_FILES = {f"data/sample/{table}.parquet" for table in TABLES}


def files_under(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def venv_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPIPE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_init_writes_the_project_and_names_the_next_step(tmp_path: Path) -> None:
    result = run_mlpipe("init", str(tmp_path / "proj"), "--rows", "1000", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    written = files_under(tmp_path / "proj")
    assert set(written) == SCAFFOLD_FILES | SAMPLE_FILES
    assert "cd " in result.stdout
    assert "make all" in result.stdout
    # no temp files or staging directories left behind
    assert not [p for p in (tmp_path / "proj").rglob(".*") if p.name != ".gitignore"]


def test_sample_data_is_byte_identical_to_the_sample_data_command(tmp_path: Path) -> None:
    assert run_mlpipe("init", "proj", "--rows", "1000", "--seed", "7", cwd=tmp_path).exit_code == 0
    made = run_mlpipe(
        "sample-data", "--out", "direct", "--rows", "1000", "--seed", "7", "-q", cwd=tmp_path
    )
    assert made.exit_code == 0, made.stderr
    for table in TABLES:
        name = f"{table}.parquet"
        assert (tmp_path / "proj/data/sample" / name).read_bytes() == (
            tmp_path / "direct" / name
        ).read_bytes(), table


def test_non_empty_directory_is_refused_with_one_line_and_exit_2(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    (project / "notes.txt").write_text("mine\n")
    before = files_under(project)
    result = run_mlpipe("init", str(project), cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: ")
    assert "not empty" in result.stderr
    assert "--force" in result.stderr
    assert files_under(project) == before


def test_force_adds_missing_files_and_keeps_every_existing_one(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    own_config = b"pipeline: mine  # hand-edited, must survive\n"
    (project / "mlpipe.yaml").write_bytes(own_config)
    result = run_mlpipe("init", str(project), "--force", "--rows", "1000", "--json", cwd=tmp_path)
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["kept"] == ["mlpipe.yaml"]
    assert set(doc["written"]) == (SCAFFOLD_FILES | SAMPLE_FILES) - {"mlpipe.yaml"}
    assert (project / "mlpipe.yaml").read_bytes() == own_config
    # the human output says which files were kept: here every one, sample data included
    sample = {p: (project / p).read_bytes() for p in SAMPLE_FILES}
    again = run_mlpipe("init", str(project), "--force", cwd=tmp_path)
    assert again.exit_code == 0, again.stderr
    kept_line = next(ln for ln in again.stdout.splitlines() if ln.startswith("kept existing"))
    assert "mlpipe.yaml" in kept_line
    assert "data/sample" in kept_line
    assert {p: (project / p).read_bytes() for p in SAMPLE_FILES} == sample


def test_force_refuses_to_complete_partial_sample_data(tmp_path: Path) -> None:
    """The sample tables join each other (every order's user is in users); one kept from an
    earlier run (another --rows or --seed) beside freshly generated ones would not. So a
    partial data/sample/ is refused, naming what is there and what is not, and nothing is
    written; --no-data scaffolds the rest and leaves the data alone."""
    project = tmp_path / "proj"
    (project / "data/sample").mkdir(parents=True)
    own_orders = b"not parquet, but mine"
    (project / "data/sample/orders.parquet").write_bytes(own_orders)
    before = files_under(project)
    result = run_mlpipe("init", str(project), "--force", "--rows", "1000", cwd=tmp_path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "has orders but not" in result.stderr
    assert "remove data/sample/" in result.stderr
    assert files_under(project) == before
    without = run_mlpipe("init", str(project), "--force", "--no-data", "--json", cwd=tmp_path)
    assert without.exit_code == 0, without.stderr
    assert set(json.loads(without.stdout)["written"]) == SCAFFOLD_FILES
    assert (project / "data/sample/orders.parquet").read_bytes() == own_orders


def test_bad_arguments_write_nothing(tmp_path: Path) -> None:
    too_few = run_mlpipe("init", "proj", "--rows", "10", cwd=tmp_path)
    assert too_few.exit_code == 2
    assert "--rows" in too_few.stderr
    unknown = run_mlpipe("init", "proj", "--example", "fraud", cwd=tmp_path)
    assert unknown.exit_code == 2
    (tmp_path / "a-file").write_text("x")
    not_a_dir = run_mlpipe("init", "a-file", cwd=tmp_path)
    assert not_a_dir.exit_code == 2
    assert "not a directory" in not_a_dir.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


# `make all`, the README's other outputs, .gitignore and `make clean` are covered by
# tests/test_cli_newcomer.py::test_readme_outputs_are_ignored_and_make_clean_restores_the_init_tree


def untracked_in_new_repo(project: Path) -> set[str]:
    """`git init` in ``project``, then the files git would offer to commit (its .gitignore
    applied)."""
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=project, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {line[3:] for line in status.stdout.splitlines()}


def normalised(text: str) -> list[str]:
    """Config lines with the header comment, path prefixes and comment alignment removed."""
    lines = text.splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return [re.sub(r"\s+", " ", ln.replace("../", "")).rstrip() for ln in lines]


def test_scaffold_config_is_the_example_config_with_project_relative_paths() -> None:
    from mlpipe_cli.scaffold import template_text

    scaffold = template_text("churn", "mlpipe.yaml")
    assert "../" not in scaffold
    assert normalised(scaffold) == normalised(EXAMPLE_CONFIG.read_text())


def test_templates_ship_in_the_wheel(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    shutil.copy(REPO_ROOT / "README.md", source)
    shutil.copytree(
        REPO_ROOT / "mlpipe_cli",
        source / "mlpipe_cli",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in ("mlpipe.yaml", "Makefile", "train_model.py", "gitignore"):
        assert f"mlpipe_cli/scaffold/churn/{template}" in names
