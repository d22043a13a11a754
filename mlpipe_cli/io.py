"""Reading and writing Parquet with loud, one-line errors and atomic writes.

Every subcommand reads its inputs through ``scan_parquet``/``read_parquet`` and writes its
outputs through ``atomic_target`` (``write_parquet_atomic``/``sink_parquet_atomic``/
``atomic_write_bytes``) so that a missing or corrupt file becomes an ``InputError`` (exit 2),
an interrupted write never leaves a partial file, a full disk is one line naming the path, and
no output can overwrite an input of the same run (the readers register what they read in an
``input_scope()``; the writers refuse those paths through symlinks, hard links, directories
and globs).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import functools
import glob
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from mlpipe_cli import interrupts
from mlpipe_cli.errors import InputError, MlpipeError, OutputError, UsageError

if TYPE_CHECKING:
    import polars as pl

_CHUNK = 1 << 20
P = ParamSpec("P")
R = TypeVar("R")


def resolve_parquet_files(path: Path | str) -> list[Path]:
    """A file, a directory of ``*.parquet`` files, or a glob → sorted list of files."""
    register_input(path)  # the same-path guard: no output of this run may be this input
    text = str(path)
    if any(ch in text for ch in "*?["):
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"no files match {text}", hint="check the path or glob in the config")
        return files
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise InputError(f"directory {path} contains no .parquet files")
        return files
    if not path.exists():
        raise InputError(f"input file {path} not found", hint="check the path")
    if not path.is_file():
        raise InputError(f"{path} is not a regular file")
    return [path]


def scan_parquet(path: Path | str) -> pl.LazyFrame:
    """Lazily scan Parquet input, checking up front that every file is readable Parquet.

    A multi-part source (directory or glob) must have one schema across its parts: every
    part's footer is read and compared before any value is computed (see ``check_parts_agree``).
    """
    import polars as pl

    files = checked_parquet_files(path)
    try:
        lazy = pl.scan_parquet([str(f) for f in files])
        lazy.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read {path} as Parquet: {_first_line(exc)}") from None
    return lazy


def checked_parquet_files(path: Path | str) -> list[Path]:
    """The files of ``path`` (``resolve_parquet_files``), each checked to be Parquet, and the
    parts of a multi-part source checked to agree (``check_parts_agree``): what
    ``scan_parquet`` checks, for readers that scan the files one by one (psi-report)."""
    files = resolve_parquet_files(path)
    for file in files:
        _check_parquet_file(file)
    if len(files) > 1:
        check_parts_agree(files)
    return files


def read_parquet(path: Path | str) -> pl.DataFrame:
    import polars as pl

    lazy = scan_parquet(path)
    try:
        return lazy.collect()
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read {path}: {_first_line(exc)}") from None


def _check_parquet_file(file: Path) -> None:
    """Reject empty, truncated or non-Parquet files with a clear message (reads 8 bytes)."""
    try:
        size = file.stat().st_size
        with file.open("rb") as handle:
            head = handle.read(4)
            if size >= 8:
                handle.seek(size - 4)
                tail = handle.read(4)
            else:
                tail = b""
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from None
    if size < 12 or head != b"PAR1" or tail != b"PAR1":
        raise InputError(
            f"{file} is not a valid Parquet file (empty, truncated or another format)",
            hint="re-export it as Parquet",
        )


def check_parts_agree(files: list[Path]) -> None:
    """Refuse parts of one source whose column sets or dtypes (time zones included) differ.

    Polars takes the schema of the first part and, for the rest, silently reads a naive
    datetime part as if it were in the first part's zone (wrong instants, no error) or fails
    late with a message about its own scan options. Reading only the footers (~0.1 ms a
    part) keeps this cheap. The reference schema is the one most parts share (ties: the
    earliest part's), so the message names the odd part, not its 199 healthy siblings.
    """
    import polars as pl

    schemas: list[dict[str, pl.DataType]] = []
    for file in files:
        try:
            schemas.append(dict(pl.read_parquet_schema(file)))
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise InputError(f"cannot read {file} as Parquet: {_first_line(exc)}") from None
    signatures = [tuple(sorted((name, repr(dtype)) for name, dtype in s.items())) for s in schemas]
    counts: dict[tuple, int] = {}
    for signature in signatures:
        counts[signature] = counts.get(signature, 0) + 1
    if len(counts) == 1:
        return
    reference_signature = max(counts, key=lambda sig: (counts[sig], -signatures.index(sig)))
    ref_index = signatures.index(reference_signature)
    ref_file, reference = files[ref_index], schemas[ref_index]
    odd = [i for i, sig in enumerate(signatures) if sig != reference_signature]
    part, schema = files[odd[0]], schemas[odd[0]]
    ref_name = ref_file.name if ref_file.parent == part.parent else str(ref_file)
    differences = _schema_differences(schema, reference, ref_name)
    more = len(differences) - 1
    others = len(odd) - 1
    tail = ""
    if more or others:
        bits = []
        if more:
            bits.append(f"{more} more difference{'s' if more > 1 else ''} in this part")
        if others:
            bits.append(f"{others} more part{'s differ' if others > 1 else ' differs'}")
        tail = f" ({'; '.join(bits)})"
    raise InputError(
        f"{part}: {differences[0]}{tail}",
        hint="all parts of a source need the same columns and dtypes; rewrite this part to match",
    )


def _schema_differences(
    schema: dict[str, pl.DataType], reference: dict[str, pl.DataType], ref_name: str
) -> list[str]:
    from mlpipe_cli.schema.dtypes import describe_dtype

    out = []
    for name, ref_dtype in reference.items():
        if name not in schema:
            out.append(
                f"column {name!r} is missing but {ref_name} has it ({describe_dtype(ref_dtype)})"
            )
        elif repr(schema[name]) != repr(ref_dtype):  # the signatures compare reprs too
            ours, theirs = describe_dtype(schema[name]), describe_dtype(ref_dtype)
            if ours == theirs:  # e.g. two Enums with different categories
                ours, theirs = str(schema[name]), str(ref_dtype)
            out.append(f"column {name!r} is {ours} but {ref_name} has {theirs}")
    for name, dtype in schema.items():
        if name not in reference:
            out.append(f"has column {name!r} ({describe_dtype(dtype)}) that {ref_name} lacks")
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def prepare_output_path(path: Path | str) -> Path:
    """Check an output path before writing: a file (or nothing) there, its directory creatable,
    and not one of this run's inputs (see ``check_outputs``).

    Refusing anything but a regular file matters when running as root: an atomic rename onto
    ``/dev/null`` would replace the device.
    """
    path = Path(path)
    if path.exists() and not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise InputError(f"output path {path} is {what}", hint="give the path of a file to write")
    _refuse_if_input(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(
            f"cannot create the output directory {path.parent}: a file is in the way"
        ) from None
    except PermissionError:
        raise OutputError(f"no permission to create the output directory {path.parent}") from None
    except OSError as exc:
        raise output_error(exc, path.parent, "create the output directory") from None
    return path


# -- the same-path guard --------------------------------------------------------------------
#
# Every reader registers what it reads (a file, a directory, a glob) in the run's registry;
# every atomic writer refuses a target that is one of those inputs. The registry lives in a
# ContextVar entered by ``input_scope()`` (the CLI enters one per command), so a new command
# gets the guard without doing anything: it reads through io and writes through io.


@dataclass
class _Input:
    given: str  # as the user/config spelled it
    kind: str  # "file" | "dir" | "glob"
    absolute: str  # abspath (symlinks kept) of the file, dir or pattern
    real: str  # realpath (symlinks resolved); for a glob, of its literal prefix + the rest
    identity: tuple[int, int] | None  # (st_dev, st_ino) of a file when it existed


@dataclass
class InputRegistry:
    """What one run read (files, directories, glob patterns) and the outputs it declared."""

    inputs: list[_Input] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)

    def add(self, path: Path | str) -> None:
        given = str(path)
        if any(ch in given for ch in "*?["):
            absolute = os.path.abspath(given)
            entry = _Input(given, "glob", absolute, _real_pattern(absolute), None)
        else:
            absolute = os.path.abspath(given)
            real = os.path.realpath(given)
            kind = "dir" if os.path.isdir(real) else "file"
            identity = None
            if kind == "file":
                with contextlib.suppress(OSError):
                    st = os.stat(real)
                    identity = (st.st_dev, st.st_ino)
            entry = _Input(given, kind, absolute, real, identity)
        if any(e.kind == entry.kind and e.absolute == entry.absolute for e in self.inputs):
            return
        self.inputs.append(entry)
        # An output declared early (``check_outputs``) must not become an input later.
        for output in self.outputs:
            conflict = _conflict(output, [entry])
            if conflict:
                raise UsageError(_same_path_message(output, conflict))

    def conflict(self, target: Path) -> str | None:
        return _conflict(target, self.inputs)


_REGISTRY: ContextVar[InputRegistry | None] = ContextVar("mlpipe_input_registry", default=None)


@contextlib.contextmanager
def input_scope() -> Iterator[InputRegistry]:
    """The registry of this run's inputs; joins an enclosing scope when there is one."""
    current = _REGISTRY.get()
    if current is not None:
        yield current
        return
    registry = InputRegistry()
    token = _REGISTRY.set(registry)
    try:
        yield registry
    finally:
        _REGISTRY.reset(token)


def within_input_scope(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` inside ``input_scope()``: for library entry points that read and write, so
    the same-path guard holds without the CLI too."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with input_scope():
            return fn(*args, **kwargs)

    return wrapper


def register_input(path: Path | str) -> None:
    """Record that this run reads ``path`` (a file, directory or glob); no-op outside a scope."""
    registry = _REGISTRY.get()
    if registry is not None:
        registry.add(path)


def check_outputs(
    outputs: Iterable[Path | str | None] | Mapping[str, Path | str | None],
) -> None:
    """Refuse (UsageError, exit 2) outputs that are inputs of this run, or that are the same
    file as another output of the same call, before any heavy work.

    ``outputs`` is a list of paths, or a mapping from what names each output (its flag,
    ``--out``) to its path, so a collision names both flags. Name all of one command's
    outputs in one call: two outputs on one file would overwrite each other (inside
    ``atomic_outputs()`` the later rename silently replaces the earlier file: rows lost).
    A path declared again in a later call is the same output re-checked by a lower layer,
    not a collision. Same file means the same resolved path: ``./x`` and ``x``, a symlink
    and its target, two hard links.

    The outputs are also remembered, so an input registered later that turns out to be one of
    them is refused when it is read. Writers check again when they write, so this is only
    about failing early.
    """
    named = list(outputs.items()) if isinstance(outputs, Mapping) else [(None, o) for o in outputs]
    declared = [(label, Path(given)) for label, given in named if given is not None]
    for i, (label, path) in enumerate(declared):
        for other_label, other in declared[:i]:
            how = _same_file(other, path)
            if how is not None:
                first = f"{other_label} {other}" if other_label else f"output {other}"
                second = f"{label} {path}" if label else f"output {path}"
                raise UsageError(
                    f"{first} and {second} are the same file ({how}); give each output its own path"
                )
    registry = _REGISTRY.get()
    for _label, path in declared:
        _refuse_if_input(path)
        if registry is not None:
            registry.outputs.append(path)


def _same_file(a: Path, b: Path) -> str | None:
    """How outputs ``a`` and ``b`` are one file (a phrase for the message), or None."""
    if os.path.abspath(a) == os.path.abspath(b):
        return "same path"
    real = os.path.realpath(a)
    if real == os.path.realpath(b):
        return f"both resolve to {real}"
    try:
        st_a, st_b = os.stat(a), os.stat(b)
    except OSError:  # one does not exist yet: different paths, so different files
        return None
    if (st_a.st_dev, st_a.st_ino) == (st_b.st_dev, st_b.st_ino):
        return "hard links to one file"
    return None


def _refuse_if_input(path: Path) -> None:
    registry = _REGISTRY.get()
    if registry is None:
        return
    conflict = registry.conflict(path)
    if conflict:
        raise UsageError(_same_path_message(path, conflict))


def _same_path_message(path: Path, detail: str) -> str:
    return f"output {path} is also an input ({detail}); write it somewhere else"


def _conflict(target: Path, inputs: Iterable[_Input]) -> str | None:
    """How ``target`` is one of ``inputs`` (a phrase for the message), or None."""
    absolute = os.path.abspath(target)
    real = os.path.realpath(target)
    try:
        st = os.stat(real)
        identity: tuple[int, int] | None = (st.st_dev, st.st_ino)
        # only a file with several names can be a hard link to a file found by a scan
        linked = st.st_nlink > 1
    except OSError:
        identity, linked = None, False
    via = f"via symlink to {real}" if real != absolute else None
    for entry in inputs:
        if entry.kind == "file":
            if real == entry.real:
                if via:
                    return via
                if entry.absolute != real:
                    return f"the input {entry.given} is a symlink to it"
                return "same path"
            if identity is not None and identity == entry.identity:
                return f"via hard link to {entry.real}"
        elif entry.kind == "dir":
            # the directory reader picks up every *.parquet below it
            inside = real.startswith(entry.real.rstrip(os.sep) + os.sep)
            if inside and real.endswith(".parquet"):
                return f"inside the input directory {entry.given}"
            if linked and _same_file_below(identity, Path(entry.real).rglob("*.parquet")):
                return f"via hard link to a file in the input directory {entry.given}"
        else:
            if _glob_matches(entry.absolute, absolute) or _glob_matches(entry.real, real):
                return f"matches the input glob {entry.given}"
            if linked:
                matched = (Path(p) for p in glob.glob(entry.absolute, recursive=True))
                if _same_file_below(identity, matched):
                    return f"via hard link to a file matching the input glob {entry.given}"
    return None


def _same_file_below(identity: tuple[int, int] | None, paths: Iterable[Path]) -> bool:
    for candidate in paths:
        with contextlib.suppress(OSError):
            st = candidate.stat()
            if (st.st_dev, st.st_ino) == identity:
                return True
    return False


def _real_pattern(pattern: str) -> str:
    """The pattern with its literal (magic-free) directory prefix resolved through symlinks."""
    parts = pattern.split(os.sep)
    literal = []
    for part in parts:
        if any(ch in part for ch in "*?["):
            break
        literal.append(part)
    if len(literal) == len(parts):
        return os.path.realpath(pattern)
    prefix = os.sep.join(literal) or os.sep
    rest = parts[len(literal) :]
    return os.path.join(os.path.realpath(prefix), *rest)


def _glob_matches(pattern: str, path: str) -> bool:
    """``glob.glob(pattern, recursive=True)`` semantics for one path that may not exist yet."""
    return _match_parts(pattern.split(os.sep), path.split(os.sep))


def _match_parts(pattern: list[str], parts: list[str]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        # zero or more directories (glob's ``**`` skips hidden names, as here)
        for skip in range(len(parts) + 1):
            if skip and parts[skip - 1].startswith("."):
                break
            if _match_parts(rest, parts[skip:]):
                return True
        return False
    if not parts:
        return False
    name = parts[0]
    if name.startswith(".") and not head.startswith(".") and any(ch in head for ch in "*?["):
        return False  # glob never matches hidden names with a wildcard
    return fnmatch.fnmatchcase(name, head) and _match_parts(rest, parts[1:])


# -- atomic writes --------------------------------------------------------------------------
#
# One way to write a file: into a hidden temp sibling ``.<name>.<host>.<pid>.<random>.tmp``,
# fsync, rename over the target, fsync the directory. A writer that dies (kill -9) leaves its
# temp behind; the next write to the same place removes temps whose pid no longer runs on
# this host. ``atomic_outputs()`` groups several targets so they are published all or none.

_TEMP_SUFFIX = ".tmp"
_BACKUP_SUFFIX = ".bak"
_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@dataclass
class _Staged:
    tmp: Path
    target: Path


@dataclass
class OutputBatch:
    """Temps written inside ``atomic_outputs()``, waiting to be published together."""

    staged: list[_Staged] = field(default_factory=list)

    def staged_path(self, target: Path | str) -> Path | None:
        target = Path(target)
        for item in self.staged:
            if item.target == target:
                return item.tmp
        return None


_BATCH: ContextVar[OutputBatch | None] = ContextVar("mlpipe_output_batch", default=None)


@contextlib.contextmanager
def atomic_target(path: Path | str, *, own_name: bool = False) -> Iterator[Path]:
    """Yield a temp path to write; on success publish it as ``path`` (fsync + rename).

    On failure the temp is removed and ``path`` keeps its old content (or stays absent). A full
    disk or read-only file system becomes an OutputError (exit 2) naming the path. Inside
    ``atomic_outputs()`` publication waits until every output of the group is written.
    ``own_name``: no other process ever writes ``path`` (a run-ledger record is named by its
    run), so none can have left temps of it and the scan of its directory for them is
    skipped (the ledger's directory grows by one record per run, #19).
    """
    path = prepare_output_path(path)
    if not own_name:
        _remove_dead_temps(path)
    tmp = _temp_sibling(path)
    batch = _BATCH.get()
    handed_over = False
    try:
        try:
            yield tmp
        except OSError as exc:
            # only errnos that can only come from writing, or a failure on the temp itself: a
            # body that fails to read an input must not be reported as a write failure
            if _errno_of(exc) in _WRITE_ONLY_ERRNOS:
                raise output_error(exc, path, "write") from None
            failure = _temp_failure(exc, tmp, path)
            if failure is None:
                raise
            raise failure from None
        except Exception as exc:
            failure = _polarsoutput_error(exc, path) or _temp_failure(exc, tmp, path)
            if failure is None:
                raise
            raise failure from None
        try:
            fsync_path(tmp)
            if batch is not None:
                batch.staged.append(_Staged(tmp, path))
                handed_over = True
            else:
                interrupts.check()  # a Ctrl-C that a finalizer swallowed publishes nothing
                os.replace(tmp, path)
                fsync_path(path.parent)
        except FileNotFoundError:
            raise OutputError(f"nothing was written to {path}") from None
        except OSError as exc:
            raise output_error(exc, path, "write") from None
    finally:
        if not handed_over:
            # OSError, not only FileNotFoundError: on a read-only mount unlink says EROFS
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_outputs() -> Iterator[OutputBatch]:
    """Publish every ``atomic_target`` written inside the block together, or none of them.

    Every temp is written and fsynced first; then each is renamed into place. If a rename
    fails, the targets already replaced get their previous content back (kept as hard-linked
    backups until the end). Only a crash between two renames can leave some published and
    some not; each file is still whole.
    """
    outer = _BATCH.get()
    if outer is not None:  # nested: the outermost group publishes
        yield outer
        return
    batch = OutputBatch()
    token = _BATCH.set(batch)
    try:
        yield batch
    except BaseException:
        _BATCH.reset(token)
        _discard(batch)
        raise
    _BATCH.reset(token)
    try:
        _publish_batch(batch)
    finally:
        _discard(batch)


@contextlib.contextmanager
def outside_atomic_outputs() -> Iterator[None]:
    """Inside an ``atomic_outputs()`` block, write at once instead of joining the group: an
    artifact store publishes its version and moves LATEST under its own lock, which must not
    wait for the group's renames (validate publishes its report between staging its files
    and renaming them, so a failed publish leaves none of them written)."""
    token = _BATCH.set(None)
    try:
        yield
    finally:
        _BATCH.reset(token)


def staged_path(target: Path | str) -> Path:
    """Where ``target``'s new content is right now: its temp inside ``atomic_outputs()``."""
    batch = _BATCH.get()
    tmp = batch.staged_path(target) if batch is not None else None
    return tmp if tmp is not None else Path(target)


def _publish_batch(batch: OutputBatch) -> None:
    backups: list[Path] = []
    replaced: list[tuple[Path, Path | None]] = []  # (target, backup of its old content)
    current = batch.staged[0].target if batch.staged else None
    interrupts.check()  # a Ctrl-C that a finalizer swallowed publishes nothing
    try:
        try:
            for item in batch.staged:
                current = item.target
                backup = None
                if item.target.exists():
                    backup = _temp_sibling(item.target, _BACKUP_SUFFIX)
                    os.link(item.target, backup)
                    backups.append(backup)
                os.replace(item.tmp, item.target)
                replaced.append((item.target, backup))
            for parent in {item.target.parent for item in batch.staged}:
                fsync_path(parent)
        except OSError as exc:
            # put back what was already replaced: all or none
            for target, backup in reversed(replaced):
                with contextlib.suppress(OSError):
                    if backup is not None:
                        os.replace(backup, target)
                    else:
                        target.unlink()
            raise output_error(exc, current or Path("."), "publish") from None
    finally:
        for backup in backups:
            with contextlib.suppress(OSError):
                backup.unlink()


def _discard(batch: OutputBatch) -> None:
    for item in batch.staged:
        with contextlib.suppress(OSError):
            item.tmp.unlink()
    batch.staged.clear()


def atomic_write_bytes(path: Path | str, data: bytes, *, own_name: bool = False) -> Path:
    """Write a file so readers see the old content or the new, never a torn one
    (``own_name``: see ``atomic_target``)."""
    with atomic_target(path, own_name=own_name) as tmp, tmp.open("wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_bytes_started(
    path: Path | str, data: bytes, *, own_name: bool = False
) -> Callable[[], None]:
    """``atomic_write_bytes`` whose fsyncs run on a thread: the file is in place (whole, from
    the page cache) when this returns, and durable once the returned function has returned.

    The run ledger's opening record (#19: two journal commits, 2-20 ms of each command's wall
    time). The rename is not deferred with the syncs: a run killed (SIGKILL) in those
    milliseconds must still leave its record, which then reads as killed; deferring the rename
    lost it. Readers never see a partial file; only a power loss before the sync can leave an
    empty one (the ledger's reader skips it with a warning). The checks, the write and the
    rename happen here (their errors raise here, as ``atomic_write_bytes``'s do); the returned
    function waits for the syncs and raises their error. Inside ``atomic_outputs()`` it is
    ``atomic_write_bytes`` (the group publishes the file).
    """
    import threading

    if _BATCH.get() is not None:
        atomic_write_bytes(path, data, own_name=own_name)
        return lambda: None
    path = prepare_output_path(path)
    if not own_name:
        _remove_dead_temps(path)
    tmp = _temp_sibling(path)
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        failure = (
            output_error(exc, path, "write")
            if _errno_of(exc) in _WRITE_ONLY_ERRNOS
            else _temp_failure(exc, tmp, path)
        )
        if failure is None:
            raise
        raise failure from None
    failures: list[BaseException] = []

    def sync() -> None:
        try:
            fsync_path(path)
            fsync_path(path.parent)
        except OSError as exc:
            failures.append(output_error(exc, path, "write"))
        except BaseException as exc:  # anything else: raised by wait(), never a thread traceback
            failures.append(exc)

    thread = threading.Thread(target=sync, name="mlpipe-sync", daemon=True)
    thread.start()

    def wait() -> None:
        thread.join()
        if failures:
            raise failures[0]

    return wait


def write_parquet_atomic(frame: pl.DataFrame, path: Path | str, **options: Any) -> Path:
    """Write a DataFrame to Parquet via temp file + fsync + rename."""
    with atomic_target(path) as tmp:
        frame.write_parquet(tmp, **{"compression": "zstd", "statistics": True, **options})
    return Path(path)


def sink_parquet_atomic(lazy: pl.LazyFrame, path: Path | str, **options: Any) -> Path:
    """Stream a LazyFrame to Parquet via temp file + fsync + rename (bounded memory)."""
    import polars as pl

    with atomic_target(path) as tmp:
        try:
            lazy.sink_parquet(tmp, **{"compression": "zstd", "statistics": True, **options})
        except pl.exceptions.PolarsError as exc:
            failure = _polarsoutput_error(exc, Path(path)) or _temp_failure(exc, tmp, Path(path))
            if failure is not None:
                raise failure from None
            reason = _first_line(exc).replace(str(tmp), str(path))  # the user's path only
            raise InputError(f"cannot write {path}: {reason}") from None
    return Path(path)


def _temp_failure(exc: BaseException, tmp: Path, path: Path) -> MlpipeError | None:
    """A failure to create or write the temp ``tmp`` as the OutputError (exit 2) of writing
    ``path``, or None when ``exc`` is not about the temp (a failed read of an input, say).

    The user named ``path``; the hidden temp beside it is mlpipe's own, so the message names
    ``path`` and the reason (permission denied, read-only, a directory that takes no new
    files), never the temp: ``--out /proc/x.parquet`` said ``/proc/.x.parquet.<...>.tmp``.
    Python's OSError carries the temp as its ``filename``; Polars' errors only in their text.
    """
    if isinstance(exc, MlpipeError):
        return None
    filenames = {os.fspath(f) for f in (getattr(exc, "filename", None),) if f is not None}
    filenames |= {os.fspath(f) for f in (getattr(exc, "filename2", None),) if f is not None}
    about_temp = str(tmp) in filenames or any(Path(f).name == tmp.name for f in filenames)
    if not about_temp and tmp.name not in str(exc):
        return None
    code = _errno_of(exc)
    if code is None:
        # no errno (not an OSError, nor a Polars error ending in "(os error N)"): nothing says
        # the write itself failed, so it stays what it is (a bug is reported as one)
        return None
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else os.strerror(code)
    return output_error(OSError(code, reason), path, "write")


def _temp_sibling(path: Path, suffix: str = _TEMP_SUFFIX) -> Path:
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _remove_dead_temps(path: Path) -> None:
    """Remove temps (and rename backups) beside ``path`` left by writers that died."""
    prefix = f".{path.name}.{_HOST}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix) or not name.endswith((_TEMP_SUFFIX, _BACKUP_SUFFIX)):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries: a rename in it is durable once this returns)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EFBIG: "the file is too large for the file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


_WRITE_ONLY_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def on_read_only_filesystem(path: Path | str) -> bool:
    """Whether ``path`` (or its nearest existing parent) sits on a read-only mount."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def is_write_failure(exc: OSError, under: Path) -> bool:
    """Whether ``exc`` came from writing below ``under`` (not from reading some input)."""
    if _errno_of(exc) in _WRITE_ONLY_ERRNOS:
        return True
    filename = getattr(exc, "filename", None)
    if filename is None:
        return False
    return os.path.abspath(filename).startswith(os.path.abspath(under).rstrip(os.sep) + os.sep)


def output_error(exc: OSError, path: Path, action: str) -> MlpipeError:
    """An OSError while writing ``path`` as one line naming the path and what to do."""
    code = _errno_of(exc) or -1
    if code == errno.ENOENT:
        reason = _missing_reason(path)
    else:
        reason = _WRITE_ERRNOS.get(code) or exc.strerror or str(exc) or type(exc).__name__
    return OutputError(
        f"cannot {action} {path}: {reason}",
        hint=_WRITE_HINTS.get(code, "check the output path"),
    )


def _missing_reason(path: Path) -> str:
    """Why creating ``path`` said ENOENT: its directory is missing, or (``/proc``, ``/sys``:
    pseudo file systems) exists but takes no new entries."""
    parent = path.parent
    if parent.is_dir():
        return f"{parent} does not accept new files"
    return f"no such directory {parent}"


def _errno_of(exc: BaseException) -> int | None:
    """The errno of an OSError, also when Polars raised it with the code only in its text."""
    code = getattr(exc, "errno", None)
    if code is not None:
        return code
    match = _OS_ERROR_RE.search(str(exc))
    return int(match.group(1)) if match else None


_WRITE_HINTS = {
    errno.ENOSPC: "free space there or write somewhere else; nothing was published",
    errno.EDQUOT: "free space there or write somewhere else; nothing was published",
    errno.EROFS: "write to a writable directory",
    errno.ENOENT: "write to an existing, writable directory",
    errno.EFBIG: "write to another file system",
    errno.EACCES: "write to a directory you may write to",
    errno.EPERM: "write to a directory you may write to",
}

# Polars reports I/O failures of its writers as ComputeError/PolarsError text ending in
# "(os error N)"; recover the errno so a full disk reads like one.
_OS_ERROR_RE = re.compile(r"os error (\d+)")


def write_failure(exc: BaseException, path: Path, action: str = "write") -> MlpipeError | None:
    """``exc`` as the OutputError of a failed write to ``path`` (full disk, quota, read-only
    file system, file too large), or None when it is not one: the one mapping for OSError,
    Polars' writer errors and SQLite's, so a full disk reads the same (exit 2) everywhere."""
    if isinstance(exc, OSError):
        if _errno_of(exc) in _WRITE_ONLY_ERRNOS:
            return output_error(exc, path, action)
        return None
    if type(exc).__module__ == "sqlite3":
        code = getattr(exc, "sqlite_errorcode", None)
        if code == 13 or (code is not None and code & 0xFF == 10 and _no_space_left(path.parent)):
            # SQLITE_FULL; or SQLITE_IOERR (a failed write of the -wal/-shm file) on a full disk
            return output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, action)
        return None
    failure = _polarsoutput_error(exc, path)
    if failure is not None and action != "write":
        code = _errno_of(exc) or errno.ENOSPC
        return output_error(OSError(code, os.strerror(code)), path, action)
    return failure


def _polarsoutput_error(exc: BaseException, path: Path) -> MlpipeError | None:
    if isinstance(exc, MlpipeError):
        return None
    module = type(exc).__module__ or ""
    if not module.startswith("polars"):
        return None
    match = _OS_ERROR_RE.search(str(exc))
    code = int(match.group(1)) if match else None
    if code is None and _no_space_left(path.parent):
        # Polars sometimes loses the errno: a full disk while it writes the Parquet footer
        # surfaces as "File out of specification: Invalid thrift: transport error".
        code = errno.ENOSPC
    if code not in _WRITE_ONLY_ERRNOS:
        return None
    return output_error(OSError(code, os.strerror(code)), path, "write")


def _no_space_left(directory: Path) -> bool:
    """Whether the file system holding ``directory`` has (next to) no room for a write."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < _NEARLY_FULL_BYTES


_NEARLY_FULL_BYTES = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (used to spot writers that died)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def parquet_row_count(path: Path) -> int:
    """Rows of one Parquet file, from its footer (Polars, not pyarrow: 0.15 s less import)."""
    import polars as pl

    try:
        return int(pl.scan_parquet(path).select(pl.len()).collect().item())
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise InputError(f"cannot read {path} as Parquet: {_first_line(exc)}") from None


def fingerprint(paths: Iterable[Path | str]) -> dict[str, Any]:
    """Identify input data by content: per file name, size, row count and sha256.

    Absolute paths are left out so the same data gives the same fingerprint (and artifact
    version) from any checkout; ``fingerprint_locations`` records where it was read from.
    """
    entries: list[dict[str, Any]] = []
    for given in paths:
        for file in resolve_parquet_files(given):
            entries.append(
                {
                    "name": file.name,
                    "size": file.stat().st_size,
                    "rows": parquet_row_count(file),
                    "sha256": file_sha256(file),
                }
            )
    entries.sort(key=lambda e: (e["name"], e["sha256"]))
    combined = hashlib.sha256("".join(e["sha256"] for e in entries).encode()).hexdigest()
    return {"files": entries, "rows": sum(e["rows"] for e in entries), "sha256": combined}


def fingerprint_locations(paths: Iterable[Path | str]) -> list[str]:
    return [str(Path(p).resolve()) for given in paths for p in resolve_parquet_files(given)]
