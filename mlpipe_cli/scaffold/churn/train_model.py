"""Train a small churn model on the transformed features and save it (written by `mlpipe init`).

The model sees exactly the transform's output columns, in order, so `mlpipe serve` can score
the vectors it produces; register it with `mlpipe model register MODEL --artifact latest`.
It is saved with skops, not joblib/pickle: `mlpipe model register` can then list the types the
file would create before loading anything (a pickle needs --trust-pickle: loading it runs code).

Usage: python train_model.py [FEATURES.parquet] [MODEL.skops] [CONFIG]
       (defaults: data/features.parquet data/model.skops mlpipe.yaml)
"""

from __future__ import annotations

import sys

import polars as pl
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config import load_config
from mlpipe_cli.transforms import load_transform


def main(
    features_path: str = "data/features.parquet",
    model_path: str = "data/model.skops",
    config_path: str = "mlpipe.yaml",
) -> None:
    config = load_config(config_path)
    transform = load_transform(ArtifactStore(config.artifact_dir, config.pipeline))
    frame = pl.read_parquet(features_path)
    x = frame.select(transform.output_columns).to_numpy()
    y = frame[config.transforms.target].to_numpy()
    model = LogisticRegression(max_iter=1000).fit(x, y)
    sio.dump(model, model_path)
    print(
        f"trained LogisticRegression on {x.shape[0]} rows x {x.shape[1]} features -> {model_path}"
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
