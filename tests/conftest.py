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


def mount_or_skip(where: Path, args: list[str]) -> Path:
    """``mount <args> <where>`` (a tiny tmpfs for full-disk tests); the test is skipped only
    when the kernel refuses the mount itself (no root, no mount namespace)."""
    where.mkdir(exist_ok=True)
    result = subprocess.run(["mount", *args, str(where)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"mount refused: {result.stderr.strip() or result.returncode}")
    return where


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


# -- test lanes: markers applied at collection --------------------------------------------
#
# `make test` runs everything (CI). `make test-fast` deselects the markers below; each is
# applied here, from what a test uses, so a new test lands in the right lane by itself:
#   redis   it uses a real redis-server (a fixture named redis_server*)
#   server  it starts an `mlpipe serve` process (the `servers` pool, `Server(...)`, or
#           `serve` run through Popen/run_mlpipe/subprocess.run)
#   spark   it runs Spark (tests/test_spark*.py)
#   slow    listed in SLOW_TESTS: measured with `pytest -n 2 --durations=0` (tests/README
#           of the lanes: the Makefile's test-fast target) at over ~2 s per call on 2 cores;
#           every entry must name an existing test (tests/test_documents.py checks).

SLOW_TESTS: frozenset[str] = frozenset(
    {
        "tests/test_artifact_store.py::test_concurrent_publishers_never_corrupt_the_store",
        "tests/test_cli.py::test_every_command_has_help_with_an_example",
        "tests/test_cli.py::test_non_tty_output_is_plain_and_json_parses",
        "tests/test_cli.py::test_unreadable_config_is_one_line_exit_2",
        "tests/test_cli_newcomer.py::test_config_before_the_command_is_the_commands_own",
        "tests/test_cli_newcomer.py::test_readme_outputs_are_ignored_and_make_clean_restores_the_init_tree",
        "tests/test_cli_newcomer.py::test_verify_still_fails_on_a_corrupt_artifact_after_the_first_publish",
        "tests/test_cli_options.py::test_every_leaf_command_help_lists_config_and_artifact_dir",
        "tests/test_cli_robustness.py::test_closed_stdout_is_not_a_failure",
        "tests/test_cli_robustness.py::test_ctrl_c_mid_run_exits_130_and_leaves_no_partial_file",
        "tests/test_drift_html.py::test_report_renders_in_headless_chromium",
        "tests/test_drift_profile_compare.py::test_build_profile_identical_across_thread_counts",
        "tests/test_drift_profile_compare.py::test_psi_is_a_sum_of_nonnegative_terms_matching_a_python_loop",
        "tests/test_fault_suite.py::test_every_command_leaves_its_inputs_unchanged",
        "tests/test_fault_suite.py::test_fault",
        "tests/test_fault_suite.py::test_kill_9_mid_write_leaves_no_visible_output_and_the_next_run_cleans_up",
        "tests/test_features_oracle.py::test_appending_future_rows_changes_nothing",
        "tests/test_features_oracle.py::test_engine_equals_oracle",
        "tests/test_features_oracle.py::test_engine_equals_oracle_for_every_key_type",
        "tests/test_features_oracle.py::test_partitioned_engine_equals_oracle",
        "tests/test_features_oracle.py::test_several_entities_partitioned_equal_oracle",
        "tests/test_features_oracle.py::test_several_entities_per_spine_row_equal_oracle",
        "tests/test_fit_cli.py::test_fit_is_deterministic_across_thread_counts",
        "tests/test_init.py::test_bad_arguments_write_nothing",
        "tests/test_init.py::test_force_adds_missing_files_and_keeps_every_existing_one",
        "tests/test_init.py::test_sample_data_is_byte_identical_to_the_sample_data_command",
        "tests/test_init.py::test_templates_ship_in_the_wheel",
        "tests/test_ledger_slo.py::test_concurrent_runs_each_write_their_own_record",
        "tests/test_materialize.py::test_killed_writer_leaves_old_version_live_and_resume_finishes",
        "tests/test_materialize.py::test_online_values_equal_training_set_values",
        "tests/test_materialize.py::test_rollback_freshness_and_artifact",
        "tests/test_model.py::test_model_bound_to_another_transform_version_refuses_to_start",
        "tests/test_model.py::test_skops_model_with_a_trusted_type_serves_with_the_recorded_list",
        "tests/test_pipeline_e2e.py::test_example_pipeline_end_to_end",
        "tests/test_psi_report_cli.py::test_empty_window_and_empty_log_exit_2",
        "tests/test_python_api.py::test_cli_and_api_give_identical_artifacts",
        "tests/test_python_api.py::test_python_api_doc_examples",
        "tests/test_readme.py::test_every_bash_block_runs_in_order",
        "tests/test_serve.py::test_cold_start_value_the_transform_cannot_read_refuses_to_start",
        "tests/test_serve_log.py::test_frame_in_pieces_equals_the_row_by_row_frame",
        "tests/test_training_set.py::test_builds_training_set_matching_the_oracle",
        "tests/test_training_set.py::test_rides_example_three_entities_match_the_oracle",
        "tests/test_transform_conformance.py::test_batch_and_online_agree_on_random_records",
        "tests/test_transform_online_fast.py::test_fast_path_is_the_reference_for_all_transformers_at_once",
        "tests/test_transform_online_fast.py::test_fast_path_is_the_reference_for_each_transformer",
        "tests/test_transform_temporal_dst.py::test_every_dst_change_hour_by_quarter_hour",
        "tests/test_transform_temporal_dst.py::test_local_time_features_are_zoneinfo_across_dst_changes",
        "tests/test_transform_temporal_dst.py::test_online_is_batch_across_dst_changes",
    }
)


def _starts_a_server(item: pytest.Item) -> bool:
    import inspect

    if "servers" in getattr(item, "fixturenames", ()):
        return True
    function = getattr(item, "function", None)
    if function is None:
        return False
    source = inspect.getsource(function)
    spawns = ("Popen(", "run_mlpipe(", "subprocess.run(")
    return "Server(" in source or ('"serve"' in source and any(s in source for s in spawns))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if any(name.startswith("redis_server") for name in fixtures):
            item.add_marker(pytest.mark.redis)
        if _starts_a_server(item):
            item.add_marker(pytest.mark.server)
        if item.path.name.startswith("test_spark"):
            item.add_marker(pytest.mark.spark)
        if item.nodeid.split("[", 1)[0] in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


# -- Spark (tests/test_spark*.py) ----------------------------------------------------------


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local[2] SparkSession for every Spark test in this process (starting one costs
    10-30 s; a second getOrCreate would return it, and a second fixture's stop() would end
    it under the first). pyspark is a dev dependency: a missing install fails, not skips."""
    import warnings

    from pyspark.sql import SparkSession

    # pyspark 4.3 warns about pandas >= 3; mlpipe hands Spark Arrow batches only
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("mlpipe-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
