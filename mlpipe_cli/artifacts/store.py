"""The versioned, content-addressed artifact store: the contract between subcommands.

Layout::

    <artifact_dir>/<pipeline>/<kind>/
        0001-3f2a9c0d1e4b/        one published version (read-only once published)
            manifest.json         kind, version, sha256 of every file, config hash, inputs
            ...                   the files the publisher wrote
        LATEST                    the version id `latest` resolves to (replaced atomically)
        .lock                     serialises publishers (fcntl.flock)
        .staging/                 in-progress publications; never read

Publishing builds the version in ``.staging/<pid>-<random>`` on the same filesystem, fsyncs
every file and the directory, then, holding the lock, renames it into place and replaces
``LATEST`` with ``os.replace``. A crash at any point leaves either no new version or the
complete one. The version id is ``<sequence>-<first 12 hex of the content hash>``; the content
hash covers the files, the config hash, the input fingerprint and the parameters, never the
wall-clock time, so publishing identical content again returns the existing version.

Signing (optional): with ``MLPIPE_SIGNING_KEY`` set, every new manifest carries
``signature`` = ``hmac-sha256:<hex>`` over the canonical manifest (sorted-key JSON of every
field but ``signature``). The sha256 list in the manifest catches accidental edits; the
signature catches someone with write access who edits files AND manifest together. While a
key is set, loading (``get``) and ``mlpipe artifacts verify`` refuse (exit 3) a manifest whose
signature does not match, and also an unsigned one, since stripping the signature would
otherwise be the easiest forgery; ``MLPIPE_ALLOW_UNSIGNED=1`` accepts unsigned versions
published before signing was turned on. Without a key nothing is checked (there is nothing to
check against). ``LATEST`` is not signed: it can only point at versions that verify.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlpipe_cli import __version__
from mlpipe_cli.documents import ArtifactManifest, check
from mlpipe_cli.errors import ArtifactError, ArtifactNotFound, OutputError, UsageError
from mlpipe_cli.io import (
    atomic_write_bytes,
    fsync_path,
    is_write_failure,
    output_error,
    pid_alive,
)
from mlpipe_cli.io import file_sha256 as sha256_file

MANIFEST = "manifest.json"
LATEST = "LATEST"
SIGNATURE_FIELD = "signature"
SIGNING_KEY_ENV = "MLPIPE_SIGNING_KEY"
ALLOW_UNSIGNED_ENV = "MLPIPE_ALLOW_UNSIGNED"
_SIGNATURE_PREFIX = "hmac-sha256:"
_VERSION_RE = re.compile(r"^(\d{4,})-([0-9a-f]{12})$")
_KIND_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class ArtifactVersion:
    """A published, verified version: its directory and parsed manifest."""

    kind: str
    version: str
    path: Path
    manifest: dict[str, Any]

    def file(self, name: str) -> Path:
        if name not in self.manifest["files"]:
            raise ArtifactError(
                f"{self.kind} artifact {self.version} has no file {name!r}",
                hint=f"it holds: {', '.join(sorted(self.manifest['files']))}",
            )
        return self.path / name

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]


@dataclass
class PublishResult:
    version: ArtifactVersion
    created: bool  # False when identical content was already published


@dataclass
class VerifyResult:
    kind: str
    version: str
    ok: bool
    problems: list[str] = field(default_factory=list)


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys and no whitespace: the form we hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()


def signing_key() -> bytes | None:
    """The HMAC key from ``MLPIPE_SIGNING_KEY`` (None when unset or empty)."""
    key = os.environ.get(SIGNING_KEY_ENV, "")
    return key.encode("utf-8") if key else None


def manifest_signature(manifest: dict[str, Any], key: bytes) -> str:
    """``hmac-sha256:<hex>`` over the canonical manifest without its signature field."""
    unsigned = {k: v for k, v in manifest.items() if k != SIGNATURE_FIELD}
    # round-trip through JSON first: what is signed is exactly what a reader will parse
    normalised = json.loads(json.dumps(unsigned, default=str))
    digest = hmac.new(key, canonical_json(normalised), hashlib.sha256).hexdigest()
    return _SIGNATURE_PREFIX + digest


def signature_problem(manifest: dict[str, Any]) -> str | None:
    """Why this manifest's signature is not acceptable now, or None (see the module doc)."""
    key = signing_key()
    if key is None:
        return None
    signature = manifest.get(SIGNATURE_FIELD)
    if signature is None:
        if os.environ.get(ALLOW_UNSIGNED_ENV) == "1":
            return None
        return (
            f"{MANIFEST} is not signed but {SIGNING_KEY_ENV} is set "
            f"(set {ALLOW_UNSIGNED_ENV}=1 to accept versions published before signing)"
        )
    expected = manifest_signature(manifest, key)
    if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
        return (
            f"{MANIFEST} signature does not match (forged, edited, or signed with another "
            f"{SIGNING_KEY_ENV})"
        )
    return None


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"mlpipe": __version__}
    for dist in ("polars", "pyarrow", "numpy", "scikit-learn", "scipy", "pandera", "redis"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    return versions


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (all of them before this returns).

    The files are synced concurrently: one after another, each fsync waited for its own
    journal commit (7 files of a transform version: ~35 ms median here, up to 150 ms on a
    busy disk); issued together, the file system commits them at once (~4 ms), #19.
    """
    files: list[Path] = []
    directories: list[Path] = []
    for dirpath, _dirnames, filenames in os.walk(root):
        files += [Path(dirpath) / name for name in filenames]
        directories.append(Path(dirpath))
    if len(files) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(8, len(files))) as pool:
            list(pool.map(fsync_path, files))  # re-raises the first failure
    else:
        for file in files:
            fsync_path(file)
    for directory in directories:
        fsync_path(directory)


def _list_files(root: Path) -> list[str]:
    files = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            files.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(f for f in files if f != MANIFEST)


def _content_hash(
    kind: str, file_hashes: dict[str, str], *, config_hash: Any, inputs: Any, params: Any
) -> str:
    """The hash a version id is derived from: files, config, inputs, params — no clock."""
    hashed = {
        "format_version": ArtifactManifest.FORMAT_VERSION,
        "kind": kind,
        "files": file_hashes,
        "config_hash": config_hash,
        "inputs": inputs,
        "params": params,
    }
    return hashlib.sha256(canonical_json(hashed)).hexdigest()


class ArtifactStore:
    """Versioned artifacts of one pipeline under ``<root>/<pipeline>/``."""

    def __init__(self, root: Path | str, pipeline: str) -> None:
        self.root = Path(root)
        self.pipeline = pipeline
        self.base = self.root / pipeline
        # the run ledger lives beside the artifacts: a run that opens the store is recorded
        from mlpipe_cli import ledger

        ledger.attach(self.root, pipeline)

    # -- publishing ---------------------------------------------------------------------

    def publish(
        self,
        kind: str,
        write: Callable[[Path], None],
        *,
        config_hash: str | None = None,
        inputs: Any = None,
        params: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> PublishResult:
        """Build a version with ``write(staging_dir)`` and publish it atomically.

        ``config_hash``, ``inputs`` (a data fingerprint) and ``params`` go into the manifest
        and the content hash; ``extra`` goes into the manifest only (not hashed), for
        run-specific facts such as timings.
        """
        try:
            kind_dir = self._kind_dir(kind, create=True)
            staging_root = kind_dir / ".staging"
            staging_root.mkdir(exist_ok=True)
            self._remove_abandoned_staging(staging_root)
            staging = staging_root / f"{os.getpid()}-{secrets.token_hex(6)}"
            staging.mkdir()
        except OSError as exc:
            raise output_error(exc, self.base / kind, "publish an artifact to") from None
        try:
            return self._publish_staged(
                kind, kind_dir, staging, write, config_hash, inputs, params, extra
            )
        except OSError as exc:
            if is_write_failure(exc, self.base):
                raise output_error(exc, kind_dir, "publish an artifact to") from None
            raise
        finally:
            if staging.exists():
                self._remove_tree(staging)

    def _publish_staged(
        self,
        kind: str,
        kind_dir: Path,
        staging: Path,
        write: Callable[[Path], None],
        config_hash: str | None,
        inputs: Any,
        params: Any,
        extra: dict[str, Any] | None,
    ) -> PublishResult:
        write(staging)
        if (staging / MANIFEST).exists():
            raise ArtifactError(f"a publisher may not write {MANIFEST} itself")
        files: dict[str, dict[str, Any]] = {
            name: {
                "sha256": sha256_file(staging / name),
                "size": (staging / name).stat().st_size,
            }
            for name in _list_files(staging)
        }
        content_hash = _content_hash(
            kind,
            {name: meta["sha256"] for name, meta in files.items()},
            config_hash=config_hash,
            inputs=inputs,
            params=params,
        )
        with self._locked(kind_dir):
            existing = self._find_by_content_hash(kind_dir, content_hash)
            if existing is not None:
                self._write_latest(kind_dir, existing)
                _note_version(kind, existing, written=True)
                return PublishResult(self.get(kind, existing, verify=False), created=False)
            version = f"{self._next_sequence(kind_dir):04d}-{content_hash[:12]}"
            manifest = {
                "format_version": ArtifactManifest.FORMAT_VERSION,
                "mlpipe_version": __version__,
                "pipeline": self.pipeline,
                "kind": kind,
                "version": version,
                "content_hash": content_hash,
                "files": files,
                "config_hash": config_hash,
                "inputs": inputs,
                "params": params,
                "libraries": _library_versions(),
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                **(extra or {}),
            }
            key = signing_key()
            if key is not None:
                manifest[SIGNATURE_FIELD] = manifest_signature(manifest, key)
            (staging / MANIFEST).write_bytes(
                json.dumps(manifest, indent=2, sort_keys=True, default=str).encode() + b"\n"
            )
            _fsync_tree(staging)
            self._make_read_only(staging)
            final = kind_dir / version
            os.rename(staging, final)
            fsync_path(kind_dir)
            try:
                self._write_latest(kind_dir, version)
            except OutputError as exc:  # its "nothing was published" is no longer true
                fix = (exc.hint or "").replace("; nothing was published", "")
                done = f"{kind}/{version} was published but {LATEST} not moved to it (a rerun does)"
                raise OutputError(exc.message, hint="; ".join(filter(None, (fix, done)))) from None
        _note_version(kind, version, written=True)
        return PublishResult(ArtifactVersion(kind, version, final, manifest), created=True)

    # -- reading ------------------------------------------------------------------------

    def kinds(self) -> list[str]:
        if not self.base.is_dir():
            return []
        return sorted(p.name for p in self.base.iterdir() if p.is_dir() and _KIND_RE.match(p.name))

    def versions(self, kind: str) -> list[str]:
        kind_dir = self._kind_dir(kind)
        if not kind_dir.is_dir():
            return []
        return sorted(
            p.name for p in kind_dir.iterdir() if p.is_dir() and _VERSION_RE.match(p.name)
        )

    def latest(self, kind: str) -> str | None:
        """The version ``LATEST`` points at; None when nothing was published yet.

        ArtifactError (exit 3) when the pointer exists but is corrupt: it is only ever
        replaced atomically with an existing version id, so anything else means damage, not
        "nothing published" (which would hide the damage and invite a re-publish).
        """
        problem = self._latest_problem(kind)
        if problem is not None:
            raise ArtifactError(
                f"{self._kind_dir(kind) / LATEST} is corrupt ({problem}); "
                "run `mlpipe artifacts verify`"
            )
        return self._read_latest(kind)

    def _read_latest(self, kind: str) -> str | None:
        try:
            return (self._kind_dir(kind) / LATEST).read_bytes().decode("ascii").strip()
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError):
            return ""

    def _latest_problem(self, kind: str) -> str | None:
        pointer = self._kind_dir(kind) / LATEST
        try:
            raw = pointer.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}"
        try:
            text = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            return "binary content, not a version id"
        if not text:
            return "empty"
        if not _VERSION_RE.match(text):
            shown = text if len(text) <= 40 else text[:40] + "..."
            return f"holds {shown!r}, not a version id"
        if text not in self.versions(kind):
            return f"points to {text}, which does not exist"
        return None

    def resolve(self, kind: str, ref: str | None = "latest") -> str:
        """Turn 'latest', a full id, a sequence number ('3', '0003') or a hash prefix into an id."""
        ref = (ref or "latest").strip()
        if "/" in ref:
            named_kind, _, ref = ref.partition("/")
            if named_kind != kind:
                raise UsageError(f"{named_kind}/{ref} is not a {kind} artifact")
        versions = self.versions(kind)
        if ref == "latest":
            latest = self.latest(kind)  # ArtifactError when the pointer is corrupt
            if latest is None or latest not in versions:
                raise ArtifactNotFound(
                    f"no {kind} artifact published yet under {self.base}",
                    hint=self._publish_hint(kind),
                )
            return latest
        if ref in versions:
            return ref
        matches = [
            v
            for v in versions
            if (ref.isdigit() and int(v.split("-")[0]) == int(ref))
            or (len(ref) >= 4 and v.split("-")[1].startswith(ref))
        ]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"{kind} version {ref!r} is ambiguous: {', '.join(matches)}")
        known = ", ".join(versions[-5:]) or "none"
        raise ArtifactNotFound(
            f"unknown {kind} artifact version {ref!r} (known: {known})",
            hint="run `mlpipe artifacts list` to see every version",
        )

    def get(self, kind: str, ref: str | None = "latest", *, verify: bool = True) -> ArtifactVersion:
        """Load a version's manifest; with ``verify`` (the default) check every file's sha256."""
        version = self.resolve(kind, ref)
        path = self._kind_dir(kind) / version
        manifest = self._read_manifest(kind, version, path)
        artifact = ArtifactVersion(kind, version, path, manifest)
        if verify:
            problems = self._check_files(artifact)
            if problems:
                signed = signature_problem(manifest) is not None
                raise ArtifactError(
                    f"{kind} artifact {version} failed verification: {problems[0]}",
                    hint=f"check {SIGNING_KEY_ENV}; never load this version, restore it from a "
                    "trusted copy or re-run the command that produced it"
                    if signed
                    else "the artifact was modified after publishing; re-run the command that "
                    "produced it or restore the file",
                )
        if verify:
            _note_version(kind, version, written=False)
        return artifact

    def find(self, ref: str) -> ArtifactVersion:
        """Find a version by id across all kinds (for `artifacts show/verify`)."""
        if "/" in ref:
            kind, _, version = ref.partition("/")
            return self.get(kind, version, verify=False)
        hits = []
        for kind in self.kinds():
            with contextlib.suppress(ArtifactNotFound):
                hits.append((kind, self.resolve(kind, ref)))
        if not hits:
            raise ArtifactNotFound(
                f"no artifact version {ref!r} under {self.base}",
                hint="run `mlpipe artifacts list` to see every version",
            )
        if len(hits) > 1:
            options = ", ".join(f"{k}/{v}" for k, v in hits)
            raise UsageError(
                f"version {ref!r} is ambiguous across kinds: {options} (use KIND/VERSION)"
            )
        kind, version = hits[0]
        return self.get(kind, version, verify=False)

    def verify(self, kind: str, version: str) -> VerifyResult:
        path = self._kind_dir(kind) / version
        try:
            manifest = self._read_manifest(kind, version, path)
        except ArtifactError as exc:
            return VerifyResult(kind, version, False, [exc.message])
        problems = self._check_files(ArtifactVersion(kind, version, path, manifest))
        return VerifyResult(kind, version, not problems, problems)

    def verify_all(self) -> list[VerifyResult]:
        results: list[VerifyResult] = []
        for kind in self.kinds():
            results.extend(self.verify(kind, v) for v in self.versions(kind))
            problem = self._latest_problem(kind)
            if problem is not None:
                results.append(
                    VerifyResult(kind, LATEST, False, [f"{LATEST} is corrupt ({problem})"])
                )
        return results

    # -- internals ----------------------------------------------------------------------

    def _kind_dir(self, kind: str, *, create: bool = False) -> Path:
        if not _KIND_RE.match(kind):
            raise UsageError(f"invalid artifact kind {kind!r}")
        path = self.base / kind
        if create:
            path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def _locked(self, kind_dir: Path) -> Iterator[None]:
        with (kind_dir / ".lock").open("a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _find_by_content_hash(self, kind_dir: Path, content_hash: str) -> str | None:
        for version in self.versions(kind_dir.name):
            if version.endswith(content_hash[:12]):
                manifest_path = kind_dir / version / MANIFEST
                try:
                    manifest = json.loads(manifest_path.read_text())
                except (OSError, ValueError):
                    continue
                # with a signing key, only a version that verifies may stand in for a new one
                if manifest.get("content_hash") == content_hash and (
                    signing_key() is None or signature_problem(manifest) is None
                ):
                    return version
        return None

    def _next_sequence(self, kind_dir: Path) -> int:
        numbers = [int(v.split("-")[0]) for v in self.versions(kind_dir.name)]
        return max(numbers, default=0) + 1

    def _write_latest(self, kind_dir: Path, version: str) -> None:
        atomic_write_bytes(kind_dir / LATEST, version.encode() + b"\n")

    def _read_manifest(self, kind: str, version: str, path: Path) -> dict[str, Any]:
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{kind} artifact {version} has no {MANIFEST}") from None
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"{kind} artifact {version}: unreadable {MANIFEST}: {exc}"
            ) from None
        check(ArtifactManifest, manifest, f"{kind} artifact {version}: {path / MANIFEST}")
        return manifest

    def _check_files(self, artifact: ArtifactVersion) -> list[str]:
        problems = []
        manifest = artifact.manifest
        expected = manifest.get("files", {})
        # Recompute the content hash from the manifest, so editing a file AND its sha256 in
        # the manifest is caught too: the id would no longer match the content.
        recomputed = _content_hash(
            artifact.kind,
            {name: meta.get("sha256") for name, meta in expected.items()},
            config_hash=manifest.get("config_hash"),
            inputs=manifest.get("inputs"),
            params=manifest.get("params"),
        )
        if recomputed != manifest.get("content_hash") or not artifact.version.endswith(
            recomputed[:12]
        ):
            problems.append(
                f"{MANIFEST} does not match version id {artifact.version} (manifest edited)"
            )
        for name, meta in sorted(expected.items()):
            file_path = artifact.path / name
            if not file_path.is_file():
                problems.append(f"file {name} is missing")
            elif sha256_file(file_path) != meta["sha256"]:
                problems.append(f"file {name} does not match its sha256 in {MANIFEST}")
        for name in _list_files(artifact.path):
            if name not in expected:
                problems.append(f"file {name} is not listed in {MANIFEST}")
        signature = signature_problem(manifest)
        if signature is not None:
            problems.insert(0, signature)
        return problems

    def _publish_hint(self, kind: str) -> str:
        command = {
            "transform": "mlpipe fit",
            "schema": "mlpipe schema snapshot",
            "validation": "mlpipe validate",
            "materialization": "mlpipe materialize",
            "training-set": "mlpipe training-set",
            "model": "mlpipe model register",
        }.get(kind)
        return f"run `{command}` first" if command else "publish one first"

    def _remove_abandoned_staging(self, staging_root: Path) -> None:
        """Delete staging dirs left by publishers that died (their pid no longer runs)."""
        for entry in staging_root.iterdir():
            pid_text = entry.name.split("-", 1)[0]
            if pid_text.isdigit() and not pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    self._remove_tree(entry)

    @staticmethod
    def _make_read_only(root: Path) -> None:
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                os.chmod(Path(dirpath) / name, 0o444)

    @staticmethod
    def _remove_tree(path: Path) -> None:
        # Published-style files are read-only; make them writable so rmtree can unlink them.
        for dirpath, _dirnames, filenames in os.walk(path):
            for name in filenames:
                with contextlib.suppress(OSError):
                    os.chmod(Path(dirpath) / name, 0o600)
        shutil.rmtree(path, ignore_errors=True)


def _note_version(kind: str, version: str, *, written: bool) -> None:
    from mlpipe_cli import ledger

    recorder = ledger.current()
    if recorder is not None:
        recorder.note_version(kind, version, written=written)
