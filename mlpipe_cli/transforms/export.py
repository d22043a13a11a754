"""Export a FittedTransform as an equivalent, already-fitted scikit-learn ColumnTransformer.

Steps with a scikit-learn equivalent become real estimators whose fitted attributes are set
from our state (StandardScaler, MinMaxScaler, RobustScaler, OneHotEncoder, OrdinalEncoder);
the rest (fill_null, clip, log1p, `other`, frequency, target, temporal, embedding,
passthrough) are FunctionTransformer steps calling the vectorised numpy functions below. Each
column's pipeline is wrapped in ``FrozenEstimator`` so ``fit`` on the ColumnTransformer never
refits our state. Missing values come out as NaN (mlpipe batch output has null there).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from mlpipe_cli.transforms.fitted import FittedTransform

MISSING = "\x00mlpipe-missing"


# -- vectorised functions used by FunctionTransformer steps (module level: picklable) ----


def to_float(X: Any) -> np.ndarray:
    import pandas as pd

    frame = pd.DataFrame(X)
    values = frame.iloc[:, 0].astype("object")
    out = np.array(
        [np.nan if v is None or v is pd.NA or v is pd.NaT else float(v) for v in values],
        dtype=np.float64,
    )
    return out.reshape(-1, 1)


def to_category(X: Any) -> np.ndarray:
    import pandas as pd

    from mlpipe_cli.transforms.base import to_category as one

    values = pd.DataFrame(X).iloc[:, 0].astype("object")
    cats = []
    for v in values:
        if v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            v = None
        c = one(v.item() if isinstance(v, np.generic) else v)
        cats.append(MISSING if c is None else c)
    return np.array(cats, dtype=object).reshape(-1, 1)


def policy_in(
    X: np.ndarray, column: str, nan: str, inf: str, bounds: list[float] | None
) -> np.ndarray:
    """The column's value policy on its input (numeric.py ValuePolicy): NaN stays NaN (the
    missing value here) unless refused; ±inf clipped to the training range, or refused."""
    if nan == "error" and np.isnan(X).any():
        raise ValueError(f"column {column!r}: NaN is refused (on_nan: error)")
    infinite = np.isinf(X)
    if infinite.any():
        if inf == "clip" and bounds is not None:
            X = np.where(infinite, np.where(X > 0, bounds[1], bounds[0]), X)
        elif inf == "error":
            raise ValueError(f"column {column!r}: ±inf is refused (on_inf: error)")
    return X


def policy_out(X: np.ndarray, column: str) -> np.ndarray:
    """A missing output where the column's policy lets nothing be missing."""
    if np.isnan(X).any():
        raise ValueError(
            f"column {column!r}: {int(np.isnan(X).sum())} missing values and "
            "nothing fills them (on_null: error)"
        )
    return X


def fill(X: np.ndarray, value: float) -> np.ndarray:
    return np.where(np.isnan(X), value, X)


def clip(X: np.ndarray, lo: float | None, hi: float | None) -> np.ndarray:
    return np.clip(X, -np.inf if lo is None else lo, np.inf if hi is None else hi)


def log1p(X: np.ndarray, shift: float) -> np.ndarray:
    arg = X + shift if shift else X
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(arg > -1, np.log1p(np.where(arg > -1, arg, 0.0)), np.nan)


def other(X: np.ndarray, vocabulary: list[str]) -> np.ndarray:
    known = set(vocabulary)
    return np.array([[0.0 if v in known else 1.0] for v in X[:, 0]], dtype=np.float64)


def lookup(X: np.ndarray, table: dict[str, float], default: float) -> np.ndarray:
    return np.array([[table.get(v, default)] for v in X[:, 0]], dtype=np.float64)


