"""CLI commands for datasets: ``inspector dataset import`` and ``export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import typer

dataset_app = typer.Typer(help="Labelled datasets.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(dataset_app, name="dataset")


@dataset_app.command("import")
def import_cmd(
    src: Path = typer.Argument(..., help="The dataset folder as you have it."),
    fmt: str = typer.Option(..., "--format", "-f", help="voc, coco or yolo."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder for the YOLO layout."),
    classes: str | None = typer.Option(
        None, "--classes", help="Comma-separated class order (default: sorted names found)."
    ),
    val_fraction: float = typer.Option(
        0.2,
        "--val-fraction",
        min=0.0,
        max=0.9,
        help="Share of images without a split in the source that go to val.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of that split (reproducible)."),
    skip_invalid: bool = typer.Option(
        False, "--skip-invalid", help="Leave images with broken annotations out (counted)."
    ),
    copy: bool = typer.Option(False, "--copy", help="Copy images instead of linking them."),
) -> None:
    """Validate a Pascal VOC, COCO or YOLO dataset; write it as `inspector train` takes it."""
    from inspector.commandline import fail
    from inspector.dataset.importers import DatasetError, Format, import_dataset, summary_lines

    if fmt not in ("voc", "coco", "yolo"):
        raise fail(f"--format must be voc, coco or yolo, not {fmt!r}")
    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    try:
        report = import_dataset(
            src,
            cast(Format, fmt),
            out,
            classes=names,
            val_fraction=val_fraction,
            seed=seed,
            skip_invalid=skip_invalid,
            copy=copy,
        )
    except DatasetError as exc:
        typer.echo(f"error: {exc}", err=True)
        for p in exc.problems:
            typer.echo(f"  {p}", err=True)
        raise typer.Exit(2) from None
    for line in summary_lines(report):
        typer.echo(line)
    data = out / "data.yaml"
    typer.echo(f"wrote {data} — train with: inspector train --data {data}")


@dataset_app.command("export")
def export_cmd(
    src: Path = typer.Argument(..., help="The capture folder (learn.capture.dir)."),
    fmt: str = typer.Option(..., "--format", "-f", help="yolo or coco."),
    out: Path = typer.Option(..., "--out", "-o", help="New folder."),
    min_score: float = typer.Option(
        0.0, "--min-score", min=0.0, max=1.0, help="Leave out predictions below this score."
    ),
    val_fraction: float = typer.Option(
        0.2, "--val-fraction", min=0.0, max=0.9, help="Held out (YOLO), by a hash of the name."
    ),
) -> None:
    """Captured frames with the model's predictions as pre-annotations, as YOLO or COCO
    (CVAT and Label Studio import both)."""
    import json

    from inspector.commandline import fail
    from inspector.dataset.exporters import export_capture
    from inspector.dataset.importers import DatasetError

    if fmt not in ("yolo", "coco"):
        raise fail(f"--format must be yolo or coco, not {fmt!r}")
    try:
        summary = export_capture(src, cast(Any, fmt), out, min_score, val_fraction)
    except DatasetError as exc:
        raise fail(str(exc), 2) from None
    typer.echo(json.dumps(summary))
