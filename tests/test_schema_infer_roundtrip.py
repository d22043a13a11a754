"""`mlpipe schema infer` proposes a contract that the data it was inferred from passes.

A property over messy columns (nulls, NaN, ±inf, extreme integers, non-ASCII strings, time
zones, multi-part directories): infer, paste the proposal into a config, validate the same
data -> exit 0. Before the fix a float column with NaN/inf got a finite ``min``/``max``, and
NaN and inf fail every range check, so the data failed its own contract.
"""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROWS = st.integers(min_value=0, max_value=25)
NAMES = ["Zoë", "ß", "名前", "a", "", "tab\tx", "0", "null", "yes"]  # YAML-hostile and non-ASCII


def _floats(width: int) -> st.SearchStrategy[float | None]:
    return st.one_of(
        st.none(),
        st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
        st.floats(width=width),  # NaN and ±inf included
    )


def _column(kind: str, rows: int) -> st.SearchStrategy[pl.Series]:
    if kind == "float64":
        values = st.lists(_floats(64), min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Float64))
    if kind == "float32":
        values = st.lists(_floats(32), min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Float32))
    if kind == "int64":
        ints = st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3))
        values = st.lists(ints, min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Int64))
    if kind == "int32_unique":  # distinct, no nulls: proposed `unique: true`
        values = st.lists(
            st.integers(-(2**31), 2**31 - 1), min_size=rows, max_size=rows, unique=True
        )
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Int32))
    if kind == "string_small":  # few distinct values: proposed `allowed`
        values = st.lists(
            st.one_of(st.none(), st.sampled_from(NAMES)), min_size=rows, max_size=rows
        )
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.String))
    if kind == "Zoë's text":  # any text, non-ASCII column name
        values = st.lists(st.one_of(st.none(), st.text(max_size=6)), min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.String))
    if kind == "category":
        values = st.lists(
            st.one_of(st.none(), st.sampled_from(NAMES)), min_size=rows, max_size=rows
        )
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Categorical))
    if kind == "flag":
        values = st.lists(st.one_of(st.none(), st.booleans()), min_size=rows, max_size=rows)
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Boolean))
    moments = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))
    values = st.lists(st.one_of(st.none(), moments), min_size=rows, max_size=rows)
    if kind == "ts_naive":
        return values.map(lambda v: pl.Series(kind, v, dtype=pl.Datetime("us")))
    zone = "UTC" if kind == "ts_utc" else "Asia/Kolkata"

    def aware(v: list[datetime | None]) -> pl.Series:
        moments = [None if m is None else m.replace(tzinfo=UTC) for m in v]
        return pl.Series(kind, moments, dtype=pl.Datetime("us", "UTC")).dt.convert_time_zone(zone)

    return values.map(aware)


KINDS = ["float64", "float32", "int64", "int32_unique", "string_small", "Zoë's text",
         "category", "flag", "ts_naive", "ts_utc", "ts_kolkata"]  # fmt: skip


@st.composite
def frames(draw: st.DrawFn) -> tuple[pl.DataFrame, bool]:
    rows = draw(ROWS)
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=6, unique=True))
    frame = pl.DataFrame([draw(_column(kind, rows)) for kind in kinds])
    return frame, draw(st.booleans())


def _write(frame: pl.DataFrame, root: Path, parts: bool) -> Path:
    if not parts or frame.height < 2:
        path = root / "data.parquet"
        frame.write_parquet(path)
        return path
    directory = root / "parts"
    directory.mkdir()
    half = frame.height // 2
    frame.head(half).write_parquet(directory / "part-0.parquet")
    frame.tail(frame.height - half).write_parquet(directory / "part-1.parquet")
    return directory


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=frames())
def test_an_inferred_contract_passes_the_data_it_was_inferred_from(cli, drawn) -> None:  # type: ignore[no-untyped-def]
    frame, parts = drawn
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _write(frame, root, parts)
        config = root / "mlpipe.yaml"  # not there yet: the proposal is pasted into it below
        proposal_file = root / "proposal.yaml"
        inferred = cli("schema", "infer", "--data", data, "--source", "messy",
                       "--out", proposal_file, "-c", config)  # fmt: skip
        assert inferred.exit_code == 0, inferred.stderr
        proposal = yaml.safe_load(proposal_file.read_text(encoding="utf-8"))
        config.write_text(
            yaml.safe_dump(
                {"pipeline": "rt", "artifact_dir": str(root / "a"), "sources": proposal}
            ),
            encoding="utf-8",
        )
        validated = cli("validate", "-c", config, "--no-publish", "--json")
        assert validated.exit_code == 0, (proposal, validated.stdout[-2000:], validated.stderr)
        columns = proposal["messy"]["columns"]
        for name in frame.columns:  # strict where the data allows: every column is listed
            assert name in columns, (name, proposal)