def temporal(
    X: Any,
    features: list[str],
    time_zone: str | None,
    has_reference: bool,
    wall_clock_zone: str | None = None,
) -> np.ndarray:
    import pandas as pd

    frame = pd.DataFrame(X)

    def local(series: Any) -> Any:
        series = pd.to_datetime(series)
        if time_zone is not None:
            return series.dt.tz_convert(time_zone)
        return series

    ts = local(frame.iloc[:, 0])
    wall = ts
    if wall_clock_zone is not None:  # calendar parts on another zone's wall clock
        wall = (ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts).dt.tz_convert(wall_clock_zone)
    hour = wall.dt.hour.astype("float64").to_numpy()
    dow = (wall.dt.day_of_week + 1).astype("float64").to_numpy()  # ISO Monday=1
    month = wall.dt.month.astype("float64").to_numpy()
    cyc = {"hour": (hour, 24), "dow": (dow - 1.0, 7), "month": (month - 1.0, 12)}
    columns = []
    for feature in features:
        if feature == "hour":
            col = hour
        elif feature == "dow":
            col = dow
        elif feature == "month":
            col = month
        elif feature == "is_weekend":
            col = np.where(np.isnan(dow), np.nan, (dow >= 6).astype(np.float64))
        elif feature == "days_since":
            ref = local(frame.iloc[:, 1]) if has_reference else None
            delta = (ts - ref).to_numpy().astype("timedelta64[us]")
            micros = delta.astype(np.int64).astype(np.float64)
            col = np.where(np.isnat(delta), np.nan, micros / 86_400_000_000.0)
        else:
            base, fn = feature.rsplit("_", 1)
            value, period = cyc[base]
            angle = value * (2 * math.pi / period)
            col = np.sin(angle) if fn == "sin" else np.cos(angle)
        columns.append(np.asarray(col, dtype=np.float64))
    return np.column_stack(columns)


def embed(X: Any, keys: list[Any], matrix: np.ndarray, fallback: list[float]) -> np.ndarray:
    import pandas as pd

    index = {k: i for i, k in enumerate(keys)}
    numeric = bool(keys) and isinstance(keys[0], int)
    rows = []
    for v in pd.DataFrame(X).iloc[:, 0].astype("object"):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            rows.append(fallback)
            continue
        key = int(v) if numeric and not isinstance(v, str) else v
        i = index.get(key)
        rows.append(matrix[i] if i is not None else fallback)
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(fallback))


def names_out(transformer: Any, input_features: Any, names: list[str]) -> np.ndarray:
    return np.asarray(names, dtype=object)


def same_names(transformer: Any, input_features: Any) -> np.ndarray:
    """Intermediate steps: names are replaced by the last step of each column pipeline."""
    return np.asarray([] if input_features is None else list(input_features), dtype=object)


# -- building ---------------------------------------------------------------------------


def _ft(func: Any, **kw_args: Any) -> Any:
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(
        func, kw_args=kw_args or None, validate=False, feature_names_out=same_names
    )


