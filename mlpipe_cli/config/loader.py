"""Load a pipeline YAML file into a validated `PipelineConfig`.

Errors name the file, the key path and what was expected, e.g.
``mlpipe.yaml: sources.orders.columns.age.max: expected a number, got 'abc'`` or
``mlpipe.yaml: features[#7 'fare_per_km_30d'].agg: input should be 'count', ...``: list items
are counted from 1 and shown with their name (``mlpipe_cli.config.names``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mlpipe_cli.argnames import spelled
from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.config.names import render_key_path
from mlpipe_cli.errors import ConfigError
from mlpipe_cli.io import register_input

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_EXPECTED = {
    "float_parsing": "expected a number",
    "float_type": "expected a number",
    "int_parsing": "expected an integer",
    "int_type": "expected an integer",
    "int_from_float": "expected an integer",
    "bool_parsing": "expected true or false",
    "bool_type": "expected true or false",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
}


def load_config(path: Path | str) -> PipelineConfig:
    """Read, interpolate and validate a config file; raise ConfigError with a key path."""
    path = Path(path)
    register_input(path)  # the same-path guard: no output of this run may be the config
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} not found",
            hint=spelled(
                cli="pass -c/--config PATH, or run from the directory holding mlpipe.yaml",
                python="check the path (relative paths are from the working directory)",
            ),
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return load_config_text(text, source_name=path.name, base_dir=path.resolve().parent)


def load_config_text(text: str, *, source_name: str, base_dir: Path) -> PipelineConfig:
    try:
        try:
            # libyaml parses ~3x faster (~9 ms of every command's start-up); on an error the
            # pure-Python parser re-reads the text, for its clearer messages.
            raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{source_name}:{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source_name}: expected a mapping at the top level, got {_kind(raw)}")
    data = _interpolate(raw, source_name, (), raw)
    try:
        return PipelineConfig.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source_name, data)) from None


def config_section_hash(section: Any) -> str:
    """Stable sha256 of a config section (a model, a list of models, or plain data)."""
    canonical = json.dumps(_plain(section), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _interpolate(value: Any, source_name: str, path: tuple[str | int, ...], root: Any) -> Any:
    """Replace ${VAR} / ${VAR:-default} in string values; a missing variable is an error."""
    if isinstance(value, Mapping):
        return {k: _interpolate(v, source_name, (*path, k), root) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, source_name, (*path, i), root) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:

        def substitute(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(
                f"{source_name}: {render_key_path(path, root)}: environment variable {name} "
                "is not set",
                hint=f"export {name}=... or write ${{{name}:-default}}",
            )

        return _ENV_RE.sub(substitute, value)
    return value


def _format_validation_error(exc: ValidationError, source_name: str, data: Any) -> str:
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        key_path = render_key_path(_real_keys(error["loc"], data), data) or "(top level)"
        lines.append(f"{source_name}: {key_path}: {_describe(error, loc)}")
    head, *rest = lines
    if rest:
        return head + f" (and {len(rest)} more: " + "; ".join(rest) + ")"
    return head


def _real_keys(loc: tuple[str | int, ...], data: Any) -> list[str | int]:
    """The parts of a pydantic location that are keys and positions of the user's YAML.

    pydantic adds the union member, the discriminator tag (``transforms.columns.age.1.standard
    .with_mean``) and validator names to locations; a part is kept when the data holds it,
    or (a missing key, below an item the data does not hold) when it is not such a name.
    """
    kept: list[str | int] = []
    node: Any = data
    for part in loc:
        if _holds(node, part):
            kept.append(part)
            node = node[part]
        elif isinstance(node, Mapping) and part == node.get("type"):
            continue  # the tag of a discriminated union (transform steps): not a key
        elif not _is_internal_loc(str(part)):
            kept.append(part)
            node = None
    return kept


def _holds(node: Any, part: str | int) -> bool:
    if isinstance(node, list):
        return isinstance(part, int) and 0 <= part < len(node)
    return isinstance(node, Mapping) and part in node


def _is_internal_loc(part: str) -> bool:
    return (
        part.startswith("function-")
        or part in {"str", "int", "float", "bool", "none", "list", "dict"}
        or "[" in part
    )


def _describe(error: Any, loc: list[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key {loc[-1]!r} (check the spelling; configs/example.yaml lists every key)"
    expected = _EXPECTED.get(kind)
    if expected is None:
        message = error["msg"]
        message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        expected = message[0].lower() + message[1:] if message else kind
    if kind == "missing":
        return expected
    if "input" in error and kind in _EXPECTED:
        return f"{expected}, got {_show(error['input'])}"
    return expected


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _kind(value: Any) -> str:
    if value is None:
        return "an empty file"
    return type(value).__name__
