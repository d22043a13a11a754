"""Regenerate docs/drift-report.png: a real drift report rendered by headless Chromium.

    .venv/bin/python scripts/drift_report_screenshot.py            # → docs/drift-report.png
    .venv/bin/python scripts/drift_report_screenshot.py --html /tmp/drift.html --out /tmp/d.png

What it builds (in a temporary directory, nothing else is touched): the sample data, clean and
with the `drift` fault (revenue ×10 in the last 21 days); the point-in-time training set of
the clean data; a transform fitted on it (configs/example.yaml's steps, with its profile); and
a serving log of one day of requests for the drifted data, vectors computed by the transform's
batch path with label_ts = the request time. `psi-report` core functions then compare the log
with the transform's profile — request-time features excluded, as by default — and the page
is written next to the data and photographed.

Needs a Chromium binary (Debian: `apt-get install chromium`); `--chromium PATH` picks one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The first Chromium-family browser on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(
    html: Path,
    png: Path,
    *,
    width: int = 1280,
    height: int = 2000,
    chromium: str | None = None,
    timeout: float = 120.0,
) -> None:
    """Render ``html`` in headless Chromium and save a ``width``×``height`` PNG to ``png``."""
    binary = chromium or find_chromium()
    if binary is None:
        raise SystemExit("no chromium binary found (apt-get install chromium, or --chromium)")
    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mlpipe-chromium-") as profile_dir:
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile_dir}",
            f"--screenshot={png}",
            f"--window-size={width},{height}",
            html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not png.exists():
        raise SystemExit(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")


def build_report(work: Path, rows: int = 20_000) -> dict:
    """The drift report of a drifted serving day against a transform fitted on clean data."""
    import numpy as np
    import polars as pl
    import yaml

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.config.transforms import TransformConfig
    from mlpipe_cli.drift import read_profile
    from mlpipe_cli.drift.report import (
        default_request_time_columns,
        drift_report,
        request_time_features,
        serving_log_parts,
    )
    from mlpipe_cli.features import compute_features
    from mlpipe_cli.sample_data import END, generate
    from mlpipe_cli.transforms import load_transform, publish

    example = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())

    def config_for(data: Path) -> Path:
        doc = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())
        for name, source in doc["sources"].items():
            source["path"] = str(data / f"{name}.parquet")
        doc["artifact_dir"] = str(work / "artifacts")
        doc["training_set"]["spine"] = str(data / "labels.parquet")
        doc.pop("transforms", None)
        path = work / f"{data.name}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    generate(work / "clean", rows=rows, seed=7)
    generate(work / "drift", rows=rows, seed=7, faults=("drift",))
    clean_config = load_config(config_for(work / "clean"))
    drift_config = load_config(config_for(work / "drift"))

    # training set: every label row with its point-in-time features (clean data)
    labels = pl.read_parquet(work / "clean" / "labels.parquet")
    training = compute_features(clean_config, labels, entity_keys=["user_id"], timestamp="label_ts")
    training.write_parquet(work / "training_set.parquet")
    steps = example["transforms"]
    steps["columns"]["last_product_id"][0]["table"] = str(
        work / "clean" / "product_embeddings.parquet"
    )
    transform_config = TransformConfig.model_validate(
        {"columns": steps["columns"], "target": steps["target"]}
    )
    store = ArtifactStore(work / "artifacts", clean_config.pipeline)
    result, _ = publish(store, transform_config, work / "training_set.parquet")
    transform = load_transform(store, result.version.version)

    # one day of serving on the drifted data: each user's features as of a request time
    users = pl.read_parquet(work / "drift" / "users.parquet").select("user_id")
    rng = np.random.default_rng(3)
    day_start = END - timedelta(days=1)
    request = users.with_columns(
        (pl.lit(day_start) + pl.duration(seconds=pl.Series(rng.integers(0, 86_400, users.height))))
        .dt.cast_time_unit("us")
        .alias("label_ts")
    )
    served = compute_features(drift_config, request, entity_keys=["user_id"], timestamp="label_ts")
    raw = served.select(transform.input_columns)
    vec = transform.transform_batch(raw.lazy()).collect().select(transform.output_columns)
    log = pl.concat(
        [
            served.select(
                pl.col("label_ts").alias("served_at"),
                pl.lit(transform.version).alias("transform_version"),
            ),
            raw.select([pl.col(c).alias(f"raw.{c}") for c in raw.columns]),
            vec.select([pl.col(c).alias(f"vec.{c}") for c in vec.columns]),
        ],
        how="horizontal",
    )
    log_dir = work / "serving-logs"
    log_dir.mkdir()
    half = log.height // 2
    log.slice(0, half).write_parquet(log_dir / "segment-20260630T000000-1-0.parquet")
    log.slice(half).write_parquet(log_dir / "segment-20260630T120000-1-1.parquet")

    artifact = store.get("transform", transform.version)
    profile = read_profile(artifact.file("profile.json"))
    parts, count = serving_log_parts(log_dir, day_start, END)
    excluded = request_time_features(
        profile, transform.state, default_request_time_columns(clean_config)
    )
    report = drift_report(
        profile,
        parts,
        rows=count,
        exclude=excluded,
        transform=transform,
        profile_info={
            "source": "artifact",
            "kind": "transform",
            "version": transform.version,
            "path": str(artifact.file("profile.json")),
        },
        current_info={
            "source": "serving-log",
            "path": str(log_dir),
            "since": day_start.isoformat(),
            "until": END.isoformat(),
        },
    )
    return report.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "drift-report.png")
    parser.add_argument(
        "--html",
        type=Path,
        default=None,
        help="also keep the HTML page here (default: a temporary file)",
    )
    parser.add_argument("--rows", type=int, default=20_000, help="sample-data orders")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=2000)
    parser.add_argument("--chromium", default=None, help="browser binary (default: on PATH)")
    args = parser.parse_args()

    from mlpipe_cli.drift.html import write_html

    with tempfile.TemporaryDirectory(prefix="mlpipe-drift-report-") as tmp:
        work = Path(tmp)
        doc = build_report(work, rows=args.rows)
        # written inside the work directory, so the page shows paths like serving-logs/
        page = work / "drift.html"
        write_html(doc, page)
        screenshot(page, args.out, width=args.width, height=args.height, chromium=args.chromium)
        if args.html is not None:
            shutil.copyfile(page, args.html)
    summary = doc["summary"]
    print(f"wrote {args.out} ({', '.join(f'{n} {s}' for s, n in summary.items())})")


if __name__ == "__main__":
    main()
