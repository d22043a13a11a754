"""Progress and summary lines: what the core reports, what each command prints where.

* the reporter (``mlpipe_cli.progress``): silent without a renderer, totals known up front
  (training-set: feature groups, partitions advancing within each), tasks closed on error;
* the transcript of every long command in pipe mode: one summary line on stderr in a
  pinned format whose counts match the data (read back with Polars), no escape codes;
* on a terminal (``MLPIPE_FORCE_TTY=1``) the bars are drawn on stderr only, and ``-q`` and
  ``--json`` silence them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from conftest import EXAMPLE_CONFIG, _repoint_paths

from mlpipe_cli import progress
from mlpipe_cli.cli.common import format_rate, format_seconds, summary_line
from mlpipe_cli.config import load_config

ANSI = re.compile(r"\x1b\[")
AS_OF = "2026-07-01T00:00:00Z"


# -- a renderer that records what it was asked to draw ----------------------------------


@dataclass
class Drawn:
    description: str
    total: float | None
    unit: str
    updates: list[tuple[float, float | None, str]]
    open: bool = True

    @property
    def completed(self) -> float:
        return self.updates[-1][0] if self.updates else 0.0


class Recorder:
    """A real ``progress.Renderer``: keeps every task and update instead of drawing."""

    def __init__(self) -> None:
        self.tasks: list[Drawn] = []

    def add(self, description: str, total: float | None, unit: str) -> int:
        self.tasks.append(Drawn(description, total, unit, []))
        return len(self.tasks) - 1

    def update(self, handle: int, *, completed: float, total: float | None, detail: str) -> None:
        self.tasks[handle].total = total
        self.tasks[handle].updates.append((completed, total, detail))

    def remove(self, handle: int) -> None:
        self.tasks[handle].open = False

    def named(self, description: str) -> list[Drawn]:
        return [t for t in self.tasks if t.description == description]


# -- the reporter -------------------------------------------------------------------------


def test_without_a_renderer_tasks_count_but_draw_nothing() -> None:
    progress.advance(5)  # no open task: a no-op, not an error
    progress.note("nothing open")
    with progress.task("work", total=3, unit="steps") as bar:
        assert progress.current() is bar
        bar.advance(2)
        progress.advance()
        assert bar.completed == 3
    assert progress.current() is None


def test_track_counts_items_and_lets_each_item_advance_by_fractions() -> None:
    recorder = Recorder()
    with progress.reporting(recorder):
        for _ in progress.track(["a", "b", "c"], "parts", unit="groups"):
            progress.advance(0.5)
            progress.advance(0.5)
    (drawn,) = recorder.tasks
    assert (drawn.total, drawn.unit, drawn.open) == (3, "groups", False)
    assert [u[0] for u in drawn.updates] == [0.5, 1, 1, 1.5, 2, 2, 2.5, 3, 3]


def test_completed_never_passes_the_total() -> None:
    recorder = Recorder()
    with progress.reporting(recorder), progress.task("x", total=2) as bar:
        bar.advance(1 / 3)
        bar.advance(1 / 3)
        bar.advance(1 / 3)  # 1.0000000000000002 in floats
        bar.advance(5)
    assert max(u[0] for u in recorder.tasks[0].updates) == 2


def test_note_and_advance_reach_the_innermost_task_and_tasks_close_on_error() -> None:
    recorder = Recorder()

    def fail_halfway() -> None:
        with progress.task("inner", total=4):
            progress.note("working")
            progress.advance(3)
            raise ValueError("boom")

    with progress.reporting(recorder), progress.task("outer", total=2) as outer:
        with pytest.raises(ValueError, match="boom"):
            fail_halfway()
        outer.advance()
    outer_drawn, inner_drawn = recorder.tasks
    assert inner_drawn.updates == [(0, 4, "working"), (3, 4, "working")]
    assert outer_drawn.updates == [(1, 2, "")]
    assert not inner_drawn.open
    assert not outer_drawn.open


def test_an_abandoned_track_leaves_no_stale_task_behind() -> None:
    recorder = Recorder()
    with progress.reporting(recorder):
        for item in progress.track([1, 2, 3], "loop"):
            if item == 2:
                break
        # the generator is closed when its last reference goes; the loop variable and the
        # for-loop held it, both gone now
        assert progress.current() is None
    assert not recorder.tasks[0].open


def test_another_thread_does_not_draw_into_this_runs_renderer() -> None:
    recorder = Recorder()
    seen: list[Any] = []

    def elsewhere() -> None:
        with progress.task("other thread", total=1) as bar:
            seen.append(bar)
            bar.advance()

    with progress.reporting(recorder):
        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    assert len(seen) == 1
    assert recorder.tasks == []


def test_training_set_reports_a_total_of_feature_groups_with_partitions_within(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlpipe_cli.features import engine
    from mlpipe_cli.ops.training_set import build_training_set

    # several partitions per group on the small sample (the default is 500k rows)
    monkeypatch.setattr(engine, "PARTITION_ROWS", 4_000)
    config = load_config(project)
    groups = {(f.source, f.inclusive, json.dumps(f.join, sort_keys=True)) for f in config.features}
    recorder = Recorder()
    with progress.reporting(recorder):
        result = build_training_set(config, out=tmp_path / "train.parquet")
    (features,) = recorder.named("features")
    assert (features.total, features.unit) == (len(groups), "groups")
    assert features.completed == len(groups)
    done = [u[0] for u in features.updates]
    assert done == sorted(done)  # never backwards
    assert any(not float(d).is_integer() for d in done), "partitions advance within a group"
    assert {u[2].split(" by ")[0] for u in features.updates if u[2]} == {s for s, _, _ in groups}
    (inputs,) = recorder.named("validate inputs")
    assert inputs.total is not None
    assert inputs.completed == inputs.total
    assert result.validated
    assert {f"{name}: row checks" for name in result.validated} <= {u[2] for u in inputs.updates}
    assert all(not t.open for t in recorder.tasks)


# -- the summary line ---------------------------------------------------------------------


def test_summary_line_format_is_pinned() -> None:
    assert summary_line(
        "training-set", rows=100_000, seconds=1.9, detail=" x 8 features", output="train.parquet"
    ) == ("training-set: 100,000 rows x 8 features in 1.9 s (52,600 rows/s) -> train.parquet")
    assert summary_line(
        "validate", rows=20, seconds=0.5, detail=" from 1 source", status="failed"
    ) == ("validate: 20 rows from 1 source in 0.50 s (40 rows/s), failed")
    assert summary_line("materialize", rows=1_000, unit="entities", seconds=0.4) == (
        "materialize: 1,000 entities in 0.40 s (2,500 entities/s)"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0412, "0.04 s"), (1.94, "1.9 s"), (59.94, "59.9 s"), (125.2, "2m 05s"), (3720, "1h 02m")],
)
def test_durations_read_like_a_clock(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("count", "seconds", "text"),
    [
        (100_000, 1.9, "52,600"),
        (999, 1.0, "999"),
        (1_234_567, 1.0, "1,230,000"),
        (5, 2.0, "2.5"),
        (0, 1.0, "0"),
        (10, 0.0, "-"),
    ],
)
def test_rates_keep_three_significant_digits(count: int, seconds: float, text: str) -> None:
    assert format_rate(count, seconds) == text


# -- transcripts: every long command, piped --------------------------------------------


@dataclass
class Transcript:
    code: int
    stdout: str
    stderr: str


def run_cli(*args: Any, tty: bool = False) -> Transcript:
    """`mlpipe ARGS` in this process, stdout and stderr captured as pipes (not terminals);
    ``tty`` makes mlpipe treat them as terminals (MLPIPE_FORCE_TTY=1)."""
    from mlpipe_cli.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    before = os.environ.get("MLPIPE_FORCE_TTY")
    os.environ["MLPIPE_FORCE_TTY"] = "1" if tty else "0"
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = run([str(a) for a in args])
    finally:
        if before is None:
            del os.environ["MLPIPE_FORCE_TTY"]
        else:
            os.environ["MLPIPE_FORCE_TTY"] = before
    return Transcript(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, sample_data_dir: Path) -> dict:
    """The example pipeline run once, piped: each command's transcript and its files."""
    root = tmp_path_factory.mktemp("transcripts")
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["artifact_dir"] = str(root / "artifacts")
    _repoint_paths(config, sample_data_dir)
    path = root / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    c = ["-c", path]
    train, features, html = root / "train.parquet", root / "features.parquet", root / "d.html"
    steps = {
        "validate": ["validate", *c, "--save-profile"],
        "training-set": ["training-set", *c, "--out", train],
        "fit": ["fit", *c, "--data", train],
        "transform": ["transform", *c, "--data", train, "--out", features],
        "materialize": ["materialize", *c, "--as-of", AS_OF],
        "psi-report": ["psi-report", *c, "--current", train, "--html", html],
    }
    runs = {}
    for name, args in steps.items():
        runs[name] = run_cli(*args)
        assert runs[name].code == 0, (name, runs[name].stderr)
    return {
        "root": root,
        "config": path,
        "runs": runs,
        "train": train,
        "features": features,
        "html": html,
        "sample": sample_data_dir,
    }


