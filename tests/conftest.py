"""Shared fixtures: real redis-server processes, sample data in tmp dirs, a CLI runner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks._redis_binary import find_redis_server  # one lookup for tests and benchmarks

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO_ROOT / "configs" / "example.yaml"


# -- redis ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A real redis-server on a free loopback port, owned by one test."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.binary = find_redis_server()
        self.workdir = workdir
        self.password = password
        self.host = "127.0.0.1"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def url_without_password(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--protected-mode", "no",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    reply = sock.recv(64)
                    if reply.startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port (data is not persisted)."""
        self.stop()
        self.start()

    def client(self):  # type: ignore[no-untyped-def]
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password)


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_server_with_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password="s3cret-pw")
    server.start()
    try:
        yield server
    finally:
        server.stop()


# -- sample data and configs -----------------------------------------------------------


SAMPLE_ROWS = 20_000


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean sample data (20k orders), generated once per test session. Treat as read-only."""
    from mlpipe_cli.sample_data import generate

    out = tmp_path_factory.mktemp("sample")
    generate(out, rows=SAMPLE_ROWS, seed=7)
    return out


@pytest.fixture
def project(tmp_path: Path, sample_data_dir: Path) -> Path:
    """A tmp project dir: the example config rewritten to read the session sample data.

    Returns the config path; artifacts go to <tmp>/artifacts.
    """
    import yaml

    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["artifact_dir"] = str(tmp_path / "artifacts")
    _repoint_paths(config, sample_data_dir)
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _repoint_paths(config: dict, data_dir: Path) -> None:
    """Point every `../data/sample/<file>` in the example config at ``data_dir``."""

    def visit(node):  # type: ignore[no-untyped-def]
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(value, str) and "data/sample/" in value:
                    node[key] = str(data_dir / value.split("data/sample/", 1)[1])
                else:
                    visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(config)


# -- running the CLI --------------------------------------------------------------------


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):  # type: ignore[no-untyped-def]
        return json.loads(self.stdout)


@pytest.fixture
def cli(capfd: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `mlpipe ARGS` in-process; returns exit code, stdout and stderr."""
    from mlpipe_cli.cli.main import run

    def invoke(*args: str | os.PathLike[str]) -> CliResult:
        capfd.readouterr()
        code = run([str(a) for a in args])
        captured = capfd.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke


def run_mlpipe(
    *args: str | os.PathLike[str], env: dict[str, str] | None = None, **kwargs
) -> CliResult:  # type: ignore[no-untyped-def]
    """Run `mlpipe ARGS` as a real subprocess (non-TTY stdout)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mlpipe_cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=kwargs.pop("timeout", 300),
        **kwargs,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
