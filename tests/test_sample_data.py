"""Sample data: deterministic bytes, realistic shape, injectable faults."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from mlpipe_cli.sample_data import TABLES, generate


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", rows=3000, seed=5)
    b = generate(tmp_path / "b", rows=3000, seed=5)
    c = generate(tmp_path / "c", rows=3000, seed=6)
    for table in TABLES:
        assert a.files[table].read_bytes() == b.files[table].read_bytes(), table
    assert a.files["orders"].read_bytes() != c.files["orders"].read_bytes()


def test_tables_have_the_documented_columns_and_realistic_values(sample_data_dir: Path) -> None:
    users = pl.read_parquet(sample_data_dir / "users.parquet")
    orders = pl.read_parquet(sample_data_dir / "orders.parquet")
    labels = pl.read_parquet(sample_data_dir / "labels.parquet")
    emb = pl.read_parquet(sample_data_dir / "product_embeddings.parquet")
    assert users.columns == ["user_id", "signup_ts", "age", "country", "email", "plan"]
    assert orders.columns == ["order_id", "user_id", "order_ts", "revenue", "product_id", "channel"]
    assert labels.columns == ["user_id", "label_ts", "churned"]
    assert emb.schema["embedding"] == pl.Array(pl.Float32, 16)
    assert orders.schema["order_ts"] == pl.Datetime("us", "UTC")
    assert orders["order_id"].is_unique().all()
    assert set(orders["user_id"].unique()) <= set(users["user_id"])
    assert 0 < orders["revenue"].null_count() < orders.height * 0.05
    assert users["age"].null_count() > 0
    revenue = orders["revenue"].drop_nulls()
    assert revenue.mean() > revenue.median()  # right-skewed
    span = orders["order_ts"].max() - orders["order_ts"].min()
    assert span.days > 120
    assert 0.05 < labels["churned"].mean() < 0.95


@pytest.mark.parametrize("fault", ["renamed-column", "out-of-range", "drift", "bad-dtype"])
def test_faults_change_what_they_say(tmp_path: Path, fault: str) -> None:
    clean = generate(tmp_path / "clean", rows=3000, seed=1)
    bad = generate(tmp_path / "bad", rows=3000, seed=1, faults=(fault,))
    orders = pl.read_parquet(bad.files["orders"])
    users = pl.read_parquet(bad.files["users"])
    clean_orders = pl.read_parquet(clean.files["orders"])
    if fault == "renamed-column":
        assert "userId" in orders.columns
        assert "user_id" not in orders.columns
        assert "userId" in users.columns
    elif fault == "out-of-range":
        assert (orders["revenue"] < 0).sum() > 0
        assert (users["age"] == 200).sum() > 0
    elif fault == "drift":
        late = pl.col("order_ts") >= pl.datetime(2026, 6, 10, time_zone="UTC")
        ratio = orders.filter(late)["revenue"].mean() / clean_orders.filter(late)["revenue"].mean()
        assert ratio == pytest.approx(10.0)
        early = ~late
        assert orders.filter(early)["revenue"].equals(clean_orders.filter(early)["revenue"])
    else:
        assert orders.schema["revenue"] == pl.String
        assert users.schema["age"] == pl.String


def test_cli_sample_data_json(cli, tmp_path: Path) -> None:
    result = cli("sample-data", "--out", tmp_path / "s", "--rows", "500", "--json")
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["rows"]["orders"] == 500
    assert Path(doc["files"]["labels"]).exists()


def test_cli_unknown_fault_is_exit_2(cli, tmp_path: Path) -> None:
    result = cli("sample-data", "--out", tmp_path / "s", "--fault", "gremlins")
    assert result.exit_code == 2
    assert "unknown fault 'gremlins'" in result.stderr