NUMBER = r"[\d,.]+"


def _summary(stderr: str, command: str) -> re.Match[str]:
    lines = [line for line in stderr.splitlines() if line.startswith(f"{command}: ")]
    assert len(lines) == 1, stderr  # exactly one summary line
    assert stderr.splitlines()[-1] == lines[0], "the summary ends the command's output"
    match = re.fullmatch(
        rf"{command}: (?P<rows>[\d,]+) (?P<unit>rows|entities)(?P<detail>.*?) in "
        rf"(?P<time>{NUMBER} s|\d+m \d\ds) \((?P<rate>{NUMBER}) (?P=unit)/s\)"
        rf"(?:, (?P<status>[^>]+?))?(?: -> (?P<output>.+))?",
        lines[0],
    )
    assert match, lines[0]
    return match


def _rows(match: re.Match[str]) -> int:
    return int(match["rows"].replace(",", ""))


def test_every_long_command_ends_with_one_summary_line_on_stderr(pipeline: dict) -> None:
    for name, run in pipeline["runs"].items():
        _summary(run.stderr, name)
        assert f"{name}: " not in run.stdout, name  # never on stdout: results stay parseable
        assert not ANSI.search(run.stdout + run.stderr), name  # piped: plain text only


def test_validate_summary_counts_every_sources_rows(pipeline: dict) -> None:
    config = load_config(pipeline["config"])
    rows = sum(pl.read_parquet(s.path).height for s in config.sources.values())
    match = _summary(pipeline["runs"]["validate"].stderr, "validate")
    assert _rows(match) == rows
    assert match["detail"] == f" from {len(config.sources)} sources"
    assert match["status"] == "passed"
    assert re.fullmatch(r"validation/\d{4}-[0-9a-f]{12}", match["output"])