def test_a_float_column_with_nan_and_inf_gets_no_range_but_a_comment(cli, tmp_path: Path) -> None:
    amounts = [1.05, math.nan, 299.95, None, math.inf, -math.inf, 42.0]
    frame = pl.DataFrame({"amount": amounts, "qty": [1, 2, 3, 4, 5, 6, 7]})
    frame.write_parquet(tmp_path / "t.parquet")
    result = cli("schema", "infer", "--data", tmp_path / "t.parquet", "--source", "t",
                 "-c", tmp_path / "c.yaml")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("amount:"))
    # 1 NaN + 2 inf counted by hand; the finite range is still shown, as a comment
    assert line.strip() == (
        "amount: {dtype: float64, nullable: true}  # 3 NaN/inf values: no min/max, as NaN and "
        "inf fail every range check; finite values span 1.05..299.95"
    )
    columns = yaml.safe_load(result.stdout)["t"]["columns"]
    assert columns["amount"] == {"dtype": "float64", "nullable": True}
    assert columns["qty"] == {"dtype": "int64", "min": 1, "max": 7, "unique": True}  # still strict


def test_infer_writes_non_ascii_as_utf8_yaml(cli, tmp_path: Path) -> None:
    pl.DataFrame({"名前": ["Zoë", "Łódź", None]}).write_parquet(tmp_path / "n.parquet")
    out = tmp_path / "n.yaml"
    result = cli("schema", "infer", "--data", tmp_path / "n.parquet", "--source", "n",
                 "--out", out, "-c", tmp_path / "c.yaml")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = out.read_text(encoding="utf-8")
    assert "名前: {dtype: string, nullable: true, allowed: [Zoë, Łódź]}" in text
    assert "\\x" not in text
    assert "\\u" not in text
    assert yaml.safe_load(text)["n"]["columns"]["名前"]["allowed"] == ["Zoë", "Łódź"]


@pytest.mark.parametrize("spelling", ["same", "dot-slash", "symlink", "env"])
def test_infer_refuses_to_overwrite_the_config(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    pl.DataFrame({"user_id": [1, 2, 3]}).write_parquet(tmp_path / "labels.parquet")
    config = tmp_path / "mlpipe.yaml"
    config.write_text("pipeline: p\nsources: {}\n", encoding="utf-8")
    before = config.read_bytes()
    monkeypatch.chdir(tmp_path)
    out: Any = "mlpipe.yaml"
    extra: list[str] = []
    if spelling == "dot-slash":
        out = "./mlpipe.yaml"
    elif spelling == "symlink":
        (tmp_path / "link.yaml").symlink_to(config)
        out = "link.yaml"
    elif spelling == "env":  # the config named by MLPIPE_CONFIG, from another directory
        monkeypatch.setenv("MLPIPE_CONFIG", str(config))
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        out = "../mlpipe.yaml"
    result = cli("schema", "infer", "--data", tmp_path / "labels.parquet", "--out", out, *extra)
    assert result.exit_code == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "is also an input" in lines[0], lines[0]
    assert config.read_bytes() == before


def test_infer_may_write_a_config_that_does_not_exist_yet(cli, tmp_path: Path) -> None:
    pl.DataFrame({"user_id": [1, 2, 3]}).write_parquet(tmp_path / "labels.parquet")
    config = tmp_path / "new.yaml"
    result = cli("schema", "infer", "--data", tmp_path / "labels.parquet", "--out", config,
                 "-c", config)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "user_id: {dtype: int64, min: 1, max: 3, unique: true}" in config.read_text()
