"""`materialize --engine spark` where one entity type reads a source two ways, and where a
key is computed by `derived`: the store holds the Polars run's rows, byte for byte.

A transfer row belongs to two accounts (its sender and its receiver): on Spark it is
shuffled to both accounts' tasks, and each task stores only the accounts hashed to it. An
account table whose key is `TRIM(account_raw)` is hashed on the trimmed value. Oracle: the
Polars run into a second store (tests/test_spark_materialize.py's comparison).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from tests.test_spark_materialize import AS_OF, _assert_same_store

pytestmark = [pytest.mark.spark, pytest.mark.slow]

_ACCOUNTS = ["a", "bb", "Ünïcode-ключ", "", "k" * 40, "東京", "Z", "ß-7"]


def _write_data(root: Path, seed: int) -> None:
    rng = random.Random(seed)
    t0 = datetime(2026, 5, 1, tzinfo=UTC)

    def account() -> str | None:
        return None if rng.random() < 0.08 else rng.choice(_ACCOUNTS)

    n = 300
    pl.DataFrame(
        {
            "sender": [account() for _ in range(n)],
            "receiver": [account() for _ in range(n)],
            "ts": [t0 + timedelta(hours=rng.randrange(24 * 40) // 6 * 6) for _ in range(n)],
            "amount": [rng.choice([None, 0.5, 1e6, -3.25, rng.random()]) for _ in range(n)],
        }
    ).with_columns(pl.col("ts").dt.convert_time_zone("Asia/Tokyo")).write_parquet(
        root / "transfers.parquet"
    )
    accounts = [a for a in _ACCOUNTS if rng.random() < 0.8]
    pl.DataFrame(
        {
            "account_raw": [f"  {a} " for a in accounts],
            "tier": [rng.choice(["gold", "tin", None]) for _ in accounts],
        }
    ).write_parquet(root / "accounts.parquet")


def _project(root: Path, online: dict[str, Any]) -> Path:
    config = {
        "pipeline": "ledger",
        "entity_keys": ["account"],
        "artifact_dir": str(root / "artifacts"),
        "online_store": online,
        "spark": {"partitions": 3},
        "sources": {
            "transfers": {"path": str(root / "transfers.parquet"), "timestamp": "ts",
                          "ttl": "20d"},
            "accounts": {"path": str(root / "accounts.parquet"),
                         "derived": {"account": "TRIM(account_raw)"}},
        },
        "features": [
            {"name": "sent", "source": "transfers", "agg": "count", "default": 0,
             "entity_keys": ["sender"], "join": {"account": "sender"}},
            {"name": "sent_last", "source": "transfers", "agg": "last", "column": "amount",
             "entity_keys": ["sender"], "join": {"account": "sender"}},
            {"name": "received_7d", "source": "transfers", "agg": "sum", "column": "amount",
             "window": "7d", "entity_keys": ["receiver"], "join": {"account": "receiver"}},
            {"name": "tier", "source": "accounts", "kind": "attribute", "default": "none"},
        ],
    }  # fmt: skip
    path = root / f"ledger-{online['type']}-{len(list(root.glob('ledger-*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))
    return path


def _materialize(config: Path, engine: str):  # type: ignore[no-untyped-def]
    from mlpipe_cli.ops.materialize import materialize
    from mlpipe_cli.ops.project import Project

    return materialize(Project(config), as_of=AS_OF, engine=engine)


@pytest.mark.parametrize(("kind", "seed"), [("sqlite", 1), ("redis", 2)])
def test_a_source_read_two_ways_and_a_derived_key_store_the_polars_rows(
    spark: object, kind: str, seed: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _write_data(tmp_path, seed)
    if kind == "sqlite":
        stores = [
            {"type": "sqlite", "path": str(tmp_path / f"{e}.sqlite"), "chunk_size": 3}
            for e in ("polars", "spark")
        ]
    else:
        url = request.getfixturevalue("redis_server").url
        stores = [
            {"type": "redis", "url": url, "key_prefix": f"l:{e}", "chunk_size": 3}
            for e in ("polars", "spark")
        ]
    on_polars, on_spark = _project(tmp_path, stores[0]), _project(tmp_path, stores[1])
    expected = _materialize(on_polars, "polars")
    result = _materialize(on_spark, "spark")
    # every account that sent, received or has a tier row, each stored once
    assert result.entity_count == expected.entity_count >= 6
    _assert_same_store(on_polars, on_spark)