def test_training_set_summary(pipeline: dict) -> None:
    config = load_config(pipeline["config"])
    frame = pl.read_parquet(pipeline["train"])
    match = _summary(pipeline["runs"]["training-set"].stderr, "training-set")
    assert _rows(match) == frame.height == pl.read_parquet(config.training_set.spine).height
    assert match["detail"] == f" x {len(config.features)} features"
    assert match["output"] == str(pipeline["train"])
    assert pipeline["runs"]["training-set"].stdout.startswith(f"wrote {pipeline['train']}\n")


def test_fit_summary(pipeline: dict) -> None:
    match = _summary(pipeline["runs"]["fit"].stderr, "fit")
    assert _rows(match) == pl.read_parquet(pipeline["train"]).height
    config = load_config(pipeline["config"])
    inputs = [c for c, steps in config.transforms.columns.items() if steps[0].type != "drop"]
    assert match["detail"] == f" x {len(inputs)} columns"
    assert re.fullmatch(r"transform/\d{4}-[0-9a-f]{12}", match["output"])


def test_transform_summary(pipeline: dict) -> None:
    match = _summary(pipeline["runs"]["transform"].stderr, "transform")
    written = pl.read_parquet(pipeline["features"])
    train = pl.read_parquet(pipeline["train"])
    assert _rows(match) == written.height == train.height
    outputs = int(re.fullmatch(r" x (\d+) features", match["detail"])[1])  # type: ignore[index]
    state = json.loads(
        next((pipeline["root"] / "artifacts").glob("*/transform/*/state.json")).read_text()
    )
    assert outputs == len(state["output_columns"])
    assert set(state["output_columns"]) <= set(written.columns)
    assert match["output"] == str(pipeline["features"])


def test_materialize_summary(pipeline: dict) -> None:
    match = _summary(pipeline["runs"]["materialize"].stderr, "materialize")
    users = pl.read_parquet(pipeline["sample"] / "users.parquet")
    assert match["unit"] == "entities"
    assert _rows(match) == users.get_column("user_id").n_unique()
    assert match["output"].startswith("sqlite:")
    # the rate is the count over the time, both as printed (3 significant digits): the printed
    # time is rounded, so the rate lies between the counts over its rounding bounds
    text = match["time"].removesuffix(" s")
    seconds = float(text)
    half = 0.5 * 10 ** -(len(text.split(".")[1]) if "." in text else 0)
    rate = float(match["rate"].replace(",", ""))
    low, high = _rows(match) / (seconds + half), _rows(match) / max(seconds - half, 1e-9)
    assert low * 0.995 <= rate <= high * 1.005


