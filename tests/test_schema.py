"""`mlpipe schema`: infer, snapshot, diff (breaking vs compatible), export to pandera."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandera.polars as pa
import polars as pl
import pytest
import yaml

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.sample_data import generate
from mlpipe_cli.schema.contract import contract_document
from mlpipe_cli.schema.diff import diff_contracts
from tests.conftest import EXAMPLE_CONFIG, _repoint_paths


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = {}
    for fault in ("clean", "renamed-column", "out-of-range", "bad-dtype"):
        path = tmp_path_factory.mktemp(fault)
        generate(path, rows=1000, seed=3, faults=() if fault == "clean" else (fault,))
        out[fault] = path
    return out


@pytest.fixture
def config_path(tmp_path: Path, data: dict[str, Path]) -> Path:
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config = {k: config[k] for k in ("pipeline", "entity_keys", "sources")}
    config["artifact_dir"] = str(tmp_path / "artifacts")
    _repoint_paths(config, data["clean"])
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_infer_proposes_a_contract_the_data_passes(cli, tmp_path, data) -> None:
    out = tmp_path / "proposal.yaml"
    result = cli(
        "schema",
        "infer",
        "--data",
        data["clean"] / "users.parquet",
        "--source",
        "users",
        "--out",
        out,
        # the proposed path: is relative to the config it will be pasted into (below); without
        # -c that is the current directory, which only worked here when the checkout and the
        # temporary directory shared no parent (a clone under /tmp did: path doubled)
        "-c",
        tmp_path / "pasted.yaml",
    )
    assert result.exit_code == 0, result.stderr
    proposal = yaml.safe_load(out.read_text())
    columns = proposal["users"]["columns"]
    frame = pl.read_parquet(data["clean"] / "users.parquet")
    assert columns["user_id"] == {
        "dtype": "int64", "min": 1, "max": frame["user_id"].max(), "unique": True,
    }  # fmt: skip
    assert columns["age"]["nullable"] is True
    assert columns["signup_ts"] == {"dtype": "datetime", "timezone": "UTC"}
    assert columns["plan"]["allowed"] == ["enterprise", "free", "pro"]
    assert "allowed" not in columns["email"]  # high cardinality
    # the proposal pastes into a config and the same data passes it
    config = {"pipeline": "p", "artifact_dir": str(tmp_path / "a"), "sources": proposal}
    path = tmp_path / "pasted.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli("validate", "-c", path, "--no-publish").exit_code == 0


def test_snapshot_is_idempotent_and_diff_against_it(cli, tmp_path, config_path) -> None:
    first = cli("schema", "snapshot", "-c", config_path, "--json")
    assert first.exit_code == 0
    assert first.json()["created"] is True
    again = cli("schema", "snapshot", "-c", config_path, "--json")
    assert again.json() == {**first.json(), "created": False}
    same = cli("schema", "diff", "-c", config_path, "--json")
    assert same.exit_code == 0
    assert same.json()["changes"] == []

    config = yaml.safe_load(config_path.read_text())
    config["sources"]["orders"]["columns"]["revenue"]["max"] = 50  # narrowed: breaking
    config["sources"]["orders"]["columns"]["coupon"] = {"dtype": "string", "nullable": True}
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    result = cli("schema", "diff", "-c", config_path, "--json")
    assert result.exit_code == 1
    changes = {(c["column"], c["change"]): c["classification"] for c in result.json()["changes"]}
    assert changes == {
        ("revenue", "range_narrowed"): "breaking",
        ("coupon", "column_added"): "compatible",
    }
    snapshot_version = first.json()["version"]
    artifact = tmp_path / "artifacts" / "churn" / "schema" / snapshot_version
    # a pandera schema per source travels with the snapshot and loads back
    loaded = pa.DataFrameSchema.from_yaml((artifact / "orders.pandera.yaml").read_text())
    assert set(loaded.columns) == {
        "order_id",
        "user_id",
        "order_ts",
        "revenue",
        "product_id",
        "channel",
    }


def _source(**columns) -> dict:  # type: ignore[no-untyped-def]
    return {"pipeline": "p", "sources": {"s": {"path": "x.parquet", "columns": columns}}}


def _doc(tmp_path: Path, raw: dict) -> dict:
    config = load_config_text(yaml.safe_dump(raw), source_name="p.yaml", base_dir=tmp_path)
    return contract_document(config)


BASE = {
    "id": {"dtype": "int32"},
    "user_id": {"dtype": "int64"},
    "amount": {"dtype": "float64", "min": 0, "max": 100},
    "kind": {"dtype": "string", "allowed": ["a", "b"]},
    "note": {"dtype": "string", "nullable": True},
}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda c: c.pop("note"), [("note", "column_removed", True)]),
        (
            lambda c: c.__setitem__("userId", c.pop("user_id")),
            [("user_id", "column_renamed", True)],
        ),
        (lambda c: c["id"].__setitem__("dtype", "int64"), [("id", "dtype_widened", False)]),
        (lambda c: c["id"].__setitem__("dtype", "string"), [("id", "dtype_changed", True)]),
        (
            lambda c: c["amount"].__setitem__("dtype", "float32"),
            [("amount", "dtype_changed", True)],
        ),
        (lambda c: c["note"].__setitem__("nullable", False), [("note", "nullable_removed", True)]),
        (lambda c: c["id"].__setitem__("nullable", True), [("id", "nullable_allowed", False)]),
        (lambda c: c["kind"].__setitem__("allowed", ["a"]), [("kind", "allowed_narrowed", True)]),
        (
            lambda c: c["kind"].__setitem__("allowed", ["a", "b", "c"]),
            [("kind", "allowed_widened", False)],
        ),
        (lambda c: c["amount"].__setitem__("max", 50), [("amount", "range_narrowed", True)]),
        (lambda c: c["amount"].__setitem__("max", 500), [("amount", "range_widened", False)]),
        (lambda c: c["amount"].pop("min"), [("amount", "range_widened", False)]),
        (lambda c: c["amount"].__setitem__("gt", 0), [("amount", "range_narrowed", True)]),
        (
            lambda c: c.__setitem__("extra", {"dtype": "int64", "nullable": True}),
            [("extra", "column_added", False)],
        ),
        (lambda c: c.__setitem__("extra", {"dtype": "int64"}), [("extra", "column_added", True)]),
        (lambda c: c["note"].__setitem__("regex", "x+"), [("note", "regex_changed", True)]),
    ],
)
def test_diff_classification(tmp_path, edit, expected) -> None:
    old = _doc(tmp_path, _source(**copy.deepcopy(BASE)))
    columns = copy.deepcopy(BASE)
    edit(columns)
    new = _doc(tmp_path, _source(**columns))
    got = [(c.column, c.change, c.breaking) for c in diff_contracts(old, new)]
    assert got == expected


def test_diff_between_two_files_exit_codes(cli, tmp_path) -> None:
    old_path, new_path = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old_path.write_text(yaml.safe_dump(_source(**BASE)))
    widened = copy.deepcopy(BASE)
    widened["amount"]["max"] = 1000
    new_path.write_text(yaml.safe_dump(_source(**widened)))
    ok = cli("schema", "diff", old_path, new_path)
    assert ok.exit_code == 0
    assert "0 breaking, 1 compatible" in ok.stdout
    back = cli("schema", "diff", new_path, old_path)
    assert back.exit_code == 1
    assert "BREAKING" in back.stdout


@pytest.mark.parametrize(
    ("fault", "source", "expected"),
    [
        ("clean", "orders", []),
        ("renamed-column", "users", [("user_id", "column_renamed")]),
        ("out-of-range", "orders", [("revenue", "range_narrowed")]),
        ("bad-dtype", "users", [("age", "dtype_changed")]),
    ],
)
def test_diff_data_against_the_saved_contract(
    cli, config_path, data, fault, source, expected
) -> None:
    assert cli("schema", "snapshot", "-c", config_path).exit_code == 0
    result = cli("schema", "diff", "-c", config_path, "--data", data[fault] / f"{source}.parquet",
                 "--source", source, "--json")  # fmt: skip
    assert result.exit_code == (1 if expected else 0)
    got = [
        (c["column"], c["change"])
        for c in result.json()["changes"]
        if c["classification"] == "breaking"
    ]
    assert got == expected
    if fault == "renamed-column":
        assert "found 'userId' — renamed upstream?" in result.json()["changes"][0]["detail"]


def test_export_pandera_round_trip_agrees_with_validate(cli, tmp_path, config_path, data) -> None:
    out = tmp_path / "users.yaml"
    result = cli("schema", "export", "--format", "pandera", "--source", "users", "-c", config_path,
                 "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    text = out.read_text()
    assert "str_matches: ^(?:" in text  # full-match anchoring survives the export
    schema = pa.DataFrameSchema.from_yaml(text)
    schema.validate(pl.read_parquet(data["clean"] / "users.parquet"))
    with pytest.raises(pa.errors.SchemaErrors):  # age stored as strings
        schema.validate(pl.read_parquet(data["bad-dtype"] / "users.parquet"), lazy=True)
    orders = tmp_path / "orders.yaml"
    assert (
        cli("schema", "export", "--source", "orders", "-c", config_path, "--out", orders).exit_code
        == 0
    )
    schema = pa.DataFrameSchema.from_yaml(orders.read_text())
    schema.validate(pl.read_parquet(data["clean"] / "orders.parquet"))
    with pytest.raises(pa.errors.SchemaErrors) as caught:  # negative revenue
        schema.validate(pl.read_parquet(data["out-of-range"] / "orders.parquet"), lazy=True)
    assert "greater_than_or_equal_to(0.0)" in caught.value.failure_cases["check"].to_list()
    both = cli("schema", "export", "-c", config_path, "--out", tmp_path / "all")
    assert both.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "all").iterdir()) == [
        "labels.pandera.yaml", "orders.pandera.yaml", "users.pandera.yaml",
    ]  # fmt: skip


def test_help_has_examples(cli) -> None:
    for command in (["validate"], ["schema", "infer"], ["schema", "snapshot"], ["schema", "diff"],
                    ["schema", "export"]):  # fmt: skip
        result = cli(*command, "--help")
        assert result.exit_code == 0
        assert "Example: mlpipe " in result.stdout


def test_export_json_and_artifact_dir_and_infer_accepts_shared_options(
    cli, tmp_path, config_path, data
) -> None:
    out = tmp_path / "users.yaml"
    written = cli("schema", "export", "--source", "users", "-c", config_path, "--artifact-dir",
                  tmp_path / "elsewhere", "--out", out, "--json")  # fmt: skip
    assert written.exit_code == 0, written.stderr
    assert written.json() == {"format": "pandera", "sources": ["users"], "files": [str(out)]}
    printed = cli("schema", "export", "--format", "json", "--source", "users", "-c", config_path,
                  "--json")  # fmt: skip
    assert printed.exit_code == 0, printed.stderr
    doc = printed.json()
    assert doc["files"] == []
    assert doc["sources"] == ["users"]
    assert list(json.loads(doc["content"])["sources"]) == ["users"]
    quiet = cli("schema", "export", "--source", "users", "-c", config_path, "--out",
                tmp_path / "q.yaml", "-q")  # fmt: skip
    assert quiet.exit_code == 0
    assert quiet.stdout == ""
    assert quiet.stderr == ""

    inferred = cli("schema", "infer", "--data", data["clean"] / "users.parquet", "--source",
                   "users", "-c", tmp_path / "no-such.yaml", "--artifact-dir", tmp_path / "a",
                   "--json")  # fmt: skip
    assert inferred.exit_code == 0, inferred.stderr
    assert inferred.json()["source"] == "users"
    assert not (tmp_path / "a").exists()
