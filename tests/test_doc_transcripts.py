"""The console transcripts in docs/ are real runs, and still are.

A ```console block is a sequence of `$ command` lines, each followed by what it printed
(stdout and stderr together). Each command runs in order, in its own bash, in one fresh
directory holding `configs/example.yaml` (a checkout's layout); `$ echo $?` prints the exit
code of the command before it, and every other command must exit 0 unless an `echo $?`
follows. What varies from run to run is masked on both sides before comparing: the
directory the run happened in, durations and rates, the age of a version, and the random
suffix of an online-store version, the id of a validation profile (the materialization
artifact ids must match exactly).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
# The directory the documented runs happened in; a test run's directory is masked the same way.
DOC_RUN_DIR = "/tmp/mlpipe"

VOLATILE = [
    (re.compile(r"\d[\d,]*(\.\d+)? s \([\d,.]+ [a-z]+/s\)"), "<duration> (<rate>)"),
    (re.compile(r"\b\d+(\.\d+)?d old\b"), "<age> old"),
    # online-store versions: a sequence number and 8 random hex digits
    (re.compile(r"\b(\d{4})-[0-9a-f]{8}\b"), r"\1-<store>"),
    # a saved validation profile's id differs between directories (its input is recorded)
    (re.compile(r"^reference: (\d{4})-[0-9a-f]{12}\b"), r"reference: \1-<profile>"),
]


@dataclass
class Step:
    command: str
    expected: list[str]


def console_blocks(text: str) -> list[list[Step]]:
    blocks: list[list[Step]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if line.strip() != "```console":
            continue
        steps: list[Step] = []
        for body in lines:
            if body.startswith("```"):
                break
            if body.startswith("$ "):
                steps.append(Step(body[2:], []))
            elif body.strip():
                assert steps, f"output before the first command: {body!r}"
                steps[-1].expected.append(body)
        blocks.append(steps)
    return blocks


def normalize(line: str, run_dir: str) -> str:
    line = line.rstrip().replace(run_dir, "<dir>")
    for pattern, replacement in VOLATILE:
        line = pattern.sub(replacement, line)
    return line


def run_block(steps: list[Step], workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLPIPE_")}
    # mlpipe and python as after `source .venv/bin/activate`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    previous_code = 0
    for index, step in enumerate(steps):
        if step.command.strip() == "echo $?":
            actual, code = [str(previous_code)], 0
        else:
            done = subprocess.run(
                ["bash", "-c", step.command],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=300,
            )
            actual, code = done.stdout.splitlines(), done.returncode
        checked = index + 1 < len(steps) and steps[index + 1].command.strip() == "echo $?"
        assert code == 0 or checked, f"$ {step.command}\nexit {code}:\n" + "\n".join(actual)
        want = [normalize(line, DOC_RUN_DIR) for line in step.expected]
        got = [normalize(line, str(workdir)) for line in actual if line.strip()]
        assert got == want, f"$ {step.command}"
        previous_code = code


@pytest.mark.parametrize("doc", ["materialize.md", "psi-report.md", "training-set.md"])
def test_console_transcript_runs_as_written(tmp_path: Path, doc: str) -> None:
    blocks = console_blocks((DOCS / doc).read_text(encoding="utf-8"))
    assert blocks, f"docs/{doc} has no console block"
    for number, steps in enumerate(blocks):
        workdir = tmp_path / f"block-{number}"
        (workdir / "configs").mkdir(parents=True)
        shutil.copy(REPO_ROOT / "configs" / "example.yaml", workdir / "configs")
        run_block(steps, workdir)


def test_a_changed_output_line_fails(tmp_path: Path) -> None:
    """The check is not vacuous: one wrong figure in a transcript fails it."""
    (tmp_path / "configs").mkdir()
    steps = [Step("echo 'materialized 5000 entities in 0.35 s (14,400 entities/s)'", [])]
    steps[0].expected = ["materialized 1000 entities in 0.12 s (1,000 entities/s)"]
    with pytest.raises(AssertionError):
        run_block(steps, tmp_path)
    steps[0].expected = ["materialized 5000 entities in 9.99 s (1 entities/s)"]
    run_block(steps, tmp_path)  # durations and rates are masked