def test_psi_report_summary(pipeline: dict) -> None:
    match = _summary(pipeline["runs"]["psi-report"].stderr, "psi-report")
    assert _rows(match) == pl.read_parquet(pipeline["train"]).height
    assert match["status"] == "no drift"
    assert match["output"] == str(pipeline["html"])
    assert pipeline["html"].is_file()


def test_the_stale_verdict_is_said_once(pipeline: dict) -> None:
    result = run_cli(
        "materialize", "-c", pipeline["config"], "--check-freshness", "--max-age", "1h"
    )
    assert result.code == 1, result.stderr
    assert (result.stdout + result.stderr).count("STALE") == 1
    assert result.stderr.startswith("error: STALE: live version ")


# -- terminals: bars on stderr only, silenced by -q and --json ----------------------------


def test_on_a_terminal_bars_are_drawn_on_stderr_and_cleared_before_the_summary(
    pipeline: dict,
) -> None:
    config = load_config(pipeline["config"])
    groups = {(f.source, f.inclusive, json.dumps(f.join, sort_keys=True)) for f in config.features}
    out = pipeline["root"] / "tty.parquet"
    result = run_cli("training-set", "-c", pipeline["config"], "--out", out, tty=True)
    assert result.code == 0, result.stderr
    assert ANSI.search(result.stderr)
    assert f"/{len(groups)} groups" in result.stderr  # a total, never `12/?`
    assert "validate inputs" in result.stderr
    assert "groups" not in result.stdout  # bars never reach stdout
    summary = result.stderr.rsplit("\r", 1)[-1]  # what the terminal shows after the bars
    assert _summary(summary, "training-set")


@pytest.mark.parametrize("command", ["validate", "materialize", "psi-report", "transform"])
def test_each_command_draws_its_bar_on_a_terminal(pipeline: dict, command: str) -> None:
    root, c = pipeline["root"], ["-c", pipeline["config"]]
    args = {
        "validate": ["validate", *c, "--source", "orders"],
        "materialize": ["materialize", *c, "--as-of", AS_OF],
        "psi-report": ["psi-report", *c, "--current", pipeline["train"]],
        "transform": [
            "transform",
            *c,
            "--data",
            pipeline["train"],
            "--out",
            root / "tty-features.parquet",
        ],
    }[command]
    bar = {
        "validate": "/1 sources",
        "materialize": " entities",
        "psi-report": " rows",
        "transform": "/3 steps",
    }[command]
    result = run_cli(*args, tty=True)
    assert result.code == 0, result.stderr
    drawn = result.stderr.rsplit("\r", 1)[0]
    assert "\x1b[2K" in drawn, drawn[-500:]
    assert bar in drawn, drawn[-500:]


def test_quiet_silences_bars_and_summary_on_a_terminal(pipeline: dict) -> None:
    out = pipeline["root"] / "quiet.parquet"
    result = run_cli("training-set", "-c", pipeline["config"], "--out", out, "-q", tty=True)
    assert result.code == 0
    assert (result.stdout, result.stderr) == ("", "")


def test_json_is_one_document_and_no_bars_or_summary_on_a_terminal(pipeline: dict) -> None:
    out = pipeline["root"] / "json.parquet"
    result = run_cli("training-set", "-c", pipeline["config"], "--out", out, "--json", tty=True)
    assert result.code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["rows"] == pl.read_parquet(out).height
    assert document["seconds"] > 0
    assert result.stderr == ""


@pytest.mark.parametrize("command", ["validate", "fit", "transform", "psi-report"])
def test_json_documents_carry_their_seconds(pipeline: dict, command: str) -> None:
    root, c = pipeline["root"], ["-c", pipeline["config"]]
    args = {
        "validate": ["validate", *c, "--source", "users"],
        "fit": ["fit", *c, "--data", pipeline["train"]],
        "transform": [
            "transform",
            *c,
            "--data",
            pipeline["train"],
            "--out",
            root / "json-features.parquet",
        ],
        "psi-report": ["psi-report", *c, "--current", pipeline["train"]],
    }[command]
    result = run_cli(*args, "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["seconds"] > 0
    assert f"{command}: " not in result.stderr
