"""Config loading: typed models, key-path errors (exit 2), env interpolation, relative paths."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from mlpipe_cli.config import load_config
from mlpipe_cli.errors import ConfigError, ExitCode
from tests.conftest import EXAMPLE_CONFIG


def write(tmp_path: Path, text: str, name: str = "mlpipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


MINIMAL = """
pipeline: demo
entity_keys: [user_id]
sources:
  orders:
    path: data/orders.parquet
    timestamp: order_ts
    columns:
      age: {dtype: int64, min: 0, max: 120}
"""


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE_CONFIG)
    assert config.pipeline == "churn"
    assert "orders" in config.sources
    assert (
        config.sources["orders"].path
        == (EXAMPLE_CONFIG.parent / "../data/sample/orders.parquet").resolve()
    )


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    config = load_config(write(nested, MINIMAL))
    assert config.sources["orders"].path == nested / "data" / "orders.parquet"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            MINIMAL.replace("max: 120", "max: abc"),
            "mlpipe.yaml: sources.orders.columns.age.max: expected a number, got 'abc'",
        ),
        (MINIMAL + "bogus_key: 1\n", "mlpipe.yaml: bogus_key: unknown key 'bogus_key'"),
        (
            MINIMAL.replace("timestamp: order_ts", "timestamp: order_ts\n    min_rows: many"),
            "mlpipe.yaml: sources.orders.min_rows: expected an integer, got 'many'",
        ),
        (
            MINIMAL.replace("pipeline: demo", "pipeline: [1, 2]"),
            "mlpipe.yaml: pipeline: expected a string",
        ),
        ("entity_keys: [a]\n", "mlpipe.yaml: pipeline: required key is missing"),
        (
            MINIMAL.replace("dtype: int64", "dtype: integer"),
            "mlpipe.yaml: sources.orders.columns.age.dtype: expected one of",
        ),
        (
            MINIMAL + "online_store: {type: mongo}\n",
            "mlpipe.yaml: online_store.type: input should be 'sqlite' or 'redis'",
        ),
        ("pipeline: demo\n  bad: [indent\n", "mlpipe.yaml: line"),
        ("- just\n- a list\n", "mlpipe.yaml: expected a mapping at the top level"),
        ("", "mlpipe.yaml: expected a mapping at the top level, got an empty file"),
    ],
)
def test_bad_config_names_file_and_key_path(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, yaml_text))
    assert str(info.value).startswith(expected)
    assert info.value.exit_code == ExitCode.USAGE
    assert "\n" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPIPE_TEST_PW", "hunter2")
    text = (
        MINIMAL
        + 'online_store: {type: redis, url: "redis://h:${PORT:-6380}/0", password: "${MLPIPE_TEST_PW}"}\n'
    )
    config = load_config(write(tmp_path, text))
    assert config.online_store.password.get_secret_value() == "hunter2"
    assert config.online_store.url == "redis://h:6380/0"
    assert "hunter2" not in repr(config.online_store)


def test_missing_env_var_is_an_error_not_an_empty_string(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLPIPE_NOT_SET", raising=False)
    text = MINIMAL + 'online_store: {type: redis, password: "${MLPIPE_NOT_SET}"}\n'
    with pytest.raises(
        ConfigError, match=r"online_store\.password: environment variable MLPIPE_NOT_SET is not set"
    ):
        load_config(write(tmp_path, text))


def test_durations_parse(tmp_path: Path) -> None:
    text = MINIMAL + "online_store: {ttl: 36h}\n"
    assert load_config(write(tmp_path, text)).online_store.ttl == timedelta(hours=36)
    with pytest.raises(ConfigError, match=r"online_store\.ttl: expected a duration"):
        load_config(write(tmp_path, MINIMAL + "online_store: {ttl: soon}\n"))


def test_pipeline_name_must_be_a_safe_directory_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pipeline: expected letters"):
        load_config(write(tmp_path, MINIMAL.replace("pipeline: demo", "pipeline: ../escape")))


def test_bad_config_exits_2_with_one_line(cli, tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("max: 120", "max: abc"))
    result = cli("artifacts", "list", "-c", path)
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: mlpipe.yaml: sources.orders.columns.age.max: expected a number, got 'abc'"
    )
    assert "Traceback" not in result.stderr
