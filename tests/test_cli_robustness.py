"""What cron jobs and CI steps rely on: Ctrl-C, closed pipes, bad output paths, usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.errors import InputError
from mlpipe_cli.io import atomic_write_bytes, prepare_output_path

# Runs the real CLI in a real process; the only addition is a marker file written as
# `sample_data.generate` is entered, so the test interrupts inside the generator on a loaded
# machine too (a fixed sleep could land in start-up, or after a fast run).
_MARK_GENERATE = """
import sys
from pathlib import Path
import mlpipe_cli.sample_data as sample_data
real, marker = sample_data.generate, Path(sys.argv[1])
def generate(*args, **kwargs):
    marker.touch()
    return real(*args, **kwargs)
sample_data.generate = generate
from mlpipe_cli.cli.main import main
sys.argv = ["mlpipe", *sys.argv[2:]]
main()
"""


def test_ctrl_c_mid_run_exits_130_and_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "big"
    inside = tmp_path / "inside-generate"
    proc = subprocess.Popen(
        [sys.executable, "-c", _MARK_GENERATE, str(inside),
         "sample-data", "--rows", "6000000", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not inside.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inside.exists(), "the run never reached the generator"
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "error: interrupted"
    assert "Traceback" not in err
    leftovers = [p.name for p in out.glob("*")] if out.exists() else []
    assert not [name for name in leftovers if name.endswith(".tmp")]


def test_closed_stdout_is_not_a_failure(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlpipe_cli",
            "sample-data",
            "--rows",
            "500",
            "--out",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    proc.stdout.close()  # like `| head -0`
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["validate", "--bogus"], "error: No such option: --bogus"),
        (["transform"], "error: Missing option '--data'."),
        (["sample-data", "--rows", "abc"], "error: Invalid value for '--rows'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(expected)
    assert "unexpected" not in lines[0]
    assert "--help" in lines[0]


def test_output_path_must_be_a_regular_file(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="is not a regular file"):
        atomic_write_bytes(fifo, b"x")
    assert fifo.exists()
    assert not fifo.is_file()  # the FIFO was not replaced
    with pytest.raises(InputError, match="is a directory"):
        prepare_output_path(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InputError, match="a file is in the way"):
        prepare_output_path(blocker / "out.parquet")


def test_training_set_into_a_directory_is_exit_2(cli, project: Path, tmp_path: Path) -> None:
    target = tmp_path / "a_dir"
    target.mkdir()
    result = cli("training-set", "-c", project, "--out", target, "--no-publish")
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"error: output path {target} is a directory (give the path of a file to write)"
    )


def _publish(tmp_path: Path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "artifacts", "demo")
    store.publish("transform", lambda d: (d / "state.json").write_text('{"a": 1}'), config_hash="c")
    return store


def test_editing_a_file_and_its_manifest_hash_is_still_caught(tmp_path: Path) -> None:
    import hashlib

    store = _publish(tmp_path)
    artifact = store.get("transform")
    target = artifact.path / "state.json"
    os.chmod(target, 0o644)
    target.write_text('{"a": 2}')
    manifest_path = artifact.path / "manifest.json"
    os.chmod(manifest_path, 0o644)
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["state.json"] = {
        "sha256": hashlib.sha256(b'{"a": 2}').hexdigest(),
        "size": target.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest))
    result = store.verify("transform", artifact.version)
    assert not result.ok
    assert "does not match version id" in result.problems[0]


def test_kind_slash_version_is_accepted_where_a_version_is(tmp_path: Path) -> None:
    store = _publish(tmp_path)
    version = store.latest("transform")
    assert store.resolve("transform", "transform/1") == version
    assert store.resolve("transform", f"transform/{version}") == version


def test_verifying_a_mistyped_artifact_dir_fails_the_gate(cli, project: Path) -> None:
    # nothing published yet passes (tests/test_cli_newcomer.py); a directory that is not
    # there must not pass by verifying nothing
    typo = project.parent / "artifcats"
    result = cli("artifacts", "verify", "--all", "-c", project, "--artifact-dir", typo)
    assert result.exit_code == 2
    assert f"artifact directory {typo}" in result.stderr


def test_listing_an_unknown_kind_fails(cli, project: Path) -> None:
    result = cli("artifacts", "list", "trnasform", "-c", project)
    assert result.exit_code == 3
    assert "no 'trnasform' artifacts" in result.stderr
