"""`mlpipe init`: write a ready-to-run project from a packaged example (like `dbt init`).

A project is a directory with ``mlpipe.yaml`` (every key commented), the sample data under
``data/sample/``, a ``Makefile`` of the pipeline's steps, ``train_model.py`` (the model file
``mlpipe model register`` needs) and a ``.gitignore`` for everything the pipeline produces.
Every command then works from that directory with no ``-c``.

Nothing is ever overwritten: a non-empty directory is refused unless ``force``, and even then
files that already exist are kept (and reported). Each file appears atomically: it is written
to a temporary sibling and hard-linked into place, which fails instead of replacing a file that
appeared in the meantime.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpipe_cli.argnames import arg_name, given
from mlpipe_cli.errors import InputError, UsageError
from mlpipe_cli.scaffold import EXAMPLES, TEMPLATES, template_text

DEFAULT_ROWS = 20_000
SAMPLE_DIR = Path("data") / "sample"


@dataclass(frozen=True)
class InitResult:
    project_dir: Path
    example: str
    written: list[Path] = field(default_factory=list)  # relative to project_dir
    kept: list[Path] = field(default_factory=list)  # existing files left untouched
    sample_rows: dict[str, int] = field(default_factory=dict)  # table -> rows written

    @property
    def wrote_all_sample_data(self) -> bool:
        from mlpipe_cli.sample_data import TABLES

        return set(self.sample_rows) == set(TABLES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "project_dir": str(self.project_dir),
            "example": self.example,
            "written": [str(p) for p in self.written],
            "kept": [str(p) for p in self.kept],
            "sample_rows": self.sample_rows,
        }


def init(
    project_dir: Path | str,
    *,
    example: str = "churn",
    rows: int = DEFAULT_ROWS,
    seed: int = 42,
    force: bool = False,
    sample_data: bool = True,
) -> InitResult:
    """Scaffold ``project_dir``; raise UsageError (exit 2) for a non-empty dir without force."""
    if example not in EXAMPLES:
        raise UsageError(f"unknown example {example!r} (choose from {', '.join(EXAMPLES)})")
    project_dir = Path(project_dir)
    _check_target(project_dir, force=force)
    if sample_data:
        _check_sample_tables(project_dir)
    if sample_data and rows < 100:
        # checked before anything is written, so a bad --rows leaves no half-made project
        raise UsageError(f"{arg_name('rows')} must be at least 100, got {rows}")
    try:
        project_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot create {project_dir}: a file is in the way") from None
    except PermissionError:
        raise InputError(f"no permission to create {project_dir}") from None

    result = InitResult(project_dir=project_dir, example=example)
    for stored, target in TEMPLATES.items():
        _place_text(result, Path(target), template_text(example, stored))
    if sample_data:
        _write_sample_data(result, rows=rows, seed=seed)
    return result


def _check_target(project_dir: Path, *, force: bool) -> None:
    if not project_dir.exists():
        return
    if not project_dir.is_dir():
        raise UsageError(f"{project_dir} exists and is not a directory")
    if force:
        return
    if any(project_dir.iterdir()):
        raise UsageError(
            f"{project_dir} is not empty; choose a new directory, "
            f"or pass {given('force', True)} to add the missing files (existing files are kept)"
        )


def _check_sample_tables(project_dir: Path) -> None:
    """Refuse to complete a partial data/sample/: the tables are generated together (users
    in orders and labels exist in users), so a regenerated table next to a kept one from
    another run (other --rows or --seed) would be sample data that does not join."""
    from mlpipe_cli.sample_data import TABLES

    present = [t for t in TABLES if (project_dir / SAMPLE_DIR / f"{t}.parquet").exists()]
    if present and len(present) < len(TABLES):
        missing = [t for t in TABLES if t not in present]
        raise UsageError(
            f"{SAMPLE_DIR}/ has {', '.join(present)} but not {', '.join(missing)}: the sample "
            f"tables are generated together; remove {SAMPLE_DIR}/ to regenerate them all, "
            f"or pass {given('sample_data', False, flag='--no-data')}"
        )


def _place_text(result: InitResult, relative: Path, text: str) -> None:
    target = result.project_dir / relative
    if target.exists() or target.is_symlink():
        result.kept.append(relative)
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with 0o666 lets the umask decide the mode, as for any file the user creates
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        _link_new(result, relative, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _link_new(result: InitResult, relative: Path, source: Path) -> None:
    """Hard-link a complete, fsynced file into place; an existing file is kept, not replaced."""
    target = result.project_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except FileExistsError:
        result.kept.append(relative)
        return
    except OSError:
        # a file system without hard links: exclusive create still never replaces a file
        try:
            with target.open("xb") as handle, source.open("rb") as src:
                shutil.copyfileobj(src, handle)
                handle.flush()
                os.fsync(handle.fileno())
        except FileExistsError:
            result.kept.append(relative)
            return
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    result.written.append(relative)


def _write_sample_data(result: InitResult, *, rows: int, seed: int) -> None:
    from mlpipe_cli.sample_data import TABLES, generate

    sample_dir = result.project_dir / SAMPLE_DIR
    existing = [SAMPLE_DIR / f"{table}.parquet" for table in TABLES]
    if all((result.project_dir / path).exists() for path in existing):
        result.kept.extend(existing)  # --force on a complete project: nothing to generate
        return
    sample_dir.mkdir(parents=True, exist_ok=True)
    # Generate next to the destination (same file system, so hard links work; the generator
    # fsyncs each file), then link each table into place: an existing table is kept.
    staging = Path(tempfile.mkdtemp(prefix=".sample-", dir=sample_dir))
    try:
        generated = generate(staging, rows=rows, seed=seed)
        for table, path in generated.files.items():
            relative = SAMPLE_DIR / path.relative_to(staging)
            _link_new(result, relative, path)
            if relative in result.written:
                result.sample_rows[table] = generated.rows[table]
    finally:
        shutil.rmtree(staging, ignore_errors=True)