def _policy_steps(column: str, state: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(input steps, output steps) of the column's value policy (none for format-1 states)."""
    policy = state.get("policy")
    if policy is None:
        return [], []
    first = [
        _ft(
            policy_in,
            column=column,
            nan=policy["nan"],
            inf=policy["inf"],
            bounds=policy.get("inf_bounds"),
        )
    ]
    return first, [_ft(policy_out, column=column)] if policy["null"] != "keep" else []


def _numeric_steps(column: str, state: dict[str, Any]) -> list[Any]:
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    before, after = _policy_steps(column, state)
    steps: list[Any] = [_ft(to_float), *before]
    for step in state["steps"]:
        kind = step["type"]
        if kind == "fill_null":
            steps.append(_ft(fill, value=step["value"]))
        elif kind == "standard":
            est = StandardScaler()
            est.mean_ = np.array([step["mean"]])
            est.scale_ = np.array([step["scale"]])
            est.var_ = np.array([step["var"]])
            est.n_features_in_, est.n_samples_seen_ = 1, 1
            steps.append(est)
        elif kind == "minmax":
            lo_hi = step["clip"]
            est = MinMaxScaler(clip=lo_hi is not None)
            if lo_hi is not None:
                est.feature_range = tuple(lo_hi)
            est.scale_ = np.array([step["scale"]])
            est.min_ = np.array([step["min"]])
            est.data_min_ = np.array([step["data_min"]])
            est.data_max_ = np.array([step["data_max"]])
            est.data_range_ = est.data_max_ - est.data_min_
            est.n_features_in_, est.n_samples_seen_ = 1, 1
            steps.append(est)
        elif kind == "robust":
            est = RobustScaler()
            est.center_ = np.array([step["center"]])
            est.scale_ = np.array([step["scale"]])
            est.n_features_in_ = 1
            steps.append(est)
        elif kind == "clip":
            steps.append(_ft(clip, lo=step["min"], hi=step["max"]))
        elif kind == "log1p":
            steps.append(_ft(log1p, shift=step["shift"]))
    return [*steps, *after]


def _column_pipeline(entry: dict[str, Any], tables: dict[str, Any]) -> tuple[Any, list[str]]:
    """The (unfitted-looking but complete) pipeline for one configured column and its inputs."""
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder

    column, kind, state = entry["column"], entry["steps"][0]["type"], entry["state"]
    names = list(entry["outputs"])
    inputs = [column]
    if kind in ("fill_null", "standard", "minmax", "robust", "clip", "log1p"):
        steps = _numeric_steps(column, state)
    elif kind == "passthrough":
        before, after = _policy_steps(column, state)
        steps = [_ft(to_float), *before, *after]
    elif kind == "onehot":
        vocabulary = list(state["vocabulary"])
        encoder = OneHotEncoder(
            categories=[vocabulary], handle_unknown="ignore", sparse_output=False
        )
        encoder.fit(np.array(vocabulary or [MISSING], dtype=object).reshape(-1, 1))
        union = FeatureUnion([("onehot", encoder), ("other", _ft(other, vocabulary=vocabulary))])
        steps = [_ft(to_category), union]
    elif kind == "ordinal":
        vocabulary = list(state["vocabulary"])
        encoder = OrdinalEncoder(
            categories=[vocabulary],
            handle_unknown="use_encoded_value",
            unknown_value=state["unknown_value"],
            encoded_missing_value=state["unknown_value"],
        )
        encoder.fit(np.array(vocabulary or [MISSING], dtype=object).reshape(-1, 1))
        steps = [_ft(to_category), encoder]
    elif kind == "frequency":
        table = dict(zip(state["vocabulary"], state["frequency"], strict=True))
        steps = [_ft(to_category), _ft(lookup, table=table, default=state["unknown_value"])]
    elif kind == "target":
        table = dict(zip(state["vocabulary"], state["encoding"], strict=True))
        steps = [_ft(to_category), _ft(lookup, table=table, default=state["prior"])]
    elif kind == "temporal":
        if state["reference"]:
            inputs.append(state["reference"])
        steps = [
            _ft(
                temporal,
                features=state["features"],
                time_zone=state["time_zone"],
                has_reference=bool(state["reference"]),
                wall_clock_zone=state.get("wall_clock_zone"),
            )
        ]
    elif kind == "embedding":
        table = tables[state["file"]]
        steps = [
            _ft(
                embed,
                keys=table["key"].to_list(),
                matrix=table["vector"].to_numpy(),
                fallback=[float(v) for v in state["fallback"]],
            )
        ]
    else:  # pragma: no cover - config validation rejects other kinds
        raise ValueError(kind)
    from sklearn.preprocessing import FunctionTransformer

    steps.append(
        FunctionTransformer(validate=False, feature_names_out=partial(names_out, names=names))
    )
    return Pipeline([(f"step{i}", s) for i, s in enumerate(steps)]), inputs


def to_sklearn(fitted: FittedTransform) -> Any:
    """A fitted ColumnTransformer equivalent to ``fitted`` (pandas DataFrame in, ndarray out)."""
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.frozen import FrozenEstimator

    parts = []
    for entry in fitted.state["columns"]:
        if entry["steps"][0]["type"] == "drop":
            continue
        pipeline, inputs = _column_pipeline(entry, fitted.tables)
        parts.append((entry["column"], FrozenEstimator(pipeline), inputs))
    ct = ColumnTransformer(
        parts, remainder="drop", sparse_threshold=0.0, verbose_feature_names_out=False
    )
    # "fitting" a ColumnTransformer of frozen pipelines only records the column layout
    sample = pd.DataFrame({c: pd.Series([None], dtype="object") for c in fitted.input_columns})
    for column, dtype in fitted.input_schema.items():
        if "float" in fitted.state["input_families"][column]:  # a number every policy takes
            sample[column] = pd.Series([1.0])
        elif dtype.startswith("Datetime"):
            sample[column] = pd.to_datetime(pd.Series([pd.Timestamp("2000-01-01", tz="UTC")]))
    ct.fit(sample)
    ct.mlpipe_version_ = fitted.version
    ct.mlpipe_output_columns_ = list(fitted.output_columns)
    return ct


def write_sklearn(fitted: FittedTransform, path: Path) -> Path:
    """Write the equivalent ColumnTransformer with joblib (atomically)."""
    import io

    import joblib

    from mlpipe_cli.artifacts.store import atomic_write_bytes

    buffer = io.BytesIO()
    joblib.dump(to_sklearn(fitted), buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
