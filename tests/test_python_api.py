"""The public Python API (`mlpipe_cli.Pipeline`) against the CLI, and its documented examples.

The demo pipeline (sample-data -> validate -> training-set -> fit -> transform ->
materialize(sqlite) -> psi-report) runs once through `mlpipe` and once through
``mlpipe.Pipeline`` against the same config, each into its own artifact directory. Every
artifact must get the same version id, every artifact file and every written Parquet file
the same bytes, and each API result's ``to_dict()`` the same document the CLI printed with
--json (timings and the run-specific paths aside).
"""

from __future__ import annotations

import doctest
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

import mlpipe_cli as mlpipe
from mlpipe_cli.ledger import RUNS_DIR
from tests.conftest import EXAMPLE_CONFIG, _repoint_paths

AS_OF = "2026-07-01T00:00:00Z"
ROWS = 3000
SEED = 11


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Not artifacts: the online store, and the CLI's run ledger (timings of each CLI run).
NOT_ARTIFACTS = ("serving-logs", RUNS_DIR)


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every artifact file under ``root`` (manifests aside: they
    hold created_at and the store location, which are not hashed into version ids)."""
    return {
        str(p.relative_to(root)): _digest(p)
        for p in sorted(root.rglob("*"))
        if p.is_file()
        and "online.sqlite" not in p.name
        and p.name != "manifest.json"
        and not set(p.relative_to(root).parts) & set(NOT_ARTIFACTS)
    }


def _versions(artifact_dir: Path, pipeline: str) -> dict[str, list[str]]:
    base = artifact_dir / pipeline
    return {
        kind.name: sorted(v.name for v in kind.iterdir() if v.is_dir() and v.name[0].isdigit())
        for kind in sorted(base.iterdir())
        if kind.is_dir() and kind.name not in NOT_ARTIFACTS
    }


def _without(document: dict, *keys: str) -> dict:
    return {k: v for k, v in document.items() if k not in keys}


@pytest.fixture
def demo(tmp_path: Path, cli) -> dict:  # type: ignore[no-untyped-def]
    """Sample data written by the CLI and by the API, and one config reading the CLI's."""
    cli_data, api_data = tmp_path / "cli-data", tmp_path / "api-data"
    made = cli("sample-data", "--out", cli_data, "--rows", ROWS, "--seed", SEED, "--json")
    assert made.exit_code == 0, made.stderr
    result = mlpipe.Pipeline.sample_data(api_data, rows=ROWS, seed=SEED)
    assert _without(result.to_dict(), "out_dir", "files") == _without(
        made.json(), "out_dir", "files"
    )
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config.pop("artifact_dir", None)
    _repoint_paths(config, cli_data)
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return {
        "config": path,
        "cli_data": cli_data,
        "api_data": api_data,
        "root": tmp_path,
        "sample_cli": made.json(),
        "sample_api": result.to_dict(),
    }


def test_cli_and_api_give_identical_artifacts(demo: dict, cli) -> None:  # type: ignore[no-untyped-def]
    root, config = demo["root"], demo["config"]
    # Same seed, same bytes, whichever door the sample data came through.
    for table, file in demo["sample_cli"]["files"].items():
        assert _digest(Path(file)) == _digest(Path(demo["sample_api"]["files"][table])), table

    c_art, c_out = root / "cli-artifacts", root / "cli-out"
    a_art, a_out = root / "api-artifacts", root / "api-out"
    c_out.mkdir()
    a_out.mkdir()

    def run(*args: object) -> dict:
        result = cli(*args, "-c", config, "--artifact-dir", c_art, "--json")
        assert result.exit_code == 0, (args, result.stderr)
        return result.json()

    docs_cli = {
        "validate": run("validate", "--save-profile"),
        "training_set": run("training-set", "--out", c_out / "train.parquet"),
    }
    docs_cli["fit"] = run("fit", "--data", c_out / "train.parquet")
    docs_cli["transform"] = run(
        "transform", "--data", c_out / "train.parquet", "--out", c_out / "features.parquet"
    )
    docs_cli["materialize"] = run("materialize", "--as-of", AS_OF)
    docs_cli["psi_report"] = run(
        "psi-report", "--current", c_out / "train.parquet", "--artifact", docs_cli["fit"]["version"]
    )

    p = mlpipe.Pipeline.from_yaml(config, artifact_dir=a_art)
    docs_api = {
        "validate": p.validate(save_profile=True).to_dict(),
        "training_set": p.training_set(a_out / "train.parquet").to_dict(),
    }
    fitted = p.fit(data=a_out / "train.parquet")
    docs_api["fit"] = fitted.to_dict()
    docs_api["transform"] = p.transform(
        a_out / "train.parquet", a_out / "features.parquet"
    ).to_dict()
    docs_api["materialize"] = p.materialize(as_of=AS_OF).to_dict()
    docs_api["psi_report"] = p.psi_report(
        current=a_out / "train.parquet", artifact=fitted.version
    ).to_dict()

    # Same version ids for every artifact kind, and byte-identical artifact files (the
    # manifests differ only by created_at and the store location, which are not hashed).
    assert _versions(c_art, "churn") == _versions(a_art, "churn")
    assert set(_versions(c_art, "churn")) >= {
        "validation",
        "profile",
        "training-set",
        "transform",
        "materialization",
    }
    assert _tree(c_art) == _tree(a_art)
    for name in ("train.parquet", "features.parquet"):
        assert _digest(c_out / name) == _digest(a_out / name), name

    # The same documents the CLI printed, up to the run-specific paths and timings.
    paths = (
        "out",
        "manifest",
        "path",
        "store",
        "seconds",
        "entities_per_second",
        "finished_at",
        "version_created_at",
        "created",
        "generated_at",
    )
    for step in docs_cli:
        c_doc, a_doc = docs_cli[step], docs_api[step]
        if step == "validate":
            c_doc = {
                **c_doc,
                "sources": [_without(s, "quarantine", "out") for s in c_doc["sources"]],
            }
            a_doc = {
                **a_doc,
                "sources": [_without(s, "quarantine", "out") for s in a_doc["sources"]],
            }
        if step == "materialize":  # the store's own version id is random by design; the
            # materialization artifact (artifact_version) is content-addressed and compared
            c_doc, a_doc = _without(c_doc, "version"), _without(a_doc, "version")
        if step == "psi_report":
            c_doc = {
                **c_doc,
                "profile": _without(c_doc["profile"], "path"),
                "current": _without(c_doc["current"], "path"),
            }
            a_doc = {
                **a_doc,
                "profile": _without(a_doc["profile"], "path"),
                "current": _without(a_doc["current"], "path"),
            }
        assert json.loads(json.dumps(_without(a_doc, *paths), default=str)) == _without(
            c_doc, *paths
        ), step


