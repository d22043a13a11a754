"""NaN and ±inf feature values survive the online store: JSON has neither (orjson writes
them as null), so a value the training set holds as NaN or inf must not be served as null."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlpipe_cli.config import load_config
from mlpipe_cli.features.engine import compute_features
from mlpipe_cli.online import open_store
from mlpipe_cli.online.codec import loads_row, pack_row

AS_OF = datetime(2026, 2, 1, tzinfo=UTC)


def _project(tmp_path: Path, online: dict[str, Any]) -> Path:
    day = datetime(2026, 1, 10, tzinfo=UTC)
    pl.DataFrame(
        {
            "user_id": [1, 1, 2, 2, 3, 4],
            "ts": [day] * 6,
            "amount": [1.0, float("nan"), 5.0, float("inf"), -float("inf"), 2.5],
        },
        schema={"user_id": pl.Int64, "ts": pl.Datetime("us", "UTC"), "amount": pl.Float64},
    ).write_parquet(tmp_path / "ev.parquet")
    config = {
        "pipeline": "nf",
        "entity_keys": ["user_id"],
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {"ev": {"path": str(tmp_path / "ev.parquet"), "timestamp": "ts"}},
        "features": [
            {"name": "total", "source": "ev", "agg": "sum", "column": "amount"},
            {"name": "top", "source": "ev", "agg": "max", "column": "amount"},
            {"name": "n", "source": "ev", "agg": "count", "default": 0},
        ],
        "online_store": online,
    }
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    return a == b


@pytest.fixture(params=["sqlite", "redis"])
def online(request):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return {"type": "sqlite"}
    server = request.getfixturevalue("redis_server")
    return {"type": "redis", "url": server.url}


def test_non_finite_values_are_served_as_trained(tmp_path: Path, online, cli) -> None:  # type: ignore[no-untyped-def]
    config_path = _project(tmp_path, online)
    assert cli("materialize", "-c", config_path, "--as-of", AS_OF.isoformat()).exit_code == 0
    config = load_config(config_path)
    users = [1, 2, 3, 4]
    spine = pl.DataFrame({"user_id": users, "t": [AS_OF] * 4},
                         schema={"user_id": pl.Int64, "t": pl.Datetime("us", "UTC")})  # fmt: skip
    offline = compute_features(config, spine, entity_keys=["user_id"], timestamp="t").to_dicts()
    store = open_store(config, config.artifact_dir)
    try:
        served = store.get_many(users)
    finally:
        store.close()
    assert math.isnan(offline[0]["total"])  # the oracle really holds NaN and inf here
    assert offline[1]["top"] == math.inf
    assert offline[2]["total"] == -math.inf
    for row, hit in zip(offline, served, strict=True):
        for name in ("total", "top", "n"):
            assert _same(hit.values[name], row[name]), (row["user_id"], name, hit.values[name])


def test_packing_round_trips_and_leaves_finite_rows_unchanged() -> None:
    import orjson

    finite = [1.5, None, "x", 3]
    assert pack_row(finite) == orjson.dumps(finite)
    packed = pack_row([float("nan"), float("inf"), -float("inf"), "nan", 2.0])
    back = loads_row(packed)
    assert math.isnan(back[0])
    assert back[1:] == [math.inf, -math.inf, "nan", 2.0]
