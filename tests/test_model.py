"""`mlpipe model register` and /predict: skops types checked before loading, pickle only when
trusted, hash verified before loading, bound to one transform version, predictions equal to
sklearn's own on the served vector."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import polars as pl
import pytest
import skops.io as sio
from conftest import free_port, run_mlpipe
from test_serve import (
    ServerPool,
    build_fitted_base,
    make_project,
    refuse_in_process,
    some_user_ids,
)

from mlpipe_cli.artifacts import ArtifactStore
from mlpipe_cli.transforms import load_transform


@pytest.fixture(scope="module")
def fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    return build_fitted_base(tmp_path_factory, sample_data_dir)


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


def training_matrix(project: Path, fitted_base: Path) -> tuple[Any, Any, str]:
    transform = load_transform(ArtifactStore(project.parent / "artifacts", "churn"))
    training = pl.read_parquet(fitted_base / "training_set.parquet")
    outputs = transform.transform_batch(training.lazy()).collect()
    x = outputs.select(transform.output_columns).to_numpy().astype(np.float64)
    x = np.nan_to_num(x)
    return x, training["churned"].to_numpy(), transform.version


def train_model(project: Path, fitted_base: Path, out: Path) -> tuple[Any, str]:
    """A LogisticRegression on the transform's outputs of the training set, saved with skops
    for a ``.skops`` path and with joblib (a pickle) otherwise."""
    from sklearn.linear_model import LogisticRegression

    x, y, version = training_matrix(project, fitted_base)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    if out.suffix == ".skops":
        sio.dump(model, out)
    else:
        joblib.dump(model, out)
    return model, version


class Boom:
    """Unpickling this writes a marker file: proves a tampered model is never loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path(self.marker).write_text, ("executed",))


