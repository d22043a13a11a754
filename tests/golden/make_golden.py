"""Regenerate the golden transform artifact (run only when the artifact format changes ON PURPOSE).

    .venv/bin/python tests/golden/make_golden.py

Writes small deterministic inputs, fits `golden.yaml` with `mlpipe fit` into
`tests/golden/artifacts/`, and records `mlpipe transform`'s output as `expected.parquet`.
`tests/test_golden_artifacts.py` checks that every committed golden version still loads,
verifies, and reproduces its expected outputs byte for byte: old artifacts must keep working.
A new artifact format gets a NEW golden version next to the old ones; old ones are never
deleted or regenerated.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent


def write_inputs() -> None:
    rng = np.random.Generator(np.random.PCG64(2026))
    n = 400
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = pl.DataFrame(
        {
            "user_id": np.arange(1, n + 1, dtype=np.int64),
            "amount": np.round(rng.lognormal(3.0, 1.0, n), 2),
            "visits": rng.poisson(4, n).astype(np.int64),
            "score": np.where(rng.random(n) < 0.1, np.nan, rng.normal(0, 5, n)),
            "country": rng.choice(["US", "DE", "GB", "FR", "JP"], n, p=[0.4, 0.2, 0.2, 0.15, 0.05]),
            "plan": rng.choice(["free", "pro", "enterprise"], n, p=[0.6, 0.3, 0.1]),
            "product_id": rng.integers(1, 12, n).astype(np.int64),
            "event_ts": [start + timedelta(minutes=int(m)) for m in rng.integers(0, 200_000, n)],
            "churned": rng.random(n) < 0.3,
        }
    ).with_columns(pl.col("score").fill_nan(None))
    frame.write_parquet(HERE / "train.parquet")
    # transform input: unseen categories, unknown ids, nulls and out-of-range values included
    extra = pl.DataFrame(
        {
            "user_id": [9001, 9002, 9003],
            "amount": [None, -0.5, 1e7],
            "visits": [0, None, 1000],
            "score": [None, 1e9, -3.0],
            "country": ["BR", None, "US"],
            "plan": ["gold", "pro", None],
            "product_id": [999, None, 3],
            "event_ts": [start, None, start + timedelta(days=400)],
            "churned": [False, True, False],
        },
        schema=frame.schema,
    )
    pl.concat([frame.head(40), extra]).write_parquet(HERE / "input.parquet")
    vectors = rng.normal(0, 1, (11, 4)).astype(np.float32)
    pl.DataFrame(
        {
            "product_id": np.arange(1, 12, dtype=np.int64),
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, 4)),
        }
    ).write_parquet(HERE / "embeddings.parquet")


def mlpipe(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "mlpipe_cli", *args], check=True)


def main() -> None:
    write_inputs()
    config = str(HERE / "golden.yaml")
    artifacts = str(HERE / "artifacts")
    mlpipe("fit", "-c", config, "--artifact-dir", artifacts, "--data", str(HERE / "train.parquet"))
    mlpipe(
        "transform", "-c", config, "--artifact-dir", artifacts,
        "--data", str(HERE / "input.parquet"), "--out", str(HERE / "expected.parquet"),
    )  # fmt: skip


if __name__ == "__main__":
    main()
