"""Train a small churn model on the transformed training set (demo only) and save it.

The model sees exactly the transform's output columns, in order, so `mlpipe serve` can score
the vectors it produces. It is saved with skops (not joblib/pickle): `mlpipe model register`
can then list the types the file would create before loading anything.
Usage: train_demo_model.py CONFIG FEATURES.parquet MODEL.skops
"""

from __future__ import annotations

import sys

import polars as pl
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.config import load_config
from mlpipe_cli.transforms import load_transform


def main(config_path: str, features_path: str, model_path: str) -> None:
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
