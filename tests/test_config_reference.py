"""configs/example.yaml lists every config key, as the unknown-key error says it does.

The loader answers a misspelt key with "configs/example.yaml lists every key"; that is only
true while every field of every config model appears there as `key:` (set, or commented out
where setting it would change what the example does). The commented sections that claim to
show the defaults must load, uncommented, to exactly the defaults.
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from mlpipe_cli.config import PipelineConfig, load_config
from mlpipe_cli.config.slo import SloConfig
from mlpipe_cli.config.spark import SparkConfig
from tests.conftest import EXAMPLE_CONFIG

YAML_KEY_LINE = re.compile(r"^# ( *)([a-z_0-9]+):( |$)")


def models_in(annotation: object) -> list[type[BaseModel]]:
    """Config models inside a field's annotation (Optional, list, dict, unions of steps)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in models_in(arg)]


def every_key(model: type[BaseModel], prefix: str = "", seen: set | None = None) -> list[str]:
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    keys = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        keys.append(f"{prefix}{key}")
        for inner in models_in(field.annotation):
            keys.extend(every_key(inner, f"{prefix}{key}.", seen))
    return keys


def test_every_config_key_appears_in_the_example_config() -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    keys = every_key(PipelineConfig)
    assert len(keys) > 150  # the walk reaches sources, features, transform steps, serving, slo
    missing = [
        path
        for path in keys
        if not re.search(rf"(^|[\s{{,#]){re.escape(path.rsplit('.', 1)[-1])}:", text, re.M)
    ]
    assert missing == [], f"keys configs/example.yaml does not list: {missing}"


def test_the_key_check_is_not_vacuous() -> None:
    class Extra(BaseModel):
        never_documented_key: int = 0

    class Outer(BaseModel):
        nested: Extra | None = None

    assert every_key(Outer) == ["nested", "nested.never_documented_key"]
    assert "never_documented_key:" not in EXAMPLE_CONFIG.read_text(encoding="utf-8")


def uncommented_tail(text: str, first_line: str) -> str:
    """The commented YAML from ``first_line`` to the end, uncommented (prose comments dropped)."""
    lines = text.splitlines()
    start = lines.index(first_line)
    return "\n".join(
        line[2:] for line in lines[start:] if YAML_KEY_LINE.match(line) or line.startswith("#   ")
    )


@pytest.mark.parametrize(("section", "defaults"), [("slo", SloConfig()), ("spark", SparkConfig())])
def test_commented_defaults_are_the_defaults(
    tmp_path: Path, section: str, defaults: BaseModel
) -> None:
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    shown = yaml.safe_load(uncommented_tail(text, "# slo:"))
    assert set(shown) == {"slo", "engine", "spark"}
    config = yaml.safe_load(text)
    config.update(shown)
    path = tmp_path / "configs" / "mlpipe.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_config(path)
    assert loaded.engine == "polars"
    assert getattr(loaded, section) == defaults
    assert getattr(load_config(EXAMPLE_CONFIG), section) == defaults
