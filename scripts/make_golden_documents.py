"""Write one golden copy of every document kind to tests/golden/documents/ (run once per format).

Runs the sample pipeline (the demo's steps, small: sample-data -> validate --save-profile ->
schema snapshot -> training-set -> fit -> materialize (SQLite) -> model register -> promote)
through the `mlpipe` CLI in a temporary directory, logs one served row with the feature
logger, and copies the documents those steps wrote, byte for byte (plus a final newline where
there was none), to ``<kind>.v<format_version>.json``.

An existing golden file is never overwritten: a golden is the proof that documents of that
format keep loading, so a format change adds a file (bump the model's FORMAT_VERSION first)
and the old one stays. tests/test_documents.py re-reads every file.

Usage: python scripts/make_golden_documents.py [--out tests/golden/documents] [--rows 400]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-07-01T00:00:00Z"


def mlpipe(*args: object) -> None:
    command = [sys.executable, "-m", "mlpipe_cli", *map(str, args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")


def the_one(pattern: str, root: Path) -> Path:
    found = sorted(root.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected one {pattern} under {root}, found {len(found)}")
    return found[0]


def run_pipeline(work: Path, rows: int) -> tuple[Path, dict[str, bytes]]:
    """Run the sample pipeline under ``work``; return the pipeline dir and extra documents."""
    data = work / "data"
    mlpipe("sample-data", "--out", data, "--rows", rows, "--seed", 7, "-q")
    config = yaml.safe_load((ROOT / "configs" / "example.yaml").read_text())
    text = yaml.safe_dump(config, sort_keys=False).replace("../data/sample/", f"{data}/")
    config = yaml.safe_load(text)
    config["artifact_dir"] = str(work / "artifacts")
    config_path = work / "mlpipe.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    pipeline_dir = work / "artifacts" / config["pipeline"]

    mlpipe("validate", "-c", config_path, "--source", "orders", "--save-profile")
    mlpipe("schema", "snapshot", "-c", config_path)
    mlpipe("training-set", "-c", config_path, "--out", work / "training_set.parquet")
    mlpipe("fit", "-c", config_path, "--data", work / "training_set.parquet")
    mlpipe("transform", "-c", config_path, "--data", work / "training_set.parquet",
           "--out", work / "features.parquet")  # fmt: skip
    mlpipe("materialize", "-c", config_path, "--as-of", AS_OF)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train_demo_model.py"),
                    str(config_path), str(work / "features.parquet"), str(work / "model.skops")],
                   check=True, capture_output=True)  # fmt: skip
    mlpipe("model", "register", work / "model.skops", "-c", config_path)
    mlpipe("promote", "latest", "-c", config_path)

    extra = {
        "training_set_manifest": (work / "training_set.parquet.manifest.json").read_bytes(),
        "store_metadata": store_metadata(pipeline_dir / "online.sqlite"),
        "serving_log_header": serving_log_header(work / "serving-log"),
    }
    return pipeline_dir, extra


def store_metadata(sqlite_path: Path) -> bytes:
    """The live version's metadata exactly as the SQLite store holds it."""
    with sqlite3.connect(sqlite_path) as db:
        (live,) = db.execute("SELECT version FROM mlpipe_pointer WHERE name = 'live'").fetchone()
        (blob,) = db.execute(
            "SELECT metadata FROM mlpipe_versions WHERE version = ?", (live,)
        ).fetchone()
    return bytes(blob)


def serving_log_header(log_dir: Path) -> bytes:
    """The header of a segment the feature logger wrote for one served row."""
    import polars as pl

    from mlpipe_cli.documents import ServingLogHeader
    from mlpipe_cli.serving.featurelog import FeatureLogger

    logger = FeatureLogger(log_dir, transform_version="0001-000000000000",
                           raw_columns=["amount"], vec_columns=["amount"])  # fmt: skip
    logger.start()
    logger.log("features", "[1]", None, False, [1.5], [0.25], None)
    logger.close()
    segment = the_one("segment-*.parquet", log_dir)
    return pl.read_parquet_metadata(segment)[ServingLogHeader.PARQUET_KEY].encode()


def collect(pipeline_dir: Path, extra: dict[str, bytes]) -> dict[str, bytes]:
    def published(kind: str, name: str) -> bytes:
        version = (pipeline_dir / kind / "LATEST").read_text().strip()
        return (pipeline_dir / kind / version / name).read_bytes()

    ledger = [p for p in sorted((pipeline_dir / "runs").glob("*.json"))
              if json.loads(p.read_text()).get("command") == "fit"]  # fmt: skip
    return {
        "artifact_manifest": published("transform", "manifest.json"),
        "drift_profile": published("profile", "profile.json"),
        "source_contract": published("schema", "contract.json"),
        "validation_report": published("validation", "report.json"),
        "model_binding": published("model", "binding.json"),
        "materialization_record": published("materialization", "materialization.json"),
        "transform_state": published("transform", "state.json"),
        "serving_pointer": published("serving", "serving.json"),
        "ledger_record": ledger[-1].read_bytes(),
        **extra,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "golden" / "documents")
    parser.add_argument("--rows", type=int, default=400)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pipeline_dir, extra = run_pipeline(Path(tmp), args.rows)
        documents = collect(pipeline_dir, extra)
    for kind, content in sorted(documents.items()):
        version = json.loads(content)["format_version"]
        target = args.out / f"{kind}.v{version}.json"
        if target.exists():
            print(f"kept     {target.relative_to(ROOT)} (a golden is never replaced)")
            continue
        target.write_bytes(content if content.endswith(b"\n") else content + b"\n")
        print(f"wrote    {target.relative_to(ROOT)} ({len(content)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
