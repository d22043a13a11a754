"""`mlpipe schema`: infer, snapshot, diff and export column contracts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg, arg_name
from mlpipe_cli.errors import UsageError

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.schema.diff import Change

EXPORT_FORMATS = ("pandera", "json")


@dataclass(frozen=True)
class InferResult:
    source: str
    path: Path
    proposal: dict[str, Any]
    yaml: str  # the `sources:` entry to paste into the config
    out: Path | None = None
    config_path: str = ""  # the entry's `path:`, as the config file will resolve it

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "path": str(self.path),
            "config_path": self.config_path,
            **self.proposal,
        }


def infer(
    *,
    data: Path,
    source: str,
    max_allowed: int = 20,
    out: Path | None = None,
    config_dir: Path | None = None,
    config_file: Path | None = None,
) -> InferResult:
    """Propose a column contract for ``data`` (needs no config); write it to ``out`` if given.

    The proposed ``path:`` is relative to ``config_dir`` (the directory of the config file
    the entry will be pasted into; default the current directory), because the config
    loader resolves relative paths from there. ``config_file`` (the -c file, or the default
    ``mlpipe.yaml``), when it exists, counts as an input although it is not read: ``out``
    may not overwrite the project's config, as no other command may.
    """
    from mlpipe_cli.artifacts.store import atomic_write_bytes
    from mlpipe_cli.io import check_outputs, input_scope, register_input, scan_parquet
    from mlpipe_cli.schema.infer import contract_yaml, infer_contract, path_for_config

    with input_scope():
        if config_file is not None and config_file.is_file():
            register_input(config_file)
        check_outputs({arg_name("out"): out})  # before the scan of the data
        proposal = infer_contract(scan_parquet(data), max_allowed=max_allowed)
        config_path = path_for_config(data, config_dir if config_dir is not None else Path())
        text = contract_yaml(source, data, proposal, config_path=config_path)
        if out is not None:
            atomic_write_bytes(out, text.encode())
    return InferResult(
        source=source, path=data, proposal=proposal, yaml=text, out=out, config_path=config_path
    )


@dataclass(frozen=True)
class SnapshotResult:
    version: str
    created: bool
    sources: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "schema",
            "version": self.version,
            "created": self.created,
            "sources": self.sources,
        }


def snapshot(project: Project) -> SnapshotResult:
    """Publish the contract of every source as a `schema` artifact (idempotent)."""
    from mlpipe_cli.schema.contract import snapshot as take_snapshot

    version, created = take_snapshot(project.store, project.config)
    return SnapshotResult(version=version, created=created, sources=sorted(project.config.sources))


@dataclass(frozen=True)
class DiffResult:
    old: str
    new: str
    changes: list[Change]
    notes: list[str] = field(default_factory=list)

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    def to_dict(self) -> dict[str, Any]:
        breaking = self.breaking
        return {
            "old": self.old,
            "new": self.new,
            "breaking": len(breaking),
            "compatible": len(self.changes) - len(breaking),
            "changes": [c.to_dict() for c in self.changes],
        }

    def raise_for_status(self) -> None:
        """DataCheckFailed (exit 1) when any change is breaking."""
        from mlpipe_cli.errors import DataCheckFailed

        breaking = self.breaking
        if breaking:
            raise DataCheckFailed(
                f"{len(breaking)} breaking schema change{'s' if len(breaking) != 1 else ''}; "
                f"first: {breaking[0].detail}"
            )


def diff(
    project: Project,
    *,
    old: str | None = None,
    new: str | None = None,
    data: Path | None = None,
    source: str | None = None,
) -> DiffResult:
    """Classify contract changes OLD -> NEW (or ``data`` against OLD) as breaking/compatible.

    OLD defaults to the latest schema snapshot, NEW to the config's current contract; with
    ``data``, OLD defaults to the latest snapshot, else the config (noted in ``notes``).
    """
    from mlpipe_cli.errors import ArtifactNotFound
    from mlpipe_cli.schema.contract import contract_document, load_contract

    config = project.config_path
    notes: list[str] = []
    if data is not None:
        from mlpipe_cli.io import scan_parquet
        from mlpipe_cli.schema.diff import diff_data
        from mlpipe_cli.schema.infer import observe

        if new is not None:
            raise UsageError(
                f"with {arg('data')} give at most one contract ({arg_name('old', flag='OLD')})"
            )
        try:
            document, label = load_contract(old or "latest", project.store)
        except ArtifactNotFound:
            if old is not None:
                raise
            document, label = contract_document(project.config), str(config)
            notes.append(f"no schema snapshot yet: comparing against the contract in {config}")
        sources = document["sources"]
        name = source or (next(iter(sources)) if len(sources) == 1 else None)
        if name is None:
            raise UsageError(
                f"{arg('data')} needs {arg('source')} (contract has {', '.join(sorted(sources))})"
            )
        if name not in sources:
            raise UsageError(
                f"source {name!r} is not in {label} (has: {', '.join(sorted(sources))})"
            )
        changes = diff_data(name, sources[name], observe(scan_parquet(data)))
        old_label, new_label = label, str(data)
    else:
        from mlpipe_cli.schema.diff import diff_contracts

        old_doc, old_label = load_contract(old or "latest", lambda: project.store)
        if new is None:
            new_doc, new_label = contract_document(project.config), str(config)
        else:
            new_doc, new_label = load_contract(new, lambda: project.store)
        changes = diff_contracts(old_doc, new_doc)
    return DiffResult(old=old_label, new=new_label, changes=list(changes), notes=notes)


@dataclass(frozen=True)
class ExportResult:
    format: str
    sources: list[str]
    files: list[str]
    content: str | None = None  # the exported text when nothing was written to a file

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": self.format,
            "sources": self.sources,
            "files": self.files,
        }
        if self.content is not None:
            document["content"] = self.content
        return document


def export(
    project: Project, *, fmt: str = "pandera", source: str | None = None, out: Path | None = None
) -> ExportResult:
    """Export contracts as pandera YAML or the mlpipe JSON contract; to ``out`` (a file for
    one source, else a directory) or, without ``out``, as ``content``."""
    import json

    from mlpipe_cli.artifacts.store import atomic_write_bytes
    from mlpipe_cli.schema.contract import contract_document
    from mlpipe_cli.schema.pandera_io import export_yaml

    cfg = project.config
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"{arg_name('fmt', flag='--format')} must be pandera or json, got {fmt!r}")
    names = [source] if source else sorted(cfg.sources)
    for name in names:
        cfg.source(name)
    if not names:
        raise UsageError("the config defines no sources")
    suffix = ".pandera.yaml" if fmt == "pandera" else ".contract.json"

    def render(name: str) -> str:
        if fmt == "pandera":
            return export_yaml(name, cfg.sources[name])
        document = contract_document(cfg)
        document["sources"] = {name: document["sources"][name]}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    if out is None:
        if len(names) > 1 and fmt == "pandera":
            raise UsageError(
                f"several sources: pass {arg('source', 'NAME')}, or {arg('out', 'DIRECTORY')}"
            )
        if fmt == "json" and len(names) > 1:
            text = json.dumps(contract_document(cfg), indent=2, sort_keys=True) + "\n"
        else:
            text = render(names[0])
        return ExportResult(format=fmt, sources=names, files=[], content=text)
    written: list[str] = []
    if len(names) == 1 and out.suffix in (".yaml", ".yml", ".json"):
        atomic_write_bytes(out, render(names[0]).encode())
        written.append(str(out))
    else:
        for name in names:
            atomic_write_bytes(out / f"{name}{suffix}", render(name).encode())
            written.append(str(out / (name + suffix)))
    return ExportResult(format=fmt, sources=names, files=written)