def test_register_then_predict_matches_sklearn(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    model, transform_version = train_model(config, fitted_base, tmp_path / "model.skops")
    reg = cli("model", "register", tmp_path / "model.skops", "--artifact", "latest",
              "-c", config, "--json")  # fmt: skip
    assert reg.exit_code == 0, reg.stderr
    doc = reg.json()
    assert doc["transform_version"] == transform_version
    assert doc["created"] is True
    assert (doc["format"], doc["trusted_types"]) == ("skops", [])
    assert (Path(doc["path"]) / "model.skops").read_bytes() == (
        tmp_path / "model.skops"
    ).read_bytes()
    again = cli("model", "register", tmp_path / "model.skops", "--artifact",
                transform_version, "-c", config, "--json")  # fmt: skip
    assert again.json()["model_version"] == doc["model_version"]
    assert again.json()["created"] is False
    listed = cli("model", "list", "-c", config, "--json").json()["models"]
    assert [m["version"] for m in listed] == [doc["model_version"]]

    srv = servers(config)
    ids = some_user_ids(sample_data_dir, 3)
    one = srv.post("/predict", {"entity": ids[0]})
    assert one.status_code == 200, one.text
    body = one.json()
    assert body["model_version"] == doc["model_version"]
    expected = model.predict_proba(np.asarray([body["vector"]], dtype=np.float64))[0, 1]
    assert body["prediction"] == pytest.approx(expected, rel=1e-12)
    batch = srv.post("/predict", {"entities": [ids[1], 987654321, ids[2]]}).json()
    matrix = np.asarray([r["vector"] for r in batch["results"]], dtype=np.float64)
    assert [r["prediction"] for r in batch["results"]] == pytest.approx(
        model.predict_proba(matrix)[:, 1].tolist(), rel=1e-12
    )
    assert [r["cold_start"] for r in batch["results"]] == [False, True, False]
    assert srv.get("/readyz").json()["model_version"] == doc["model_version"]

    # concurrent single-entity /predict requests share store and model calls (coalescing);
    # each still gets the score of its own entity's vector
    from concurrent.futures import ThreadPoolExecutor

    many = [*some_user_ids(sample_data_dir, 30), 987654321]

    def ask(k: int) -> list[tuple[Any, dict[str, Any]]]:
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
            picks = [many[(k * 5 + j * 3) % len(many)] for j in range(12)]
            return [(u, client.post("/predict", json={"entity": u}).json()) for u in picks]

    with ThreadPoolExecutor(12) as executor:
        answers = [a for part in executor.map(ask, range(12)) for a in part]
    vectors = np.asarray([a["vector"] for _, a in answers], dtype=np.float64)
    assert [a["entity"] for _, a in answers] == [u for u, _ in answers]
    assert [a["prediction"] for _, a in answers] == pytest.approx(
        model.predict_proba(vectors)[:, 1].tolist(), rel=1e-12
    )
    assert srv.stop() == 0
    log = pl.concat(
        [pl.read_parquet(f) for f in sorted(
            (tmp_path / "artifacts" / "churn" / "serving-logs").glob("segment-*.parquet"))]
    )  # fmt: skip
    assert log.height == 1 + 3 + len(answers)
    assert log["prediction"].head(4).to_list() == pytest.approx(
        [body["prediction"]] + [r["prediction"] for r in batch["results"]], rel=1e-12
    )
    assert log["endpoint"].unique().to_list() == ["/predict"]


def test_model_bound_to_another_transform_version_refuses_to_start(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    train_model(config, fitted_base, tmp_path / "model.skops")
    assert cli("model", "register", tmp_path / "model.skops", "-c", config).exit_code == 0
    # a second transform version: fitted on fewer training rows
    training = pl.read_parquet(fitted_base / "training_set.parquet")
    training.head(1500).write_parquet(tmp_path / "fewer.parquet")
    fit = cli("fit", "-c", config, "--data", tmp_path / "fewer.parquet", "-q")
    assert fit.exit_code == 0, fit.stderr
    result = refuse_in_process(cli, config)
    assert result.exit_code == 3
    assert "registered for transform" in result.stderr
    assert "Traceback" not in result.stderr


def test_tampered_model_is_rejected_before_unpickling(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base)
    train_model(config, fitted_base, tmp_path / "model.joblib")
    reg = cli("model", "register", tmp_path / "model.joblib", "--trust-pickle", "-c", config,
              "--json")  # fmt: skip
    assert reg.json()["format"] == "pickle"
    model_dir = Path(reg.json()["path"])
    marker = tmp_path / "pwned"
    target = model_dir / "model.joblib"
    target.chmod(0o644)
    target.write_bytes(pickle.dumps(Boom(str(marker))))
    result = run_mlpipe("serve", "-c", config, "--port", free_port(), timeout=60)
    assert result.exit_code == 3
    assert "failed verification" in result.stderr
    assert not marker.exists()  # the hash check ran BEFORE joblib.load


def test_register_errors(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    missing = cli("model", "register", tmp_path / "nope.joblib", "-c", config)
    assert missing.exit_code == 2
    assert "not found" in missing.stderr
    (tmp_path / "m.joblib").write_bytes(pickle.dumps({"weights": [1]}))  # refused later
    unknown = cli("model", "register", tmp_path / "m.joblib", "--artifact", "0099",
                  "--trust-pickle", "-c", config)  # fmt: skip
    assert unknown.exit_code == 3
    assert "unknown transform artifact version" in unknown.stderr


def test_register_refuses_non_models_and_publishes_nothing(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    from sklearn.linear_model import LogisticRegression

    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    train_model(config, fitted_base, tmp_path / "model.joblib")
    good = cli("model", "register", tmp_path / "model.joblib", "--trust-pickle", "-c", config,
               "--json")  # fmt: skip
    assert good.exit_code == 0, good.stderr
    good_version = good.json()["model_version"]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.parquet").write_bytes(b"")
    (bad / "garbage.joblib").write_bytes(b"PAR1 not a pickle at all")
    joblib.dump({"weights": [1, 2, 3]}, bad / "dict.joblib")
    narrow = LogisticRegression().fit(np.asarray([[0.0], [1.0]]), [0, 1])
    joblib.dump(narrow, bad / "narrow.joblib")
    whole = (bad / "narrow.joblib").read_bytes()
    (bad / "truncated.joblib").write_bytes(whole[: len(whole) // 2])
    cases = {
        "empty.parquet": (3, "is empty (0 bytes)"),
        "garbage.joblib": (2, "is neither a skops archive nor a joblib/pickle file"),
        "truncated.joblib": (3, "cannot be loaded: "),
        "dict.joblib": (3, "has no predict_proba, decision_function or predict method"),
        "narrow.joblib": (3, "expects 1 features but transform"),
    }
    for name, (code, message) in cases.items():
        result = cli("model", "register", bad / name, "--artifact", "latest", "--trust-pickle",
                     "-c", config)  # fmt: skip
        assert result.exit_code == code, (name, result.stderr)
        assert message in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr
        error_line = next(line for line in result.stderr.splitlines() if line.startswith("error"))
        assert not error_line.rstrip().endswith(":"), error_line
    # a text file is not called a pickle (and needs no --trust-pickle to be refused)
    (bad / "notes.skops").write_text("my model, version 2\n")
    text = cli("model", "register", bad / "notes.skops", "-c", config)
    assert text.exit_code == 2, text.stderr
    assert "is neither a skops archive nor a joblib/pickle file" in text.stderr
    assert "--trust-pickle" not in text.stderr
    directory = cli("model", "register", bad, "-c", config)
    assert directory.exit_code == 2
    assert "is a directory" in directory.stderr
    assert "not found" not in directory.stderr

    listed = cli("model", "list", "-c", config, "--json").json()["models"]
    assert [(m["version"], m["latest"]) for m in listed] == [(good_version, True)]


def test_cannot_be_loaded_message_is_never_empty(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path
) -> None:
    """A registered artifact that fails to unpickle at serve time (e.g. written by an older
    mlpipe) says what failed, not a bare `EOFError: `."""
    from mlpipe_cli.errors import ArtifactError
    from mlpipe_cli.serving.model import MODEL_KIND, describe_exc, load_model

    assert describe_exc(EOFError()) == "EOFError: EOFError()"
    assert describe_exc(ValueError("bad\nthing")) == "ValueError: bad thing"
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    store = ArtifactStore(config.parent / "artifacts", "churn")
    transform = load_transform(store)
    from mlpipe_cli.artifacts import sha256_file

    empty = tmp_path / "empty.joblib"
    empty.write_bytes(b"")
    binding = {
        "format_version": 2,  # as every binding mlpipe ever wrote
        "transform_version": transform.version,
        "transform_content_hash": store.get("transform", transform.version).content_hash,
        "output_columns": list(transform.output_columns),
        "model_sha256": sha256_file(empty),
    }

    def write(staging: Path) -> None:
        (staging / "model.joblib").write_bytes(b"")
        (staging / "binding.json").write_text(json.dumps(binding))

    version = store.publish(MODEL_KIND, write).version.version
    with pytest.raises(ArtifactError) as err:
        load_model(store, version, transform_version=transform.version)
    message = str(err.value)
    assert "cannot be loaded: EOFError: EOFError()" in message, message


class Tripwire:
    """Creating one from a file writes a marker: proves the file was never loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).write_text("executed")
        self.__dict__.update(state)

    def predict(self, x: Any) -> Any:  # looks like a model
        return x[:, 0]


def test_pickle_payload_never_runs_at_registration(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Boom(str(marker)))
    for name in ("model.joblib", "model.pkl", "renamed.skops"):  # content decides, not name
        (tmp_path / name).write_bytes(payload)
        result = cli("model", "register", tmp_path / name, "-c", config)
        assert result.exit_code == 2, (name, result.stderr)
        assert result.stderr.startswith(f"error: model file {tmp_path / name} is a joblib/pickle "
                                        "file: loading it runs any code it contains")  # fmt: skip
        assert "--trust-pickle" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert not marker.exists()
    assert cli("model", "list", "-c", config, "--json").json()["models"] == []


def test_skops_untrusted_type_is_refused_before_anything_is_loaded(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    marker = tmp_path / "pwned"
    sio.dump(Tripwire(str(marker)), tmp_path / "evil.skops")
    assert not marker.exists()
    result = cli("model", "register", tmp_path / "evil.skops", "-c", config)
    assert result.exit_code == 2, result.stderr
    untrusted = sio.get_untrusted_types(file=tmp_path / "evil.skops")
    assert untrusted == [f"{Tripwire.__module__}.Tripwire"]
    assert result.stderr.strip() == (
        f"error: model file {tmp_path / 'evil.skops'} contains types skops does not trust: "
        f"{untrusted[0]} (if you trust them, register with --trust {untrusted[0]})"
    )
    assert not marker.exists()
    # --trust-pickle is not a way around it: a skops file's types are trusted one by one
    again = cli("model", "register", tmp_path / "evil.skops", "--trust-pickle", "-c", config)
    assert again.exit_code == 2
    assert not marker.exists()
    assert cli("model", "list", "-c", config, "--json").json()["models"] == []


def test_skops_model_with_a_trusted_type_serves_with_the_recorded_list(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, cli: Any
) -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlpipe_cli.errors import ArtifactError
    from mlpipe_cli.serving.model import MODEL_KIND, load_model

    config = make_project(tmp_path, sample_data_dir, fitted_base, materialize=False)
    x, y, transform_version = training_matrix(config, fitted_base)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, y)
    path = tmp_path / "hgb.skops"
    sio.dump(model, path)
    needed = "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
    refused = cli("model", "register", path, "-c", config)
    assert refused.exit_code == 2
    assert f"--trust {needed}" in refused.stderr
    reg = cli("model", "register", path, "--trust", needed, "--trust", "unused.Type",
              "-c", config, "--json")  # fmt: skip
    assert reg.exit_code == 0, reg.stderr
    doc = reg.json()
    assert (doc["format"], doc["trusted_types"]) == ("skops", [needed])  # only what it needs
    binding = json.loads((Path(doc["path"]) / "binding.json").read_text())
    assert binding["trusted_types"] == [needed]

    store = ArtifactStore(config.parent / "artifacts", "churn")
    loaded = load_model(store, doc["model_version"], transform_version=transform_version)
    rows = x[:200]
    assert loaded.score_matrix(rows) == pytest.approx(model.predict_proba(rows)[:, 1].tolist(),
                                                      rel=1e-12)  # fmt: skip

    # a binding that trusts less than the file asks for is refused before loading
    from mlpipe_cli.artifacts import sha256_file

    weaker = {**binding, "trusted_types": []}

    def write(staging: Path) -> None:
        (staging / "model.skops").write_bytes(path.read_bytes())
        (staging / "binding.json").write_text(json.dumps(weaker))

    assert weaker["model_sha256"] == sha256_file(path)
    version = store.publish(MODEL_KIND, write).version.version
    with pytest.raises(
        ArtifactError, match=f"asks for types not trusted at registration: {needed}"
    ):
        load_model(store, version, transform_version=transform_version)
