"""The specialised request path: fast linear scoring, the generated reply, the fused
POST /predict.

Oracles: scikit-learn's own predict_proba / decision_function / predict (fast scoring);
``orjson.dumps(Served.to_dict())`` and ``FeatureService.log`` (the generic path the
generated reply replaces); the generic, streamed-body path of the same server (fused
/predict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_serve import (
    UNKNOWN,
    ServerPool,
    build_fitted_base,
    make_project,
    read_log,
    some_user_ids,
)

from mlpipe_cli.serving.app import EP_BATCH, EP_ONE, EP_PREDICT
from mlpipe_cli.serving.hotpath import OPTS
from mlpipe_cli.serving.model import linear_scorer
from mlpipe_cli.serving.service import Served


@pytest.fixture(scope="module")
def fitted_base(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> Path:
    return build_fitted_base(tmp_path_factory, sample_data_dir)  # shared with test_serve


@pytest.fixture
def servers():  # type: ignore[no-untyped-def]
    pool = ServerPool()
    yield pool
    pool.close()


# -- fast linear scoring: the model's own floats, or the model's own method ------------------

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


def _fitted(kind: str, width: int = 6) -> tuple[Any, str]:
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge, SGDClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(0, 2, (300, width))
    y = (x[:, 0] - 0.5 * x[:, 1] + rng.normal(0, 1, 300) > 0).astype(int)
    if kind == "logistic":
        return LogisticRegression(max_iter=500).fit(x, y), "predict_proba"
    if kind == "logistic-decision":
        return LogisticRegression(max_iter=500).fit(x, y), "decision_function"
    if kind == "sgd":
        return SGDClassifier(random_state=0).fit(x, y), "decision_function"
    if kind == "ridge":
        return Ridge().fit(x, x[:, 0] * 3 + 1), "predict"
    return LinearRegression().fit(x, x[:, 2] - x[:, 3]), "predict"


def _sklearn_scores(model: Any, method: str, matrix: np.ndarray) -> list[float]:
    out = getattr(model, method)(matrix)
    if method == "predict_proba":
        return [float(v) for v in out[:, -1]]
    return [float(v) for v in out.reshape(len(out), -1)[:, 0]]


@pytest.mark.parametrize("kind", ["logistic", "logistic-decision", "sgd", "ridge", "linear"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(finite, min_size=6, max_size=6), min_size=1, max_size=9))
def test_fast_linear_scores_are_the_models_own_floats(kind: str, rows: list[list[float]]) -> None:
    model, method = _fitted(kind)
    scorer = linear_scorer(model, method)
    assert scorer is not None
    matrix = np.asarray(rows, dtype=np.float64)
    assert scorer(matrix) == _sklearn_scores(model, method, matrix)  # every bit


def test_fast_scoring_leaves_what_it_cannot_do_to_the_model() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    model, method = _fitted("logistic")
    scorer = linear_scorer(model, method)
    assert scorer is not None
    for bad in (np.nan, np.inf, -np.inf):  # the model's own method raises its own error
        matrix = np.zeros((2, 6))
        matrix[1, 3] = bad
        assert scorer(matrix) is None
        with pytest.raises(ValueError, match="Input"):
            _sklearn_scores(model, method, matrix)
    assert scorer(np.zeros((1, 5))) is None  # wrong width: the model says so itself
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4))
    three = LogisticRegression(max_iter=300).fit(x, np.arange(90) % 3)
    assert linear_scorer(three, "predict_proba") is None  # multiclass: softmax, not expit
    tree = DecisionTreeClassifier().fit(x, np.arange(90) % 2)
    assert linear_scorer(tree, "predict_proba") is None

    class Calibrated(LogisticRegression):  # a subclass may score differently: never bypassed
        def predict_proba(self, X: Any) -> Any:
            return super().predict_proba(X) ** 2

    sub = Calibrated(max_iter=300).fit(x, np.arange(90) % 2)
    assert linear_scorer(sub, "predict_proba") is None


# -- the generated reply: the generic path's bytes and log row ------------------------------


def _register_model(config: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.model import register_model
    from mlpipe_cli.transforms import load_transform

    cfg = load_config(config)
    artifacts = ArtifactStore(cfg.artifact_dir, cfg.pipeline)
    transform = load_transform(artifacts)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, len(transform.output_columns)))
    model = LogisticRegression(max_iter=500).fit(x, (x[:, 0] > 0).astype(int))
    path = config.parent / "model.skops"
    sio.dump(model, path)
    register_model(artifacts, path, transform.version)


@pytest.fixture
def service_with_log(tmp_path: Path, sample_data_dir: Path, fitted_base: Path) -> Any:
    from mlpipe_cli.config import load_config
    from mlpipe_cli.serving.service import build_runtime

    config = make_project(tmp_path, sample_data_dir, fitted_base)
    _register_model(config)
    cfg = load_config(config)
    runtime = build_runtime(cfg, Path(cfg.artifact_dir), log_dir=tmp_path / "log",
                            logging_enabled=True)  # fmt: skip
    yield runtime.service, sample_data_dir
    runtime.service.store.close()


def _old_body(service: Any, served: Served, scored: bool) -> bytes:
    doc = served.to_dict(service.transform_version)
    if scored:
        doc["model_version"] = service.model.binding.model_version
    return orjson.dumps(doc, option=OPTS)


def test_reply_is_the_generic_answer_and_log_row(service_with_log: Any) -> None:
    service, sample_data_dir = service_with_log
    assert service.model is not None
    assert service.model.fast is not None  # verified at load
    queue = service.logger._queue
    ids = [*some_user_ids(sample_data_dir, 5), UNKNOWN]  # UNKNOWN: a cold start
    for endpoint, scored in ((EP_ONE, False), (EP_BATCH, False), (EP_PREDICT, True)):
        for user in ids:
            served = service.lookup(user)
            if scored:
                service.predict([served])
            body = service.reply(endpoint, served, scored)
            assert body == _old_body(service, served, scored)
            service.log(endpoint, [served])
            mine, generic = queue[-2], queue[-1]
            assert mine[1:] == generic[1:]  # all but the time it was served
            assert abs(mine[0] - generic[0]) < 5_000_000
    assert orjson.loads(body)["model_version"] == service.model.binding.model_version
    assert orjson.loads(service.reply(EP_ONE, service.lookup(UNKNOWN), False))["cold_start"]


messy = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(),
    st.text(max_size=12), st.datetimes(timezones=st.timezones()),
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.lists(messy, min_size=1, max_size=12),
    vector=st.lists(st.one_of(st.none(), st.floats()), max_size=8),
    entity=st.lists(st.one_of(st.integers(-(2**63), 2**64 - 1), st.text(max_size=20)),
                    min_size=1, max_size=3),
    prediction=st.one_of(st.none(), st.floats()),
    freshness=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), messy, max_size=3)),
    expired=st.lists(st.text(max_size=6), max_size=3),
)  # fmt: skip
def test_reply_bytes_match_the_generic_encoder_on_messy_values(
    service_with_log: Any, values: list[Any], vector: list[Any], entity: list[Any],
    prediction: float | None, freshness: dict | None, expired: list[str],
) -> None:  # fmt: skip
    service, _ = service_with_log
    columns = service.log_columns
    record = {f"{columns[i % len(columns)]}{'_x' * (i // len(columns))}": v
              for i, v in enumerate(values)}  # fmt: skip
    served = Served(
        entity, orjson.dumps(entity).decode(), prediction is None, record, expired, vector,
        "0001-ß-版本", None, prediction, service, freshness,
    )  # fmt: skip
    for scored in (False, True):
        assert service.reply(EP_PREDICT, served, scored) == _old_body(service, served, scored)
    row = service.logger._queue[-1]
    assert row[5] == tuple(record.get(c) for c in columns)
    assert row[6] == tuple(vector)  # the same float objects (NaN included)
    assert row[7] is prediction


def test_reply_follows_log_columns_changes(service_with_log: Any) -> None:
    """A shadow adds raw columns to the log after the service is built: the reply is
    generated again for them."""
    service, sample_data_dir = service_with_log
    served = service.lookup(some_user_ids(sample_data_dir, 1)[0])
    service.reply(EP_ONE, served, False)
    service.log_columns = [*service.log_columns, "not_a_feature"]
    service.reply(EP_ONE, served, False)
    assert service.logger._queue[-1][5][-1] is None
    assert len(service.logger._queue[-1][5]) == len(service.log_columns)


# -- the fused POST /predict on a real server ------------------------------------------------


def test_fused_predict_equals_the_generic_path_and_sklearn(
    tmp_path: Path, sample_data_dir: Path, fitted_base: Path, servers: Any, redis_server: Any
) -> None:
    import skops.io as sio

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.config import load_config

    online = {"type": "redis", "url": redis_server.url}
    config = make_project(tmp_path, sample_data_dir, fitted_base, online=online)
    _register_model(config)
    srv = servers(config, "--log-dir", str(tmp_path / "log"))
    model = sio.load(tmp_path / "model.skops", trusted=[])
    ids = [*some_user_ids(sample_data_dir, 8), UNKNOWN]

    def chunked(body: bytes) -> Any:  # no content-length: the generic, streamed reader
        yield body[:3]
        yield body[3:]

    for user in ids:
        body = orjson.dumps({"entity": user})
        fused = srv.post("/predict", content=body)
        generic = srv.client.post("/predict", content=chunked(body))
        assert fused.status_code == generic.status_code == 200, fused.text
        a, b = fused.json(), generic.json()
        differ = {k for k in a["features"] if a["features"][k] != b["features"][k]}
        assert differ == {"label_ts"}  # the request time (the training spine's timestamp)
        a["features"].pop("label_ts"), b["features"].pop("label_ts")
        assert a == b  # same answer either way
        expected = float(model.predict_proba(np.asarray([a["vector"]]))[0, 1])
        assert a["prediction"] == expected  # scikit-learn's own float
        assert a["cold_start"] is (user == UNKNOWN)
    # errors keep their codes on the fused path
    assert srv.post("/predict", content=b"{").json()["error"] == "invalid_json"
    assert srv.post("/predict", content=b'{"entity": "x y"}').json()["error"] == "bad_entity"
    too_big = srv.client.post("/predict", content=b" " * (2 << 20))
    assert too_big.status_code == 413
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as other:
        many = other.post("/predict", json={"entities": ids[:3]})
    assert many.status_code == 200
    assert many.json()["count"] == 3
    assert srv.stop() == 0
    log = read_log(tmp_path / "log")
    assert log.filter(log["endpoint"] == "/predict").height == 2 * len(ids) + 3
    assert log["prediction"].null_count() == 0
    versions = ArtifactStore(load_config(config).artifact_dir, load_config(config).pipeline)
    assert a["model_version"] == versions.latest("model")