def test_failed_gate_raises_the_cli_exception_with_the_result(demo: dict, tmp_path: Path) -> None:
    p = mlpipe.Pipeline.from_yaml(demo["config"], artifact_dir=tmp_path / "art")
    broken = tmp_path / "orders.parquet"
    import polars as pl

    orders = pl.read_parquet(demo["cli_data"] / "orders.parquet")
    orders.with_columns(pl.lit(-5.0).alias("revenue")).write_parquet(broken)
    with pytest.raises(mlpipe.DataCheckFailed) as caught:
        p.validate(sources=["orders"], data=broken)
    assert caught.value.exit_code == mlpipe.ExitCode.DATA_CHECK_FAILED
    assert caught.value.result.report.status == "failed"  # type: ignore[attr-defined]
    assert "revenue" in str(caught.value)
    inspected = p.validate(sources=["orders"], data=broken, check=False)
    assert not inspected.passed
    assert inspected.to_dict()["status"] == "failed"
    # one string is one source name (it used to be read as the names 'o', 'r', 'd', ...)
    alone = p.validate(sources="orders", data=broken, check=False)
    assert _without(alone.to_dict(), "seconds") == _without(inspected.to_dict(), "seconds")
    with pytest.raises(mlpipe.UsageError, match="sources is empty"):
        p.validate(sources=[], data=broken)


def test_errors_and_bad_arguments_are_the_exception_tree(tmp_path: Path, demo: dict) -> None:
    with pytest.raises(mlpipe.ConfigError):
        mlpipe.Pipeline.from_yaml(tmp_path / "missing.yaml")
    p = mlpipe.Pipeline.from_yaml(demo["config"], artifact_dir=tmp_path / "art")
    with pytest.raises(mlpipe.UsageError, match="unknown feature 'nope'"):
        p.training_set(tmp_path / "t.parquet", features=["nope"])
    with pytest.raises(mlpipe.UsageError, match="features is empty"):
        p.materialize(features=[])
    with pytest.raises(mlpipe.ArtifactNotFound):
        p.transform(demo["cli_data"] / "orders.parquet", tmp_path / "x.parquet")
    assert issubclass(mlpipe.ArtifactNotFound, mlpipe.ArtifactError)
    assert issubclass(mlpipe.DataCheckFailed, mlpipe.MlpipeError)
    assert not (tmp_path / "t.parquet").exists()


def test_public_names_are_lazy_and_complete() -> None:
    for name in mlpipe.__all__:
        assert getattr(mlpipe, name) is not None, name
    with pytest.raises(AttributeError):
        mlpipe.no_such_thing  # noqa: B018
    commands = {
        "validate",
        "training_set",
        "fit",
        "transform",
        "export",
        "materialize",
        "check_freshness",
        "rollback",
        "psi_report",
        "skew_report",
        "shadow_report",
        "schema_infer",
        "schema_snapshot",
        "schema_diff",
        "schema_export",
        "artifacts_list",
        "artifacts_show",
        "artifacts_verify",
        "sample_data",
        "register_model",
        "models",
        "promote",
        "promote_rollback",
        "runs",
    }
    assert commands <= set(dir(mlpipe.Pipeline))


