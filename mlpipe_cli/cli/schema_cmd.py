"""`mlpipe schema`: infer, snapshot, diff and export column contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    JsonOption,
    Output,
    QuietOption,
    run_context,
)

app = typer.Typer(
    help="Infer, snapshot, diff and export column contracts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("infer")
def infer(
    data: Annotated[Path, typer.Option("--data", help="Parquet file, directory or glob.")],
    source: Annotated[
        str, typer.Option("--source", help="Name for the proposed source.")
    ] = "source",
    out: Annotated[Path | None, typer.Option("--out", help="Write the YAML here.")] = None,
    max_allowed: Annotated[
        int,
        typer.Option(
            "--max-allowed",
            help="Propose `allowed` for string columns with at most this many distinct values.",
        ),
    ] = 20,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Propose a column contract (dtypes, nullability, observed ranges, small value sets).

    Prints YAML to paste under `sources:` in the config (or writes it with --out). Works from
    --data alone: -c/--config and --artifact-dir are accepted (like every subcommand) but
    not read, so no config file is needed.

    Example: mlpipe schema infer --data data/sample/orders.parquet --source orders
    """
    from mlpipe_cli.artifacts.store import atomic_write_bytes
    from mlpipe_cli.io import scan_parquet
    from mlpipe_cli.schema.infer import contract_yaml, infer_contract

    output = Output.create(json_mode=json_output, quiet=quiet)
    proposal = infer_contract(scan_parquet(data), max_allowed=max_allowed)
    text = contract_yaml(source, data, proposal)
    if out is not None:
        atomic_write_bytes(out, text.encode())
        output.info(f"wrote {out}")
    output.result({"source": source, "path": str(data), **proposal}, None if out else text.rstrip())


@app.command("snapshot")
def snapshot(
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Save the contract of every source as a versioned `schema` artifact.

    Identical contracts give the same version (publishing is idempotent).

    Example: mlpipe schema snapshot -c configs/example.yaml
    """
    from mlpipe_cli.schema.contract import snapshot as take_snapshot

    output = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    version, created = take_snapshot(ctx.store, ctx.config)
    output.result(
        {
            "kind": "schema",
            "version": version,
            "created": created,
            "sources": sorted(ctx.config.sources),
        },
        f"schema {version}" + ("" if created else " (unchanged; already published)"),
    )


@app.command("diff")
def diff(
    old: Annotated[
        str | None,
        typer.Argument(
            help="Old contract: schema version, 'latest', contract.json or pipeline YAML."
        ),
    ] = None,
    new: Annotated[
        str | None, typer.Argument(help="New contract (default: the current config).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Compare this data against the contract instead.")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Source the --data belongs to.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Classify contract changes as breaking or compatible; exit 1 if any is breaking.

    OLD defaults to the latest schema snapshot, NEW to the config's current contract. With
    --data, the data is compared against OLD (default: latest snapshot, else the config).

    Example: mlpipe schema diff latest configs/example.yaml
    """
    from mlpipe_cli.errors import ArtifactNotFound, DataCheckFailed, UsageError
    from mlpipe_cli.schema.contract import contract_document, load_contract

    output = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    if data is not None:
        from mlpipe_cli.io import scan_parquet
        from mlpipe_cli.schema.diff import diff_data
        from mlpipe_cli.schema.infer import observe

        if new is not None:
            raise UsageError("with --data give at most one contract (OLD)")
        try:
            document, label = load_contract(old or "latest", ctx.store)
        except ArtifactNotFound:
            if old is not None:
                raise
            document, label = contract_document(ctx.config), str(config)
            output.info(f"no schema snapshot yet: comparing against the contract in {config}")
        sources = document["sources"]
        name = source or (next(iter(sources)) if len(sources) == 1 else None)
        if name is None:
            raise UsageError(f"--data needs --source (contract has {', '.join(sorted(sources))})")
        if name not in sources:
            raise UsageError(
                f"source {name!r} is not in {label} (has: {', '.join(sorted(sources))})"
            )
        changes = diff_data(name, sources[name], observe(scan_parquet(data)))
        old_label, new_label = label, str(data)
    else:
        from mlpipe_cli.schema.diff import diff_contracts

        old_doc, old_label = load_contract(old or "latest", lambda: ctx.store)
        if new is None:
            new_doc, new_label = contract_document(ctx.config), str(config)
        else:
            new_doc, new_label = load_contract(new, lambda: ctx.store)
        changes = diff_contracts(old_doc, new_doc)
    breaking = [c for c in changes if c.breaking]
    output.result(
        {
            "old": old_label,
            "new": new_label,
            "breaking": len(breaking),
            "compatible": len(changes) - len(breaking),
            "changes": [c.to_dict() for c in changes],
        }
    )
    output.line(f"{old_label} -> {new_label}: {len(breaking)} breaking, "
                f"{len(changes) - len(breaking)} compatible")  # fmt: skip
    if changes:
        output.table(
            ["classification", "source", "column", "change", "detail"],
            [
                ["BREAKING" if c.breaking else "compatible", c.source, c.column, c.change, c.detail]
                for c in changes
            ],
        )
    if breaking:
        raise DataCheckFailed(
            f"{len(breaking)} breaking schema change{'s' if len(breaking) != 1 else ''}; "
            f"first: {breaking[0].detail}"
        )


@app.command("export")
def export(
    fmt: Annotated[
        str, typer.Option("--format", help="pandera (YAML) or json (mlpipe contract).")
    ] = "pandera",
    source: Annotated[str | None, typer.Option("--source", help="Export only this source.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="File (one source) or directory (several).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export a source's contract as a pandera YAML schema (or the mlpipe JSON contract).

    The pandera file loads with pandera.polars.DataFrameSchema.from_yaml; regexes are
    anchored ^(?:...)$ so they keep their full-match meaning. SQL row checks, severities and
    tolerances cannot be expressed in pandera and are listed in the file's header comment.

    With --json, stdout carries one JSON document: {"format", "sources", "files"} plus
    "content" (the exported text) when there is no --out.

    Example: mlpipe schema export --format pandera --source orders --out orders.yaml
    """
    import json

    from mlpipe_cli.artifacts.store import atomic_write_bytes
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.schema.contract import contract_document
    from mlpipe_cli.schema.pandera_io import export_yaml

    output = Output.create(json_mode=json_output, quiet=quiet)
    cfg = run_context(config, artifact_dir).config
    if fmt not in ("pandera", "json"):
        raise UsageError(f"--format must be pandera or json, got {fmt!r}")
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
            raise UsageError("several sources: pass --source NAME, or --out DIRECTORY")
        if fmt == "json" and len(names) > 1:
            text = json.dumps(contract_document(cfg), indent=2, sort_keys=True) + "\n"
        else:
            text = render(names[0])
        if json_output:
            output.emit_json({"format": fmt, "sources": names, "files": [], "content": text})
        else:  # the exported text is the output itself: printed even with -q
            typer.echo(text, nl=False)
        return
    written: list[str] = []
    if len(names) == 1 and out.suffix in (".yaml", ".yml", ".json"):
        atomic_write_bytes(out, render(names[0]).encode())
        written.append(str(out))
    else:
        for name in names:
            atomic_write_bytes(out / f"{name}{suffix}", render(name).encode())
            written.append(str(out / (name + suffix)))
    if not json_output:
        for path in written:
            output.info(f"wrote {path}")
    output.result({"format": fmt, "sources": names, "files": written})
