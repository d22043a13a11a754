"""`mlpipe validate` with an output that cannot be written publishes nothing and writes nothing.

Before the fix `validate --out o.parquet --save-profile --junit /proc/x.xml` wrote o.parquet,
published the profile and the validation artifact (each its kind's LATEST), and only then
failed writing the JUnit file: a failed run (exit 2) that had changed the project. Now every
output file is staged and renamed into place only after the JUnit file is staged and the
artifacts are published, so an unwritable path fails the run before anything is published.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import mount_or_skip

COMMAND = ("validate", "--source", "users", "--save-profile")


def published(artifacts: Path, kind: str) -> list[str]:
    """Published versions of ``kind`` (staging and lock files are not versions)."""
    directory = artifacts / "churn" / kind
    if not directory.is_dir():
        return []
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


def assert_nothing_written(project: Path, outputs: Path) -> None:
    artifacts = project.parent / "artifacts"
    assert published(artifacts, "validation") == []
    assert published(artifacts, "profile") == []
    assert files_in(outputs) == []  # no --out, no --quarantine, no temp left behind


def run_with_junit(cli: Any, project: Path, junit: Path | str) -> Any:
    outputs = project.parent / "outputs"
    outputs.mkdir(exist_ok=True)
    return cli(*COMMAND, "--out", outputs / "users.parquet",
               "--quarantine", outputs / "bad.parquet", "--junit", junit, "-c", project)  # fmt: skip


def test_the_control_run_writes_and_publishes_everything(cli: Any, project: Path) -> None:
    """The same command with a writable JUnit path: so the failures below are not vacuous."""
    junit = project.parent / "report.xml"
    result = run_with_junit(cli, project, junit)
    assert result.exit_code == 0, result.stderr
    artifacts = project.parent / "artifacts"
    assert len(published(artifacts, "validation")) == 1
    assert len(published(artifacts, "profile")) == 1
    assert files_in(project.parent / "outputs") == ["bad.parquet", "users.parquet"]
    assert junit.read_bytes().startswith(b"<?xml")
    assert "users: PASSED" in result.stdout


@pytest.mark.parametrize(
    ("junit", "says"),
    [
        # /proc takes no new files, for root too
        ("/proc/report.xml", ("/proc does not accept new files", "permission denied")),
        ("/proc/no-such-dir/report.xml", ("/proc does not accept new files", "permission denied")),
    ],
)
def test_an_unwritable_junit_path_publishes_nothing(
    cli: Any, project: Path, junit: str, says: tuple[str, ...]
) -> None:
    result = run_with_junit(cli, project, junit)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert str(Path(junit).parent if "no-such-dir" in junit else junit) in line, line
    assert any(reason in line for reason in says), line
    assert ".tmp" not in line, line
    assert_nothing_written(project, project.parent / "outputs")


def test_a_junit_path_below_a_regular_file_publishes_nothing(cli: Any, project: Path) -> None:
    """``notes.txt/report.xml``: its directory cannot be created (fails for root too)."""
    regular = project.parent / "notes.txt"
    regular.write_text("not a directory\n")
    result = run_with_junit(cli, project, regular / "report.xml")
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert f"cannot create the output directory {regular}: a file is in the way" in line, line
    assert_nothing_written(project, project.parent / "outputs")
    assert regular.read_text() == "not a directory\n"


def test_a_junit_path_that_is_a_directory_publishes_nothing(cli: Any, project: Path) -> None:
    directory = project.parent / "reports"
    directory.mkdir()
    result = run_with_junit(cli, project, directory)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert f"output path {directory} is a directory" in line, line
    assert_nothing_written(project, project.parent / "outputs")
    assert files_in(directory) == []


def test_a_junit_path_in_a_read_only_directory_publishes_nothing(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    """As root chmod does not stop a write: there a read-only mount does."""
    where = tmp_path / "ro"
    mounted = os.geteuid() == 0
    if mounted:
        mount_or_skip(where, ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
    else:
        where.mkdir()
        where.chmod(0o555)
    try:
        result = run_with_junit(cli, project, where / "report.xml")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        else:
            where.chmod(0o755)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith(f"error: cannot write {where / 'report.xml'}: "), line
    assert "read-only" in line or "permission denied" in line, line
    assert_nothing_written(project, project.parent / "outputs")


def test_an_unwritable_out_with_a_writable_junit_writes_neither(cli: Any, project: Path) -> None:
    """The other way round: --out fails, and the JUnit file and the artifacts stay unwritten."""
    junit = project.parent / "report.xml"
    result = cli(*COMMAND, "--out", "/proc/users.parquet", "--junit", junit, "-c", project)
    assert result.exit_code == 2, result.stderr
    line = one_error_line(result.stderr)
    assert line.startswith("error: cannot write /proc/users.parquet: "), line
    assert not junit.exists()
    assert_nothing_written(project, project.parent / "outputs")


def test_the_python_api_publishes_nothing_on_an_unwritable_junit(project: Path) -> None:
    import mlpipe_cli as mlpipe
    from mlpipe_cli.errors import OutputError

    outputs = project.parent / "outputs"
    pipeline = mlpipe.Pipeline.from_yaml(project)
    with pytest.raises(OutputError) as caught:
        pipeline.validate(sources=["users"], out=outputs / "users.parquet", save_profile=True,
                          junit="/proc/report.xml")  # fmt: skip
    assert str(caught.value).startswith("cannot write /proc/report.xml: ")
    assert "already" not in (caught.value.hint or "")  # nothing was done to report
    assert_nothing_written(project, outputs)


def test_a_publish_that_fails_leaves_no_output_file_written(
    cli: Any, project: Path, tmp_path: Path
) -> None:
    """The artifact directory on a tmpfs with too few inodes, swept so that the profile's
    publish, its LATEST, the report's publish and its LATEST each fail in some row: --out,
    --quarantine and --junit (on the normal disk) stay unwritten whenever the run fails."""
    outputs = tmp_path / "outputs"
    outcomes = set()
    for inodes in range(4, 40):
        artifacts = tmp_path / f"artifacts-{inodes}"
        mount_or_skip(artifacts, ["-t", "tmpfs", "-o", f"size=4m,nr_inodes={inodes}", "tmpfs"])
        try:
            result = cli(*COMMAND, "--artifact-dir", artifacts,
                         "--out", outputs / "users.parquet", "--quarantine", outputs / "bad.parquet",
                         "--junit", outputs / "report.xml", "-c", project)  # fmt: skip
        finally:
            subprocess.run(["umount", "-l", str(artifacts)], capture_output=True, check=False)
        if result.exit_code == 0:
            assert files_in(outputs) == ["bad.parquet", "report.xml", "users.parquet"]
            outcomes.add("all written")
            break
        assert result.exit_code == 2, result.stderr
        # (the run ledger's own warning may follow: it lives on the same full disk)
        [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert "no space left on the device" in line, result.stderr
        assert files_in(outputs) == [], result.stderr
        outcomes.add("failed")
    assert outcomes == {"failed", "all written"}