@pytest.mark.parametrize("where", ["example-config", "mlpipe-init"])
def test_python_api_doc_examples(
    tmp_path: Path, sample_data_dir: Path, monkeypatch: pytest.MonkeyPatch, cli, where: str
) -> None:  # type: ignore[no-untyped-def]
    """docs/python-api.md runs as a doctest in a tmp project built from the sample data, and
    in a project made by `mlpipe init` (whose config names ``artifact_dir: artifacts``, so
    ``Pipeline.artifact_dir`` is absolute there: the docs must not print a path)."""
    if where == "mlpipe-init":
        made = cli("init", tmp_path, "--rows", 20_000, "--seed", 7, "--force")
        assert made.exit_code == 0, made.stderr
    else:
        config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
        config.pop("artifact_dir", None)
        _repoint_paths(config, sample_data_dir)
        (tmp_path / "mlpipe.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    doc = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
    result = doctest.testfile(
        str(doc),
        module_relative=False,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        raise_on_error=False,
        verbose=False,
    )
    assert result.attempted >= 10, result
    assert result.failed == 0, f"{result.failed} doc example(s) failed (see the output above)"
    assert os.listdir(tmp_path / "artifacts" / "churn")


def test_models_promote_and_runs_through_the_api_match_the_cli(demo: dict, cli) -> None:  # type: ignore[no-untyped-def]
    """model register / list, promote (and --rollback) and runs: each API method returns the
    document the command prints with --json, and leaves the same artifacts behind."""
    import numpy as np
    import polars as pl
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    root, config = demo["root"], demo["config"]
    c_art, a_art = root / "cli-artifacts", root / "api-artifacts"

    def run(*args: object, code: int = 0) -> dict:
        result = cli(*args, "-c", config, "--artifact-dir", c_art, "--json")
        assert result.exit_code == code, (args, result.stderr)
        return result.json() if code == 0 else {}

    p = mlpipe.Pipeline.from_yaml(config, artifact_dir=a_art)
    train = root / "train.parquet"
    p.training_set(train)
    run("fit", "--data", train)
    first = p.fit(data=train)
    run("materialize", "--as-of", AS_OF)
    p.materialize(as_of=AS_OF)

    features = root / "features.parquet"
    p.transform(train, features)
    frame = pl.read_parquet(features)
    x = np.nan_to_num(frame.select(first.output_columns).to_numpy().astype(np.float64))
    model_file = root / "model.skops"
    sio.dump(LogisticRegression(max_iter=500).fit(x, frame["churned"].to_numpy()), model_file)

    registered_cli = run("model", "register", model_file, "--artifact", first.version)
    registered = p.register_model(model_file, first.version)
    assert registered.created
    assert _without(registered.to_dict(), "path") == _without(registered_cli, "path")
    assert p.register_model(model_file, first.version).created is False  # same file, same id
    assert _without(p.models().to_dict()["models"][0], "created_at") == _without(
        run("model", "list")["models"][0], "created_at"
    )

    # nothing promoted yet: a rollback is a usage error (exit 2), through either door
    run("promote", "--rollback", code=2)
    with pytest.raises(mlpipe.UsageError, match="nothing to roll back"):
        p.promote_rollback()
    promoted_cli = run("promote", first.version)
    promoted = p.promote(first.version)
    assert promoted.model_version == registered.model_version  # the newest bound model
    # each artifact dir has its own online store, whose version ids are random by design
    store_specific = ("store_version", "checks")
    assert _without(promoted.to_dict(), *store_specific) == _without(promoted_cli, *store_specific)
    assert promoted.store_version
    assert promoted.store_version in promoted.checks[1]
    assert p.promote(first.version).already_live

    # a second transform (fitted on half the rows) promoted, then rolled back to the first
    half = root / "half.parquet"
    pl.read_parquet(train).head(1000).write_parquet(half)
    second = p.fit(data=half)
    assert second.version != first.version
    moved = p.promote(second.version)
    assert (moved.transform_version, moved.model_version) == (second.version, None)
    back = p.promote_rollback()
    assert back.rollback
    assert back.transform_version == first.version
    assert back.model_version == registered.model_version

    runs = p.runs()
    promotes = [r for r in runs if r.command == "promote"]
    # refused rollback, promote, already live, promote the second, roll back
    assert [r.record.get("exit_code") for r in promotes] == [2, 0, 0, 0, 0]
    assert "model register" in [r.command for r in runs]
    assert [r.path for r in p.runs(command="promote", since="1h")] == [r.path for r in promotes]
    with pytest.raises(mlpipe.UsageError, match="since"):
        p.runs(since="soon")
