"""The run ledger's opening record is synced and renamed on a thread (#19): it still lands
whole, before the closing record replaces it, and a run that never closes leaves it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlpipe_cli import ledger
from mlpipe_cli.io import atomic_outputs, staged_path


def _records(root: Path) -> tuple[list[dict], list[str]]:
    runs = root / "p" / ledger.RUNS_DIR
    names = sorted(p.name for p in runs.iterdir())
    records = [json.loads((runs / n).read_text()) for n in names if not n.startswith(".")]
    return records, [n for n in names if n.startswith(".")]


def test_opening_record_lands_even_if_the_run_never_closes(tmp_path: Path) -> None:
    with ledger.recording("validate", ["validate", "-q"]) as recorder:
        recorder.attach(tmp_path, "p")
    records, temps = _records(tmp_path)
    assert temps == []
    assert [r["status"] for r in records] == ["running"]
    assert records[0]["command"] == "validate"


def test_closing_record_replaces_the_opening_one(tmp_path: Path) -> None:
    for _ in range(5):  # the close follows right after the open: it must wait for it
        with ledger.recording("fit", ["fit"]) as recorder:
            recorder.attach(tmp_path, "p")
            recorder.finish(1, datetime.now(UTC))
    records, temps = _records(tmp_path)
    assert temps == []
    assert [(r["status"], r["exit_code"]) for r in records] == [("data_failed", 1)] * 5


def test_inside_an_output_group_the_record_is_published_with_the_group(tmp_path: Path) -> None:
    with ledger.recording("fit", ["fit"]) as recorder, atomic_outputs():
        recorder.attach(tmp_path, "p")
        assert recorder.path is not None
        assert staged_path(recorder.path) != recorder.path  # staged, not yet published
        assert not recorder.path.exists()
    records, temps = _records(tmp_path)
    assert temps == []
    assert [r["status"] for r in records] == ["running"]


def test_an_unwritable_ledger_warns_once_at_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / ledger.RUNS_DIR).write_text("a file where the directory should be")
    with ledger.recording("fit", ["fit"]) as recorder:
        recorder.attach(tmp_path, "p")
        assert "warning: run ledger not written" in capsys.readouterr().err
        recorder.finish(0, datetime.now(UTC))
    assert capsys.readouterr().err == ""  # once
